"""RTP packets of the announcement (RFC 3550 §5.1, RFC 3551 §4.5: G.711 in 20 ms frames).

The packetiser is pure: the pacing clock in service.py decides when a packet leaves; this decides
what is in it. Sequence number and timestamp start at random values (§5.1) that the caller draws,
so tests can fix them; the marker bit is set on the first packet of the talkspurt.
"""
from __future__ import annotations

import struct

FRAME_MS = 20
SAMPLES_PER_FRAME = 8000 * FRAME_MS // 1000
PAYLOAD_TYPES = {"PCMU": 0, "PCMA": 8}
_HEADER = struct.Struct("!BBHII")


def frames(audio: bytes) -> list[bytes]:
    """audio (8-bit G.711 at 8 kHz) cut into 20 ms frames; the last one is padded with the
    law's silence by the caller beforehand (Announcement does), so all are 160 bytes."""
    return [audio[i:i + SAMPLES_PER_FRAME] for i in range(0, len(audio), SAMPLES_PER_FRAME)]


class Packetiser:
    """One outgoing RTP stream."""

    __slots__ = ("payload_type", "ssrc", "seq", "timestamp", "_first")

    def __init__(self, payload_type: int, ssrc: int, seq: int, timestamp: int) -> None:
        self.payload_type = payload_type
        self.ssrc = ssrc & 0xFFFFFFFF
        self.seq = seq & 0xFFFF
        self.timestamp = timestamp & 0xFFFFFFFF
        self._first = True

    def packet(self, payload: bytes) -> bytes:
        marker = 0x80 if self._first else 0
        self._first = False
        header = _HEADER.pack(0x80, marker | self.payload_type, self.seq, self.timestamp, self.ssrc)
        self.seq = (self.seq + 1) & 0xFFFF
        self.timestamp = (self.timestamp + len(payload)) & 0xFFFFFFFF
        return header + payload

    def switch(self, payload_type: int) -> None:
        """A re-INVITE changed the law: same SSRC and sequence, new payload type."""
        self.payload_type = payload_type
