"""rtpdump side files: the I/O adapter for media the recorder cannot decode.

Codecs such as G.722, G.729 or Opus are kept as the RTP packets that were on
the wire, in rtptools' rtpdump format, because any decoder (rtptools,
Wireshark's RTP player) can replay that exactly and nothing is lost by
guessing at decoding. Layout (all big-endian): the text line
"#!rtpplay1.0 ADDRESS/PORT\\n", a 16-byte RD_hdr_t (start seconds,
microseconds, IPv4 source, port, padding) and, per packet, an 8-byte
RD_packet_t (record length including itself, RTP length, milliseconds since
start) followed by the RTP packet.
"""

from __future__ import annotations

import ipaddress
import os
import struct
from pathlib import Path
from typing import Final

__all__ = ["RtpDumpWriter"]

_FILE_HEADER: Final = struct.Struct("!IIIHH")
_RECORD_HEADER: Final = struct.Struct("!HHI")
_MAX_PACKET: Final = 0xFFFF - _RECORD_HEADER.size
_MAX_OFFSET: Final = 0xFFFFFFFF
_BUFFER: Final = 1 << 16
"""Bytes buffered before they are written to the file."""


class RtpDumpWriter:
    """Appends RTP packets to a new rtpdump file (created 0600, never through a
    symlink, never over an existing file)."""

    def __init__(self, path: Path, source_addr: str, port: int, start: float) -> None:
        address = ipaddress.ip_address(source_addr)
        if not 1 <= port <= 0xFFFF:
            raise ValueError("port must be 1-65535 (readers reject port 0)")
        if start < 0:
            raise ValueError("start must not be negative")
        self.path = Path(path)
        self.start = start
        # RD_hdr_t has room for IPv4 only; rtptools ignores it on playback.
        source = int(address) if address.version == 4 else 0
        # Offsets are counted in whole microseconds, like rtptools' timevals,
        # so float noise in `arrival - start` cannot move a packet a millisecond.
        self._start_us = round(start * 1_000_000)
        seconds, micros = divmod(self._start_us, 1_000_000)
        flags = (
            os.O_WRONLY
            | os.O_CREAT
            | os.O_EXCL
            | os.O_NOFOLLOW
            | getattr(os, "O_CLOEXEC", 0)
        )
        fd = os.open(self.path, flags, 0o600)
        self._file = os.fdopen(fd, "wb", buffering=_BUFFER)
        self._file.write(f"#!rtpplay1.0 {address}/{port}\n".encode("ascii"))
        self._file.write(
            _FILE_HEADER.pack(seconds & 0xFFFFFFFF, micros, source, port, 0)
        )
        self.packets = 0

    def write(self, arrival: float, rtp_bytes: bytes) -> None:
        """Record one packet captured at `arrival` (seconds, same clock as start).

        Arrivals before `start` are recorded at offset 0. ValueError for a
        packet shorter than an RTP header (a zero length would mark it as RTCP)
        or longer than a record can hold (65527 bytes), or a closed writer."""
        if not 12 <= len(rtp_bytes) <= _MAX_PACKET:
            raise ValueError("not an RTP packet length an rtpdump record can hold")
        offset = (round(arrival * 1_000_000) - self._start_us) // 1000
        offset = 0 if offset < 0 else min(offset, _MAX_OFFSET)
        size = len(rtp_bytes)
        self._file.write(_RECORD_HEADER.pack(size + _RECORD_HEADER.size, size, offset))
        self._file.write(rtp_bytes)
        self.packets += 1

    def sync(self) -> None:
        """Force what was written to disk."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Flush, fsync and close; closing again does nothing."""
        if self._file.closed:
            return
        try:
            self.sync()
        finally:
            self._file.close()

    def __enter__(self) -> RtpDumpWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
