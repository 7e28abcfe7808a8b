"""Fuzz tests: on random and mutated input the SIP/SDP parsers raise only their documented
exception, stay within their buffer bounds and finish quickly."""

from __future__ import annotations

import contextlib
import functools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wire.sdp import SdpParseError, SessionDescription, parse_sdp
from wire.sip import (
    MAX_MESSAGE,
    NameAddr,
    SipMessage,
    SipParseError,
    SipStreamFramer,
    SipUri,
    looks_like_sip,
    parse_name_addr,
    parse_sip,
    parse_uri,
)
from tests.interop import capture, tshark_fields

FUZZ = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SDP_SEED = (
    b"v=0\r\no=- 20518 0 IN IP4 203.0.113.1\r\ns=-\r\nc=IN IP4 203.0.113.1\r\nt=0 0\r\n"
    b"m=audio 54400 RTP/AVP 0 8 96 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\na=rtcp:54401\r\na=ptime:20\r\na=sendrecv\r\n"
    b"m=video 0 RTP/AVP 31\r\nc=IN IP6 2001:db8::2\r\na=inactive\r\n"
)
SIP_SEEDS = [
    b"INVITE sip:+15551234@pbx.example.com;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 203.0.113.1:5060;branch=z9hG4bK-1;rport, SIP/2.0/TCP [2001:db8::1];branch=z9hG4bK-0\r\n"
    b'From: "Caller \\"X\\"" <sip:alice@example.com>;tag=a1\r\n'
    b"To: <tel:+1-555-1234>\r\n"
    b"Call-ID: fuzz-1@203.0.113.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b'Contact: "A, B" <sip:alice@203.0.113.1:5060;transport=udp>;expires=60, <sip:x@y>\r\n'
    b"Diversion: <sip:100@pbx.example.com>;reason=unconditional;counter=1\r\n"
    b"Subject: folded\r\n  continuation\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP_SEED)).encode() + b"\r\n\r\n" + SDP_SEED,
    b"SIP/2.0 200 OK\nv: SIP/2.0/UDP 203.0.113.1;branch=z9hG4bK-1\nf: sip:alice@example.com;tag=a1\n"
    b"t: <sip:bob@example.com>;tag=b2\ni: fuzz-1@203.0.113.1\nCSeq: 1 INVITE\nl: 0\n\n",
    b"BYE sip:alice@203.0.113.1 SIP/2.0\r\nFrom: <sip:anonymous@anonymous.invalid>;tag=q\r\n"
    b"To: Alice <sip:alice@example.com>;tag=a1\r\nCall-ID: fuzz-1@203.0.113.1\r\nCSeq: 2 BYE\r\n\r\n",
]
NAME_ADDR_ALPHABET = 'abc019+-.%@:;,=<>"\\ \t[]?&*#()sipteSIPTE\x00\x7f\u00e9'


@functools.cache
def capture_messages() -> tuple[bytes, ...]:
    """The SIP datagrams of a few shared captures, as seeds for mutation."""
    seeds = []
    for name in ("rtp-protocol.pcap", "ipv6frag.pcap", "b2bua-asterisk.pcapng"):
        rows = tshark_fields(capture(name), ("udp.payload",), "sip && udp")
        seeds += [bytes.fromhex(payload) for payload, in rows if payload]
    assert len(seeds) > 50
    return tuple(seeds)


@st.composite
def mutated(draw: st.DrawFn, seed: bytes) -> bytes:
    """seed with a few random byte-level edits: flips, inserts, deletions, duplications, cuts."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "truncate", "special"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif op == "duplicate":
            data[at:at] = data[at : at + draw(st.integers(1, 200))]
        elif op == "truncate":
            del data[at:]
        else:
            data[at:at] = draw(st.sampled_from([b"\r\n", b"\n", b"\r\n\r\n", b" ", b":", b";", b'"', b"<", b">",
                                                b",", b"\x00", b"\r", b"Content-Length: 99999\r\n", b"l: 5\n",
                                                b"\xff\xfe", b"SIP/2.0 200 OK\r\n"]))
    return bytes(data)


def exercise(message: SipMessage) -> None:
    """Every accessor must work on whatever parse_sip accepted."""
    assert isinstance(message.body, bytes)
    assert message.call_id
    number, method = message.cseq
    assert 0 <= number <= 0x7FFFFFFF and method
    for accessor in ("from_tag", "to_tag", "branch", "content_type"):
        value = getattr(message, accessor)
        assert value is None or isinstance(value, str)
    for name, value in message.headers:
        assert name == name.lower() and "\r" not in value and "\n" not in value and "\x00" not in value
        message.header_values(name)
        try_name_addr(value)
    if message.body:
        try_sdp(message.body)


def try_name_addr(value: str) -> None:
    try:
        result = parse_name_addr(value)
    except SipParseError:
        return
    assert isinstance(result, NameAddr) and isinstance(result.uri, SipUri)


def try_sdp(body: bytes) -> None:
    try:
        result = parse_sdp(body)
    except SdpParseError:
        return
    assert isinstance(result, SessionDescription)
    for media in result.media:
        assert 0 <= media.port <= 65535 and all(0 <= pt <= 127 for pt in media.formats)
        assert media.effective_direction in ("sendrecv", "sendonly", "recvonly", "inactive")


def try_sip(data: bytes) -> None:
    looks_like_sip(data)
    try:
        message = parse_sip(data)
    except SipParseError as exc:
        assert len(str(exc)) < 120
        return
    exercise(message)


@FUZZ
@given(st.binary(max_size=4096))
def test_parse_sip_random_bytes(data: bytes) -> None:
    try_sip(data)


@FUZZ
@given(st.sampled_from(SIP_SEEDS).flatmap(mutated))
def test_parse_sip_mutated_seeds(data: bytes) -> None:
    try_sip(data)


@FUZZ
@given(st.data())
def test_parse_sip_mutated_capture_messages(data: st.DataObject) -> None:
    seed = data.draw(st.sampled_from(capture_messages()))
    try_sip(data.draw(mutated(seed)))


@FUZZ
@given(st.one_of(st.binary(max_size=2048), mutated(SDP_SEED)))
def test_parse_sdp_random_and_mutated(data: bytes) -> None:
    try_sdp(data)


@FUZZ
@given(st.one_of(st.text(max_size=300), st.text(alphabet=NAME_ADDR_ALPHABET, max_size=300)))
def test_parse_name_addr_and_uri_text(text: str) -> None:
    try_name_addr(text)
    with contextlib.suppress(SipParseError):
        parse_uri(text)


@FUZZ
@given(st.lists(st.sampled_from(SIP_SEEDS).flatmap(mutated), min_size=1, max_size=6), st.data())
def test_framer_random_chunks(messages: list[bytes], data: st.DataObject) -> None:
    stream = b"\r\n".join(messages)
    framer = SipStreamFramer()
    pos = 0
    while pos < len(stream):
        size = data.draw(st.integers(1, 512))
        for item in framer.feed(stream[pos : pos + size]):
            if isinstance(item, SipMessage):
                exercise(item)
            else:
                assert isinstance(item, SipParseError)
        assert framer.buffered <= MAX_MESSAGE
        pos += size


@FUZZ
@given(st.data())
def test_framer_mutated_capture_stream(data: st.DataObject) -> None:
    seeds = capture_messages()
    messages = data.draw(st.lists(st.sampled_from(seeds).flatmap(mutated), min_size=1, max_size=6))
    framer = SipStreamFramer()
    for item in framer.feed(b"".join(messages)):
        if isinstance(item, SipMessage):
            exercise(item)
        else:
            assert isinstance(item, SipParseError)
    assert framer.buffered <= MAX_MESSAGE


@FUZZ
@given(st.lists(st.sampled_from(SIP_SEEDS[:1] + SIP_SEEDS[2:]), min_size=1, max_size=5), st.data())
def test_framer_chunking_does_not_change_result(messages: list[bytes], data: st.DataObject) -> None:
    stream = b"\r\n".join(messages)
    whole = SipStreamFramer().feed(stream)
    assert [m.call_id for m in whole if isinstance(m, SipMessage)] == ["fuzz-1@203.0.113.1"] * len(messages)
    framer = SipStreamFramer()
    pieces: list[SipMessage | SipParseError] = []
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        pieces += framer.feed(stream[start:end])
    assert [(m.cseq, m.headers, m.body) for m in pieces if isinstance(m, SipMessage)] == [
        (m.cseq, m.headers, m.body) for m in whole if isinstance(m, SipMessage)
    ]
    assert framer.buffered == 0


@FUZZ
@given(st.binary(min_size=1, max_size=3000), st.integers(1, 700))
def test_framer_random_bytes_stay_bounded(garbage: bytes, chunk: int) -> None:
    framer = SipStreamFramer()
    for pos in range(0, len(garbage), chunk):
        for item in framer.feed(garbage[pos : pos + chunk]):
            assert isinstance(item, (SipMessage, SipParseError))
        assert framer.buffered <= MAX_MESSAGE


@FUZZ
@given(st.binary(max_size=3000), st.integers(1, 700))
def test_framer_recovers_after_garbage_line(garbage: bytes, chunk: int) -> None:
    line = b"\x00" + garbage.replace(b"\n", b"") + b"\r\n"
    framer = SipStreamFramer()
    out: list[SipMessage | SipParseError] = []
    for pos in range(0, len(line), chunk):
        out += framer.feed(line[pos : pos + chunk])
    out += framer.feed(SIP_SEEDS[1])
    assert len(out) == 2 and isinstance(out[0], SipParseError)
    assert isinstance(out[1], SipMessage) and out[1].status == 200
    assert framer.buffered == 0
