"""The pipe between the daemon and a capture worker: length-prefixed pickles
over a Unix stream socket pair.

Both ends are our own processes, started from the same code, so pickle is
the right tool (no untrusted peer: the socket pair is created by the parent
and inherited, never bound to a path).  A batch of messages travels as one
write, so that a worker's thousands of small messages a second cost few
system calls."""
from __future__ import annotations

import pickle
import socket
from collections.abc import Iterator
from struct import Struct
from typing import Any

__all__ = ["Channel", "Reader", "encode"]

_LEN = Struct("!I")
MAX_MESSAGE = 256 << 20
"""A bound on one message: a corrupt length must not make a reader wait for gigabytes."""


def encode(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _LEN.pack(len(body)) + body


class Reader:
    """Bytes in, whole messages out (sans-I/O): what either end feeds from its socket."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[Any]:
        buffer = self._buffer
        buffer += data
        pos = 0
        while len(buffer) - pos >= _LEN.size:
            (size,) = _LEN.unpack_from(buffer, pos)
            if size > MAX_MESSAGE:
                raise ValueError(f"worker channel message of {size} bytes")
            end = pos + _LEN.size + size
            if end > len(buffer):
                break
            yield pickle.loads(buffer[pos + _LEN.size:end])
            pos = end
        del buffer[:pos]


class Channel:
    """The blocking end a worker holds: messages are gathered and sent as one batch."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._out: list[bytes] = []
        self._reader = Reader()

    def send(self, message: Any) -> None:
        self._out.append(encode(message))

    def flush(self) -> None:
        if self._out:
            data = b"".join(self._out)
            self._out.clear()
            self.sock.sendall(data)

    def receive(self) -> list[Any]:
        """Whatever has arrived, without waiting; EOFError when the daemon is gone."""
        try:
            data = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return []
        if not data:
            raise EOFError("the daemon closed the worker channel")
        return list(self._reader.feed(data))
