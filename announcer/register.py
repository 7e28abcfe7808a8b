"""Registration to the PBX as an extension (RFC 3261 §10), with digest authentication (§22).

Some PBXs route only to registered endpoints. The binding is refreshed before it expires (at
half its lifetime, so one lost refresh still leaves time for another); a refused or unanswered
REGISTER is logged at error priority and retried after RETRY seconds, because calls will not reach
the announcer meanwhile. The password is read from its file at each registration.
"""
from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

import structlog

from wire.sip import SipMessage, SipParseError, parse_name_addr

from .config import Registration, split_hostport
from .digest import DigestError, authorization, parse_challenge
from .sipmsg import Peer, new_call_id, new_tag
from .transaction import ClientNonInvite

if TYPE_CHECKING:
    from .ua import UserAgent

log = structlog.get_logger("callrec.announcer")

RETRY = 60.0


class Registrar:
    """The announcer's one registration binding."""

    def __init__(self, ua: UserAgent, config: Registration) -> None:
        self.ua = ua
        self.config = config
        host, port = split_hostport(config.registrar, 5060)
        self.peer = Peer(config.transport, host, port)
        self.domain = config.domain or (f"[{host}]" if ":" in host else host)
        self.call_id = new_call_id(ua.config.listen_address)
        self.tag = new_tag()
        self.cseq = 0
        self.state = "idle"
        self.expires = config.expires
        self.deadlines: dict[str, float] = {}
        self._authorised_nonce: str | None = None
        self._txn: ClientNonInvite | None = None

    @property
    def idle(self) -> bool:
        return not (self.state == "unregistering" and self._txn is not None)

    def get_timer(self) -> float | None:
        return min(self.deadlines.values()) if self.deadlines else None

    def handle_timer(self, now: float) -> None:
        deadline = self.deadlines.get("register")
        if deadline is not None and deadline <= now:
            del self.deadlines["register"]
            self.register(now)

    def register(self, now: float) -> None:
        if self.state == "unregistering":
            return
        self._authorised_nonce = None
        self.state = "registering"
        self._send(self.expires, None, now)

    def unregister(self, now: float) -> None:
        if self.state == "registered":
            self.state = "unregistering"
            self.deadlines.clear()
            self._send(0, None, now)

    def _send(self, expires: int, auth: tuple[str, str] | None, now: float) -> None:
        self.cseq += 1
        uri = f"sip:{self.domain}"
        aor = f"<sip:{self.config.user}@{self.domain}>"
        headers = [("Max-Forwards", "70"), ("From", f"{aor};tag={self.tag}"), ("To", aor),
                   ("Call-ID", self.call_id), ("CSeq", f"{self.cseq} REGISTER"),
                   ("Contact", self.ua.contact(self.peer, self.config.user)),
                   ("Expires", str(expires)), ("User-Agent", "callrec-announcer")]
        if auth is not None:
            headers.append(auth)
        self._txn = self.ua.request(self, self.peer, "REGISTER", uri, headers, now)

    def on_response(self, txn: ClientNonInvite, message: SipMessage, now: float) -> None:
        status = message.status or 0
        if txn is not self._txn or status < 200:
            return
        self._txn = None
        if status in (401, 407):
            self._challenged(message, status, now)
        elif status < 300:
            if self.state == "unregistering":
                self.state = "idle"
                log.info("announcer.unregistered", registrar=self.config.registrar)
                return
            self.state = "registered"
            granted = self._granted(message)
            self.deadlines["register"] = now + max(granted / 2, 30.0)
            log.info("announcer.registered", registrar=self.config.registrar, expires=granted)
        else:
            self._failed(f"registrar answered {status}", now)

    def _challenged(self, message: SipMessage, status: int, now: float) -> None:
        name = "www-authenticate" if status == 401 else "proxy-authenticate"
        answer = "Authorization" if status == 401 else "Proxy-Authorization"
        try:
            challenge = parse_challenge(message.header(name) or "")
        except DigestError as exc:
            self._failed(f"unusable challenge: {exc}", now)
            return
        if self._authorised_nonce is not None and not challenge.stale:
            self._failed("credentials refused", now)
            return
        try:
            password = self.config.password()
        except OSError as exc:
            self._failed(f"cannot read password_file: {exc.strerror}", now)
            return
        self._authorised_nonce = challenge.nonce
        value = authorization(challenge, username=self.config.auth_user or self.config.user, password=password,
                              method="REGISTER", uri=f"sip:{self.domain}", cnonce=secrets.token_hex(8))
        self._send(self.expires if self.state != "unregistering" else 0, (answer, value), now)

    def _granted(self, message: SipMessage) -> int:
        for contact in message.header_values("contact"):
            try:
                params = parse_name_addr(contact).params
            except SipParseError:
                continue
            if params.get("expires", "").isdigit():
                return int(params["expires"])
        expires = message.header("expires") or ""
        return int(expires) if expires.isdigit() else self.expires

    def _failed(self, why: str, now: float) -> None:
        if self.state == "unregistering":
            self.state = "idle"
            return
        self.state = "failed"
        log.error("announcer.register_failed", registrar=self.config.registrar, reason=why)
        self.deadlines["register"] = now + RETRY

    def on_timeout(self, txn: ClientNonInvite, now: float) -> None:
        if txn is self._txn:
            self._txn = None
            self._failed("no answer", now)
