"""structlog events sent to journald natively, with PRIORITY and fields.

journald's native protocol is a datagram of KEY=value lines (values with a
newline use the length-prefixed form) on /run/systemd/journal/socket.  Each
event keeps its stable name in EVENT and its fields as upper-case journal
fields (CALL_ID, DIRECTION...), so `journalctl -u callrec EVENT=...` finds
them.
"""
from __future__ import annotations

import os
import re
import socket
import struct
from typing import Any

JOURNAL_SOCKET = "/run/systemd/journal/socket"
PRIORITIES = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}
_FIELD = re.compile(r"[^A-Z0-9_]")


def journal_field(name: str) -> str:
    """journald field names: upper case, digits and underscores, no leading _."""
    field = _FIELD.sub("_", name.upper()).lstrip("_")
    return field or "FIELD"


def encode_entry(fields: dict[str, str]) -> bytes:
    parts = []
    for key, value in fields.items():
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            parts.append(key.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n")
        else:
            parts.append(key.encode() + b"=" + data + b"\n")
    return b"".join(parts)


def under_journald() -> bool:
    """True when systemd connected our stderr to the journal."""
    stream = os.environ.get("JOURNAL_STREAM")
    if not stream:
        return False
    try:
        device, inode = (int(x) for x in stream.split(":"))
        st = os.fstat(2)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


class JournalLogger:
    """A structlog logger whose messages are journal entries."""

    def __init__(self, identifier: str = "callrec", address: str = JOURNAL_SOCKET) -> None:
        self._identifier = identifier
        self._address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def msg(self, **event: Any) -> None:
        name = str(event.pop("event", ""))
        level = str(event.pop("level", "info"))
        event.pop("timestamp", None)
        text = " ".join([name] + [f"{k}={v}" for k, v in event.items()])
        fields = {
            "MESSAGE": text,
            "PRIORITY": str(PRIORITIES.get(level, 6)),
            "SYSLOG_IDENTIFIER": self._identifier,
            "EVENT": name,
        }
        for key, value in event.items():
            fields[journal_field(key)] = str(value)
        try:
            self._sock.sendto(encode_entry(fields), self._address)
        except OSError:
            pass

    info = debug = warning = error = critical = msg


class JournalLoggerFactory:
    def __init__(self, address: str = JOURNAL_SOCKET) -> None:
        self._address = address

    def __call__(self, *args: Any) -> JournalLogger:
        return JournalLogger(address=self._address)
