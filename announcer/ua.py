"""The announcer's SIP user agent core (sans-I/O): messages and `now` in, effects out.

The adapters (service.py) feed it datagrams / stream messages with the flow they came on, ask
get_timer() when to call handle_timer(now), report the end of each playback, and carry out what
pop_effects() returns: SIP to send, playback to start or stop, notices to write.

Only the PBX may use the announcer: requests from any other address are answered 403 and logged
as announcer.refused (OPTIONS excepted, so that monitoring can ping it). Responses go back on the
flow the request came on, like rport (RFC 3581) and connection reuse (RFC 5923): the PBX is the
one peer, sits next to us, and may be behind NAT or talk TCP from an ephemeral port.

The caller next time (issue 18): when the policy names a warning announcement, the adapter gives
the core its audio (`warning`) and a predicate over normalised numbers (`warned`) that says which
callers were marked often enough; a call that would hear the notice from such a number hears the
warning instead. The core never looks the number up itself: storage is the adapter's business.
"""
from __future__ import annotations

from collections.abc import Callable

import structlog

from policy.announcement import decide_notice
from policy.decide import PolicyDecider, normalise_number
from wire.sip import SipMessage, SipParseError, parse_name_addr, parse_sip, parse_uri, uri_number

from .audio import AnnouncementAudio
from .call import Call, remote_target_ok
from .config import AnnouncerConfig, DestinationFrom
from .effects import CallEnded, CallKey, CoreEffect, RedirectFailed, ReleasePort
from .media import NegotiationError, accept_offer
from .outcomes import AnnouncementKind
from .register import Registrar
from .sipmsg import ALLOW, Peer, new_branch, render, response, via
from .transaction import (
    T1,
    ClientNonInvite,
    InviteServerState,
    Response,
    Send,
    ServerInvite,
    ServerNonInvite,
    TimedOut,
    TransactionTable,
    client_key,
    server_key,
)

log = structlog.get_logger("callrec.announcer")

Effect = Send | CoreEffect
REDIRECT_MEMORY = 64 * T1
Owner = Call | Registrar
WITHHELD_PRIVACY = ("id", "user", "header")
"""Privacy values (RFC 3323, 3325) by which a caller withheld the number: such a caller is never
warned, whatever number the PBX still shows."""


def never_warned(_number: str) -> bool:
    return False


def _number(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return uri_number(parse_name_addr(value).uri)
    except SipParseError:
        return None


class UserAgent:
    """All calls, transactions and the registration of one announcer."""

    allow = ALLOW

    def __init__(self, config: AnnouncerConfig, decider: PolicyDecider, audio: AnnouncementAudio,
                 open_port: Callable[[], int | None]) -> None:
        self.config = config
        self.decider = decider
        self.audio = audio
        self.open_port = open_port
        self.table = TransactionTable()
        self.calls: dict[tuple[str, str], Call] = {}
        self._redirected: dict[CallKey, float] = {}
        self.stopping = False
        self._effects: list[Effect] = []
        self.registrar = Registrar(self, config.registration) if config.registration is not None else None
        self.warning: AnnouncementAudio | None = None
        self.warned: Callable[[str], bool] = never_warned

    # ---- adapter interface ---------------------------------------------------
    def pop_effects(self) -> list[Effect]:
        out, self._effects = self._effects, []
        return out

    def receive_datagram(self, data: bytes, peer: Peer, now: float) -> None:
        try:
            message = parse_sip(data)
        except SipParseError as exc:
            log.debug("announcer.unparsable", peer=peer.host, reason=str(exc))
            return
        self.receive(message, peer, now)

    def receive(self, message: SipMessage, peer: Peer, now: float) -> None:
        if message.is_request:
            self._request(message, peer, now)
        else:
            self._response(message, now)

    def get_timer(self) -> float | None:
        deadlines = [t for t in (self.table.get_timer(), *(c.get_timer() for c in self.calls.values())) if t is not None]
        if self.registrar is not None and (t := self.registrar.get_timer()) is not None:
            deadlines.append(t)
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        self._run(self.table.handle_timer(now), now)
        for call in list(self.calls.values()):
            deadline = call.get_timer()
            if deadline is not None and deadline <= now:
                call.handle_timer(now)
        if self.registrar is not None:
            self.registrar.handle_timer(now)

    def start(self, now: float) -> None:
        if self.registrar is not None:
            self.registrar.register(now)

    def playback_done(self, key: tuple[str, str], now: float) -> None:
        call = self.calls.get(key)
        if call is not None:
            call.playback_done(now)

    def stop(self, now: float) -> None:
        """Graceful stop: no new calls; every call in progress is handed over at once."""
        self.stopping = True
        for call in list(self.calls.values()):
            call.stop(now)
        if self.registrar is not None:
            self.registrar.unregister(now)

    @property
    def idle(self) -> bool:
        return not self.calls and (self.registrar is None or self.registrar.idle)

    # ---- used by calls and the registrar ----------------------------------------
    def emit(self, effect: Effect) -> None:
        self._effects.append(effect)

    def send(self, peer: Peer, data: bytes) -> None:
        self._effects.append(Send(peer, data))

    def local(self, transport: str) -> Peer:
        return Peer(transport, self.config.listen_address, self.config.listen_port)

    def contact(self, peer: Peer, user: str = "announcer") -> str:
        return f"<sip:{user}@{self.local(peer.transport).hostport};transport={peer.transport}>"

    def respond(self, txn: ServerInvite | ServerNonInvite, status: int, reason: str, *, now: float,
                to_tag: str | None = None, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> bytes:
        data = response(txn.request, status, reason, to_tag=to_tag, headers=headers, body=body)
        self._run(txn.respond(status, data, now), now)
        return data

    def request(self, owner: Owner, peer: Peer, method: str, uri: str, headers: list[tuple[str, str]],
                now: float, body: bytes = b"") -> ClientNonInvite:
        branch = new_branch()
        data = render(f"{method} {uri} SIP/2.0", [("Via", via(peer, self.local(peer.transport), branch)), *headers],
                      body)
        txn = ClientNonInvite(method, branch, data, peer, now)
        txn.owner = owner
        self.table.add_client(txn)
        self._run(txn.start(), now)
        return txn

    def redirected(self, key: CallKey, now: float) -> None:
        """Remember a call answered 302 for as long as its transaction lives (64×T1): if the PBX
        never acknowledges the 302, or sends the same call back, the redirect failed at the PBX
        and its notice must say so (RedirectFailed)."""
        for old, until in list(self._redirected.items()):
            if until <= now:
                del self._redirected[old]
        self._redirected[key] = now + REDIRECT_MEMORY

    def _redirect_failed(self, key: CallKey, reason: str) -> None:
        if self._redirected.pop(key, None) is None:
            return
        log.error("announcer.redirect_failed", call_id=key[0], reason=reason)
        self._effects.append(RedirectFailed(key, key[0], reason))

    def call_ended(self, call: Call, ended: CallEnded) -> None:
        self.calls.pop(call.key, None)
        if call.port is not None:
            self._effects.append(ReleasePort(call.port))
        self._effects.append(ended)
        log.info("announcer.call_ended", call_id=ended.sip_call_id, outcome=str(ended.outcome),
                 hand_over=str(ended.hand_over))

    # ---- dispatch -----------------------------------------------------------------
    def _run(self, effects: list[Send | TimedOut | Response], now: float) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                self._effects.append(effect)
                continue
            owner = effect.transaction.owner
            if isinstance(effect, Response):
                if isinstance(owner, (Call, Registrar)):
                    owner.on_response(effect.transaction, effect.message, now)
            elif isinstance(effect.transaction, ServerInvite):
                request = effect.transaction.request
                log.error("announcer.final_unacknowledged", call_id=request.call_id,
                          status=effect.transaction.status)
                self._redirect_failed((request.call_id or "", request.from_tag or ""),
                                      "the PBX never acknowledged the 302")
            elif isinstance(owner, (Call, Registrar)) and isinstance(effect.transaction, ClientNonInvite):
                owner.on_timeout(effect.transaction, now)

    def _response(self, message: SipMessage, now: float) -> None:
        key = client_key(message)
        txn = self.table.client.get(key) if key is not None else None
        if txn is None:
            return
        self._run(txn.receive(message, now), now)

    def _request(self, request: SipMessage, peer: Peer, now: float) -> None:
        key = server_key(request)
        if key is None:
            if request.method != "ACK":
                self.send(peer, response(request, 400, "Missing Via Branch"))
            return
        existing = self.table.server.get(key)
        if existing is not None and not (request.method == "ACK" and existing.state is InviteServerState.ACCEPTED):
            self._run(existing.receive(request, now), now)
            return
        if request.method == "ACK":
            # The ACK of a 2xx is its own transaction (§17.1.1.3); some PBXs reuse the INVITE's
            # branch for it, so it is also taken here when that INVITE was answered 2xx.
            call = self.calls.get((request.call_id or "", request.from_tag or ""))
            if call is not None:
                call.on_ack(request, now)
            return
        txn: ServerInvite | ServerNonInvite
        txn = ServerInvite(request, peer) if request.method == "INVITE" else ServerNonInvite(request, peer)
        self.table.add_server(key, txn)
        if request.method == "OPTIONS" and request.to_tag is None:
            self.respond(txn, 200, "OK", now=now, headers=[("Allow", ALLOW), ("Accept", "application/sdp")])
            return
        if not self.config.allows(peer.host):
            log.warning("announcer.refused", peer=peer.host, method=request.method)
            self.respond(txn, 403, "Forbidden", now=now)
            return
        if request.method == "CANCEL":
            self._cancel(txn, request, now)
        elif request.to_tag is not None:
            call = self.calls.get((request.call_id or "", request.from_tag or ""))
            if call is None or call.local_tag != request.to_tag:
                self.respond(txn, 481, "Call/Transaction Does Not Exist", now=now)
            else:
                call.on_request(txn, request, now)
        elif request.method == "INVITE":
            assert isinstance(txn, ServerInvite)
            self._invite(txn, request, peer, now)
        elif request.method in ("BYE", "NOTIFY", "INFO"):
            self.respond(txn, 481, "Call/Transaction Does Not Exist", now=now)
        else:
            self.respond(txn, 405, "Method Not Allowed", now=now, headers=[("Allow", ALLOW)])

    def _cancel(self, txn: ServerInvite | ServerNonInvite, request: SipMessage, now: float) -> None:
        key = server_key(request)
        assert key is not None
        invite = self.table.server.get((key[0], key[1], "INVITE"))
        if invite is None:
            self.respond(txn, 481, "Call/Transaction Does Not Exist", now=now)
            return
        self.respond(txn, 200, "OK", now=now)
        call = self.calls.get((request.call_id or "", request.from_tag or ""))
        if call is not None and call.invite_txn is invite:
            call.on_cancel(now)

    def _invite(self, txn: ServerInvite, request: SipMessage, peer: Peer, now: float) -> None:
        call_key = (request.call_id or "", request.from_tag or "")
        if self.stopping or len(self.calls) >= self.config.max_calls:
            self.respond(txn, 503, "Service Unavailable", now=now, headers=[("Retry-After", "5")])
            return
        if call_key in self.calls:
            self.respond(txn, 482, "Loop Detected", now=now)  # §8.2.2.2: a merged request
            return
        if self._redirected.get(call_key, 0.0) > now:
            # The PBX routed the 302's target back here: the caller has heard the notice and must not
            # hear it again in a loop; the PBX ends the call, and the notice says the redirect failed.
            self._redirect_failed(call_key, "the PBX sent the redirected call back to the announcer")
            self.respond(txn, 482, "Loop Detected", now=now)
            return
        if not call_key[1] or not remote_target_ok(request):
            self.respond(txn, 400, "Bad Request", now=now)
            return
        if request.body:
            try:
                accept_offer(request.body)
            except NegotiationError as exc:
                log.error("announcer.no_common_codec", call_id=call_key[0], reason=str(exc))
                self.respond(txn, 488, "Not Acceptable Here", now=now)
                return
        calling, called, others = self._numbers(request)
        decision = decide_notice(self.decider, calling, called, others)
        warn = decision.announce and self._warned(request, calling)
        call = Call(self, call_key, request, txn, peer, decision, calling, called, now,
                    audio=self.warning if warn and self.warning is not None else self.audio,
                    announcement=AnnouncementKind.WARNING if warn else AnnouncementKind.NOTICE)
        self.calls[call_key] = call
        log.info("announcer.invite", call_id=call_key[0], decision=str(decision.outcome),
                 announcement=str(call.announcement))
        call.start(now)

    def _warned(self, request: SipMessage, calling: str | None) -> bool:
        """Whether this caller hears the warning: the policy names one, the caller showed a number
        (withheld numbers are excepted, even when the PBX still passes them on) and the adapter's
        predicate says that number was marked often enough."""
        if self.warning is None:
            return False
        privacy = (request.header("privacy") or "").lower()
        if any(word in privacy for word in WITHHELD_PRIVACY):
            return False
        number = normalise_number(calling, self.decider.policy.numbering.country_code)
        if not number or not any(ch.isdigit() for ch in number):
            return False
        return self.warned(number)

    def _numbers(self, request: SipMessage) -> tuple[str | None, str | None, tuple[str | None, ...]]:
        """Calling number, the called number the config points at, and every other number the
        INVITE names (so that an excluded line is caught whichever header carries it)."""
        calling = _number(request.header("from"))
        try:
            ruri = uri_number(parse_uri(request.request_uri or ""))
        except SipParseError:
            ruri = None
        to = _number(request.header("to"))
        diversion = [_number(value) for value in request.header_values("diversion")]
        source = self.config.destination_from
        if source is DestinationFrom.TO:
            called = to
        elif source is DestinationFrom.DIVERSION and diversion and diversion[-1]:
            called = diversion[-1]  # the last Diversion is the first redirection: the number dialled
        else:
            called = ruri
        return calling, called, (ruri, to, *diversion)
