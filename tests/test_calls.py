"""The call tracker on hand-written dialogs: every path of RFC 3261 that a
passive observer must follow."""
from __future__ import annotations

import ipaddress

from policy.decide import Direction, PolicyDecider
from policy.loader import parse_policy
from recorder.calls import (
    CALLEE,
    CALLER,
    CallAnswered,
    CallDropped,
    CallEnded,
    CallState,
    CallTracker,
    MediaChanged,
)
from wire.sip import parse_sip
from tests.builders import PBX, TRUNK, sdp
from tests.builders import sip as msg

POLICY = """
numbering: {extension_pattern: '^[1-9][0-9]{2}$'}
network: {trunk: [203.0.113.0/28]}
excluded_lines: ["0263000000"]
"""


def tracker() -> CallTracker:
    return CallTracker(PolicyDecider(parse_policy(POLICY)))


def feed(t: CallTracker, ts: float, data: bytes, src: str = TRUNK, dst: str = PBX) -> list:
    return t.on_message(ts, src, dst, parse_sip(data))


def ep(addr: str, port: int) -> tuple[bytes, int]:
    return ipaddress.ip_address(addr).packed, port


def basic_call(t: CallTracker, call_id: str = "c1@x", callee: str = "0263111111") -> list:
    events = feed(t, 0.0, msg(f"INVITE sip:{callee}@{PBX} SIP/2.0", cseq="1 INVITE", call_id=call_id,
                              body=sdp(TRUNK, 20000), callee=callee))
    events += feed(t, 0.1, msg("SIP/2.0 180 Ringing", cseq="1 INVITE", to_tag="t1", call_id=call_id,
                               callee=callee), PBX, TRUNK)
    events += feed(t, 2.0, msg("SIP/2.0 200 OK", cseq="1 INVITE", to_tag="t1", call_id=call_id,
                               body=sdp(PBX, 40000), callee=callee), PBX, TRUNK)
    events += feed(t, 2.1, msg(f"ACK sip:{callee}@{PBX} SIP/2.0", cseq="1 ACK", to_tag="t1", call_id=call_id,
                               callee=callee))
    return events


def test_answered_call_and_bye() -> None:
    t = tracker()
    events = basic_call(t)
    assert [type(e) for e in events] == [CallAnswered]
    call = events[0].call
    assert call.classification.direction is Direction.INBOUND
    assert (call.caller, call.callee) == ("0312345678", "0263111111")
    assert call.answer_ts == 2.0 and call.invite_ts == 0.0
    assert t.endpoints[ep(TRUNK, 20000)] == (call, CALLER)
    assert t.endpoints[ep(PBX, 40000)] == (call, CALLEE)
    assert call.local_party == CALLEE and call.channel_of(CALLEE) == 0
    bye = feed(t, 30.0, msg(f"BYE sip:x@{TRUNK} SIP/2.0", cseq="1 BYE", from_tag="t1", to_tag="f1"), PBX, TRUNK)
    assert [type(e) for e in bye] == [CallEnded]
    assert call.end_reason == "bye_local" and call.complete and call.end_ts == 30.0
    assert ep(TRUNK, 20000) not in t.endpoints
    # A retransmitted BYE and its 200 change nothing.
    assert feed(t, 30.5, msg(f"BYE sip:x@{TRUNK} SIP/2.0", cseq="1 BYE", from_tag="t1", to_tag="f1"), PBX, TRUNK) == []
    assert feed(t, 30.6, msg("SIP/2.0 200 OK", cseq="1 BYE", from_tag="t1", to_tag="f1"), TRUNK, PBX) == []


def test_retransmitted_invite_and_second_hop_are_one_call() -> None:
    t = tracker()
    invite = msg(f"INVITE sip:0263111111@{PBX} SIP/2.0", cseq="1 INVITE", body=sdp(TRUNK, 20000))
    feed(t, 0.0, invite)
    feed(t, 0.5, invite)
    feed(t, 0.001, invite, PBX, "192.0.2.20")
    assert t.stats["calls"] == 1


def test_same_call_id_reused_later_is_a_new_call() -> None:
    t = tracker()
    first = basic_call(t)[0].call
    feed(t, 30.0, msg(f"BYE sip:x@{PBX} SIP/2.0", cseq="2 BYE", to_tag="t1"))
    again = feed(t, 40.0, msg(f"INVITE sip:0263111111@{PBX} SIP/2.0", cseq="1 INVITE", from_tag="f2",
                              body=sdp(TRUNK, 20002)))
    assert again == [] and t.stats["calls"] == 2
    answered = feed(t, 41.0, msg("SIP/2.0 200 OK", cseq="1 INVITE", from_tag="f2", to_tag="t9",
                                 body=sdp(PBX, 40002)), PBX, TRUNK)
    assert isinstance(answered[0], CallAnswered) and answered[0].call is not first


def test_cancel_and_rejection_are_not_recorded() -> None:
    t = tracker()
    feed(t, 0.0, msg(f"INVITE sip:0263111111@{PBX} SIP/2.0", cseq="1 INVITE", body=sdp(TRUNK, 20000)))
    feed(t, 1.0, msg(f"CANCEL sip:0263111111@{PBX} SIP/2.0", cseq="1 CANCEL"))
    events = feed(t, 1.1, msg("SIP/2.0 487 Request Terminated", cseq="1 INVITE", to_tag="t1"), PBX, TRUNK)
    assert events == []
    dropped = t.on_timer(40.0, 300.0, {})
    assert [type(e) for e in dropped] == [CallDropped]
    assert dropped[0].call.end_reason == "cancelled"


def test_fork_answered_after_another_branch_failed() -> None:
    t = tracker()
    feed(t, 0.0, msg(f"INVITE sip:0263111111@{PBX} SIP/2.0", cseq="1 INVITE", body=sdp(TRUNK, 20000)))
    feed(t, 1.0, msg("SIP/2.0 486 Busy Here", cseq="1 INVITE", to_tag="a"), PBX, TRUNK)
    events = feed(t, 2.0, msg("SIP/2.0 200 OK", cseq="1 INVITE", to_tag="b", body=sdp(PBX, 40000)), PBX, TRUNK)
    assert [type(e) for e in events] == [CallAnswered]
    assert events[0].call.answered_tag == "b"


def test_early_media_sdp_from_reliable_183_used_when_200_has_none() -> None:
    t = tracker()
    feed(t, 0.0, msg(f"INVITE sip:0263111111@{PBX} SIP/2.0", cseq="1 INVITE", body=sdp(TRUNK, 20000)))
    feed(t, 0.5, msg("SIP/2.0 183 Session Progress", cseq="1 INVITE", to_tag="t1", body=sdp(PBX, 40000)),
         PBX, TRUNK)
    events = feed(t, 3.0, msg("SIP/2.0 200 OK", cseq="1 INVITE", to_tag="t1"), PBX, TRUNK)
    assert t.endpoints[ep(PBX, 40000)] == (events[0].call, CALLEE)


def test_delayed_offer_answer_in_ack() -> None:
    t = tracker()
    feed(t, 0.0, msg(f"INVITE sip:0263111111@{PBX} SIP/2.0", cseq="1 INVITE"))
    answered = feed(t, 1.0, msg("SIP/2.0 200 OK", cseq="1 INVITE", to_tag="t1", body=sdp(PBX, 40000)), PBX, TRUNK)
    call = answered[0].call
    events = feed(t, 1.1, msg(f"ACK sip:x@{PBX} SIP/2.0", cseq="1 ACK", to_tag="t1", body=sdp(TRUNK, 20000)))
    assert [type(e) for e in events] == [MediaChanged]
    assert t.endpoints[ep(TRUNK, 20000)] == (call, CALLER)


def test_reinvite_moves_media_and_changes_codec() -> None:
    t = tracker()
    call = basic_call(t)[0].call
    events = feed(t, 10.0, msg(f"INVITE sip:x@{TRUNK} SIP/2.0", cseq="5 INVITE", from_tag="t1", to_tag="f1",
                               body=sdp("198.51.100.7", 50000, "sendonly", (8, "PCMA"))), PBX, TRUNK)
    assert [type(e) for e in events] == [MediaChanged]
    assert t.endpoints[ep("198.51.100.7", 50000)] == (call, CALLEE)
    assert call.payload_types[CALLEE][8] == ("PCMA", 8000)
    # The old address stays mapped for packets still in flight.
    assert t.endpoints[ep(PBX, 40000)] == (call, CALLEE)


def test_excluded_line_has_no_numbers() -> None:
    t = tracker()
    call = basic_call(t, callee="0263000000")[0].call
    assert call.classification.excluded and not call.classification.record
    assert call.caller is None and call.callee is None
    assert "0263000000" not in repr(call.classification)


def test_anonymous_caller_is_marked_withheld() -> None:
    t = tracker()
    feed(t, 0.0, msg(f"INVITE sip:0263111111@{PBX} SIP/2.0", cseq="1 INVITE", caller="anonymous",
                     extra="Privacy: id"))
    events = feed(t, 1.0, msg("SIP/2.0 200 OK", cseq="1 INVITE", to_tag="t1", caller="anonymous"), PBX, TRUNK)
    call = events[0].call
    assert call.caller_withheld and call.caller == "anonymous"


def test_p_asserted_identity_wins_over_from() -> None:
    t = tracker()
    feed(t, 0.0, msg(f"INVITE sip:0263111111@{PBX} SIP/2.0", cseq="1 INVITE",
                     extra="P-Asserted-Identity: <tel:+81312349999>"))
    call = feed(t, 1.0, msg("SIP/2.0 200 OK", cseq="1 INVITE", to_tag="t1"), PBX, TRUNK)[0].call
    assert call.caller == "0312349999"


def test_rtp_timeout_closes_incomplete_and_end_of_input_too() -> None:
    t = tracker()
    call = basic_call(t)[0].call
    assert t.on_timer(100.0, 300.0, {call.serial: 90.0}) == []
    events = t.on_timer(400.0, 300.0, {call.serial: 90.0})
    assert [type(e) for e in events] == [CallEnded] and call.end_reason == "rtp_timeout"
    assert not call.complete and call.end_ts == 90.0
    t2 = tracker()
    call2 = basic_call(t2)[0].call
    assert [type(e) for e in t2.close_all(50.0)] == [CallEnded]
    assert call2.end_reason == "capture_end" and not call2.complete and call2.state is CallState.ENDED
