"""SDP parser tests: every SDP body in the shared captures cross-checked against tshark, plus
hand-written bodies for hold, IPv6, port 0, RTCP and session/media-level precedence."""

from __future__ import annotations

import functools
import ipaddress

import pytest

from wire.sdp import (
    MAX_MEDIA,
    MAX_SDP,
    MediaDescription,
    Rtpmap,
    SdpParseError,
    audio_media,
    parse_sdp,
)
from wire.sip import parse_sip
from tests.interop import capture, tshark_fields

# SDP bodies per capture as tshark 4.0 counts them; pinned so the cross-check cannot be vacuous.
SDP_CAPTURES = {
    "SIP_DTMF2.pcap": 4,
    "aaa.pcap": 12,
    "b2bua-asterisk.pcapng": 12,
    "ipv6frag.pcap": 14,
    "rtp-protocol.pcap": 2,
    "sip-over-tcp.pcap": 2,
    "sip-rtp-g711.pcap": 4,
    "sip-rtp-g722.pcap": 2,
}
SEP = "\x1f"
FIELDS = (
    "frame.number",
    "udp.payload",
    "tcp.payload",
    "sdp.owner.sessionid",
    "sdp.owner.version",
    "sdp.owner.address",
    "sdp.connection_info.address",
    "sdp.media",
    "sdp.media_attr",
    "sdp.session_attr",
)


@functools.cache
def sdp_rows(name: str) -> tuple[dict[str, list[str]], ...]:
    """tshark's view of every SDP-carrying frame: field name -> all occurrences."""
    rows = tshark_fields(capture(name), FIELDS, "sdp", ("-E", "occurrence=a", "-E", f"aggregator={SEP}"))
    return tuple(
        {field: [v for v in value.split(SEP) if v] for field, value in zip(FIELDS, row, strict=True)}
        for row in rows
    )


def norm(address: str) -> str:
    return ipaddress.ip_address(address.strip("[]")).compressed


@pytest.mark.parametrize("capture", sorted(SDP_CAPTURES))
def test_every_sdp_body_matches_tshark(capture: str) -> None:
    rows = sdp_rows(capture)
    assert len(rows) == SDP_CAPTURES[capture]
    for row in rows:
        frame = row["frame.number"][0]
        payload = bytes.fromhex((row["udp.payload"] or row["tcp.payload"])[0])
        message = parse_sip(payload)
        assert message.content_type == "application/sdp", frame
        sd = parse_sdp(message.body)

        assert sd.origin_session_id == row["sdp.owner.sessionid"][0], frame
        assert sd.origin_version == int(row["sdp.owner.version"][0]), frame
        assert sd.origin_address == norm(row["sdp.owner.address"][0]), frame

        addresses = [norm(a) for a in row["sdp.connection_info.address"]]
        assert sd.connection is None or sd.connection in addresses, frame
        assert len(sd.media) == len(row["sdp.media"]) == 1, frame
        media = sd.media[0]
        assert media.connection == addresses[-1], frame

        kind, port, proto, *formats = row["sdp.media"][0].split()
        assert (media.media, media.port, media.port_count, media.proto) == (kind, int(port), 1, proto), frame
        assert media.formats == [int(f) for f in formats], frame

        direction = "sendrecv"
        for attr in row["sdp.session_attr"] + row["sdp.media_attr"]:
            if attr in ("sendrecv", "sendonly", "recvonly", "inactive"):
                direction = attr
        assert media.direction == direction, frame
        assert media.effective_direction == direction, frame

        mapped = set()
        for attr in row["sdp.media_attr"]:
            name, _, value = attr.partition(":")
            if name == "rtpmap":
                pt, spec = value.split(" ", 1)
                encoding, rate, *channels = spec.split("/")
                expected = Rtpmap(encoding.upper(), int(rate), int(channels[0]) if channels else 1)
                assert media.rtpmap[int(pt)] == expected, frame
                mapped.add(int(pt))
            elif name == "fmtp":
                pt, params = value.split(" ", 1)
                assert media.fmtp[int(pt)] == params, frame
            elif name == "ptime":
                assert media.ptime == int(value), frame
        for fmt in media.formats:
            if fmt not in mapped and fmt < 96:
                assert media.rtpmap[fmt].clock_rate > 0, (frame, fmt)
        assert audio_media(sd) == [media]


def sdp(*lines: str, eol: str = "\r\n") -> bytes:
    head = ["v=0", "o=- 1 2 IN IP4 192.0.2.1", "s=-", "t=0 0"]
    return (eol.join(head + list(lines)) + eol).encode()


def one(*lines: str) -> MediaDescription:
    [media] = parse_sdp(sdp(*lines)).media
    return media


def test_basic_offer() -> None:
    sd = parse_sdp(sdp(
        "c=IN IP4 192.0.2.10",
        "m=audio 49170 RTP/AVP 0 8 9 101 13",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-15",
        "a=ptime:20",
    ))
    assert (sd.origin_session_id, sd.origin_version, sd.origin_address) == ("1", 2, "192.0.2.1")
    assert sd.connection == "192.0.2.10"
    [media] = sd.media
    assert media == MediaDescription(
        media="audio",
        port=49170,
        port_count=1,
        proto="RTP/AVP",
        formats=[0, 8, 9, 101, 13],
        connection="192.0.2.10",
        rtcp_port=None,
        direction="sendrecv",
        ptime=20,
        rtpmap={
            101: Rtpmap("TELEPHONE-EVENT", 8000),
            0: Rtpmap("PCMU", 8000),
            8: Rtpmap("PCMA", 8000),
            9: Rtpmap("G722", 8000),
            13: Rtpmap("CN", 8000),
        },
        fmtp={101: "0-15"},
    )
    assert not media.is_hold


@pytest.mark.parametrize(
    ("pt", "expected"),
    [(0, Rtpmap("PCMU", 8000)), (3, Rtpmap("GSM", 8000)), (4, Rtpmap("G723", 8000)), (8, Rtpmap("PCMA", 8000)),
     (9, Rtpmap("G722", 8000)), (13, Rtpmap("CN", 8000)), (18, Rtpmap("G729", 8000)),
     (10, Rtpmap("L16", 44100, 2))],
)
def test_static_payload_defaults(pt: int, expected: Rtpmap) -> None:
    assert one("c=IN IP4 192.0.2.1", f"m=audio 4000 RTP/AVP {pt}").rtpmap == {pt: expected}


def test_explicit_rtpmap_wins_over_static_and_unknown_static_stays_unmapped() -> None:
    media = one("c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0 2 96", "a=rtpmap:0 pcmu/8000/1",
                "a=rtpmap:96 opus/48000/2", "a=rtpmap:96 ignored/1")
    assert media.rtpmap == {0: Rtpmap("PCMU", 8000), 96: Rtpmap("OPUS", 48000, 2)}


def test_malformed_attributes_are_ignored() -> None:
    media = one(
        "c=IN IP4 192.0.2.1",
        "m=audio 4000 RTP/AVP 96 97",
        "a=rtpmap:96",
        "a=rtpmap:x PCMU/8000",
        "a=rtpmap:200 PCMU/8000",
        "a=rtpmap:97 PCMU/fast",
        "a=rtpmap:97 /8000",
        "a=rtpmap:97 X/8000/0",
        "a=fmtp:abc x",
        "a=rtcp:port",
        "a=ptime:20.5",
        "a=ptime:0",
        "a=unknown-attribute",
        "x=unknown line type",
        "garbage without equals",
        "",
    )
    assert media.rtpmap == {} and media.fmtp == {} and media.rtcp_port is None and media.ptime is None


def test_non_numeric_and_out_of_range_formats_are_ignored() -> None:
    media = one("c=IN IP4 192.0.2.1", "m=application 9 UDP/DTLS/SCTP webrtc-datachannel 128 1000 5")
    assert media.media == "application" and media.formats == [5]


def test_rtcp_attribute() -> None:
    assert one("c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0", "a=rtcp:4005").rtcp_port == 4005
    assert one("c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0", "a=rtcp:53020 IN IP4 126.16.64.4").rtcp_port == 53020
    assert one("c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0", "a=rtcp:70000").rtcp_port is None


def test_session_and_media_level_connection() -> None:
    sd = parse_sdp(sdp(
        "c=IN IP4 192.0.2.1",
        "c=IN IP4 192.0.2.2",
        "m=audio 4000 RTP/AVP 0",
        "m=audio 4002 RTP/AVP 8",
        "c=IN IP4 198.51.100.7/127/2",
        "c=IN IP4 198.51.100.9",
    ))
    assert sd.connection == "192.0.2.1"
    assert [m.connection for m in sd.media] == ["192.0.2.1", "198.51.100.7"]


def test_no_connection_at_all() -> None:
    sd = parse_sdp(sdp("m=audio 4000 RTP/AVP 0"))
    assert sd.connection is None and sd.media[0].connection is None


def test_media_level_connection_only() -> None:
    sd = parse_sdp(sdp("m=audio 4000 RTP/AVP 0", "c=IN IP4 192.0.2.5", "m=video 5000 RTP/AVP 31"))
    assert sd.connection is None
    assert [m.connection for m in sd.media] == ["192.0.2.5", None]
    assert [m.media for m in audio_media(sd)] == ["audio"]


def test_ipv6_and_hostnames() -> None:
    sd = parse_sdp(sdp("c=IN IP6 FD17:625c:f037:2:0a00:27ff:feb9:4334", "m=audio 4000 RTP/AVP 0")
                   .replace(b"IN IP4 192.0.2.1", b"IN IP6 [2001:DB8::1]"))
    assert sd.origin_address == "2001:db8::1"
    assert sd.media[0].connection == "fd17:625c:f037:2:a00:27ff:feb9:4334"
    assert one("c=IN IP4 Media.Example.COM", "m=audio 4000 RTP/AVP 0").connection == "media.example.com"
    assert one("c=IN IP6 [::1]", "m=audio 4000 RTP/AVP 0").connection == "::1"


@pytest.mark.parametrize(
    ("lines", "direction", "effective", "hold"),
    [
        (["c=IN IP4 0.0.0.0", "m=audio 4000 RTP/AVP 0"], "sendrecv", "inactive", True),
        (["c=IN IP6 ::", "m=audio 4000 RTP/AVP 0"], "sendrecv", "inactive", True),
        (
            ["c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0", "c=IN IP4 0.0.0.0", "a=sendonly"],
            "sendonly",
            "inactive",
            True,
        ),
        (["c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0", "a=sendonly"], "sendonly", "sendonly", False),
        (["c=IN IP4 192.0.2.1", "m=audio 4000 RTP/AVP 0", "a=inactive"], "inactive", "inactive", False),
        (["c=IN IP4 192.0.2.1", "a=recvonly", "m=audio 4000 RTP/AVP 0"], "recvonly", "recvonly", False),
        (["c=IN IP4 192.0.2.1", "a=inactive", "m=audio 4000 RTP/AVP 0", "a=sendrecv"], "sendrecv", "sendrecv", False),
        (["c=IN IP4 192.0.2.1", "m=audio 0 RTP/AVP 0"], "sendrecv", "inactive", False),
    ],
)
def test_direction_and_hold(lines: list[str], direction: str, effective: str, hold: bool) -> None:
    media = one(*lines)
    assert (media.direction, media.effective_direction, media.is_hold) == (direction, effective, hold)


def test_session_direction_applies_to_sections_without_their_own() -> None:
    sd = parse_sdp(sdp("c=IN IP4 192.0.2.1", "a=sendonly", "m=audio 4000 RTP/AVP 0", "m=audio 4002 RTP/AVP 0",
                       "a=recvonly"))
    assert [m.direction for m in sd.media] == ["sendonly", "recvonly"]


def test_attributes_before_first_m_line_are_not_media_attributes() -> None:
    media = one("a=rtpmap:96 OPUS/48000/2", "a=ptime:30", "m=audio 4000 RTP/AVP 96")
    assert media.rtpmap == {} and media.ptime is None


def test_port_count() -> None:
    media = one("c=IN IP4 192.0.2.1", "m=audio 49170/2 RTP/AVP 0")
    assert (media.port, media.port_count) == (49170, 2)


def test_lf_only_and_trailing_spaces() -> None:
    body = sdp("c=IN IP4 192.0.2.1  ", "m=audio 4000 RTP/AVP 0 8 \t", "a=sendonly ", eol="\n")
    media = parse_sdp(body.replace(b"v=0", b"v=0  ")).media[0]
    assert (media.connection, media.formats, media.direction) == ("192.0.2.1", [0, 8], "sendonly")


def test_bytes_like_input() -> None:
    body = sdp("m=audio 4000 RTP/AVP 0")
    assert parse_sdp(bytearray(body)) == parse_sdp(memoryview(body)) == parse_sdp(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\r\nv=0\r\n",
        b"v=1\r\no=- 1 1 IN IP4 192.0.2.1\r\n",
        b"--boundary\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n",
        b"<html></html>",
        b"v=0\r\ns=-\r\n",
        b"v=0\r\nm=audio 4000 RTP/AVP 0\r\no=- 1 1 IN IP4 192.0.2.1\r\n",
        b"v=0\r\no=- 1 x IN IP4 192.0.2.1\r\n",
        b"v=0\r\no=- 1\r\n",
    ],
)
def test_not_sdp(body: bytes) -> None:
    with pytest.raises(SdpParseError):
        parse_sdp(body)


@pytest.mark.parametrize(
    "line",
    ["m=audio", "m=audio 4000", "m=audio x RTP/AVP 0", "m=audio 70000 RTP/AVP 0", "m=audio 4000/0 RTP/AVP 0",
     "m=audio 4000/x RTP/AVP 0", "m=audio -1 RTP/AVP 0", "c=IN IP4", "c=ATM NSAP 47.0091", "c=IN IP4 bad!host",
     "c=IN IP4 /127"],
)
def test_malformed_m_and_c_lines(line: str) -> None:
    with pytest.raises(SdpParseError):
        parse_sdp(sdp(line, "m=audio 4000 RTP/AVP 0"))


def test_unusable_origin_address_is_none() -> None:
    assert parse_sdp(b"v=0\r\no=- 1 1 IN IP4 bad!addr\r\n").origin_address is None
    assert parse_sdp(b"v=0\r\no=- 1 1\r\n").origin_address is None


def test_bounds() -> None:
    many = [f"m=audio {4000 + 2 * i} RTP/AVP 0" for i in range(MAX_MEDIA)]
    assert len(parse_sdp(sdp("c=IN IP4 192.0.2.1", *many)).media) == MAX_MEDIA
    with pytest.raises(SdpParseError, match="too many"):
        parse_sdp(sdp("c=IN IP4 192.0.2.1", *many, "m=audio 9 RTP/AVP 0"))
    body = sdp("m=audio 4000 RTP/AVP 0")
    padded = body + b"a=x:" + b"y" * (MAX_SDP - len(body) - 6) + b"\r\n"
    assert len(padded) == MAX_SDP and parse_sdp(padded).media
    with pytest.raises(SdpParseError, match="64 KiB"):
        parse_sdp(padded + b"\n")
    with pytest.raises(SdpParseError):
        parse_sdp("v=0")  # type: ignore[arg-type]


def test_rtpmap_is_immutable_so_shared_defaults_stay_correct() -> None:
    media = one("m=audio 4000 RTP/AVP 0")
    with pytest.raises(AttributeError):
        media.rtpmap[0].encoding = "PCMA"  # type: ignore[misc]
    assert one("m=audio 4000 RTP/AVP 0").rtpmap[0].encoding == "PCMU"
