"""SDP offer/answer for the announcement stream (RFC 3264), on the recorder's SDP parser.

The announcer only speaks G.711: it takes the first of PCMU/PCMA in the offer's order (the
offerer's preference, §6.1) and answers every other m= line with port 0. It answers sendrecv to a
sendrecv offer although it only sends, because PBXs read a sendonly answer as the callee putting
the caller on hold and play music on hold instead of relaying the announcement.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from wire.errors import RemoteInputError
from wire.rtp import PAYLOAD_TYPES
from wire.sdp import SdpParseError, SessionDescription, parse_sdp

from .errors import AnnouncerError

_ANSWER_DIRECTION = {"sendrecv": "sendrecv", "recvonly": "sendonly", "sendonly": "recvonly", "inactive": "inactive"}


class NegotiationError(AnnouncerError, RemoteInputError):
    """The PBX's offer (or answer) has no usable G.711 audio stream (the PBX's input, not our bug)."""


@dataclass(frozen=True, slots=True)
class Stream:
    """Where the announcement goes and in which law."""

    host: str
    port: int
    law: str
    payload_type: int
    direction: str  # our direction

    @property
    def sends(self) -> bool:
        return self.direction in ("sendrecv", "sendonly") and self.port != 0


def _parse(body: bytes) -> SessionDescription:
    try:
        return parse_sdp(body)
    except SdpParseError as exc:
        raise NegotiationError(f"unusable SDP: {exc}") from None


def _g711(sd: SessionDescription) -> tuple[int, Stream]:
    for index, media in enumerate(sd.media):
        if media.media != "audio" or media.port == 0 or media.connection is None:
            continue
        for pt in media.formats:
            codec = media.rtpmap.get(pt)
            if codec is not None and codec.encoding in PAYLOAD_TYPES and codec.clock_rate == 8000:
                direction = _ANSWER_DIRECTION.get(media.effective_direction, "inactive")
                return index, Stream(media.connection, media.port, codec.encoding, pt, direction)
    raise NegotiationError("no PCMU or PCMA audio stream offered")


def accept_offer(body: bytes) -> tuple[Stream, SessionDescription, int]:
    """The stream chosen from an offer, the offer, and the index of its m= line."""
    sd = _parse(body)
    index, stream = _g711(sd)
    return stream, sd, index


def accept_answer(body: bytes) -> Stream:
    """The stream from the answer to our offer (offer-less INVITE: answer in the ACK)."""
    _, stream = _g711(_parse(body))
    # Our offer was sendrecv, so the answer's direction is already ours mirrored.
    return stream


def _session(local_ip: str, session_id: int, version: int) -> list[str]:
    family = "IP6" if ipaddress.ip_address(local_ip).version == 6 else "IP4"
    return ["v=0", f"o=callrec {session_id} {version} IN {family} {local_ip}", "s=callrec announcer",
            f"c=IN {family} {local_ip}", "t=0 0"]


def answer_sdp(offer: SessionDescription, index: int, stream: Stream, *, local_ip: str, port: int,
               session_id: int, version: int) -> bytes:
    lines = _session(local_ip, session_id, version)
    for i, media in enumerate(offer.media):
        if i != index:
            formats = " ".join(str(pt) for pt in media.formats) or "0"
            lines.append(f"m={media.media} 0 {media.proto} {formats}")
            continue
        lines += [f"m=audio {port} RTP/AVP {stream.payload_type}",
                  f"a=rtpmap:{stream.payload_type} {stream.law}/8000", "a=ptime:20", f"a={stream.direction}"]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def offer_sdp(*, local_ip: str, port: int, session_id: int, version: int) -> bytes:
    """Our offer when the INVITE had none: both laws, PCMU first (Japan's PSTN uses mu-law)."""
    lines = _session(local_ip, session_id, version)
    lines += [f"m=audio {port} RTP/AVP 0 8", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000", "a=ptime:20",
              "a=sendrecv"]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
