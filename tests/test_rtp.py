from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wire.rtp import (
    EVENT_NAMES,
    RtpPacket,
    TelephoneEvent,
    parse_rtp,
    parse_rtp_fast,
    parse_telephone_event,
    serialize_rtp,
)
from tests.interop import DISSECTED_RTP, HEURISTIC_RTP, capture, tshark_fields

def header(
    b0: int = 0x80, b1: int = 0, seq: int = 1, ts: int = 2, ssrc: int = 3
) -> bytes:
    return struct.pack("!BBHII", b0, b1, seq, ts, ssrc)


def test_plain_packet() -> None:
    pkt = parse_rtp(header(0x80, 0x80 | 8, 65535, 0xFFFFFFFF, 0xDEADBEEF) + b"abc")
    assert pkt == RtpPacket(8, True, 65535, 0xFFFFFFFF, 0xDEADBEEF, b"abc")
    assert parse_rtp_fast(
        header(0x80, 0x80 | 8, 65535, 0xFFFFFFFF, 0xDEADBEEF) + b"abc"
    ) == (
        8,
        True,
        65535,
        0xFFFFFFFF,
        0xDEADBEEF,
        b"abc",
    )


def test_csrc_extension_and_padding() -> None:
    data = (
        header(0x80 | 0x20 | 0x10 | 2, 0)
        + struct.pack("!II", 11, 12)
        + struct.pack("!HH", 0xBEDE, 1)
        + b"\x10\x20\x30\x40"
        + b"payload"
        + b"\x00\x00\x03"
    )
    pkt = parse_rtp(data)
    assert pkt is not None
    assert pkt.csrc == (11, 12)
    assert pkt.extension_profile == 0xBEDE
    assert pkt.extension == b"\x10\x20\x30\x40"
    assert pkt.payload == b"payload"
    assert pkt.padding_size == 3
    assert serialize_rtp(pkt) == data
    assert parse_rtp_fast(data) == (0, False, 1, 2, 3, b"payload")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        header()[:11],
        header(0x00),
        header(0x40),
        header(0xC0),
        header(0x80 | 3) + b"\x00" * 8,  # 3 CSRCs announced, 2 present
        header(0x90) + b"\x00\x01",  # extension header cut short
        header(0x90)
        + struct.pack("!HH", 1, 2)
        + b"\x00" * 7,  # extension data cut short
        header(0xA0) + b"ab\x00",  # padding count 0
        header(0xA0) + b"ab\x04",  # padding longer than the payload
        header(0xA0),  # padding bit, no room for the count
    ],
)
def test_malformed_packets_are_rejected(data: bytes) -> None:
    assert parse_rtp(data) is None
    assert parse_rtp_fast(data) is None


def test_padding_may_consume_the_whole_payload() -> None:
    pkt = parse_rtp(header(0xA0) + b"\x00\x00\x03")
    assert pkt is not None and pkt.payload == b"" and pkt.padding_size == 3


@st.composite
def packets(draw: st.DrawFn) -> RtpPacket:
    profile = draw(st.none() | st.integers(0, 0xFFFF))
    words = draw(st.integers(0, 10)) if profile is not None else 0
    return RtpPacket(
        payload_type=draw(st.integers(0, 127)),
        marker=draw(st.booleans()),
        sequence=draw(st.integers(0, 0xFFFF)),
        timestamp=draw(st.integers(0, 0xFFFFFFFF)),
        ssrc=draw(st.integers(0, 0xFFFFFFFF)),
        payload=draw(st.binary(max_size=300)),
        csrc=tuple(draw(st.lists(st.integers(0, 0xFFFFFFFF), max_size=15))),
        extension_profile=profile,
        extension=draw(st.binary(min_size=4 * words, max_size=4 * words)),
        padding_size=draw(st.integers(0, 255)),
    )


@given(packets())
def test_round_trip(pkt: RtpPacket) -> None:
    wire = serialize_rtp(pkt)
    assert parse_rtp(wire) == pkt
    assert parse_rtp_fast(wire) == (
        pkt.payload_type,
        pkt.marker,
        pkt.sequence,
        pkt.timestamp,
        pkt.ssrc,
        pkt.payload,
    )
    reparsed = parse_rtp(wire)
    assert reparsed is not None and serialize_rtp(reparsed) == wire


@given(st.binary(max_size=120))
def test_fuzz_never_raises_and_parsers_agree(data: bytes) -> None:
    full = parse_rtp(data)
    fast = parse_rtp_fast(data)
    if full is None:
        assert fast is None
    else:
        assert fast == (
            full.payload_type,
            full.marker,
            full.sequence,
            full.timestamp,
            full.ssrc,
            full.payload,
        )
        assert len(full.payload) <= len(data) - 12


@pytest.mark.parametrize(
    "pkt",
    [
        RtpPacket(128, False, 0, 0, 0, b""),
        RtpPacket(0, False, 65536, 0, 0, b""),
        RtpPacket(0, False, 0, 1 << 32, 0, b""),
        RtpPacket(0, False, 0, 0, 0, b"", csrc=tuple(range(16))),
        RtpPacket(0, False, 0, 0, 0, b"", extension_profile=1, extension=b"abc"),
        RtpPacket(0, False, 0, 0, 0, b"", extension=b"abcd"),
        RtpPacket(0, False, 0, 0, 0, b"", padding_size=256),
    ],
)
def test_serialize_rejects_unrepresentable_fields(pkt: RtpPacket) -> None:
    with pytest.raises(ValueError):
        serialize_rtp(pkt)


def test_telephone_event() -> None:
    assert parse_telephone_event(bytes([11, 0x80 | 10, 0x03, 0xC0])) == TelephoneEvent(
        11, True, 10, 960
    )
    assert parse_telephone_event(bytes([5, 0x3F, 0, 0])) == TelephoneEvent(
        5, False, 63, 0
    )
    assert parse_telephone_event(b"\x01\x02\x03") is None
    assert [EVENT_NAMES[n] for n in range(17)] == list("0123456789*#ABCD") + ["flash"]


RTP_FIELDS = ("rtp.p_type", "rtp.marker", "rtp.seq", "rtp.timestamp", "rtp.ssrc", "rtp.payload", "udp.payload")


@pytest.mark.parametrize(
    "name", ["SIP_DTMF2.pcap", "rtp-protocol.pcap", "sip-rtp-g722.pcap", "g711a.pcap"]
)
def test_parse_agrees_with_tshark(name: str) -> None:
    rows = tshark_fields(capture(name), RTP_FIELDS, DISSECTED_RTP, HEURISTIC_RTP)
    assert len(rows) > 200
    for pt, marker, seq, ts, ssrc, payload, udp in rows:
        fields = parse_rtp_fast(bytes.fromhex(udp))
        assert fields is not None
        assert fields[:5] == (
            int(pt),
            marker in ("1", "True"),
            int(seq),
            int(ts),
            int(ssrc, 16),
        )
        assert fields[5] == bytes.fromhex(payload.replace(":", ""))
