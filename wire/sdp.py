"""SDP session descriptions (RFC 8866, formerly RFC 4566) as far as recording needs them.

Sans-I/O: bytes in, SessionDescription out. Extracts where each audio stream is sent (address,
port, RTCP port), which payload types mean which codec, and the offer/answer direction
(RFC 3264). Tolerant of what real equipment sends (LF-only line ends, trailing blanks, unknown
or malformed attribute lines are ignored) but refuses input that is not SDP at all, and bounds
its work by MAX_SDP and MAX_MEDIA.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .errors import WireFormatError

__all__ = [
    "MAX_MEDIA",
    "MAX_SDP",
    "MediaDescription",
    "Rtpmap",
    "SdpParseError",
    "SessionDescription",
    "audio_media",
    "parse_sdp",
]

MAX_SDP = 64 * 1024
"""Largest accepted SDP body, bytes."""
MAX_MEDIA = 64
"""Largest accepted number of m= lines."""

_DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})
_HOLD_ADDRESSES = frozenset({"0.0.0.0", "::"})
_HOST_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._"


class SdpParseError(WireFormatError):
    """Body is not usable SDP; the caller counts it and treats the message as carrying no SDP."""


@dataclass(slots=True, frozen=True)
class Rtpmap:
    """Codec of one payload type. Frozen because the static-payload defaults are shared."""

    encoding: str
    clock_rate: int
    channels: int = 1


# RFC 3551 §6 static audio payload types (PT 2 is reserved there and deliberately absent).
# The clock rate of G722 is 8000 by that RFC's historical error, although the codec samples
# at 16 kHz; consumers must special-case it.
_STATIC_RTPMAP: dict[int, Rtpmap] = {
    0: Rtpmap("PCMU", 8000),
    3: Rtpmap("GSM", 8000),
    4: Rtpmap("G723", 8000),
    5: Rtpmap("DVI4", 8000),
    6: Rtpmap("DVI4", 16000),
    7: Rtpmap("LPC", 8000),
    8: Rtpmap("PCMA", 8000),
    9: Rtpmap("G722", 8000),
    10: Rtpmap("L16", 44100, 2),
    11: Rtpmap("L16", 44100),
    12: Rtpmap("QCELP", 8000),
    13: Rtpmap("CN", 8000),
    14: Rtpmap("MPA", 90000),
    15: Rtpmap("G728", 8000),
    16: Rtpmap("DVI4", 11025),
    17: Rtpmap("DVI4", 22050),
    18: Rtpmap("G729", 8000),
}


@dataclass(slots=True)
class MediaDescription:
    """One m= section with session-level defaults already applied.

    connection is the media-level c= address, else the session-level one, else None; IP
    literals are normalised (ipaddress compressed form, no brackets) so they compare equal to
    addresses taken from packets; host names are lower-cased. direction is the a= direction
    attribute of the section, else of the session, else 'sendrecv'. formats lists the numeric
    payload types 0..127 from the m= line in order; other formats are ignored. rtpmap holds
    every a=rtpmap of the section plus RFC 3551 defaults for listed static payload types that
    have no rtpmap line.

    Hold: RFC 2543-style hold (c= address 0.0.0.0, or :: for IPv6) leaves direction as written
    but sets is_hold; effective_direction folds hold and a rejected stream (port 0) into
    'inactive', which is what a recorder should act on.
    """

    media: str
    port: int
    port_count: int
    proto: str
    formats: list[int]
    connection: str | None = None
    rtcp_port: int | None = None
    direction: str = "sendrecv"
    ptime: int | None = None
    rtpmap: dict[int, Rtpmap] = field(default_factory=dict)
    fmtp: dict[int, str] = field(default_factory=dict)

    @property
    def is_hold(self) -> bool:
        return self.connection in _HOLD_ADDRESSES

    @property
    def effective_direction(self) -> str:
        if self.port == 0 or self.is_hold:
            return "inactive"
        return self.direction


@dataclass(slots=True)
class SessionDescription:
    """origin_* come from o=; connection is the session-level c= address (normalised)."""

    origin_session_id: str
    origin_version: int
    origin_address: str | None
    connection: str | None
    media: list[MediaDescription]


def _digits(text: str, max_len: int) -> int | None:
    if text.isascii() and text.isdigit() and len(text) <= max_len:
        return int(text)
    return None


def _address(text: str) -> str:
    """Normalise a connection/origin address: strip brackets and TTL/count, canonical IP text."""
    text = text.split("/", 1)[0]
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return ipaddress.ip_address(text).compressed
    except ValueError:
        pass
    if not text or text.strip(_HOST_CHARS):
        raise SdpParseError("invalid address")
    return text.lower()


def _origin_address(parts: list[str]) -> str | None:
    """o= unicast address; None when absent or unusable, since nothing is routed to it."""
    if len(parts) < 6:
        return None
    try:
        return _address(parts[5])
    except SdpParseError:
        return None


def _connection(value: str) -> str:
    parts = value.split()
    if len(parts) < 3:
        raise SdpParseError("malformed c= line")
    if parts[0].upper() != "IN" or parts[1].upper() not in ("IP4", "IP6"):
        raise SdpParseError("unsupported c= network or address type")
    return _address(parts[2])


def _media(value: str) -> MediaDescription:
    parts = value.split()
    if len(parts) < 3:
        raise SdpParseError("malformed m= line")
    port_text, slash, count_text = parts[1].partition("/")
    port = _digits(port_text, 5)
    count = _digits(count_text, 5) if slash else 1
    if port is None or port > 65535 or count is None or count < 1:
        raise SdpParseError("malformed m= port")
    formats = []
    for fmt in parts[3:]:
        pt = _digits(fmt, 3)
        if pt is not None and pt <= 127:
            formats.append(pt)
    return MediaDescription(parts[0].lower(), port, count, parts[2], formats)


def _rtpmap(value: str) -> tuple[int, Rtpmap] | None:
    pt_text, _, spec = value.partition(" ")
    pt = _digits(pt_text, 3)
    fields = spec.strip().split("/")
    if pt is None or pt > 127 or len(fields) < 2 or not fields[0]:
        return None
    rate = _digits(fields[1], 9)
    channels = _digits(fields[2], 3) if len(fields) > 2 else 1
    if not rate or not channels:
        return None
    return pt, Rtpmap(fields[0].upper(), rate, channels)


def _media_attribute(media: MediaDescription, name: str, value: str) -> None:
    if name == "rtpmap":
        mapping = _rtpmap(value)
        if mapping is not None:
            media.rtpmap.setdefault(mapping[0], mapping[1])
    elif name == "fmtp":
        pt_text, _, params = value.partition(" ")
        pt = _digits(pt_text, 3)
        if pt is not None and pt <= 127:
            media.fmtp.setdefault(pt, params.strip())
    elif name == "rtcp":
        port = _digits(value.split(" ", 1)[0], 5)
        if port is not None and port <= 65535:
            media.rtcp_port = port
    elif name == "ptime":
        ptime = _digits(value.strip(), 6)
        if ptime:
            media.ptime = ptime


def parse_sdp(body: bytes | bytearray | memoryview) -> SessionDescription:
    """Parse an SDP body. Raises only SdpParseError.

    The first line must be v=0 and an o= line with numeric version must precede the first m=.
    Lines that are not '<letter>=' are skipped, as are unknown or malformed a= lines; malformed
    c= or m= lines are errors because they would make the recording target wrong.
    """
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise SdpParseError("input is not bytes")
    if len(body) > MAX_SDP:
        raise SdpParseError("SDP larger than 64 KiB")
    lines = bytes(body).decode("utf-8", "replace").split("\n")
    if lines[0].rstrip() != "v=0":
        raise SdpParseError("not SDP: first line is not v=0")

    origin: tuple[str, int, str | None] | None = None
    session_connection: str | None = None
    session_direction = "sendrecv"
    media: list[MediaDescription] = []
    media_connection: list[bool] = []
    media_direction: list[bool] = []
    current: MediaDescription | None = None
    for raw in lines[1:]:
        line = raw.rstrip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind = line[0]
        value = line[2:]
        if kind == "a":
            name, _, attr_value = value.partition(":")
            if name in _DIRECTIONS:
                if current is None:
                    session_direction = name
                else:
                    current.direction = name
                    media_direction[-1] = True
            elif current is not None:
                _media_attribute(current, name, attr_value)
        elif kind == "m":
            if len(media) == MAX_MEDIA:
                raise SdpParseError("too many m= lines")
            if origin is None:
                raise SdpParseError("missing o= line")
            current = _media(value)
            media.append(current)
            media_connection.append(False)
            media_direction.append(False)
        elif kind == "c":
            address = _connection(value)
            if current is None:
                if session_connection is None:
                    session_connection = address
            elif not media_connection[-1]:
                current.connection = address
                media_connection[-1] = True
        elif kind == "o" and origin is None and current is None:
            parts = value.split()
            version = _digits(parts[2], 20) if len(parts) >= 3 else None
            if version is None:
                raise SdpParseError("malformed o= line")
            origin = (parts[1], version, _origin_address(parts))
    if origin is None:
        raise SdpParseError("missing o= line")

    for index, section in enumerate(media):
        if not media_connection[index]:
            section.connection = session_connection
        if not media_direction[index]:
            section.direction = session_direction
        for pt in section.formats:
            if pt not in section.rtpmap and pt in _STATIC_RTPMAP:
                section.rtpmap[pt] = _STATIC_RTPMAP[pt]
    return SessionDescription(origin[0], origin[1], origin[2], session_connection, media)


def audio_media(sd: SessionDescription) -> list[MediaDescription]:
    """The audio m= sections in SDP order.

    Offer and answer pair m= sections by their index in sd.media (RFC 3264 §6), not by their
    index in this list.
    """
    return [section for section in sd.media if section.media == "audio"]
