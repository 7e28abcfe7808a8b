"""Calls from SIP dialogs (sans-I/O).

The tracker sees the signalling of every call as a passive observer: it may
see a message once, twice (retransmissions, several hops of the mirror) or
never (loss on the mirror port), so every step is idempotent and nothing
waits for a message that may not come.  Time is the capture time passed in.
"""
from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from policy.decide import Classification, Direction, PolicyDecider, normalise_number
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
# A B2BUA PBX sends its own INVITE (a new Call-ID) to the extension or the
# trunk while the INVITE it received still rings: that leg is linked to the
# call it serves, if it comes this soon and carries the same outside number.
LINK_SECONDS = 120.0
MAX_LEGS = 16
"""Legs linked to one call at most (a ring group's phones, hops of chained PBXs)."""
LINK_CANDIDATES = 8
"""Calls kept per linking key: enough for one caller's calls ringing at once, and a
flood of INVITEs with one number costs no more than this per message."""
SAME_TAIL_DIGITS = 6
"""Digits two forms of an outside number must share at their end to be one number (an
outside-line prefix 0, a national or +81 form on each leg of the PBX)."""


class CallState(enum.Enum):
    CALLING = "calling"
    EARLY = "early"
    FAILED = "failed"
    ANSWERED = "answered"
    ENDED = "ended"


ANONYMOUS = "anonymous"
RINGING = (CallState.CALLING, CallState.EARLY, CallState.FAILED)
"""States of a call a PBX may still be making legs for (FAILED: a 401 challenge the caller
answers with a new INVITE, or a fork that failed while another rings)."""


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
    extension: str | None = None
    withheld_number: str | None = None
    link: Call | None = None
    """The call this leg serves, for a leg a B2BUA PBX made: it is never recorded on its own."""
    legs: list[Call] = field(default_factory=list)
    link_keys: tuple[tuple[str, str, str], ...] = ()
    seen_numbers: tuple[str | None, str | None] = (None, None)
    """Caller and callee as this leg showed them (withheld ones too), in memory only: what
    links another leg to this one."""
    referred_by: str | None = None
    replaces: str | None = None

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
            extension=None if c.excluded else self.staff_extension(),
            withheld_number=None if c.excluded else self.withheld_number,
            leg_call_ids=tuple(leg.call_id for leg in self.legs),
            referred_by=self.referred_by, replaces=self.replaces,
        )

    def staff_extension(self) -> str | None:
        """The extension that took or placed the call.  An inbound call is taken by the leg
        the PBX rang that answered (a ring group rings several), else by the number it was
        sent to; an outbound call is placed by the phone that dialled, which is this leg's
        caller where the PBX's own leg to the trunk is the one linked."""
        answered = [leg.extension for leg in sorted(self.legs, key=lambda leg: leg.answer_ts or 0.0)
                    if leg.answer_ts is not None and leg.extension]
        only = [self.legs[0].extension] if len(self.legs) == 1 and self.legs[0].extension else []
        order = ([*answered, self.extension] if self.classification.direction is Direction.INBOUND
                 else [self.extension, *answered])
        return next((ext for ext in (*order, *only) if ext), None)


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


def _link_key(number: str | None) -> str | None:
    """What two legs' forms of one number share: the last digits of a long number (a 0 or +81
    before them differs from leg to leg), a short number or a name whole."""
    if not number:
        return None
    digits = number.lstrip("+")
    if digits.isdigit():
        return digits[-SAME_TAIL_DIGITS:]
    return number.lower()


def _same_number(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    x, y = a.lstrip("+"), b.lstrip("+")
    if x.isdigit() and y.isdigit():
        shorter, longer = sorted((x, y), key=len)
        return x == y or (len(shorter) >= SAME_TAIL_DIGITS and longer.endswith(shorter))
    return a.lower() == b.lower()
def _transfer_ties(msg: SipMessage) -> tuple[str | None, str | None]:
    """An INVITE's Referred-By and the Call-ID its Replaces names (RFC 3892, RFC 3891), kept
    short: they only ever tie a transferred call to the dialog it came from."""
    referred_by = (msg.header("referred-by") or "")[:256] or None
    replaces = (msg.header("replaces") or "").split(";", 1)[0].strip()[:256] or None
    return referred_by, replaces


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
        self._ringing: dict[tuple[str, str, str], deque[Call]] = {}
        self.stats = {"sip_messages": 0, "sip_without_call_id": 0, "sdp_errors": 0,
                      "calls": 0, "excluded_calls": 0, "calls_evicted": 0, "tombstones_evicted": 0,
                      "legs_linked": 0}

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
                    if not call.classification.excluded:
                        call.referred_by, call.replaces = _transfer_ties(msg)
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
        if state not in RINGING and call.link_keys:
            self._unregister(call)

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
        local_numbers = ((None if anon_from else caller), pai) if classification.local_is_caller else (callee, to_number)
        call = Call(
            serial=self._serial, call_id=msg.call_id or "", caller_tag=msg.from_tag or "",
            invite_cseq=cseq, invite_ts=ts, classification=classification,
            caller=None if classification.excluded else (caller_number or ("anonymous" if withheld else None)),
            callee=None if classification.excluded else callee,
            caller_withheld=withheld, last_activity=ts,
            extension=next((n for n in (normalise_number(v, cc) for v in local_numbers)
                            if self.decider.is_extension(n)), None),
            seen_numbers=(caller_number or (ANONYMOUS if withheld else None), callee),
        )
        if withheld and not classification.local_is_caller:
            self._withhold(call)
        call.src_addresses.add(src)
        call.dst_addresses.add(dst)
        self.stats["calls"] += 1
        if classification.excluded:
            self.stats["excluded_calls"] += 1
        self._make_room(call.call_id, events)
        self._by_call_id.setdefault(call.call_id, []).append(call)
        self._queues[CallState.CALLING][call.serial] = call
        self._live_calls += 1
        self._link(call, src, dst)
        return call

    def _withhold(self, call: Call) -> None:
        """The outside caller withheld the number: it is no party of the row (nothing to list or
        search), and kept aside, masked, only where the policy says so."""
        if call.classification.excluded:
            return
        if self.decider.policy.numbering.withheld_caller == "keep_masked":
            call.withheld_number = call.caller if call.caller != "anonymous" else None
        call.caller = "anonymous"
        call.classification = dataclasses.replace(call.classification, remote_number=None)

    # ---- legs of a B2BUA ------------------------------------------------
    def _place(self, address: str) -> str:
        """Where a leg starts or ends, as linking compares it: the PBX's addresses are one place."""
        return "pbx" if self.decider.is_pbx(address) else address

    def _link(self, call: Call, src: str, dst: str) -> None:
        """A new INVITE sent from where a ringing call was sent to, with the same caller or the
        same dialled number, is the PBX's own leg of that call (B2BUA): linked to it, never
        recorded apart.  Then the call is registered for legs of its own (chained PBXs)."""
        here = self._place(src)
        root = self._link_candidate(call, here)
        if root is not None:
            call.link = root
            root.legs.append(call)
            self.stats["legs_linked"] += 1
            self._merge(root, call)
        if call.state is CallState.CALLING:
            place = self._place(dst)
            keys = tuple((place, side, key) for side, key in zip(("caller", "callee"),
                                                                  map(_link_key, call.seen_numbers)) if key)
            if call.caller_withheld and call.seen_numbers[0] != ANONYMOUS:
                # The PBX's own leg of a withheld call may show it anonymous, as the caller asked.
                keys += ((place, "caller", ANONYMOUS),)
            call.link_keys = keys
            for key in keys:
                self._ringing.setdefault(key, deque(maxlen=LINK_CANDIDATES)).append(call)

    def _link_candidate(self, call: Call, here: str) -> Call | None:
        found: Call | None = None
        for side, number in zip(("caller", "callee"), call.seen_numbers):
            key = _link_key(number)
            for other in self._ringing.get((here, side, key), ()) if key else ():
                root = other.link or other
                if (other.call_id != call.call_id and root.state in RINGING and len(root.legs) < MAX_LEGS
                        and call.invite_ts - root.invite_ts <= LINK_SECONDS
                        and (_same_number(number, other.seen_numbers[0 if side == "caller" else 1])
                             or (key == ANONYMOUS and side == "caller" and other.caller_withheld))
                        and (found is None or other.invite_ts > found.invite_ts)):
                    found = root
        return found

    def _unregister(self, call: Call) -> None:
        for key in call.link_keys:
            waiting = self._ringing.get(key)
            if waiting is not None:
                if call in waiting:
                    waiting.remove(call)
                if not waiting:
                    del self._ringing[key]
        call.link_keys = ()

    def _merge(self, root: Call, leg: Call) -> None:
        """What a new leg tells about its call.  An excluded number on either leg excludes both
        (nothing of the call may be kept).  The direction and parties come from the leg that
        faces the trunk (whose numbers are the ones the carrier wrote), or fill what the call
        lacks; a withheld caller stays withheld whatever the PBX shows its phones."""
        rc, lc = root.classification, leg.classification
        if lc.excluded or rc.excluded:
            label = rc.excluded_label or lc.excluded_label
            if not rc.excluded:
                self.stats["excluded_calls"] += 1
            for c in (root, leg):
                c.classification = dataclasses.replace(c.classification, excluded=True, excluded_label=label,
                                                       record=False, local_number=None, remote_number=None)
                c.caller = c.callee = c.extension = c.withheld_number = None
            return
        trunk_leg = any(self.decider.is_trunk(a) for a in (*leg.src_addresses, *leg.dst_addresses))
        trunk_root = any(self.decider.is_trunk(a) for a in (*root.src_addresses, *root.dst_addresses))
        direction, local_is_caller = rc.direction, rc.local_is_caller
        local, remote = rc.local_number, rc.remote_number
        if direction is Direction.UNKNOWN and lc.direction is not Direction.UNKNOWN:
            direction, local_is_caller = lc.direction, lc.local_is_caller
            if local_is_caller != rc.local_is_caller and not root.caller_withheld:
                local, remote = remote, local
        if lc.local_number and (not local or (trunk_leg and not trunk_root)
                                or (self.decider.is_extension(local) and self.decider.is_own(lc.local_number))):
            local = lc.local_number
        if not root.caller_withheld and lc.remote_number and (not remote or (trunk_leg and not trunk_root)):
            remote = lc.remote_number
        root.classification = dataclasses.replace(rc, direction=direction, local_is_caller=local_is_caller,
                                                  local_number=local, remote_number=remote)

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
                    if call.link is None:
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
            if address is None or media.port == 0 or call.link is not None:
                # A linked leg's media is the call's own once more (through the PBX) or the
                # same flows (direct media): the call's leg records it, once.
                continue
            if self.add_endpoint(call, party, (address, media.port)):
                changed = True
        if changed and call.state is CallState.ANSWERED and call.link is None:
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
        if call.link is None:
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

    def live(self, serial: int) -> Call | None:
        """The call numbered ``serial`` while the tracker holds it (a capture
        worker asks for its SDP endpoints, recorder.fanout)."""
        for queue in self._queues.values():
            call = queue.get(serial)
            if call is not None:
                return call
        return None

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
        self._unregister(call)
        calls = self._by_call_id[call.call_id]
        calls.remove(call)
        if not calls:
            del self._by_call_id[call.call_id]
        self._live_calls -= 1
