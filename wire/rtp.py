"""RTP (RFC 3550) and telephone-event (RFC 4733) packets, sans-I/O: parsing
what the recorder sees and packetising what the announcer sends.

Everything arriving on a mirror port is untrusted: parsers return None for
anything malformed instead of raising, so the caller can count and move on.
Two parsers exist because the recorder sees every packet of every call:
`parse_rtp` builds a full `RtpPacket` (tests, tools, the rare packet with CSRCs
or header extensions), `parse_rtp_fast` returns a plain tuple and costs about
half as much on the common 12-byte-header packet.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "EVENT_NAMES",
    "FRAME_MS",
    "PAYLOAD_TYPES",
    "Packetiser",
    "RtpPacket",
    "SAMPLES_PER_FRAME",
    "TelephoneEvent",
    "frames",
    "parse_rtp",
    "parse_rtp_fast",
    "parse_telephone_event",
    "serialize_rtp",
]

_HEADER: Final = struct.Struct("!BBHII")
_EXT_HEADER: Final = struct.Struct("!HH")
_EVENT: Final = struct.Struct("!BBH")
_CSRC: Final = tuple(struct.Struct(f"!{n}I") for n in range(16))

EVENT_NAMES: Final[dict[int, str]] = {
    **{n: str(n) for n in range(10)},
    10: "*",
    11: "#",
    12: "A",
    13: "B",
    14: "C",
    15: "D",
    16: "flash",
}
"""RFC 4733 section 3.2 DTMF event codes."""


@dataclass(slots=True)
class RtpPacket:
    """One RTP packet. `padding_size` counts the padding bytes including the
    final count byte, so that a parsed packet serialises back to its length."""

    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    csrc: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension: bytes = b""
    padding_size: int = 0


def parse_rtp(data: bytes) -> RtpPacket | None:
    """Parse one RTP packet; None unless it is version 2 with consistent CSRC,
    extension and padding lengths."""
    fields = _parse(data)
    if fields is None:
        return None
    pt, marker, seq, ts, ssrc, payload, csrc, profile, extension, padding = fields
    return RtpPacket(
        pt, marker, seq, ts, ssrc, payload, csrc, profile, extension, padding
    )


def parse_rtp_fast(data: bytes) -> tuple[int, bool, int, int, int, bytes] | None:
    """(payload_type, marker, sequence, timestamp, ssrc, payload) or None.

    Same acceptance rules as `parse_rtp`; CSRCs and header extensions are
    validated and skipped because recording only needs the payload."""
    if len(data) < 12:
        return None
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
    if b0 == 0x80:
        return b1 & 0x7F, b1 > 0x7F, seq, ts, ssrc, data[12:]
    fields = _parse(data)
    if fields is None:
        return None
    return fields[0], fields[1], fields[2], fields[3], fields[4], fields[5]


def _parse(
    data: bytes,
) -> (
    tuple[int, bool, int, int, int, bytes, tuple[int, ...], int | None, bytes, int]
    | None
):
    size = len(data)
    if size < 12:
        return None
    b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
    if b0 & 0xC0 != 0x80:
        return None
    offset = 12
    csrc: tuple[int, ...] = ()
    count = b0 & 0x0F
    if count:
        offset += 4 * count
        if size < offset:
            return None
        csrc = _CSRC[count].unpack_from(data, 12)
    profile: int | None = None
    extension = b""
    if b0 & 0x10:
        if size < offset + 4:
            return None
        profile, words = _EXT_HEADER.unpack_from(data, offset)
        end = offset + 4 + 4 * words
        if size < end:
            return None
        extension = data[offset + 4 : end]
        offset = end
    padding = 0
    if b0 & 0x20:
        padding = data[-1]
        if padding == 0 or offset + padding > size:
            return None
    payload = data[offset : size - padding]
    return (
        b1 & 0x7F,
        b1 > 0x7F,
        seq,
        ts,
        ssrc,
        payload,
        csrc,
        profile,
        extension,
        padding,
    )


def serialize_rtp(pkt: RtpPacket) -> bytes:
    """Wire form of `pkt` (padding bytes are zero except the count byte).

    ValueError if a field does not fit its wire width."""
    if not 0 <= pkt.payload_type <= 0x7F:
        raise ValueError("payload_type out of range")
    if len(pkt.csrc) > 15:
        raise ValueError("more than 15 CSRCs")
    if not 0 <= pkt.padding_size <= 0xFF:
        raise ValueError("padding_size out of range")
    if pkt.extension_profile is None and pkt.extension:
        raise ValueError("extension data without a profile")
    if len(pkt.extension) % 4 or len(pkt.extension) > 4 * 0xFFFF:
        raise ValueError("extension length must be a multiple of 4 and < 2**18")
    b0 = 0x80 | len(pkt.csrc)
    if pkt.padding_size:
        b0 |= 0x20
    if pkt.extension_profile is not None:
        b0 |= 0x10
    b1 = pkt.payload_type | (0x80 if pkt.marker else 0)
    try:
        parts = [
            _HEADER.pack(b0, b1, pkt.sequence, pkt.timestamp, pkt.ssrc),
            _CSRC[len(pkt.csrc)].pack(*pkt.csrc),
        ]
        if pkt.extension_profile is not None:
            parts.append(
                _EXT_HEADER.pack(pkt.extension_profile, len(pkt.extension) // 4)
            )
            parts.append(pkt.extension)
    except struct.error as exc:
        raise ValueError(str(exc)) from None
    parts.append(pkt.payload)
    if pkt.padding_size:
        parts.append(bytes(pkt.padding_size - 1) + bytes((pkt.padding_size,)))
    return b"".join(parts)


@dataclass(slots=True)
class TelephoneEvent:
    """RFC 4733 named event payload; `duration` is in RTP timestamp units."""

    event: int
    end: bool
    volume: int
    duration: int


def parse_telephone_event(payload: bytes) -> TelephoneEvent | None:
    """First event of a telephone-event payload, None if shorter than 4 bytes."""
    if len(payload) < 4:
        return None
    event, flags, duration = _EVENT.unpack_from(payload)
    return TelephoneEvent(event, flags > 0x7F, flags & 0x3F, duration)


# ---- sending (the announcer) ---------------------------------------------
# G.711 in 20 ms frames (RFC 3551 §4.5).  The packetiser is pure: the pacing
# clock of the announcer's service decides when a packet leaves; this decides
# what is in it.  Sequence number and timestamp start at random values
# (RFC 3550 §5.1) that the caller draws, so tests can fix them; the marker bit
# is set on the first packet of the talkspurt.

FRAME_MS: Final = 20
SAMPLES_PER_FRAME: Final = 8000 * FRAME_MS // 1000
PAYLOAD_TYPES: Final[dict[str, int]] = {"PCMU": 0, "PCMA": 8}


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
