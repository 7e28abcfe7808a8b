"""SIP message syntax (RFC 3261 §7, §18.3, §19.1, §20, §25): bytes in, SipMessage out.

Sans-I/O: nothing here touches sockets, files or clocks. Every input is untrusted mirror-port
traffic, so each function either returns a value or raises SipParseError; every buffer is bounded
by the MAX_* constants below.

Text decoding: the header section is decoded as UTF-8 with invalid sequences replaced by U+FFFD.
Replacement (rather than surrogate escapes) keeps every str produced here encodable, so a hostile
display name cannot crash whoever writes call metadata later.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

from .errors import WireFormatError

__all__ = [
    "MAX_HEADERS",
    "MAX_LINE",
    "MAX_MESSAGE",
    "NameAddr",
    "SipMessage",
    "SipParseError",
    "SipStreamFramer",
    "SipUri",
    "is_anonymous",
    "looks_like_sip",
    "parse_name_addr",
    "parse_sip",
    "parse_uri",
    "split_header_list",
    "uri_number",
]

MAX_MESSAGE = 64 * 1024
"""Largest accepted message (start line + headers + body), bytes. Also the stream buffer bound."""
MAX_HEADERS = 256
"""Largest accepted number of header fields (after unfolding)."""
MAX_LINE = 8 * 1024
"""Largest accepted start line or header field (after unfolding), characters."""


class SipParseError(WireFormatError):
    """Input is not an acceptable SIP message; the caller counts it and drops the input."""


_COMPACT = {
    "i": "call-id",
    "f": "from",
    "t": "to",
    "v": "via",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "u": "allow-events",
    "x": "session-expires",
    "j": "reject-contact",
    "a": "accept-contact",
    "d": "request-disposition",
    "y": "identity",
    "n": "identity-info",
}

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1 and the extension RFCs);
# only these are split by header_values(). Headers such as WWW-Authenticate or Date contain
# commas that are not list separators and must stay whole.
_LIST_HEADERS = frozenset(
    {
        "accept",
        "accept-contact",
        "accept-encoding",
        "accept-language",
        "alert-info",
        "allow",
        "allow-events",
        "call-info",
        "contact",
        "content-encoding",
        "content-language",
        "diversion",
        "error-info",
        "history-info",
        "in-reply-to",
        "p-asserted-identity",
        "p-associated-uri",
        "p-preferred-identity",
        "path",
        "proxy-require",
        "reason",
        "record-route",
        "reject-contact",
        "request-disposition",
        "require",
        "route",
        "security-client",
        "security-server",
        "security-verify",
        "service-route",
        "supported",
        "unsupported",
        "via",
        "warning",
    }
)

# Headers that RFC 3261 defines as single-valued and that the recorder relies on; two
# different values for one of them make the message ambiguous, so it is refused.
_SINGLETONS = frozenset({"call-id", "cseq", "from", "to", "content-length"})

_TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
_HOST_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._"
_IPV6_CHARS = "0123456789abcdefABCDEF:."
_BAD_HEADER_CHAR = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# A quoted string (RFC 3261 §25.1) within one header field: folded lines stay in it, and an
# unclosed one ends with its field, so every match is found in one linear pass.
_QUOTED_STRING = re.compile(r'"(?:[^"\\\n]|\\[^\r\n]|\n(?=[ \t]))*"?')
# A quoted-pair, its escaped character captured when it is a control character.
_QUOTED_PAIR = re.compile(r"\\(?:([\x00-\x08\x0b\x0c\x0e-\x1f\x7f])|[^\r\n])")
# A header section with a control character is read quoted string by quoted string and
# quoted-pair by quoted-pair; past this many quote marks and backslashes it is refused unread,
# which keeps that read as cheap as the rest of a parse.
_MAX_QUOTING_WITH_CONTROLS = 2 * MAX_HEADERS
_BAD_URI_CHAR = re.compile(r'[\x00-\x20\x7f<>"]')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NUMERIC = re.compile(r"\+?[0-9*#]+")
_VISUAL_SEPARATORS = str.maketrans("", "", "-.() ")

_SIP_FIRST_BYTES = frozenset(b"SIABCORPUNM")
_SIP_PREFIXES = (
    b"SIP/2.0 ",
    b"INVITE ",
    b"ACK ",
    b"BYE ",
    b"CANCEL ",
    b"OPTIONS ",
    b"REGISTER ",
    b"PRACK ",
    b"UPDATE ",
    b"INFO ",
    b"REFER ",
    b"NOTIFY ",
    b"SUBSCRIBE ",
    b"MESSAGE ",
    b"PUBLISH ",
)

# Start line as the stream framer recognises it (request line or status line, CRLF or LF).
_START_LINE_PATTERN = (
    rb"(?:[!%*+\-.`'~0-9A-Za-z_]+ [^\x00-\x20\x7f]+ [Ss][Ii][Pp]/2\.0\r?\n"
    rb"|[Ss][Ii][Pp]/2\.0 [0-9]{3}(?: [^\x00-\x08\x0a-\x1f\x7f]*)?\r?\n)"
)
_START_LINE = re.compile(_START_LINE_PATTERN)
_NEXT_START_LINE = re.compile(rb"\n(?=" + _START_LINE_PATTERN + rb")")
_CRLF_RUN = re.compile(rb"[\r\n]*")


def _clip(text: str) -> str:
    """Quote at most 40 characters of untrusted text for an error message."""
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def _is_token(text: str) -> bool:
    return bool(text) and not text.strip(_TOKEN_CHARS)


def _canonical_name(name: str) -> str:
    key = name.lower()
    if len(key) == 1:
        return _COMPACT.get(key, key)
    return key


@dataclass(slots=True)
class SipMessage:
    """One parsed SIP request or response.

    headers keeps every field in wire order as (canonical lower-case full name, value), with
    compact names expanded and folded lines joined by a single space. Messages returned by
    parse_sip() and SipStreamFramer always carry exactly one distinct Call-ID, CSeq, From and To,
    and a well-formed CSeq, so the properties below cannot fail on them; on a hand-built
    instance cseq raises SipParseError when CSeq is missing or malformed.
    """

    method: str | None
    request_uri: str | None
    status: int | None
    reason: str | None
    headers: list[tuple[str, str]]
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """First value of the header (any spelling, compact form accepted), or None."""
        key = _canonical_name(name)
        for hname, value in self.headers:
            if hname == key:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """All values of the header in order; list-valued headers are split on top-level commas."""
        key = _canonical_name(name)
        values: list[str] = []
        split = key in _LIST_HEADERS
        for hname, value in self.headers:
            if hname == key:
                if split:
                    values.extend(split_header_list(value))
                else:
                    values.append(value)
        return values

    @property
    def is_request(self) -> bool:
        return self.method is not None

    @property
    def call_id(self) -> str | None:
        return self.header("call-id")

    @property
    def cseq(self) -> tuple[int, str]:
        value = self.header("cseq")
        if value is None:
            raise SipParseError("missing CSeq")
        return _parse_cseq(value)

    @property
    def from_tag(self) -> str | None:
        return _tag_of(self.header("from"))

    @property
    def to_tag(self) -> str | None:
        return _tag_of(self.header("to"))

    @property
    def branch(self) -> str | None:
        """branch parameter of the topmost Via (the transaction key of RFC 3261 §17.2.3)."""
        via = self.header("via")
        if via is None:
            return None
        items = split_header_list(via)
        if not items:
            return None
        for param in items[0].split(";")[1:]:
            key, _, value = param.partition("=")
            if key.strip(" \t").lower() == "branch":
                return value.strip(" \t") or None
        return None

    @property
    def content_type(self) -> str | None:
        """Media type of the body, lower-case, parameters removed."""
        value = self.header("content-type")
        if value is None:
            return None
        return value.split(";", 1)[0].strip(" \t").lower() or None


def _parse_cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2 or not (parts[0].isascii() and parts[0].isdigit()) or len(parts[0]) > 10:
        raise SipParseError("malformed CSeq")
    number = int(parts[0])
    if number > 0x7FFFFFFF or not _is_token(parts[1]):
        raise SipParseError("malformed CSeq")
    return number, parts[1]


def _tag_of(value: str | None) -> str | None:
    """tag parameter of a From/To value; None when absent or when the value is unparsable.

    Does not validate the URI: a dialog must still be matchable when a peer sends an odd URI.
    """
    if value is None:
        return None
    try:
        _, _, params_text = _split_name_addr(value)
        return _parse_params(params_text).get("tag") or None
    except SipParseError:
        return None


def _find_head_end(buf: bytes | bytearray, start: int) -> tuple[int, int]:
    """(end of header section incl. its last LF, start of body), or (-1, -1) if not yet seen.

    The empty line may be CRLF or bare LF; either may follow a header line ending in CRLF or LF.
    """
    crlf = buf.find(b"\n\r\n", start)
    limit = crlf + 2 if crlf >= 0 else len(buf)
    lf = buf.find(b"\n\n", start, limit)
    if lf >= 0:
        return lf + 1, lf + 2
    if crlf >= 0:
        return crlf + 1, crlf + 3
    return -1, -1


def _escaped_control_replaced(pair: re.Match[str]) -> str:
    return "\\\ufffd" if pair.group(1) is not None else pair.group()


def _quoted_pairs_replaced(quoted: re.Match[str]) -> str:
    return _QUOTED_PAIR.sub(_escaped_control_replaced, quoted.group())


def _replace_escaped_controls(text: str) -> str:
    """The header section with each control character that a quoted-pair escapes inside a
    quoted string replaced by U+FFFD; any other control character refuses the message.

    The grammar allows a control character only there (RFC 3261 §25.1 quoted-pair; RFC 4475
    §3.1.1.2 puts BEL, NUL and DEL in a display name), so such a header must not cost its call.
    The replacement, as for invalid UTF-8, keeps every value handed on free of control
    characters. The start line has no quoted strings, and a section quoting more than
    _MAX_QUOTING_WITH_CONTROLS times is refused before it is read.
    """
    start_end = text.find("\n")
    quoting = text.count('"') + text.count("\\")
    if _BAD_HEADER_CHAR.search(text, 0, start_end) or quoting > _MAX_QUOTING_WITH_CONTROLS:
        raise SipParseError("control character in header section")
    fields = _QUOTED_STRING.sub(_quoted_pairs_replaced, text[start_end:])
    if _BAD_HEADER_CHAR.search(fields):
        raise SipParseError("control character in header section")
    return text[:start_end] + fields


def _parse_head(head: bytes | bytearray) -> tuple[SipMessage, int | None]:
    """Parse start line and header fields; return the message (empty body) and Content-Length."""
    text = head.decode("utf-8", "replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    if _BAD_HEADER_CHAR.search(text):
        text = _replace_escaped_controls(text)
    lines = text.split("\n")
    lines.pop()
    first = lines[0]
    if len(first) > MAX_LINE:
        raise SipParseError("start line too long")
    if "\t" in first:
        raise SipParseError("tab in start line")
    method: str | None = None
    request_uri: str | None = None
    status: int | None = None
    reason: str | None = None
    if first[:8].upper() == "SIP/2.0 ":
        code = first[8:11]
        if not (code.isascii() and code.isdigit() and len(code) == 3):
            raise SipParseError("malformed status code")
        if len(first) > 11 and first[11] != " ":
            raise SipParseError("malformed status line")
        status = int(code)
        if not 100 <= status <= 699:
            raise SipParseError("status code out of range")
        reason = first[12:]
    else:
        parts = first.split(" ")
        if len(parts) != 3 or parts[2].upper() != "SIP/2.0":
            raise SipParseError("not a SIP request or status line")
        method, request_uri = parts[0], parts[1]
        if not _is_token(method):
            raise SipParseError("invalid method")
        if ":" not in request_uri:
            raise SipParseError("invalid Request-URI")

    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not headers:
                raise SipParseError("continuation line before first header")
            extra = line.strip(" \t")
            if extra:
                name, value = headers[-1]
                value = f"{value} {extra}" if value else extra
                if len(name) + len(value) > MAX_LINE:
                    raise SipParseError("header field too long")
                headers[-1] = (name, value)
            continue
        if len(line) > MAX_LINE:
            raise SipParseError("header field too long")
        colon = line.find(":")
        name = line[:colon].rstrip(" \t") if colon > 0 else ""
        if not _is_token(name):
            raise SipParseError("malformed header line")
        if len(headers) == MAX_HEADERS:
            raise SipParseError("too many header fields")
        headers.append((_canonical_name(name), line[colon + 1 :].strip(" \t")))

    seen: dict[str, str] = {}
    for name, value in headers:
        if name in _SINGLETONS:
            previous = seen.setdefault(name, value)
            if previous != value:
                raise SipParseError(f"conflicting {name} headers")
    for required in ("call-id", "cseq", "from", "to"):
        if not seen.get(required):
            raise SipParseError(f"missing {required} header")
    _parse_cseq(seen["cseq"])
    content_length: int | None = None
    length_text = seen.get("content-length")
    if length_text is not None:
        if not (length_text.isascii() and length_text.isdigit()) or len(length_text) > 10:
            raise SipParseError("malformed Content-Length")
        content_length = int(length_text)
    return SipMessage(method, request_uri, status, reason, headers), content_length


def parse_sip(data: bytes | bytearray | memoryview) -> SipMessage:
    """Parse one SIP message carried in one datagram (RFC 3261 §18.3 UDP rules).

    The body is whatever follows the empty line, cut to Content-Length when that header is
    present (surplus bytes are discarded as §18.3 requires); a Content-Length beyond the end of
    the datagram means truncation and is refused. Raises only SipParseError.

    Required: Call-ID, a well-formed CSeq, From and To, each once (identical repeats are
    tolerated), because no call can be attributed without them. Deliberately tolerated beyond
    the grammar, as real equipment sends them: bare-LF line ends, a lower-case version string,
    a status line without reason phrase. Header values may not contain control characters other
    than HTAB after unfolding, except as the escaped character of a quoted-pair inside a quoted
    string, where the grammar allows any; that character is handed on as U+FFFD.
    """
    if not isinstance(data, bytes):
        if not isinstance(data, (bytearray, memoryview)):
            raise SipParseError("input is not bytes")
        data = bytes(data)
    if len(data) > MAX_MESSAGE:
        raise SipParseError("message larger than 64 KiB")
    end, body_start = _find_head_end(data, 0)
    if end < 0:
        raise SipParseError("no empty line after header section")
    message, content_length = _parse_head(data[:end])
    if content_length is None:
        message.body = data[body_start:]
    elif content_length > len(data) - body_start:
        raise SipParseError("Content-Length exceeds datagram")
    else:
        message.body = data[body_start : body_start + content_length]
    return message


def looks_like_sip(payload: bytes | bytearray) -> bool:
    """Cheap prefilter for UDP payloads: starts like a status line or a common request.

    RTP/RTCP (first byte 0x80..0xBF) fails on the first byte without any further work.
    payload must be bytes or bytearray.
    """
    return bool(payload) and payload[0] in _SIP_FIRST_BYTES and payload.startswith(_SIP_PREFIXES)


class SipStreamFramer:
    """Cut a SIP-over-TCP byte stream into messages by Content-Length (RFC 3261 §18.3).

    One instance per direction of a connection. Between feed() calls at most MAX_MESSAGE bytes
    stay buffered (see `buffered`). CRLF keep-alives (RFC 5626 §3.5.1) between messages are
    skipped. Bytes that do not start with a request or status line are garbage: the framer
    reports one SipParseError and discards input up to the next line that is a start line.
    A message whose header section is malformed is reported and its bytes are skipped the same
    way. A message without Content-Length is delivered with an empty body, followed by a
    SipParseError that reports the framing violation. A message larger than MAX_MESSAGE is
    reported and skipped by resynchronising rather than by trusting its Content-Length.
    """

    __slots__ = ("_buf", "_head_scan", "_pending", "_resyncing")

    def __init__(self) -> None:
        self._buf = bytearray()
        # Buffer offset from which to keep looking for the empty line that ends the header
        # section of the message at the buffer start; -1 while no start line has been accepted.
        # Remembering it keeps byte-by-byte feeding linear.
        self._head_scan = -1
        self._pending: tuple[SipMessage, int, int] | None = None
        self._resyncing = False

    @property
    def buffered(self) -> int:
        """Bytes currently held back waiting for the rest of a message."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[SipMessage | SipParseError]:
        buf = self._buf
        buf += data
        out: list[SipMessage | SipParseError] = []
        pos = 0
        while True:
            if self._pending is not None:
                waiting, body_offset, body_length = self._pending
                if len(buf) - pos < body_offset + body_length:
                    break
                waiting.body = bytes(buf[pos + body_offset : pos + body_offset + body_length])
                out.append(waiting)
                pos += body_offset + body_length
                self._pending = None
            size = len(buf)
            if self._head_scan < 0:
                pos = _CRLF_RUN.match(buf, pos).end()  # type: ignore[union-attr]
                if pos >= size:
                    break
                newline = buf.find(b"\n", pos, pos + MAX_LINE + 1)
                if newline < 0 and size - pos <= MAX_LINE:
                    break
                if newline < 0 or _START_LINE.match(buf, pos, newline + 1) is None:
                    if not self._resyncing:
                        out.append(SipParseError("garbage in stream; resynchronising"))
                        self._resyncing = True
                    pos = self._next_start(pos)
                    continue
                self._resyncing = False
                self._head_scan = pos
            end, body_start = _find_head_end(buf, self._head_scan)
            if end < 0 or end - pos > MAX_MESSAGE:
                if size - pos <= MAX_MESSAGE:
                    self._head_scan = max(pos, size - 2)
                    break
                self._head_scan = -1
                out.append(SipParseError("header section larger than 64 KiB"))
                self._resyncing = True
                pos = self._next_start(pos)
                continue
            self._head_scan = -1
            try:
                message, length = _parse_head(buf[pos:end])
            except SipParseError as exc:
                out.append(exc)
                self._resyncing = True
                pos = body_start
                continue
            if length is None:
                out.append(message)
                out.append(SipParseError("stream message without Content-Length; body taken as empty"))
                pos = body_start
                continue
            if body_start - pos + length > MAX_MESSAGE:
                out.append(SipParseError("message larger than 64 KiB"))
                self._resyncing = True
                pos = body_start
                continue
            self._pending = (message, body_start - pos, length)
        del buf[:pos]
        if self._head_scan >= 0:
            self._head_scan -= pos
        return out

    def _next_start(self, pos: int) -> int:
        """Position of the next complete start line after pos, or of the last partial line."""
        buf = self._buf
        found = _NEXT_START_LINE.search(buf, pos)
        if found is not None:
            return found.start() + 1
        last_nl = buf.rfind(b"\n", pos)
        tail = last_nl + 1 if last_nl >= 0 else pos
        if len(buf) - tail > MAX_LINE or tail == pos:
            return len(buf)
        return tail


@dataclass(slots=True)
class SipUri:
    """A sip:, sips: or tel: URI (RFC 3261 §19.1, RFC 3966).

    scheme is lower-case. user is percent-decoded and keeps any user parameters
    (";npdi", ";isub=..."); for tel: it is the telephone-subscriber before the first ';'.
    host is lower-case, IPv6 references without brackets; None for tel:. A password in the
    userinfo is deliberately dropped so that credentials never reach call metadata.
    params and headers map lower-case names to raw values ('' for a flag parameter); the
    first occurrence of a name wins.
    """

    scheme: str
    user: str | None
    host: str | None
    port: int | None
    params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class NameAddr:
    """A From/To/Contact/Diversion-style value: optional display name, URI, header parameters.

    display is unquoted and unescaped; None when absent or empty. params are the header
    parameters (tag, reason, counter, ...) with lower-case names and unquoted values.
    """

    display: str | None
    uri: SipUri
    params: dict[str, str] = field(default_factory=dict)


def _split_top_level(text: str, separator: str, angle: bool) -> list[str]:
    """Split on separator outside quoted strings (and outside <...> when angle is true)."""
    if '"' not in text and not (angle and "<" in text):
        return text.split(separator)
    parts: list[str] = []
    start = 0
    in_quote = False
    in_angle = False
    i = 0
    n = len(text)
    while i < n:
        char = text[i]
        if in_quote:
            if char == "\\":
                i += 1
            elif char == '"':
                in_quote = False
        elif char == '"':
            in_quote = True
        elif angle and char == "<":
            in_angle = True
        elif angle and char == ">":
            in_angle = False
        elif char == separator and not in_angle:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def split_header_list(value: str) -> list[str]:
    """Split a list-valued header on commas outside quotes and <...>; drop empty elements."""
    items = []
    for item in _split_top_level(value, ",", True):
        item = item.strip(" \t")
        if item:
            items.append(item)
    return items


def _unquote(text: str, start: int) -> tuple[str, int]:
    """Content of the quoted-string starting at text[start] == '"', and the index after it."""
    chars: list[str] = []
    i = start + 1
    n = len(text)
    while i < n:
        char = text[i]
        if char == '"':
            return "".join(chars), i + 1
        if char == "\\":
            i += 1
            if i == n:
                break
            char = text[i]
        chars.append(char)
        i += 1
    raise SipParseError("unterminated quoted string")


def _parse_params(text: str) -> dict[str, str]:
    """Header parameters ';name=value;flag' as they follow a name-addr."""
    text = text.strip(" \t")
    if not text:
        return {}
    if text[0] != ";":
        raise SipParseError("unexpected text after URI")
    params: dict[str, str] = {}
    for part in _split_top_level(text[1:], ";", False):
        name, _, value = part.partition("=")
        name = name.strip(" \t").lower()
        if not name:
            continue
        value = value.strip(" \t")
        if value.startswith('"'):
            unquoted, after = _unquote(value, 0)
            if after != len(value):
                raise SipParseError("text after quoted parameter value")
            value = unquoted
        params.setdefault(name, value)
    return params


def _split_name_addr(value: str) -> tuple[str | None, str, str]:
    """(display, URI text, parameter text) of a name-addr or bare addr-spec.

    In the bare form everything after the first ';' belongs to the header, not the URI
    (RFC 3261 §20.10).
    """
    text = value.strip(" \t")
    display: str | None
    if text.startswith('"'):
        display, after = _unquote(text, 0)
        lt = text.find("<", after)
        if lt < 0 or text[after:lt].strip(" \t"):
            raise SipParseError("quoted display name not followed by <URI>")
    else:
        lt = text.find("<")
        semi = text.find(";")
        if lt < 0 or 0 <= semi < lt:
            if semi < 0:
                return None, text, ""
            return None, text[:semi].rstrip(" \t"), text[semi:]
        display = text[:lt].strip(" \t")
    gt = text.find(">", lt + 1)
    if gt < 0:
        raise SipParseError("unterminated <URI>")
    return display or None, text[lt + 1 : gt].strip(" \t"), text[gt + 1 :]


def _uri_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    if text:
        for part in text.split(";"):
            name, _, value = part.partition("=")
            if name:
                params.setdefault(name.lower(), value)
    return params


def parse_uri(text: str) -> SipUri:
    """Parse a sip:, sips: or tel: URI; anything else raises SipParseError."""
    if not isinstance(text, str):
        raise SipParseError("URI is not text")
    text = text.strip(" \t")
    if len(text) > MAX_LINE:
        raise SipParseError("URI too long")
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if not colon or scheme not in ("sip", "sips", "tel"):
        raise SipParseError(f"unsupported URI scheme {_clip(scheme)}")
    if _BAD_URI_CHAR.search(rest):
        raise SipParseError("invalid character in URI")
    if scheme == "tel":
        number, _, params_text = rest.partition(";")
        number = unquote(number, errors="replace")
        if not number or _CONTROL.search(number):
            raise SipParseError("invalid tel: number")
        return SipUri(scheme, number, None, None, _uri_params(params_text), {})

    # The userinfo ends at the first "@", even after a "?": a user part may hold "?" and ";"
    # (RFC 3261 §25.1 user-unreserved; RFC 4475 §3.1.1.2), a host, a parameter or a header none.
    user: str | None = None
    at = rest.find("@")
    if at >= 0:
        user = unquote(rest[:at].partition(":")[0], errors="replace")
        if not user or _CONTROL.search(user):
            raise SipParseError("invalid user part in URI")
        rest = rest[at + 1 :]
    headers: dict[str, str] = {}
    rest, question, headers_text = rest.partition("?")
    if question:
        for pair in headers_text.split("&"):
            name, _, value = pair.partition("=")
            if name:
                headers.setdefault(unquote(name, errors="replace").lower(), unquote(value, errors="replace"))
    hostport, _, params_text = rest.partition(";")
    if hostport.startswith("["):
        close = hostport.find("]")
        host = hostport[1:close] if close > 0 else ""
        if not host or host.strip(_IPV6_CHARS) or ":" not in host:
            raise SipParseError("invalid IPv6 reference in URI")
        after = hostport[close + 1 :]
        if after and after[0] != ":":
            raise SipParseError("invalid host in URI")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text_raw = hostport.partition(":")
        port_text = port_text_raw if colon else None
        if not host or host.strip(_HOST_CHARS):
            raise SipParseError("invalid host in URI")
    port: int | None = None
    if port_text is not None:
        if not (port_text.isascii() and port_text.isdigit()) or len(port_text) > 5 or int(port_text) > 65535:
            raise SipParseError("invalid port in URI")
        port = int(port_text)
    return SipUri(scheme, user, host.lower(), port, _uri_params(params_text), headers)


def parse_name_addr(value: str) -> NameAddr:
    """Parse '"Display" <sip:...>;tag=x', 'Display <tel:...>' or a bare 'sip:u@h;tag=x'."""
    if not isinstance(value, str):
        raise SipParseError("name-addr is not text")
    if len(value) > MAX_LINE:
        raise SipParseError("name-addr too long")
    display, uri_text, params_text = _split_name_addr(value)
    return NameAddr(display, parse_uri(uri_text), _parse_params(params_text))


def uri_number(uri: SipUri) -> str | None:
    """The dialled/calling number of a URI, for call metadata.

    Takes the user part (sip/sips) or the subscriber number (tel) without ';' parameters.
    If what remains after removing visual separators ('-', '.', '(', ')', space) is numeric
    (an optional leading '+', then digits, '*' or '#'), that cleaned string is returned,
    e.g. 'tel:+1-201-555-0123' -> '+12015550123'. Otherwise the user part is returned
    unchanged apart from the parameter removal, e.g. 'sip:alice.smith@h' -> 'alice.smith'.
    None when the URI has no user part.
    """
    user = uri.user
    if not user:
        return None
    user = user.split(";", 1)[0]
    if not user:
        return None
    cleaned = user.translate(_VISUAL_SEPARATORS)
    if _NUMERIC.fullmatch(cleaned):
        return cleaned
    return user


def is_anonymous(name_addr: NameAddr) -> bool:
    """True for the anonymous identities of RFC 3261 §8.1.1.3 and RFC 3323 §4.1.1.3.

    Matches (case-insensitively) a display name 'Anonymous', a user part 'anonymous' or the
    host 'anonymous.invalid'. Privacy headers (RFC 3323/3325) are the caller's business.
    """
    display = name_addr.display
    if display is not None and display.strip().lower() == "anonymous":
        return True
    uri = name_addr.uri
    if uri.user is not None and uri.user.split(";", 1)[0].lower() == "anonymous":
        return True
    return uri.host is not None and uri.host == "anonymous.invalid"
