"""SIP parser tests: every SIP message in the shared captures cross-checked against tshark,
plus hand-written messages for the syntax corners the captures do not exercise."""

from __future__ import annotations

import functools
from collections import defaultdict

import pytest

from wire.sip import (
    MAX_HEADERS,
    MAX_LINE,
    MAX_MESSAGE,
    NameAddr,
    SipMessage,
    SipParseError,
    SipStreamFramer,
    SipUri,
    is_anonymous,
    looks_like_sip,
    parse_name_addr,
    parse_sip,
    parse_uri,
    split_header_list,
    uri_number,
)
from tests.interop import capture, tshark_fields

# SIP messages per capture as tshark 4.0 counts them (see captures/README.md); pinned so that a
# tshark that silently decodes nothing cannot make the cross-check vacuous.
UDP_SIP_CAPTURES = {
    "SIP_DTMF2.pcap": 29,
    "aaa.pcap": 81,
    "b2bua-asterisk.pcapng": 60,
    "ipv6frag.pcap": 32,
    "rtp-protocol.pcap": 9,
    "sip-rtp-g711.pcap": 10,
    "sip-rtp-g722.pcap": 6,
}


@functools.cache
def tshark(name: str, display_filter: str, fields: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """Rows of tshark field output (first occurrence of each field) for one capture."""
    rows = tshark_fields(capture(name), fields, display_filter, ("-E", "occurrence=f"))
    return tuple(tuple(row) for row in rows)


def build(
    start: str = "INVITE sip:bob@example.com SIP/2.0",
    headers: list[str] | None = None,
    body: bytes = b"",
    eol: bytes = b"\r\n",
    content_length: bool = True,
) -> bytes:
    if headers is None:
        headers = [
            "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc",
            'From: "Alice" <sip:alice@example.com>;tag=ft1',
            "To: <sip:bob@example.com>",
            "Call-ID: cid-1@192.0.2.1",
            "CSeq: 1 INVITE",
        ]
    lines = [start, *headers]
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return eol.join(line.encode() for line in lines) + eol + eol + body


# --- every SIP message in the captures -------------------------------------------------------

SIP_FIELDS = (
    "frame.number",
    "udp.payload",
    "sip.Method",
    "sip.Status-Code",
    "sip.r-uri",
    "sip.Call-ID",
    "sip.CSeq.seq",
    "sip.CSeq.method",
    "sip.from.tag",
    "sip.to.tag",
    "sip.Via.branch",
    "sip.Content-Length",
    "sip.from.user",
    "sip.to.user",
)


def check_against_tshark(message: SipMessage, row: dict[str, str]) -> None:
    frame = row["frame.number"]
    if row["sip.Method"]:
        assert message.is_request, frame
        assert message.method == row["sip.Method"], frame
        assert message.request_uri == row["sip.r-uri"], frame
        assert message.status is None
    else:
        assert not message.is_request, frame
        assert message.status == int(row["sip.Status-Code"]), frame
        assert message.method is None and message.request_uri is None
    assert message.call_id == row["sip.Call-ID"], frame
    assert message.cseq == (int(row["sip.CSeq.seq"]), row["sip.CSeq.method"]), frame
    assert message.from_tag == (row["sip.from.tag"] or None), frame
    assert message.to_tag == (row["sip.to.tag"] or None), frame
    assert message.branch == (row["sip.Via.branch"] or None), frame
    if row["sip.Content-Length"]:
        assert len(message.body) == int(row["sip.Content-Length"]), frame
    from_addr = parse_name_addr(message.header("from") or "")
    to_addr = parse_name_addr(message.header("to") or "")
    assert (from_addr.uri.user or "") == row["sip.from.user"], frame
    assert (to_addr.uri.user or "") == row["sip.to.user"], frame


@pytest.mark.parametrize("capture", sorted(UDP_SIP_CAPTURES))
def test_every_udp_sip_message_matches_tshark(capture: str) -> None:
    rows = [dict(zip(SIP_FIELDS, row, strict=True)) for row in tshark(capture, "sip && udp", SIP_FIELDS)]
    assert len(rows) == UDP_SIP_CAPTURES[capture]
    for row in rows:
        payload = bytes.fromhex(row["udp.payload"])
        assert looks_like_sip(payload), row["frame.number"]
        check_against_tshark(parse_sip(payload), row)


def test_rtp_capture_is_rejected_by_prefilter_and_parser() -> None:
    rows = tshark("g711a.pcap", "udp", ("udp.payload",))
    assert len(rows) == 236
    for (payload_hex,) in rows:
        payload = bytes.fromhex(payload_hex)
        assert 0x80 <= payload[0] <= 0xBF
        assert not looks_like_sip(payload)
        with pytest.raises(SipParseError):
            parse_sip(payload)


def tcp_directions() -> dict[tuple[str, str], bytes]:
    """The SIP-over-TCP capture's payload bytes, concatenated per direction in sequence order."""
    fields = ("ip.src", "tcp.srcport", "tcp.seq", "tcp.payload")
    segments = defaultdict(list)
    for src, port, seq, payload in tshark("sip-over-tcp.pcap", "tcp.len > 0", fields):
        segments[(src, port)].append((int(seq), bytes.fromhex(payload)))
    return {key: b"".join(data for _, data in sorted(parts)) for key, parts in segments.items()}


TCP_FIELDS = ("ip.src", "tcp.srcport", *SIP_FIELDS)


def test_sip_over_tcp_capture_frames_every_message() -> None:
    expected = defaultdict(list)
    for fields in tshark("sip-over-tcp.pcap", "sip", TCP_FIELDS):
        named = dict(zip(TCP_FIELDS, fields, strict=True))
        expected[(named["ip.src"], named["tcp.srcport"])].append(named)
    assert sum(len(rows) for rows in expected.values()) == 7
    streams = tcp_directions()
    assert streams.keys() == expected.keys()
    for key, stream in streams.items():
        framer = SipStreamFramer()
        out = framer.feed(stream)
        assert all(isinstance(item, SipMessage) for item in out)
        assert len(out) == len(expected[key])
        for message, row in zip(out, expected[key], strict=True):
            assert isinstance(message, SipMessage)
            check_against_tshark(message, row)
        assert framer.buffered == 0


def summary(items: list[SipMessage | SipParseError]) -> list[object]:
    """What must not depend on how the stream was chunked; errors appear as their text."""
    return [
        (item.cseq, item.status, item.headers, item.body) if isinstance(item, SipMessage) else str(item)
        for item in items
    ]


def test_sip_over_tcp_split_at_every_byte_position() -> None:
    for stream in tcp_directions().values():
        whole = summary(SipStreamFramer().feed(stream))
        assert len(whole) >= 3 and not any(isinstance(item, str) for item in whole)
        for cut in range(1, len(stream)):
            framer = SipStreamFramer()
            assert summary(framer.feed(stream[:cut]) + framer.feed(stream[cut:])) == whole, cut
            assert framer.buffered == 0
        framer = SipStreamFramer()
        bytewise: list[SipMessage | SipParseError] = []
        for i in range(len(stream)):
            bytewise += framer.feed(stream[i : i + 1])
        assert summary(bytewise) == whole


# --- start line --------------------------------------------------------------------------------


def test_request_fields_and_properties() -> None:
    msg = parse_sip(build(body=b"v=0\r\n", headers=[
        "Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKtop;rport, SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKlow",
        'From: "Alice" <sip:alice@example.com>;tag=ft1',
        "To: <sip:bob@example.com>;tag=tt2",
        "Call-ID: cid-1@192.0.2.1",
        "CSeq: 42 INVITE",
        "Content-Type: Application/SDP; charset=utf-8",
    ]))
    assert msg.method == "INVITE" and msg.request_uri == "sip:bob@example.com"
    assert msg.status is None and msg.reason is None and msg.is_request
    assert msg.call_id == "cid-1@192.0.2.1"
    assert msg.cseq == (42, "INVITE")
    assert msg.from_tag == "ft1" and msg.to_tag == "tt2"
    assert msg.branch == "z9hG4bKtop"
    assert msg.content_type == "application/sdp"
    assert msg.body == b"v=0\r\n"
    assert msg.header("CALL-ID") == msg.header("i") == "cid-1@192.0.2.1"
    assert msg.header("x-missing") is None and msg.header_values("x-missing") == []


def test_status_line() -> None:
    msg = parse_sip(build("SIP/2.0 183 Session Progress"))
    assert (msg.status, msg.reason, msg.method) == (183, "Session Progress", None)
    assert not msg.is_request
    assert parse_sip(build("sip/2.0 200 OK")).status == 200
    assert parse_sip(build("SIP/2.0 200 ")).reason == ""
    assert parse_sip(build("SIP/2.0 486")).reason == ""
    assert parse_sip(build("SIP/2.0 200 Très bien")).reason == "Très bien"


def test_request_line_version_is_case_insensitive_and_method_kept_verbatim() -> None:
    msg = parse_sip(build("FOO-BAR sip:x@y sip/2.0"))
    assert msg.method == "FOO-BAR"


@pytest.mark.parametrize(
    "start",
    [
        "SIP/2.0 20 OK",
        "SIP/2.0 2000 OK",
        "SIP/2.0 099 Low",
        "SIP/2.0 700 High",
        "SIP/2.0 2x0 OK",
        "SIP/2.0 \uff12\uff10\uff10 OK",
        "SIP/3.0 200 OK",
        "HTTP/1.1 200 OK",
        "INVITE sip:bob@example.com SIP/3.0",
        "INVITE sip:bob@example.com",
        "INVITE  sip:bob@example.com SIP/2.0",
        "INVITE sip:bob@example.com SIP/2.0 extra",
        "INV(TE sip:bob@example.com SIP/2.0",
        "INVITE bob SIP/2.0",
        "INVITE\tsip:bob@example.com SIP/2.0",
        "",
        " INVITE sip:bob@example.com SIP/2.0",
    ],
)
def test_bad_start_lines_are_rejected(start: str) -> None:
    with pytest.raises(SipParseError):
        parse_sip(build(start))


# --- header section ----------------------------------------------------------------------------


def test_compact_forms_are_expanded() -> None:
    msg = parse_sip(build(headers=[
        "v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKc",
        "f: <sip:a@example.com>;tag=f",
        "t: sip:b@example.com",
        "i: compact@example.com",
        "CSeq: 7 INVITE",
        "m: <sip:a@192.0.2.1>",
        "c: application/sdp",
        "k: timer",
        "s: hello",
        "e: gzip",
        "o: dialog",
        "r: <sip:c@example.com>",
        "b: <sip:a@example.com>",
        "u: talk",
        "x: 1800",
        "j: *;audio",
        "a: *;video",
        "d: proxy",
        "y: sig",
        "n: <https://example.com/cert>",
        "Q: unknown-compact",
    ], content_length=False))
    names = [name for name, _ in msg.headers]
    assert names == [
        "via", "from", "to", "call-id", "cseq", "contact", "content-type", "supported", "subject",
        "content-encoding", "event", "refer-to", "referred-by", "allow-events", "session-expires",
        "reject-contact", "accept-contact", "request-disposition", "identity", "identity-info", "q",
    ]
    assert msg.call_id == "compact@example.com" and msg.from_tag == "f" and msg.branch == "z9hG4bKc"
    assert msg.header("Session-Expires") == "1800"


def test_compact_content_length_trims_body() -> None:
    data = build(content_length=False).replace(b"\r\n\r\n", b"\r\nl: 3\r\n\r\nabcdef")
    assert parse_sip(data).body == b"abc"


def test_folded_headers_are_unfolded() -> None:
    msg = parse_sip(build(headers=[
        "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKf",
        "From: <sip:a@example.com>",
        "   ;tag=folded",
        "To: <sip:b@example.com>",
        "Call-ID: fold@example.com",
        "CSeq: 1",
        "\t INVITE",
        "Subject: I know you're there,",
        " pick up the phone",
        "\t and talk to me!",
        "X-Empty:",
        "  continued",
        "X-Blank: kept",
        " \t ",
    ]))
    assert msg.from_tag == "folded"
    assert msg.cseq == (1, "INVITE")
    assert msg.header("subject") == "I know you're there, pick up the phone and talk to me!"
    assert msg.header("x-empty") == "continued"
    assert msg.header("x-blank") == "kept"


def test_continuation_before_first_header_is_rejected() -> None:
    data = b"INVITE sip:b@example.com SIP/2.0\r\n folded\r\nCall-ID: x\r\n\r\n"
    with pytest.raises(SipParseError):
        parse_sip(data)


def test_multiple_headers_and_list_splitting() -> None:
    msg = parse_sip(build(headers=[
        "Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1, SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bK2",
        "Via: SIP/2.0/UDP 192.0.2.3;branch=z9hG4bK3",
        "From: <sip:a@example.com>;tag=1",
        "To: <sip:b@example.com>",
        "Call-ID: multi@example.com",
        "CSeq: 1 INVITE",
        'Contact: "Doe, John" <sip:john@192.0.2.4;a=1,2>;q=0.5, <sip:j@192.0.2.5>',
        "Record-Route: <sip:p1@example.com;lr>,<sip:p2@example.com;lr>",
        "Record-Route: <sip:p3@example.com;lr>",
        'WWW-Authenticate: Digest realm="example.com", nonce="abc", algorithm=MD5',
        "Date: Sat, 13 Nov 2010 23:29:00 GMT",
        "Allow: INVITE, ACK,,BYE ",
    ]))
    assert msg.header_values("via") == [
        "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
        "SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bK2",
        "SIP/2.0/UDP 192.0.2.3;branch=z9hG4bK3",
    ]
    assert msg.branch == "z9hG4bK1"
    assert msg.header_values("m") == ['"Doe, John" <sip:john@192.0.2.4;a=1,2>;q=0.5', "<sip:j@192.0.2.5>"]
    assert len(msg.header_values("record-route")) == 3
    assert msg.header_values("www-authenticate") == ['Digest realm="example.com", nonce="abc", algorithm=MD5']
    assert msg.header_values("date") == ["Sat, 13 Nov 2010 23:29:00 GMT"]
    assert msg.header_values("allow") == ["INVITE", "ACK", "BYE"]


def test_split_header_list_handles_escaped_quotes() -> None:
    assert split_header_list(r'"a \", b" <sip:x@y>, <sip:z@w>') == [r'"a \", b" <sip:x@y>', "<sip:z@w>"]
    assert split_header_list(" , ") == []


def test_uri_parameters_and_headers_without_names_are_skipped() -> None:
    uri = parse_uri("sip:a@b;;=x;lr?&=y&h=1")
    assert uri.params == {"lr": ""} and uri.headers == {"h": "1"}


def test_whitespace_around_header_colon() -> None:
    msg = parse_sip(build(headers=[
        "Via  :SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKw",
        "From\t: <sip:a@example.com>;tag=1",
        "To:<sip:b@example.com>",
        "Call-ID:   spaced@example.com   ",
        "CSeq:  5   INVITE ",
    ]))
    assert msg.call_id == "spaced@example.com" and msg.cseq == (5, "INVITE") and msg.branch == "z9hG4bKw"


@pytest.mark.parametrize(
    "header",
    [
        pytest.param("Bad Name: x", id="space in header name"),
        pytest.param(": nameless", id="empty header name"),
        pytest.param("NoColonHere", id="no colon"),
        pytest.param("X-Nul: a\x00b", id="NUL in value"),
        pytest.param("X-Ctl: a\x1bb", id="ESC in value"),
        pytest.param("X-Del: a\x7fb", id="DEL in value"),
        pytest.param("X-Cr: a\rb", id="bare CR in value"),
        pytest.param("Call-ID: other@example.com", id="conflicting Call-ID"),
        pytest.param("CSeq: 2 INVITE", id="conflicting CSeq"),
        pytest.param("Content-Length: 5", id="conflicting Content-Length"),
    ],
)
def test_bad_header_lines_are_rejected(header: str) -> None:
    headers = [
        "From: <sip:a@example.com>;tag=1",
        "To: <sip:b@example.com>",
        "Call-ID: c@example.com",
        "CSeq: 1 INVITE",
        "Content-Length: 0",
        header,
    ]
    with pytest.raises(SipParseError):
        parse_sip(build(headers=headers, content_length=False))


def test_htab_and_utf8_in_values_are_kept() -> None:
    msg = parse_sip(build(headers=[
        'From: "Jürgen\tMüller" <sip:j@example.com>;tag=1',
        "To: <sip:b@example.com>",
        "Call-ID: c@example.com",
        "CSeq: 1 INVITE",
        "Subject: \xff",
    ]))
    assert parse_name_addr(msg.header("from") or "").display == "Jürgen\tMüller"
    assert msg.header("subject") == "ÿ"


def test_invalid_utf8_is_replaced_not_raised() -> None:
    data = build().replace(b'"Alice"', b'"Al\xff\xfece"')
    assert parse_name_addr(parse_sip(data).header("from") or "").display == "Al\ufffd\ufffdce"


@pytest.mark.parametrize("missing", ["Call-ID", "CSeq", "From", "To"])
def test_mandatory_headers(missing: str) -> None:
    headers = [
        "From: <sip:a@example.com>;tag=1",
        "To: <sip:b@example.com>",
        "Call-ID: c@example.com",
        "CSeq: 1 INVITE",
    ]
    with pytest.raises(SipParseError, match="missing"):
        parse_sip(build(headers=[h for h in headers if not h.startswith(missing + ":")]))
    with pytest.raises(SipParseError, match="missing"):
        parse_sip(build(headers=[h if not h.startswith(missing + ":") else missing + ":" for h in headers]))


@pytest.mark.parametrize("cseq", ["x INVITE", "1", "1 INVITE extra", "4294967296 INVITE", "-1 INVITE", "1 IN(VITE"])
def test_bad_cseq(cseq: str) -> None:
    headers = ["From: <sip:a@e.com>;tag=1", "To: <sip:b@e.com>", "Call-ID: c@e", f"CSeq: {cseq}"]
    with pytest.raises(SipParseError):
        parse_sip(build(headers=headers))


def test_duplicate_identical_singleton_is_accepted() -> None:
    headers = ["From: <sip:a@e.com>;tag=1", "To: <sip:b@e.com>", "Call-ID: c@e", "i: c@e", "CSeq: 1 BYE"]
    assert parse_sip(build("BYE sip:b@e.com SIP/2.0", headers=headers)).call_id == "c@e"


def test_hand_built_message_without_cseq() -> None:
    msg = SipMessage("BYE", "sip:x@y", None, None, [("call-id", "c")])
    with pytest.raises(SipParseError):
        _ = msg.cseq
    assert msg.from_tag is None and msg.branch is None and msg.content_type is None
    msg.headers.append(("from", '"unterminated <sip:a@b>;tag=1'))
    assert msg.from_tag is None
    msg.headers.append(("via", " , "))
    assert msg.branch is None


# --- body and line endings ---------------------------------------------------------------------


def test_body_trimmed_to_content_length() -> None:
    data = build(body=b"hello") + b"trailing junk"
    assert parse_sip(data).body == b"hello"


def test_body_without_content_length_runs_to_end_of_datagram() -> None:
    assert parse_sip(build(body=b"v=0\r\nrest", content_length=False)).body == b"v=0\r\nrest"


def test_content_length_beyond_datagram_is_error() -> None:
    data = build(body=b"hello")[:-1]
    with pytest.raises(SipParseError, match="exceeds"):
        parse_sip(data)


@pytest.mark.parametrize("value", ["abc", "-1", "1 2", "99999999999", "0x10"])
def test_malformed_content_length(value: str) -> None:
    data = build(content_length=False).replace(b"\r\n\r\n", f"\r\nContent-Length: {value}\r\n\r\n".encode())
    with pytest.raises(SipParseError):
        parse_sip(data)


def test_binary_body_is_untouched() -> None:
    body = bytes(range(256)) + b"\r\n\r\n\x00"
    assert parse_sip(build(body=body)).body == body


def test_bare_lf_and_mixed_line_endings() -> None:
    lf = parse_sip(build(body=b"v=0\n", eol=b"\n"))
    assert lf.call_id == "cid-1@192.0.2.1" and lf.body == b"v=0\n"
    mixed = build().replace(b"CSeq: 1 INVITE\r\n", b"CSeq: 1 INVITE\n")
    mixed = mixed[: -len(b"\r\n\r\n")] + b"\n\r\n"
    assert parse_sip(mixed).cseq == (1, "INVITE")
    assert parse_sip(build()[:-4] + b"\r\n\n").body == b""


def test_missing_empty_line_is_error() -> None:
    with pytest.raises(SipParseError):
        parse_sip(build()[:-2])


def test_non_bytes_input() -> None:
    assert parse_sip(bytearray(build())).cseq == (1, "INVITE")
    assert parse_sip(memoryview(build())).cseq == (1, "INVITE")
    with pytest.raises(SipParseError):
        parse_sip("INVITE sip:x SIP/2.0\r\n\r\n")  # type: ignore[arg-type]
    with pytest.raises(SipParseError):
        parse_sip(None)  # type: ignore[arg-type]


# --- bounds --------------------------------------------------------------------------------------


def test_message_size_bound() -> None:
    body_len = MAX_MESSAGE - len(build(body=b"x" * 60000)) + 60000
    fits = build(body=b"x" * body_len)
    assert len(fits) == MAX_MESSAGE
    assert len(parse_sip(fits).body) == body_len
    with pytest.raises(SipParseError, match="64 KiB"):
        parse_sip(fits + b"x")


def test_header_count_bound() -> None:
    base = ["From: <sip:a@e.com>;tag=1", "To: <sip:b@e.com>", "Call-ID: c@e", "CSeq: 1 INVITE"]
    ok = base + [f"X-H: {i}" for i in range(MAX_HEADERS - len(base))]
    assert len(parse_sip(build(headers=ok, content_length=False)).headers) == MAX_HEADERS
    with pytest.raises(SipParseError, match="too many"):
        parse_sip(build(headers=[*ok, "X-H: one too many"], content_length=False))


def test_header_line_length_bound() -> None:
    base = ["From: <sip:a@e.com>;tag=1", "To: <sip:b@e.com>", "Call-ID: c@e", "CSeq: 1 INVITE"]
    assert parse_sip(build(headers=[*base, "X: " + "a" * (MAX_LINE - 3)]))
    with pytest.raises(SipParseError, match="too long"):
        parse_sip(build(headers=[*base, "X: " + "a" * (MAX_LINE - 2)]))
    folded = base + ["X: start"] + [" " + "b" * 1000] * 9
    with pytest.raises(SipParseError, match="too long"):
        parse_sip(build(headers=folded))
    with pytest.raises(SipParseError, match="too long"):
        parse_sip(build("INVITE sip:" + "u" * MAX_LINE + "@e.com SIP/2.0", headers=base))


# --- prefilter ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method",
    ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "UPDATE", "INFO", "REFER",
     "NOTIFY", "SUBSCRIBE", "MESSAGE", "PUBLISH"],
)
def test_prefilter_accepts_methods(method: str) -> None:
    assert looks_like_sip(f"{method} sip:x@y SIP/2.0\r\n".encode())


def test_prefilter_rejects_rtp_and_others() -> None:
    assert looks_like_sip(b"SIP/2.0 200 OK\r\n")
    assert looks_like_sip(bytearray(b"BYE sip:x SIP/2.0\r\n"))
    for first in range(0x80, 0xC0):
        assert not looks_like_sip(bytes([first]) + b"IP/2.0 200 OK")
    for payload in [b"", b"\r\n\r\n", b"SIP/2.0", b"INVITEX", b"invite sip:x SIP/2.0", b"HTTP/1.1 200 OK", b"S"]:
        assert not looks_like_sip(payload)


# --- URIs and name-addr ------------------------------------------------------------------------


def test_parse_sip_uri_parts() -> None:
    uri = parse_uri("SIP:+1-212-555-1212%3B;npdi:secret@GW.Example.COM:5070;user=phone;LR?Subject=hi&x=%41")
    assert uri == SipUri(
        "sip", "+1-212-555-1212;;npdi", "gw.example.com", 5070, {"user": "phone", "lr": ""}, {"subject": "hi", "x": "A"}
    )
    assert parse_uri("sips:[2001:DB8::1]:5061").host == "2001:db8::1"
    assert parse_uri("sips:[2001:db8::1]").port is None
    assert parse_uri("sip:example.com") == SipUri("sip", None, "example.com", None, {}, {})


def test_password_is_dropped() -> None:
    uri = parse_uri("sip:alice:pa55@example.com")
    assert uri.user == "alice" and "pa55" not in repr(uri)


def test_tel_uri() -> None:
    uri = parse_uri("tel:+1-201-555-0123;phone-context=example.com;ext=12")
    assert (uri.scheme, uri.user, uri.host, uri.port) == ("tel", "+1-201-555-0123", None, None)
    assert uri.params == {"phone-context": "example.com", "ext": "12"}
    assert uri_number(uri) == "+12015550123"
    assert uri_number(parse_uri("tel:7042;phone-context=example.com")) == "7042"
    assert uri_number(parse_uri("tel:(0)30.123-45")) == "03012345"


@pytest.mark.parametrize(
    "text",
    ["http://example.com", "mailto:a@b", "sip", "sip:", "sip:@example.com", "sip:a@", "sip:a b@example.com",
     "sip:a@example.com:99999", "sip:a@example.com:", "sip:a@example.com:5x", "sip:a@[::1", "sip:a@[zz::1]",
     "sip:a@[::1]x", "sip:a@exa!mple.com", "sip:a%00b@example.com", "tel:", 'sip:"a"@b', "sip:a@b>c",
     "sip:a@fd17::1"],
)
def test_bad_uris(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_uri_error_message_is_clipped() -> None:
    with pytest.raises(SipParseError) as info:
        parse_uri("x" * 500 + ":y")
    assert len(str(info.value)) < 80


def test_uri_number() -> None:
    assert uri_number(parse_uri("sip:+49%20(30)%20123-45.67@e.com")) == "+49301234567"
    assert uri_number(parse_uri("sip:0800123;npdi;rn=+1@e.com;user=phone")) == "0800123"
    assert uri_number(parse_uri("sip:*97#@e.com")) == "*97#"
    assert uri_number(parse_uri("sip:alice.smith@e.com")) == "alice.smith"
    assert uri_number(parse_uri("sip:MP114.FXS1@e.com")) == "MP114.FXS1"
    assert uri_number(parse_uri("sip:e.com")) is None
    assert uri_number(SipUri("sip", ";x", "e.com", None, {}, {})) is None


def test_name_addr_forms() -> None:
    na = parse_name_addr('"Alice \\"Al\\" O\'Neil; Jr, <x>" <sip:alice@example.com;transport=tcp>;tag=abc;X=Y')
    assert na.display == 'Alice "Al" O\'Neil; Jr, <x>'
    assert na.uri.user == "alice" and na.uri.params == {"transport": "tcp"}
    assert na.params == {"tag": "abc", "x": "Y"}
    bare = parse_name_addr("sip:bob@example.com;tag=zz;user=phone")
    assert bare.display is None and bare.uri.params == {} and bare.params == {"tag": "zz", "user": "phone"}
    unquoted = parse_name_addr("  Bob  Smith <sip:bob@example.com> ")
    assert unquoted.display == "Bob  Smith" and unquoted.params == {}
    assert parse_name_addr('"" <sip:a@b>').display is None
    assert parse_name_addr("<tel:+15551234>;tag=t").uri.scheme == "tel"
    assert parse_name_addr('"x"<sip:a@b>;reason="unconditional; really";counter=1').params == {
        "reason": "unconditional; really",
        "counter": "1",
    }
    assert parse_name_addr("<sip:a@b>;;tag=1;").params == {"tag": "1"}


@pytest.mark.parametrize(
    "value",
    ['"unterminated <sip:a@b>', '"x" sip:a@b', '"x" junk <sip:a@b>', "<sip:a@b", "<sip:a@b> junk", "",
     "Bob <http://x>", "<sip:a@b>;p=\"q\"x", '"trailing backslash\\'],
)
def test_bad_name_addr(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(value)


def test_non_text_inputs() -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(b"<sip:a@b>")  # type: ignore[arg-type]
    with pytest.raises(SipParseError):
        parse_uri(None)  # type: ignore[arg-type]
    with pytest.raises(SipParseError):
        parse_name_addr("<sip:a@b>;x=" + "y" * MAX_LINE)
    with pytest.raises(SipParseError, match="too long"):
        parse_uri("sip:a@b;x=" + "y" * MAX_LINE)


@pytest.mark.parametrize(
    ("value", "anonymous"),
    [
        ('"Anonymous" <sip:anonymous@anonymous.invalid>;tag=1', True),
        ("<sip:anonymous@anonymous.invalid>", True),
        ('"ANONYMOUS" <sip:c8oqz84zk7z@privacy.org>', True),
        ("<sip:Anonymous@example.com>", True),
        ("<sip:restricted@ANONYMOUS.invalid>", True),
        ("<sip:anonymous;npdi@example.com>", True),
        ('"Alice" <sip:alice@example.com>', False),
        ('"anonymous-ish" <sip:x@example.com>', False),
        ("<tel:+15551234>", False),
    ],
)
def test_is_anonymous(value: str, anonymous: bool) -> None:
    assert is_anonymous(parse_name_addr(value)) is anonymous


def test_diversion_and_history_info_via_header_values() -> None:
    msg = parse_sip(build(headers=[
        "From: <sip:a@e.com>;tag=1",
        "To: <sip:b@e.com>",
        "Call-ID: c@e",
        "CSeq: 1 INVITE",
        'Diversion: <sip:+4930111@pbx.example.com>;reason=unconditional;counter=1;privacy=off,',
        '  "Desk" <tel:+4930222>;reason="user-busy"',
        "Diversion: <sip:4930333@pbx.example.com;user=phone>;reason=no-answer",
        "History-Info: <sip:bob@e.com>;index=1, <sip:bob@192.0.2.7?Reason=SIP%3Bcause%3D302>;index=1.1",
    ]))
    diversions = [parse_name_addr(v) for v in msg.header_values("diversion")]
    assert [uri_number(d.uri) for d in diversions] == ["+4930111", "+4930222", "4930333"]
    assert [d.params["reason"] for d in diversions] == ["unconditional", "user-busy", "no-answer"]
    assert diversions[1].display == "Desk"
    history = [parse_name_addr(v) for v in msg.header_values("history-info")]
    assert [h.params["index"] for h in history] == ["1", "1.1"]
    assert history[1].uri.headers == {"reason": "SIP;cause=302"}


def test_name_addr_dataclass_equality() -> None:
    assert parse_name_addr("<sip:a@b>;tag=x") == NameAddr(None, SipUri("sip", "a", "b", None, {}, {}), {"tag": "x"})


# --- stream framer -------------------------------------------------------------------------------


def msg_bytes(n: int, body: bytes = b"") -> bytes:
    return build(f"OPTIONS sip:{n}@example.com SIP/2.0", headers=[
        "From: <sip:a@e.com>;tag=1", "To: <sip:b@e.com>", f"Call-ID: c{n}@e", f"CSeq: {n} OPTIONS",
    ], body=body)


def call_ids(items: list[SipMessage | SipParseError]) -> list[str | None]:
    return [item.call_id if isinstance(item, SipMessage) else None for item in items]


def test_framer_several_messages_one_chunk_with_keepalives() -> None:
    framer = SipStreamFramer()
    stream = b"\r\n\r\n" + msg_bytes(1, b"body") + b"\r\n" + msg_bytes(2) + b"\r\n\r\n\n" + msg_bytes(3, b"x" * 100)
    out = framer.feed(stream)
    assert call_ids(out) == ["c1@e", "c2@e", "c3@e"]
    assert [m.body for m in out if isinstance(m, SipMessage)] == [b"body", b"", b"x" * 100]
    assert framer.buffered == 0
    assert framer.feed(b"\r\n\r\n") == [] and framer.buffered == 0


def test_framer_waits_for_body() -> None:
    framer = SipStreamFramer()
    data = msg_bytes(1, b"0123456789")
    assert framer.feed(data[:-5]) == []
    assert framer.buffered == len(data) - 5
    out = framer.feed(data[-5:] + msg_bytes(2)[:10])
    assert call_ids(out) == ["c1@e"] and framer.buffered == 10


def test_framer_garbage_resync_reports_once() -> None:
    framer = SipStreamFramer()
    garbage = b"\x16\x03\x01 TLS junk\r\nmore junk\r\nINVITE is not a start line\r\n" * 50
    out = framer.feed(garbage + msg_bytes(1) + b"junk\r\n" + msg_bytes(2))
    assert call_ids(out) == [None, "c1@e", None, "c2@e"]
    assert all(isinstance(item, SipParseError) for item in out if not isinstance(item, SipMessage))


def test_framer_garbage_across_feeds_is_one_error() -> None:
    framer = SipStreamFramer()
    out: list[SipMessage | SipParseError] = []
    for _ in range(20):
        out += framer.feed(b"garbage line\r\nmore")
    out += framer.feed(b" garbage\r\n" + msg_bytes(5))
    assert call_ids(out) == [None, "c5@e"]


def test_framer_start_line_split_during_resync() -> None:
    framer = SipStreamFramer()
    data = b"junk\r\n" + msg_bytes(7)
    out: list[SipMessage | SipParseError] = []
    for i in range(len(data)):
        out += framer.feed(data[i : i + 1])
    assert call_ids(out) == [None, "c7@e"]


def test_framer_bad_header_section_is_skipped() -> None:
    bad = b"INVITE sip:x@e.com SIP/2.0\r\nBad Header\r\nContent-Length: 4\r\n\r\nbody"
    out = SipStreamFramer().feed(bad + msg_bytes(2))
    assert call_ids(out) == [None, "c2@e"]


def test_framer_message_without_content_length() -> None:
    no_length = build("BYE sip:b@e.com SIP/2.0", content_length=False)
    out = SipStreamFramer().feed(no_length + msg_bytes(2))
    assert call_ids(out) == ["cid-1@192.0.2.1", None, "c2@e"]
    assert isinstance(out[0], SipMessage) and out[0].body == b""
    assert "Content-Length" in str(out[1])


def test_framer_bounds_without_newline() -> None:
    framer = SipStreamFramer()
    errors = 0
    for _ in range(100):
        errors += len(framer.feed(b"A" * 4096))
        assert framer.buffered <= MAX_LINE + 1
    assert errors == 1
    assert call_ids(framer.feed(b"\r\n" + msg_bytes(1))) == ["c1@e"]


def test_framer_bounds_endless_header_section() -> None:
    framer = SipStreamFramer()
    out = framer.feed(b"INVITE sip:x@e.com SIP/2.0\r\n")
    for _ in range(200):
        out += framer.feed(b"X-Filler: " + b"f" * 1000 + b"\r\n")
        assert framer.buffered <= MAX_MESSAGE + 1100
    assert [str(e) for e in out] == ["header section larger than 64 KiB"]
    assert framer.buffered <= MAX_LINE
    assert call_ids(framer.feed(b"\r\n" + msg_bytes(3))) == ["c3@e"]


def test_framer_oversized_content_length() -> None:
    framer = SipStreamFramer()
    huge = msg_bytes(1).replace(b"Content-Length: 0", b"Content-Length: 9999999999")
    out = framer.feed(huge + b"garbage body\r\n" + msg_bytes(2))
    assert call_ids(out) == [None, "c2@e"]
    assert framer.buffered == 0


def test_framer_many_small_feeds_stay_linear() -> None:
    framer = SipStreamFramer()
    data = msg_bytes(1, b"b" * 30000)
    out: list[SipMessage | SipParseError] = []
    for i in range(0, len(data), 7):
        out += framer.feed(data[i : i + 7])
    assert call_ids(out) == ["c1@e"]


def test_framer_accepts_bytes_like() -> None:
    framer = SipStreamFramer()
    assert call_ids(framer.feed(memoryview(msg_bytes(1))) + framer.feed(bytearray(msg_bytes(2)))) == ["c1@e", "c2@e"]
