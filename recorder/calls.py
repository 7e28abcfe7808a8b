"""Calls from SIP dialogs (sans-I/O).

The tracker sees the signalling of every call as a passive observer: it may
see a message once, twice (retransmissions, several hops of the mirror) or
never (loss on the mirror port), so every step is idempotent and nothing
waits for a message that may not come.  Time is the capture time passed in.
"""
from __future__ import annotations

import enum
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass, field

from policy.decide import Classification, PolicyDecider, normalise_number
from wire.sdp import SdpParseError, parse_sdp
from wire.sip import SipMessage, SipParseError, is_anonymous, parse_name_addr, parse_uri, uri_number

from .record import CallSnapshot

CALLER, CALLEE = 0, 1
Endpoint = tuple[bytes, int]

# How long an ended call keeps its Call-ID, so that retransmitted BYEs and
# late 200s are recognised (RFC 3261 Timer J/H are 32 s).
TOMBSTONE_SECONDS = 64.0
# A failed final response may be followed by a 2xx from another fork.
FORK_GRACE_SECONDS = 32.0
MAX_ENDPOINTS_PER_PARTY = 8
MAX_EARLY_DIALOGS = 8
# Retransmissions, forks and a Call-ID used again after its call stay far
# below this; more is a flood aimed at one Call-ID, and every message under
# it is looked up among them.
MAX_CALLS_PER_CALL_ID = 16


class CallState(enum.Enum):
    CALLING = "calling"
    EARLY = "early"
    FAILED = "failed"
    ANSWERED = "answered"
    ENDED = "ended"


EVICTION_ORDER = (CallState.ENDED, CallState.FAILED, CallState.CALLING, CallState.EARLY)
"""Which calls the bound on open dialogs forgets first: an ended call (only
its Call-ID is kept), then a refused one (waiting for another fork's 2xx),
then one nobody has answered even provisionally (where a scanner's INVITEs
stay), and a ringing one last.  Answered calls are never forgotten."""


@dataclass(slots=True, eq=False)
class Call:
    """One call: an INVITE transaction and the dialog it answered."""

    serial: int
    call_id: str
    caller_tag: str
    invite_cseq: int
    invite_ts: float
    classification: Classification
    caller: str | None
    callee: str | None
    caller_withheld: bool
    state: CallState = CallState.CALLING
    answer_ts: float | None = None
    end_ts: float | None = None
    last_activity: float = 0.0
    answered_tag: str | None = None
    end_reason: str = ""
    complete: bool = False
    src_addresses: set[str] = field(default_factory=set)
    dst_addresses: set[str] = field(default_factory=set)
    endpoints: tuple[list[Endpoint], list[Endpoint]] = field(default_factory=lambda: ([], []))
    payload_types: tuple[dict[int, tuple[str, int]], dict[int, tuple[str, int]]] = field(
        default_factory=lambda: ({}, {})
    )
    early_sdp: dict[str, bytes] = field(default_factory=dict)

    @property
    def local_party(self) -> int:
        return CALLER if self.classification.local_is_caller else CALLEE

    def channel_of(self, speaking_party: int) -> int:
        """Channel 0 holds the local party (staff), channel 1 the remote one."""
        return 0 if speaking_party == self.local_party else 1

    def pt_map_for(self, speaking_party: int) -> dict[int, tuple[str, int]]:
        """Media sent to a party uses that party's payload type numbers
        (RFC 3264 §5.1); the sender's own map fills the gaps."""
        merged = dict(self.payload_types[speaking_party])
        merged.update(self.payload_types[1 - speaking_party])
        return merged

    @property
    def codecs(self) -> list[str]:
        names = {enc for m in self.payload_types for enc, _ in m.values()}
        return sorted(names - {"TELEPHONE-EVENT", "CN"})

    def snapshot(self) -> CallSnapshot:
        """The call as storage may see it: frozen, so what the tracker does
        next cannot change a row being written."""
        c = self.classification
        return CallSnapshot(
            serial=self.serial, sip_call_id=self.call_id, invite_ts=self.invite_ts,
            answer_ts=self.answer_ts, end_ts=self.end_ts, direction=c.direction,
            local_number=c.local_number, remote_number=c.remote_number,
            caller=self.caller, callee=self.callee, caller_withheld=self.caller_withheld,
            codecs=tuple(self.codecs), end_reason=self.end_reason, complete=self.complete,
        )


@dataclass(slots=True)
class CallAnswered:
    call: Call


@dataclass(slots=True)
class MediaChanged:
    call: Call


@dataclass(slots=True)
class CallEnded:
    call: Call


@dataclass(slots=True)
class CallDropped:
    """An unanswered call is gone: nothing of it is recorded."""

    call: Call


CallEvent = CallAnswered | MediaChanged | CallEnded | CallDropped


def _party_number(value: str | None) -> tuple[str | None, bool]:
    if not value:
        return None, False
    try:
        addr = parse_name_addr(value)
    except SipParseError:
        return None, False
    return uri_number(addr.uri), is_anonymous(addr)


def _packed(address: str | None) -> bytes | None:
    if not address:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return None if ip.is_unspecified else ip.packed


class CallTracker:
    """Turns SIP messages into call events, and keeps the media endpoints
    each call announced in its SDP so RTP can be matched to it.

    Every call is in the queue of its state, oldest first: CALLING and
    EARLY in the order of their last message, FAILED in the order they
    failed, ENDED in the order they ended.  So timers look only at the calls
    that are due (plus the answered ones), and the bound on open dialogs
    forgets the oldest of the least useful state, each in O(1) however many
    dialogs an INVITE flood has opened."""

    def __init__(self, decider: PolicyDecider) -> None:
        self.decider = decider
        self._by_call_id: dict[str, list[Call]] = {}
        self._queues: dict[CallState, OrderedDict[int, Call]] = {state: OrderedDict() for state in CallState}
        self._serial = 0
        self._live_calls = 0
        self.endpoints: dict[Endpoint, tuple[Call, int]] = {}
        self.endpoint_generation = 0
        self.stats = {"sip_messages": 0, "sip_without_call_id": 0, "sdp_errors": 0,
                      "calls": 0, "excluded_calls": 0, "calls_evicted": 0, "tombstones_evicted": 0}

    # ---- messages -------------------------------------------------------
    def on_message(self, ts: float, src: str, dst: str, msg: SipMessage) -> list[CallEvent]:
        self.stats["sip_messages"] += 1
        call_id = msg.call_id
        if not call_id:
            self.stats["sip_without_call_id"] += 1
            return []
        try:
            cseq_num, cseq_method = msg.cseq
        except (SipParseError, TypeError, ValueError):
            return []
        events: list[CallEvent] = []
        call = self._find(call_id, msg)
        if msg.method is not None:
            if call is None:
                if msg.method == "INVITE" and not msg.to_tag:
                    call = self._new_call(ts, src, dst, msg, cseq_num, events)
                    if call is None:
                        return []
                else:
                    return []
            self._touch(call, ts)
            self._on_request(ts, src, dst, call, msg, cseq_num, events)
        elif call is not None:
            self._touch(call, ts)
            self._on_response(ts, call, msg, cseq_method, events)
        return events

    def _touch(self, call: Call, ts: float) -> None:
        """A message of the call: a call still waiting for its answer goes to
        the back of its queue, which stays in the order of last messages."""
        call.last_activity = ts
        if call.state is CallState.CALLING or call.state is CallState.EARLY:
            self._queues[call.state].move_to_end(call.serial)

    def _set_state(self, call: Call, state: CallState) -> None:
        """Every change of state goes through here, so the call is always in
        its state's queue, at the back after a change."""
        self._queues[call.state].pop(call.serial, None)
        call.state = state
        self._queues[state][call.serial] = call

    def _find(self, call_id: str, msg: SipMessage) -> Call | None:
        calls = self._by_call_id.get(call_id)
        if not calls:
            return None
        from_tag, to_tag = msg.from_tag or "", msg.to_tag or ""
        for call in reversed(calls):
            if call.caller_tag in (from_tag, to_tag) and call.caller_tag:
                if call.state is CallState.ENDED and msg.method == "INVITE" and not to_tag:
                    return call if msg.cseq[0] == call.invite_cseq else None
                return call
            if not call.caller_tag and not from_tag:
                return call
        return None

    def _new_call(self, ts: float, src: str, dst: str, msg: SipMessage, cseq: int,
                  events: list[CallEvent]) -> Call | None:
        caller, anon_from = _party_number(msg.header("from"))
        pai, _ = _party_number(msg.header("p-asserted-identity"))
        privacy = (msg.header("privacy") or "").lower()
        callee = None
        if msg.request_uri:
            try:
                callee = uri_number(parse_uri(msg.request_uri))
            except SipParseError:
                callee = None
        to_number, _ = _party_number(msg.header("to"))
        if not callee or not any(ch.isdigit() for ch in callee):
            callee = to_number or callee
        diversions = [_party_number(v)[0] for v in msg.header_values("diversion")]
        withheld = anon_from or "id" in privacy or "user" in privacy
        caller_number = pai or (None if anon_from else caller)
        classification = self.decider.classify(
            src_addresses=(src,), dst_addresses=(dst,),
            caller=caller_number, callee=callee,
            other_numbers=(caller, to_number, pai, *diversions),
        )
        self._serial += 1
        cc = self.decider.policy.numbering.country_code
        caller_number = normalise_number(caller_number, cc)
        callee = normalise_number(callee, cc)
        call = Call(
            serial=self._serial, call_id=msg.call_id or "", caller_tag=msg.from_tag or "",
            invite_cseq=cseq, invite_ts=ts, classification=classification,
            caller=None if classification.excluded else (caller_number or ("anonymous" if withheld else None)),
            callee=None if classification.excluded else callee,
            caller_withheld=withheld, last_activity=ts,
        )
        self.stats["calls"] += 1
        if classification.excluded:
            self.stats["excluded_calls"] += 1
        self._make_room(call.call_id, events)
        self._by_call_id.setdefault(call.call_id, []).append(call)
        self._queues[CallState.CALLING][call.serial] = call
        self._live_calls += 1
        return call

    def _sender(self, call: Call, msg: SipMessage) -> int:
        from_caller = (msg.from_tag or "") == call.caller_tag
        if msg.method is not None:
            return CALLER if from_caller else CALLEE
        return CALLEE if from_caller else CALLER

    def _on_request(self, ts: float, src: str, dst: str, call: Call, msg: SipMessage,
                    cseq: int, events: list[CallEvent]) -> None:
        method = msg.method
        if method == "INVITE" and not msg.to_tag:
            call.src_addresses.add(src)
            call.dst_addresses.add(dst)
        if call.state is CallState.ENDED:
            return
        if method == "BYE":
            if call.state is CallState.ANSWERED:
                call.end_ts = ts
                call.end_reason = "bye_local" if self._sender(call, msg) == call.local_party else "bye_remote"
                call.complete = True
                self._end(call, events, answered=True)
            elif call.state is CallState.EARLY or call.state is CallState.CALLING:
                call.end_ts = ts
                call.end_reason = "bye_before_answer"
                self._end(call, events, answered=False)
            return
        if method == "CANCEL":
            if call.state is not CallState.ANSWERED:
                call.end_reason = "cancelled"
            return
        if msg.body and msg.content_type == "application/sdp":
            self._apply_sdp(call, self._sender(call, msg), msg.body, events)

    def _on_response(self, ts: float, call: Call, msg: SipMessage, cseq_method: str,
                     events: list[CallEvent]) -> None:
        status = msg.status or 0
        if call.state is CallState.ENDED:
            return
        sdp = msg.body if msg.body and msg.content_type == "application/sdp" else None
        if cseq_method == "INVITE":
            to_tag = msg.to_tag or ""
            if 100 < status < 200 and call.state in (CallState.CALLING, CallState.EARLY):
                self._set_state(call, CallState.EARLY)
                if sdp is not None and to_tag and (to_tag in call.early_sdp or len(call.early_sdp) < MAX_EARLY_DIALOGS):
                    call.early_sdp[to_tag] = sdp
                    self._apply_sdp(call, CALLEE, sdp, events)
            elif 200 <= status < 300:
                if call.state is not CallState.ANSWERED:
                    self._set_state(call, CallState.ANSWERED)
                    call.answer_ts = ts
                    call.answered_tag = to_tag
                    call.end_reason = ""
                    answer_sdp = sdp if sdp is not None else call.early_sdp.get(to_tag)
                    if answer_sdp is not None:
                        self._apply_sdp(call, CALLEE, answer_sdp, [])
                    call.early_sdp.clear()
                    events.append(CallAnswered(call))
                elif to_tag == call.answered_tag and sdp is not None:
                    self._apply_sdp(call, self._sender(call, msg), sdp, events)
            elif status >= 300 and call.state is not CallState.ANSWERED:
                self._set_state(call, CallState.FAILED)
                call.end_ts = ts
                if not call.end_reason:
                    call.end_reason = f"rejected_{status}"
        elif 200 <= status < 300 and sdp is not None and call.state is not CallState.FAILED:
            self._apply_sdp(call, self._sender(call, msg), sdp, events)

    def _apply_sdp(self, call: Call, party: int, body: bytes, events: list[CallEvent]) -> None:
        try:
            sd = parse_sdp(body)
        except SdpParseError:
            self.stats["sdp_errors"] += 1
            return
        changed = False
        pts = call.payload_types[party]
        for media in sd.media:
            if media.media != "audio":
                continue
            for pt in media.formats:
                rtpmap = media.rtpmap.get(pt)
                if rtpmap is not None and pts.get(pt) != (rtpmap.encoding, rtpmap.clock_rate):
                    pts[pt] = (rtpmap.encoding, rtpmap.clock_rate)
                    changed = True
            address = _packed(media.connection)
            if address is None or media.port == 0:
                continue
            if self.add_endpoint(call, party, (address, media.port)):
                changed = True
        if changed and call.state is CallState.ANSWERED:
            events.append(MediaChanged(call))

    def add_endpoint(self, call: Call, party: int, endpoint: Endpoint) -> bool:
        """Map an address where a party receives media; also used for
        addresses learned from RTP that did not come from the SDP's."""
        current = self.endpoints.get(endpoint)
        if current is not None and current[0] is call and current[1] == party:
            return False
        history = call.endpoints[party]
        if endpoint in history:
            history.remove(endpoint)
        history.append(endpoint)
        if len(history) > MAX_ENDPOINTS_PER_PARTY:
            old = history.pop(0)
            if self.endpoints.get(old, (None,))[0] is call:
                del self.endpoints[old]
        self.endpoints[endpoint] = (call, party)
        self.endpoint_generation += 1
        return True

    def _end(self, call: Call, events: list[CallEvent], *, answered: bool) -> None:
        self._set_state(call, CallState.ENDED)
        self._release_endpoints(call)
        events.append(CallEnded(call) if answered else CallDropped(call))

    def _release_endpoints(self, call: Call) -> None:
        """Unmap the call's endpoints.  endpoint_generation stays: it tells the
        engine that RTP it could not match may match now, which only a new
        endpoint can make true, and every call an INVITE flood ends would
        otherwise send the engine through its unmatched RTP again."""
        for history in call.endpoints:
            for endpoint in history:
                if self.endpoints.get(endpoint, (None,))[0] is call:
                    del self.endpoints[endpoint]

    # ---- time -----------------------------------------------------------
    def on_timer(self, now: float, rtp_timeout: float, last_media: dict[int, float]) -> list[CallEvent]:
        """Close what the signalling never closed, and forget old Call-IDs.

        last_media maps a call's serial to the time its last RTP packet was
        seen; an answered call silent for rtp_timeout is closed incomplete,
        as VoIPmonitor does when a BYE was lost.  Each queue is read from its
        oldest call up to the first that is not due, so a tick costs the
        answered calls and the calls it closes, not every open dialog.
        """
        events: list[CallEvent] = []
        tombstones = self._queues[CallState.ENDED]
        while tombstones:
            call = next(iter(tombstones.values()))
            if now - (call.end_ts or call.last_activity) <= TOMBSTONE_SECONDS:
                break
            self._forget(call)
        failed = self._queues[CallState.FAILED]
        while failed:
            call = next(iter(failed.values()))
            if now - (call.end_ts or now) <= FORK_GRACE_SECONDS:
                break
            self._end(call, events, answered=False)
        for call in list(self._queues[CallState.ANSWERED].values()):
            last = max(call.last_activity, last_media.get(call.serial, 0.0))
            if now - last > rtp_timeout:
                call.end_ts = last
                call.end_reason = "rtp_timeout"
                self._end(call, events, answered=True)
        for state in (CallState.CALLING, CallState.EARLY):
            waiting = self._queues[state]
            while waiting:
                call = next(iter(waiting.values()))
                if now - call.last_activity <= rtp_timeout:
                    break
                call.end_ts = call.last_activity
                call.end_reason = call.end_reason or "no_answer_timeout"
                self._end(call, events, answered=False)
        return events

    def close_all(self, now: float, reason: str = "capture_end") -> list[CallEvent]:
        """End of input: every open call ends here, incomplete."""
        events: list[CallEvent] = []
        for calls in self._by_call_id.values():
            for call in calls:
                if call.state is CallState.ANSWERED:
                    call.end_ts = max(call.last_activity, now)
                    call.end_reason = reason
                    call.complete = False
                    self._end(call, events, answered=True)
                elif call.state is not CallState.ENDED:
                    self._end(call, events, answered=False)
        return events

    def shift_clock(self, delta: float) -> None:
        """The capture clock stepped (recorder.engine measures the step
        against the RTP of the calls in progress): every time held here
        moves by `delta`, so that no timer fires, or waits, for time that
        did not pass.  The queues keep their order."""
        for calls in self._by_call_id.values():
            for call in calls:
                call.invite_ts += delta
                call.last_activity += delta
                if call.answer_ts is not None:
                    call.answer_ts += delta
                if call.end_ts is not None:
                    call.end_ts += delta

    # ---- bounds ---------------------------------------------------------
    def _make_room(self, call_id: str, events: list[CallEvent]) -> None:
        """Before a new call is added: at most max_open_dialogs calls (the
        policy's) and MAX_CALLS_PER_CALL_ID under one Call-ID, so an INVITE
        flood costs neither memory nor time per message, and the calls after
        it are still followed.  Answered calls are never forgotten (they end
        by BYE, by RTP timeout or at the end of input)."""
        same_id = self._by_call_id.get(call_id, ())
        if len(same_id) >= MAX_CALLS_PER_CALL_ID:
            oldest = next((c for c in same_id if c.state is not CallState.ANSWERED), None)
            if oldest is not None:
                self._evict(oldest, events)
        if self._live_calls >= self.decider.policy.recording.max_open_dialogs:
            for state in EVICTION_ORDER:
                queue = self._queues[state]
                if queue:
                    self._evict(next(iter(queue.values())), events)
                    return

    def _evict(self, call: Call, events: list[CallEvent]) -> None:
        """Forget a call before its time; one not yet ended is dropped as
        unanswered, with the reason."""
        if call.state is CallState.ENDED:
            self.stats["tombstones_evicted"] += 1
        else:
            self.stats["calls_evicted"] += 1
            call.end_ts = call.end_ts if call.end_ts is not None else call.last_activity
            call.end_reason = call.end_reason or "evicted"
            self._end(call, events, answered=False)
        self._forget(call)

    def _forget(self, call: Call) -> None:
        self._queues[call.state].pop(call.serial, None)
        calls = self._by_call_id[call.call_id]
        calls.remove(call)
        if not calls:
            del self._by_call_id[call.call_id]
        self._live_calls -= 1
