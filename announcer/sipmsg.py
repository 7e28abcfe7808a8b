"""The SIP messages the announcer sends (RFC 3261 §8.1.1, §8.2.6, §12.2.1).

Parsing is wire/sip.py's; this module only writes. Every value copied from a
request into a response (Via, From, To, Call-ID, CSeq) comes from a message that parse_sip already
refused when it held control characters, so nothing here can split a header.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from wire.sip import SipMessage

USER_AGENT = "callrec-announcer"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, NOTIFY, INFO"
_NUMBER = re.compile(r"\+?[0-9*#]{1,32}")


@dataclass(frozen=True, slots=True)
class Peer:
    """Where a message came from or goes to: the transport flow, not a SIP URI."""

    transport: str  # "udp" or "tcp"
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        return self.transport == "tcp"

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def new_tag() -> str:
    return secrets.token_hex(8)


def new_branch() -> str:
    """RFC 3261 §8.1.1.7: the magic cookie marks a branch unique in space and time."""
    return "z9hG4bK" + secrets.token_hex(10)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"


def safe_number(number: str | None) -> str | None:
    """A dialable number, or None: only these may be put in a Refer-To or Contact URI,
    because the value came from an untrusted SIP header."""
    if number is None or not _NUMBER.fullmatch(number):
        return None
    return number


def render(start_line: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [start_line, *(f"{name}: {value}" for name, value in headers), f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode("utf-8") + body


def response(request: SipMessage, status: int, reason: str, *, to_tag: str | None = None,
             headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> bytes:
    """A response to request (§8.2.6.2): Via, From, Call-ID and CSeq copied, To tagged once."""
    out = [("Via", via) for via in request.header_values("via")]
    to = request.header("to") or ""
    if to_tag is not None and request.to_tag is None and status > 100:
        to = f"{to};tag={to_tag}"
    out += [("From", request.header("from") or ""), ("To", to), ("Call-ID", request.call_id or ""),
            ("CSeq", request.header("cseq") or "")]
    if 100 < status < 300 and request.method == "INVITE":
        out += [("Record-Route", rr) for rr in request.header_values("record-route")]
    out += [("Server", USER_AGENT)]
    if headers:
        out += headers
    return render(f"SIP/2.0 {status} {reason}", out, body)


def via(peer: Peer, local: Peer, branch: str) -> str:
    """Our Via for a request sent on peer's flow; rport (RFC 3581) so that answers find us."""
    return f"SIP/2.0/{peer.transport.upper()} {local.hostport};branch={branch};rport"
