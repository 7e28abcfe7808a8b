"""One call through the announcer: answer, play, hand over, end (sans-I/O).

Two ways to hand over. refer (default): answer 200, play the announcement, REFER the PBX to the
destination, follow the NOTIFY sipfrag until a final status, then BYE. early_media_302: play the
announcement as early media after 183 and answer the INVITE 302 with the destination as Contact;
an offer-less INVITE cannot carry early media, so such a call goes the refer way.

Whatever fails during a REFER hand-over (a final error, no answer within refer_timeout, a NOTIFY
with an error, no final NOTIFY within notify_timeout), the call is referred once more to the
operator and the failure logged at error priority: a caller must reach a person. Only when that
fails too is the call ended, logged as announcer.handover_failed.

Logs carry the Call-ID but never a number, so excluded lines (and everyone else) stay out of logs.

Where a call stands is a CallState; every move it may make is in CALL_TRANSITIONS, and Call._move,
the one place the state changes, refuses any other.
"""
from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from enum import StrEnum
from typing import TYPE_CHECKING

import structlog

from policy.announcement import NoticeDecision, Outcome
from wire.sip import SipMessage, SipParseError, parse_uri

from .audio import AnnouncementAudio
from .config import HandOver
from .effects import CallEnded, CallKey, NoticeChanged, RetargetPlayback, StartPlayback, StopPlayback
from .errors import IllegalTransition
from .media import NegotiationError, Stream, accept_answer, accept_offer, answer_sdp, offer_sdp
from .outcomes import AnnouncementKind, HandOverResult, NoticeOutcome
from .sipmsg import Peer, new_tag, safe_number
from .transaction import T1, T2, ClientNonInvite, InviteServerState, ServerInvite, ServerNonInvite

if TYPE_CHECKING:
    from .ua import UserAgent

__all__ = ["CALL_TRANSITIONS", "Call", "CallState", "remote_target_ok"]

log = structlog.get_logger("callrec.announcer")

_SIPFRAG_STATUS = re.compile(rb"\s*SIP/2\.0 ([1-6][0-9]{2})")
REFERRAL_PARAM = "callrec-ref"
"""The Referred-By parameter whose value (the announcer's dialog tag) is unique to one call: a PBX
that copies Referred-By into the INVITE of the transferred call ties that call to its notice."""
_OUTCOMES = {
    Outcome.EXCLUDED: NoticeOutcome.EXCLUDED,
    Outcome.NO_NOTICE_LINE: NoticeOutcome.NO_NOTICE_LINE,
    Outcome.NOT_INBOUND: NoticeOutcome.NOT_INBOUND,
    Outcome.DISABLED: NoticeOutcome.DISABLED,
}


class CallState(StrEnum):
    """Where a call stands; a str, so logs keep the words they always had."""

    RINGING = "ringing"  # the INVITE is not answered yet (ring_seconds)
    ANSWERED = "answered"  # 200 sent; the ACK decides between playing and handing over at once
    PLAYING = "playing"  # the announcement is playing (after the ACK, or as early media after 183)
    REFERRING = "referring"  # REFER sent, not accepted yet
    TRANSFERRING = "transferring"  # REFER accepted; following its NOTIFYs to a final status
    CLOSING = "closing"  # BYE sent
    ENDED = "ended"  # CallEnded emitted; nothing more happens to this call


_C = CallState

CALL_TRANSITIONS: Mapping[CallState, frozenset[CallState]] = {
    # answered 200; early media after 183; CANCEL, BYE, no RTP port, or answered 302 at once
    _C.RINGING: frozenset({_C.ANSWERED, _C.PLAYING, _C.ENDED}),
    # ACK: play, or hand over at once (no notice, or stopping); BYE when the ACK never comes, its SDP
    # answer is unusable, or no destination can be referred to
    _C.ANSWERED: frozenset({_C.PLAYING, _C.REFERRING, _C.CLOSING, _C.ENDED}),
    # played out or stopped: hand over; BYE as from ANSWERED; the caller leaves, or 302 after early media
    _C.PLAYING: frozenset({_C.REFERRING, _C.CLOSING, _C.ENDED}),
    # a failed REFER is followed by a second one to the operator
    _C.REFERRING: frozenset({_C.REFERRING, _C.TRANSFERRING, _C.CLOSING, _C.ENDED}),
    # a NOTIFY with an error, or none in time: refer to the operator
    _C.TRANSFERRING: frozenset({_C.REFERRING, _C.CLOSING, _C.ENDED}),
    # CLOSING -> REFERRING is what the code does, not a design: when a re-INVITE's 2xx goes
    # unacknowledged during a hand-over, the BYE leaves the refer/notify deadline running, and its
    # fallback REFERs the operator after the BYE. Kept so that this table changes no behaviour.
    _C.CLOSING: frozenset({_C.REFERRING, _C.ENDED}),
    _C.ENDED: frozenset(),
}


def uri_of(value: str) -> str:
    """The URI inside a Contact / Record-Route value."""
    if "<" in value:
        return value[value.find("<") + 1:value.find(">")]
    return value.split(";", 1)[0].strip()


class Call:
    """The dialog with the PBX for one caller, and where the announcement stands."""

    def __init__(self, ua: UserAgent, key: CallKey, invite: SipMessage, txn: ServerInvite, peer: Peer,
                 decision: NoticeDecision, calling: str | None, called: str | None, now: float, *,
                 audio: AnnouncementAudio, announcement: AnnouncementKind = AnnouncementKind.NOTICE) -> None:
        self.ua = ua
        self.audio = audio  # fixed when the call arrives: a reload mid-call changes nothing it hears
        self.announcement = announcement
        self.key = key
        self.call_id = key[0]
        self.invite_txn = txn
        self.peer = peer
        self.decision = decision
        self.calling, self.called = calling, called
        self.received_at = now
        self.local_tag = new_tag()
        self.local_uri = uri_of(invite.header("to") or "")
        self.remote = invite.header("from") or ""
        self.remote_target = uri_of(invite.header("contact") or "")
        self.routes = invite.header_values("record-route")
        self.local_cseq = secrets.randbelow(10000) + 1
        self.remote_cseq = invite.cseq[0]
        self.offerless = not invite.body
        self.mode = ua.config.hand_over if not self.offerless else HandOver.REFER
        self.state = CallState.RINGING
        self.stream: Stream | None = None
        self.port: int | None = None
        self.session_id = secrets.randbelow(1 << 31)
        self.sdp_version = 1
        self.deadlines: dict[str, float] = {}
        self.announced_from: float | None = None
        self.announced_to: float | None = None
        self.completed_playback = False
        self.interrupted = False
        self.hand_over = HandOverResult.NONE
        self.destination = decision.destination
        self.refer_txn: ClientNonInvite | None = None
        self.refer_target: str | None = None
        self.referred_by: str | None = None
        self.handed_over_at: float | None = None
        self.pending_2xx: tuple[int, bytes, bool] | None = None  # (CSeq, response, offer in it)
        self._retransmit = T1
        self._offer = None if self.offerless else accept_offer(invite.body)

    # ---- timers -----------------------------------------------------------
    def get_timer(self) -> float | None:
        return min(self.deadlines.values()) if self.deadlines else None

    def handle_timer(self, now: float) -> None:
        for name, deadline in sorted(self.deadlines.items(), key=lambda item: item[1]):
            if deadline <= now and self.deadlines.get(name) == deadline and self.state is not CallState.ENDED:
                del self.deadlines[name]
                self._fire(name, now)

    def _move(self, new: CallState) -> None:
        """The only way the state changes, so a move CALL_TRANSITIONS does not draw fails where it
        is made instead of leaving a call that no event can end."""
        if new not in CALL_TRANSITIONS[self.state]:
            raise IllegalTransition(f"call {self.call_id} cannot move from {self.state} to {new}")
        self.state = new

    def _fire(self, name: str, now: float) -> None:
        if name == "answer":
            self._answer(now)
        elif name == "2xx" and self.pending_2xx is not None:
            self.ua.send(self.peer, self.pending_2xx[1])
            self._retransmit = min(2 * self._retransmit, T2)
            self.deadlines["2xx"] = now + self._retransmit
        elif name == "2xx_end":
            self.deadlines.pop("2xx", None)
            self.pending_2xx = None
            log.error("announcer.no_ack", call_id=self.call_id)
            self._bye(now)
        elif name == "refer":
            self._fallback(now, "no answer to REFER")
        elif name == "notify":
            self._fallback(now, "no final NOTIFY")

    # ---- the INVITE ---------------------------------------------------------
    def start(self, now: float) -> None:
        self._note()
        ring = self.ua.config.ring_seconds
        self.ua.respond(self.invite_txn, 100, "Trying", now=now)
        if ring > 0:
            self.ua.respond(self.invite_txn, 180, "Ringing", to_tag=self.local_tag, now=now,
                            headers=[("Contact", self.ua.contact(self.peer))])
            self.deadlines["answer"] = now + ring
        else:
            self._answer(now)

    def _answer(self, now: float) -> None:
        if self.mode is HandOver.EARLY_MEDIA_302 and not (self.decision.announce and not self.interrupted):
            self._redirect(now)
            return
        self.port = self.ua.open_port()
        if self.port is None:
            log.error("announcer.no_rtp_port", call_id=self.call_id)
            self.ua.respond(self.invite_txn, 503, "Service Unavailable", to_tag=self.local_tag, now=now,
                            headers=[("Retry-After", "5")])
            self._end(now)
            return
        body = self._sdp()
        headers = [("Contact", self.ua.contact(self.peer)), ("Content-Type", "application/sdp")]
        if self.mode is HandOver.EARLY_MEDIA_302:
            self.ua.respond(self.invite_txn, 183, "Session Progress", to_tag=self.local_tag, now=now,
                            headers=headers, body=body)
            self._play(now)
            return
        headers.append(("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, NOTIFY, INFO"))
        data = self.ua.respond(self.invite_txn, 200, "OK", to_tag=self.local_tag, now=now, headers=headers,
                               body=body)
        self._move(CallState.ANSWERED)
        self._await_ack(self.remote_cseq, data, self.offerless, now)

    def _sdp(self) -> bytes:
        assert self.port is not None
        local_ip = self.ua.config.listen_address
        if self._offer is None:
            return offer_sdp(local_ip=local_ip, port=self.port, session_id=self.session_id, version=self.sdp_version)
        self.stream, offer, index = self._offer
        return answer_sdp(offer, index, self.stream, local_ip=local_ip, port=self.port,
                          session_id=self.session_id, version=self.sdp_version)

    def _await_ack(self, cseq: int, data: bytes, offer_in_2xx: bool, now: float) -> None:
        """§13.3.1.4: the UA core, not the transaction, retransmits a 2xx until the ACK comes."""
        self.pending_2xx = (cseq, data, offer_in_2xx)
        self._retransmit = T1
        if not self.peer.reliable:
            self.deadlines["2xx"] = now + T1
        self.deadlines["2xx_end"] = now + 64 * T1

    def on_ack(self, ack: SipMessage, now: float) -> None:
        pending = self.pending_2xx
        if pending is None or ack.cseq[0] != pending[0]:
            return
        self.pending_2xx = None
        self.deadlines.pop("2xx", None)
        self.deadlines.pop("2xx_end", None)
        if pending[2]:
            try:
                stream = accept_answer(ack.body)
            except NegotiationError as exc:
                log.error("announcer.bad_answer", call_id=self.call_id, reason=str(exc))
                self._bye(now)
                return
            self._retarget(stream)
        if self.state is CallState.ANSWERED:
            if self.decision.announce and not self.interrupted:
                self._play(now)
            else:
                self._hand_over(now)

    def _retarget(self, stream: Stream) -> None:
        first = self.stream is None
        self.stream = stream
        if not first and self.state is CallState.PLAYING:
            self.ua.emit(RetargetPlayback(self.key, stream, self.audio.g711[stream.law]))

    def _play(self, now: float) -> None:
        assert self.stream is not None and self.port is not None
        self._move(CallState.PLAYING)
        self.announced_from = now
        log.info("announcer.playing", call_id=self.call_id, law=self.stream.law, announcement=str(self.announcement))
        self.ua.emit(StartPlayback(self.key, self.port, self.stream, self.audio.g711[self.stream.law]))

    def playback_done(self, now: float) -> None:
        if self.state is not CallState.PLAYING:
            return
        self.announced_to = now
        self.completed_playback = True
        self.ua.emit(StopPlayback(self.key))
        self._hand_over(now)

    # ---- hand-over ------------------------------------------------------------
    def _hand_over(self, now: float) -> None:
        if self.mode is HandOver.EARLY_MEDIA_302:
            self._redirect(now)
        else:
            self.hand_over = HandOverResult.REFER
            self._refer(self.destination, now)

    def _redirect(self, now: float) -> None:
        target = self._target_uri(self.destination)
        if target is None:
            target = self._target_uri(self.ua.config.operator)
            self.hand_over = HandOverResult.FALLBACK_OPERATOR
            self.destination = self.ua.config.operator
            log.error("announcer.fallback_operator", call_id=self.call_id, reason="no usable destination")
        else:
            self.hand_over = HandOverResult.REDIRECT_302
        self.refer_target, self.handed_over_at = target, now
        self.ua.respond(self.invite_txn, 302, "Moved Temporarily", to_tag=self.local_tag, now=now,
                        headers=[("Contact", f"<{target}>")])
        self.ua.redirected(self.key, now)
        log.info("announcer.redirected", call_id=self.call_id)
        self._end(now)

    def _target_uri(self, number: str | None) -> str | None:
        number = safe_number(number)
        if number is None:
            return None
        host = self.ua.config.handover_host or self.peer.host
        host = f"[{host}]" if ":" in host else host
        return f"sip:{number}@{host}"

    def _refer(self, number: str | None, now: float) -> None:
        target = self._target_uri(number)
        if target is None:
            self._fallback(now, "no usable destination")
            return
        self._move(CallState.REFERRING)
        self.refer_target, self.handed_over_at = target, now
        self.referred_by = f"<{self.local_uri}>;{REFERRAL_PARAM}={self.local_tag}"
        self._note()
        self.refer_txn = self._request("REFER", [("Refer-To", f"<{target}>"), ("Referred-By", self.referred_by)], now)
        self.deadlines["refer"] = now + self.ua.config.refer_timeout
        log.info("announcer.refer_sent", call_id=self.call_id,
                 fallback=self.hand_over is HandOverResult.FALLBACK_OPERATOR)

    def _fallback(self, now: float, why: str) -> None:
        self.deadlines.pop("refer", None)
        self.deadlines.pop("notify", None)
        if self.refer_txn is not None:
            self.refer_txn.abandon()
            self.refer_txn = None
        if self.hand_over is HandOverResult.FALLBACK_OPERATOR:
            self.hand_over = HandOverResult.FAILED
            log.error("announcer.handover_failed", call_id=self.call_id, reason=why)
            self._bye(now)
            return
        log.error("announcer.fallback_operator", call_id=self.call_id, reason=why)
        self.hand_over = HandOverResult.FALLBACK_OPERATOR
        self.destination = self.ua.config.operator
        self._refer(self.destination, now)

    def _handed_over(self, now: float) -> None:
        self.deadlines.pop("notify", None)
        log.info("announcer.handed_over", call_id=self.call_id, hand_over=str(self.hand_over))
        self._bye(now)

    # ---- requests we send -------------------------------------------------------
    def _request(self, method: str, headers: list[tuple[str, str]], now: float) -> ClientNonInvite:
        self.local_cseq += 1
        out = [("Max-Forwards", "70"), ("From", f"<{self.local_uri}>;tag={self.local_tag}"), ("To", self.remote),
               ("Call-ID", self.call_id), ("CSeq", f"{self.local_cseq} {method}"),
               ("Contact", self.ua.contact(self.peer))]
        out += [("Route", route) for route in self.routes]
        out += headers
        return self.ua.request(self, self.peer, method, self.remote_target, out, now)

    def _bye(self, now: float) -> None:
        if self.state in (CallState.CLOSING, CallState.ENDED):
            return
        self._note()
        self._stop_media()
        self._move(CallState.CLOSING)
        self._request("BYE", [], now)

    def on_response(self, txn: ClientNonInvite, message: SipMessage, now: float) -> None:
        status = message.status or 0
        if self.state is CallState.ENDED or status < 200:
            return
        if txn.method == "BYE":
            self._end(now)
        elif txn.method == "REFER" and txn is self.refer_txn and self.state is CallState.REFERRING:
            self.deadlines.pop("refer", None)
            self.refer_txn = None
            if status < 300:
                self._move(CallState.TRANSFERRING)
                self.deadlines["notify"] = now + self.ua.config.notify_timeout
            else:
                self._fallback(now, f"REFER answered {status}")

    def on_timeout(self, txn: ClientNonInvite, now: float) -> None:
        if txn.method == "BYE" and self.state is not CallState.ENDED:
            log.warning("announcer.bye_unanswered", call_id=self.call_id)
            self._end(now)

    # ---- requests from the PBX --------------------------------------------------
    def on_cancel(self, now: float) -> None:
        if self.invite_txn.state is not InviteServerState.PROCEEDING:
            return
        self.ua.respond(self.invite_txn, 487, "Request Terminated", to_tag=self.local_tag, now=now)
        log.info("announcer.cancelled", call_id=self.call_id)
        self._caller_left(now)

    def on_request(self, txn: ServerInvite | ServerNonInvite, request: SipMessage, now: float) -> None:
        method = request.method
        if request.cseq[0] > self.remote_cseq:
            self.remote_cseq = request.cseq[0]
        if method == "BYE":
            self.ua.respond(txn, 200, "OK", now=now)
            if self.state in (CallState.TRANSFERRING, CallState.CLOSING):
                # The PBX ends our leg once it has moved the caller.
                if self.state is CallState.TRANSFERRING:
                    log.info("announcer.handed_over", call_id=self.call_id, hand_over=str(self.hand_over))
                self._end(now)
            else:
                log.info("announcer.caller_hung_up", call_id=self.call_id, state=str(self.state))
                self._caller_left(now)
        elif method == "INVITE":
            assert isinstance(txn, ServerInvite)
            self._reinvite(txn, request, now)
        elif method == "NOTIFY":
            self._notify(txn, request, now)
        elif method in ("OPTIONS", "INFO"):
            self.ua.respond(txn, 200, "OK", now=now)
        else:
            self.ua.respond(txn, 405, "Method Not Allowed", now=now, headers=[("Allow", self.ua.allow)])

    def _reinvite(self, txn: ServerInvite, request: SipMessage, now: float) -> None:
        if self.pending_2xx is not None or self.port is None:
            self.ua.respond(txn, 491, "Request Pending", now=now)
            return
        self.sdp_version += 1
        local_ip = self.ua.config.listen_address
        if request.body:
            try:
                stream, offer, index = accept_offer(request.body)
            except NegotiationError:
                self.ua.respond(txn, 488, "Not Acceptable Here", now=now)
                return
            self._retarget(stream)
            body = answer_sdp(offer, index, stream, local_ip=local_ip, port=self.port, session_id=self.session_id,
                              version=self.sdp_version)
        else:
            body = offer_sdp(local_ip=local_ip, port=self.port, session_id=self.session_id, version=self.sdp_version)
        data = self.ua.respond(txn, 200, "OK", now=now, body=body,
                               headers=[("Contact", self.ua.contact(self.peer)), ("Content-Type", "application/sdp")])
        self._await_ack(request.cseq[0], data, not request.body, now)

    def _notify(self, txn: ServerInvite | ServerNonInvite, request: SipMessage, now: float) -> None:
        event = (request.header("event") or "").split(";", 1)[0].strip().lower()
        if event != "refer":
            self.ua.respond(txn, 489, "Bad Event", now=now)
            return
        self.ua.respond(txn, 200, "OK", now=now)
        if self.state is CallState.REFERRING:
            # RFC 3515 §2.4.4: a NOTIFY may overtake the 202; it says the REFER was accepted.
            self.deadlines.pop("refer", None)
            self.refer_txn = None
            self._move(CallState.TRANSFERRING)
            self.deadlines["notify"] = now + self.ua.config.notify_timeout
        if self.state is not CallState.TRANSFERRING:
            return
        found = _SIPFRAG_STATUS.match(request.body)
        status = int(found.group(1)) if found else 0
        terminated = (request.header("subscription-state") or "").lower().startswith("terminated")
        if 200 <= status < 300:
            self._handed_over(now)
        elif status >= 300:
            self._fallback(now, f"NOTIFY sipfrag {status}")
        elif terminated:
            self._fallback(now, "subscription ended without a final status")

    # ---- ending -------------------------------------------------------------------
    def stop(self, now: float) -> None:
        """The service is stopping: skip what is left of the announcement and hand over now."""
        self.interrupted = True
        if self.state is CallState.RINGING:
            self.deadlines.pop("answer", None)
            self._answer(now)
        elif self.state is CallState.PLAYING:
            self.announced_to = now
            self.ua.emit(StopPlayback(self.key))
            self._hand_over(now)

    def _caller_left(self, now: float) -> None:
        if self.state is CallState.PLAYING:
            self.announced_to = now
        self._end(now)

    def _stop_media(self) -> None:
        if self.state is CallState.PLAYING:
            self.ua.emit(StopPlayback(self.key))

    def _outcome(self) -> NoticeOutcome:
        if self.decision.outcome in _OUTCOMES:
            return _OUTCOMES[self.decision.outcome]
        if self.state is CallState.RINGING and self.announced_from is None and not self.interrupted:
            return NoticeOutcome.IN_PROGRESS
        if self.completed_playback:
            return NoticeOutcome.ANNOUNCED
        if self.interrupted and self.hand_over is not HandOverResult.NONE:
            return NoticeOutcome.INTERRUPTED
        return NoticeOutcome.CALLER_HUNG_UP

    def _end(self, now: float) -> None:
        if self.state is CallState.ENDED:
            return
        self._stop_media()
        self._move(CallState.ENDED)
        self.deadlines.clear()
        self.ua.call_ended(self, CallEnded(**self._notice_fields()))

    def _note(self) -> None:
        """The notice as it stands, for the adapter to write before the SIP of this step leaves."""
        self.ua.emit(NoticeChanged(**self._notice_fields()))

    def _notice_fields(self) -> dict[str, object]:
        """The notice's fields; an excluded line's keep no number, not even in the hand-over."""
        excluded = self.decision.excluded
        link = self.ua.decider.policy.announcement.handover_seconds
        return {
            "key": self.key, "sip_call_id": self.call_id, "received_at": self.received_at, "outcome": self._outcome(),
            "hand_over": self.hand_over, "announced_from": self.announced_from, "announced_to": self.announced_to,
            "calling_number": None if excluded else self.ua.decider.normalise(self.calling),
            "called_number": None if excluded else self.ua.decider.normalise(self.called),
            "destination": None if excluded else self.destination, "reason": self.decision.reason,
            "refer_target": None if excluded else self.refer_target,
            "referred_by": None if excluded else self.referred_by,
            "handed_over_at": self.handed_over_at, "link_seconds": link, "announcement": self.announcement if self.announced_from is not None else None,
            "announcement_sha256": self.audio.sha256 if self.announced_from is not None else None}


def remote_target_ok(invite: SipMessage) -> bool:
    """An INVITE must carry a Contact with a usable URI (§8.1.1.8); without one no in-dialog
    request (REFER, BYE) could be sent."""
    contact = invite.header("contact")
    if not contact:
        return False
    try:
        parse_uri(uri_of(contact))
    except SipParseError:
        return False
    return True
