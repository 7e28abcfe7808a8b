"""The SIP parser against RFC 4475's parser tests (§3.1), byte for byte as the RFC publishes
them (tests/data/rfc4475/README.md says where they come from): every valid message parses, as
a datagram and from a TCP stream, and no invalid one raises anything but SipParseError,
whether it is parsed alone or fed to the recorder in a call's place."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from policy.decide import PolicyDecider
from policy.loader import parse_policy
from recorder.engine import Recorder
from tests.builders import PBX, TRUNK, sdp, sip, udp_frame
from tests.call_frames import POLICY, T0, bye, media, signalling
from tests.memory_sink import MemorySink
from wire.sip import (
    SipMessage,
    SipParseError,
    SipStreamFramer,
    parse_name_addr,
    parse_sip,
    parse_uri,
    split_header_list,
)

DATA = Path(__file__).resolve().parent / "data" / "rfc4475"

VALID = {
    "3.1.1.1": "wsinv", "3.1.1.2": "intmeth", "3.1.1.3": "esc01", "3.1.1.4": "escnull",
    "3.1.1.5": "esc02", "3.1.1.6": "lwsdisp", "3.1.1.7": "longreq", "3.1.1.8": "dblreq",
    "3.1.1.9": "semiuri", "3.1.1.10": "transports", "3.1.1.11": "mpart01", "3.1.1.12": "unreason",
    "3.1.1.13": "noreason",
}
INVALID = {
    "3.1.2.1": "badinv01", "3.1.2.2": "clerr", "3.1.2.3": "ncl", "3.1.2.4": "scalar02",
    "3.1.2.5": "scalarlg", "3.1.2.6": "quotbal", "3.1.2.7": "ltgtruri", "3.1.2.8": "lwsruri",
    "3.1.2.9": "lwsstart", "3.1.2.10": "trws", "3.1.2.11": "escruri", "3.1.2.12": "baddate",
    "3.1.2.13": "regbadct", "3.1.2.14": "badaspec", "3.1.2.15": "baddn", "3.1.2.16": "badvers",
    "3.1.2.17": "mismatch01", "3.1.2.18": "mismatch02", "3.1.2.19": "bigcode",
}

START: dict[str, str | int] = {
    "wsinv": "INVITE", "intmeth": "!interesting-Method0123456789_*+`.%indeed'~", "esc01": "INVITE",
    "escnull": "REGISTER", "esc02": "RE%47IST%45R", "lwsdisp": "OPTIONS", "longreq": "INVITE",
    "dblreq": "REGISTER", "semiuri": "OPTIONS", "transports": "OPTIONS", "mpart01": "MESSAGE",
    "unreason": 200, "noreason": 100,
}
"""Method or status code of each valid message, as the RFC's text of it says."""


def message(name: str) -> bytes:
    return (DATA / f"{name}.dat").read_bytes()


def exercise(msg: SipMessage) -> None:
    """What the call tracker asks of a message, each step either a value or SipParseError."""
    for step in (lambda: msg.cseq, lambda: msg.from_tag, lambda: msg.to_tag, lambda: msg.branch,
                 lambda: msg.content_type):
        try:
            step()
        except SipParseError:
            pass
    for name, value in msg.headers:
        msg.header_values(name)
        split_header_list(value)
        if name in ("from", "to", "contact", "p-asserted-identity", "diversion"):
            try:
                parse_name_addr(value)
            except SipParseError:
                pass
    if msg.request_uri is not None:
        try:
            parse_uri(msg.request_uri)
        except SipParseError:
            pass


def test_the_messages_are_the_rfc_archive_bytes() -> None:
    """A text editor or a git setting that rewrites line ends would quietly weaken every test
    below; the digests were taken from the RFC's archive."""
    pinned = dict(reversed(line.split("  ")) for line in (DATA / "SHA256SUMS").read_text().splitlines())
    assert sorted(pinned) == sorted(f"{name}.dat" for name in (*VALID.values(), *INVALID.values()))
    for name, digest in pinned.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, name


@pytest.mark.parametrize("name", VALID.values(), ids=VALID.keys())
def test_every_valid_message_parses(name: str) -> None:
    msg = parse_sip(message(name))
    length = msg.header("content-length")
    assert length is not None and len(msg.body) == int(length)
    assert (msg.method or msg.status) == START[name]
    exercise(msg)


@pytest.mark.parametrize("name", VALID.values(), ids=VALID.keys())
def test_every_valid_message_comes_whole_out_of_a_tcp_stream(name: str) -> None:
    """3.1.1.8 is a REGISTER whose datagram carries more after it: in a stream that is an
    INVITE, whose SDP ends 5 bytes past its Content-Length, and those 5 bytes are garbage."""
    out = SipStreamFramer().feed(message(name))
    if name == "dblreq":
        assert [type(item) for item in out] == [SipMessage, SipMessage, SipParseError]
        assert [item.method for item in out[:2]] == ["REGISTER", "INVITE"]  # type: ignore[union-attr]
    else:
        assert [type(item) for item in out] == [SipMessage]
    assert out[0].headers == parse_sip(message(name)).headers  # type: ignore[union-attr]


def test_escaped_control_characters_in_a_display_name_are_kept_as_replacement_characters() -> None:
    """3.1.1.2: BEL, NUL and DEL escaped inside the To header field's quoted string, the one
    place the grammar lets a control character in; everything handed on stays printable."""
    msg = parse_sip(message("intmeth"))
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.cseq == (139122385, msg.method)
    to = parse_name_addr(msg.header("to") or "")
    assert to.display == "BEL:\ufffd NUL:\ufffd DEL:\ufffd"
    assert to.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*" and to.uri.host == "example.com"
    assert parse_uri(msg.request_uri or "").user == to.uri.user
    sender = parse_name_addr(msg.header("from") or "")
    assert sender.display == "token1~` token2'+_ token3*%!.-"
    assert sender.params["fromparam''~+*_!.-%"] == "работающий" and msg.from_tag == "_token~1'+`*%!-."
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.header("extensionheader-!.%*+_`'~") == "\ufeff大停電"
    for _, value in msg.headers:
        assert not any(ord(ch) < 0x20 and ch != "\t" or ch == "\x7f" for ch in value)


def test_an_escaped_nul_in_a_user_part_leaves_the_message_whole_and_the_number_unknown() -> None:
    """3.1.1.4: the message parses; a user part that decodes to a NUL is no number, so the
    URI is refused where a number is read from it, rather than handed on with a NUL in it."""
    msg = parse_sip(message("escnull"))
    assert msg.method == "REGISTER" and msg.from_tag == "839923423"
    assert msg.header_values("contact") == ["<sip:%00@host5.example.com>", "<sip:%00%00@host5.example.com>"]
    with pytest.raises(SipParseError, match="user part"):
        parse_name_addr(msg.header("from") or "")


@pytest.mark.parametrize(
    "display",
    [
        pytest.param(b'"a\x01"', id="control not escaped"),
        pytest.param(b'"a\\\\\x01"', id="control after an escaped backslash"),
        pytest.param(b"a\\\x01", id="escaped control outside a quoted string"),
        pytest.param(b'"a\\\r"', id="escaped bare CR"),
    ],
)
def test_control_characters_anywhere_else_are_still_refused(display: bytes) -> None:
    data = (b"INVITE sip:b@example.com SIP/2.0\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: " + display
            + b" <sip:b@example.com>\r\nCall-ID: c@x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(SipParseError, match="control character"):
        parse_sip(data)


def test_escaped_control_characters_among_a_flood_of_quoting_are_refused_unread() -> None:
    """The search for quoted-pairs runs only where a control character is; a header section
    that quotes hundreds of times besides is refused before it, so that it costs no more than
    any other message of its size (the same quoting without a control character parses)."""
    quoting = "X-Q: " + '"a\\"b" ' * 200
    head = ("INVITE sip:b@example.com SIP/2.0\r\nFrom: <sip:a@example.com>;tag=1\r\n"
            "Call-ID: c@x\r\nCSeq: 1 INVITE\r\n" + quoting + "\r\n")
    with pytest.raises(SipParseError, match="control character"):
        parse_sip((head + 'To: "\\\x07" <sip:b@example.com>\r\n\r\n').encode())
    assert parse_sip((head + "To: <sip:b@example.com>\r\n\r\n").encode()).header("x-q") == quoting[5:].strip()


def test_a_start_line_with_an_escaped_control_character_is_refused() -> None:
    data = b'INVITE sip:"\\\x07"@example.com SIP/2.0\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n'
    with pytest.raises(SipParseError, match="control character"):
        parse_sip(data)


def test_a_quoted_string_across_a_folded_line_keeps_its_escapes() -> None:
    data = (b'OPTIONS sip:b@example.com SIP/2.0\r\nFrom: "first\r\n line \\\x00" <sip:a@example.com>;tag=1\r\n'
            b"To: <sip:b@example.com>\r\nCall-ID: c@x\r\nCSeq: 1 OPTIONS\r\n\r\n")
    assert parse_name_addr(parse_sip(data).header("from") or "").display == "first line \ufffd"


@pytest.mark.parametrize("name", INVALID.values(), ids=INVALID.keys())
def test_no_invalid_message_raises_anything_but_a_parse_error(name: str) -> None:
    try:
        msg = parse_sip(message(name))
    except SipParseError:
        pass
    else:
        exercise(msg)
    for item in SipStreamFramer().feed(message(name)):
        if isinstance(item, SipMessage):
            exercise(item)


def test_the_recorder_takes_every_rfc_message_in_its_stride() -> None:
    """All 32 messages on the signalling port in the middle of a call: the call is recorded
    as if they had not been there, and they are counted, not raised."""
    torture = [(T0 + 0.5 + n * 0.01, udp_frame(TRUNK, 5060, PBX, 5060, message(name), ident=n))
               for n, name in enumerate((*VALID.values(), *INVALID.values()))]
    up, _ = media(T0 + 1.05, 2, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    frames = sorted(signalling() + torture + up + bye(T0 + 4), key=lambda f: f[0])
    sink = MemorySink()
    recorder = Recorder(PolicyDecider(parse_policy(POLICY)), sink)
    recorder.feed_frames((ts, 1, frame) for ts, frame in frames)
    recorder.finish()
    [rec] = sink.recordings
    assert rec.result is not None and rec.result.call.complete
    assert recorder.counters()["sip_malformed"] > 0


def test_a_call_whose_display_name_escapes_control_characters_is_recorded() -> None:
    """The call behind 3.1.1.2's refusal: the trunk sends the caller's name with an escaped
    BEL in it, and the call was lost because its INVITE was refused."""
    kw = {"call_id": "c1@x", "callee": "0263111111", "caller": "0312345678"}
    messages = [
        (T0, TRUNK, PBX, sip(f"INVITE sip:0263111111@{PBX} SIP/2.0", cseq="1 INVITE", body=sdp(TRUNK, 20000), **kw)),
        (T0 + 1, PBX, TRUNK, sip("SIP/2.0 200 OK", cseq="1 INVITE", to_tag="t1", body=sdp(PBX, 40000), **kw)),
        (T0 + 1.01, TRUNK, PBX, sip(f"ACK sip:0263111111@{PBX} SIP/2.0", cseq="1 ACK", to_tag="t1", **kw)),
    ]
    named = [(ts, udp_frame(src, 5060, dst, 5060, data.replace(b"From: <sip:", b'From: "Caller \\\x07" <sip:')))
             for ts, src, dst, data in messages]
    up, _ = media(T0 + 1.05, 2, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    sink = MemorySink()
    recorder = Recorder(PolicyDecider(parse_policy(POLICY)), sink)
    recorder.feed_frames((ts, 1, frame) for ts, frame in sorted(named + up + bye(T0 + 4), key=lambda f: f[0]))
    recorder.finish()
    [rec] = sink.recordings
    assert rec.result is not None and rec.result.call.remote_number == "0312345678"
    assert recorder.counters()["sip_malformed"] == 0
