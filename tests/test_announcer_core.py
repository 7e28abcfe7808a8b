"""The UA core (announcer/ua.py, call.py) driven directly: bytes and `now` in, SIP and effects out."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from announcer.effects import RetargetPlayback, StopPlayback
from announcer.media import accept_answer
from announcer.sipmsg import Peer
from announcer.transaction import T1, T2
from policy.schema import Policy
from wire.sdp import parse_sdp
from announcer.outcomes import HandOverResult, NoticeOutcome
from tests.announcer.pbx import (
    CALLER, DID, KEY, PBX, SDP_PCMA, SDP_PCMU, Harness, ack_for, answer, answered, cancel, find, invite, notify,
    referred, request,
)


def test_refer_mode_full_call() -> None:
    h = Harness.make()
    ok = answered(h)
    sdp = parse_sdp(ok.body)
    assert sdp.media[0].formats == [0] and sdp.media[0].direction == "sendrecv"
    assert ok.to_tag and ok.header("contact")
    (play,) = h.playbacks
    assert play.stream.law == "PCMU" and (play.stream.host, play.stream.port) == ("192.0.2.10", 40000)
    assert play.audio == h.ua.audio.g711["PCMU"]
    h.advance(6.0)
    refer = referred(h)
    assert refer.header("refer-to") == f"<sip:{DID}@192.0.2.10>"
    assert refer.request_uri == "sip:pbx@192.0.2.10:5060"
    assert refer.to_tag == "pbx1" and refer.from_tag == ok.to_tag
    h.deliver(answer(refer, 202, "Accepted"))
    h.deliver(notify(ok, "SIP/2.0 100 Trying", cseq=2, branch="z9hG4bKn1", terminated=False))
    assert not h.ended
    out = h.deliver(notify(ok, "SIP/2.0 200 OK", cseq=3, branch="z9hG4bKn2", terminated=True))
    assert find(out, status=200).cseq == (3, "NOTIFY")
    bye = find(out, method="BYE")
    h.deliver(answer(bye, 200, "OK"))
    (ended,) = h.ended
    assert ended.outcome is NoticeOutcome.ANNOUNCED and ended.hand_over is HandOverResult.REFER
    assert (ended.calling_number, ended.called_number, ended.destination) == (CALLER, DID, DID)
    assert ended.announced_from is not None and ended.announced_to is not None
    assert not h.ua.calls


def test_invite_retransmission_is_absorbed_and_2xx_is_retransmitted_until_ack() -> None:
    h = Harness.make(ring_seconds=1.0)
    first = h.deliver(invite())
    assert [m.status for m in h.deliver(invite())] == [180]  # Proceeding: the last provisional again
    ok = find(h.advance(1.0), status=200)
    assert h.deliver(invite()) == []  # Accepted (RFC 6026): absorbed, the UA core retransmits the 2xx
    retransmits = h.advance(T1 + 2 * T1 + 0.01)
    assert [m.status for m in retransmits] == [200, 200] and retransmits[0].to_tag == first[1].to_tag == ok.to_tag
    h.deliver(ack_for(first[1], branch="z9hG4bKack1"))
    assert h.advance(10) == [] and len(h.playbacks) == 1


def test_no_ack_ends_the_call_with_bye() -> None:
    h = Harness.make()
    h.deliver(invite())
    out = h.advance(64 * T1 + 0.01)
    # T1 doubling to T2: 0.5, 1.5, 3.5, 7.5 and then every 4 s up to 64*T1
    assert [m.status for m in out if m.status] == [200] * 10
    find(out, method="BYE")


def test_pcma_offered_first_is_chosen() -> None:
    h = Harness.make()
    answered(h, SDP_PCMA)
    assert h.playbacks[0].stream.law == "PCMA" and h.playbacks[0].stream.payload_type == 8
    assert h.playbacks[0].audio == h.ua.audio.g711["PCMA"]


def test_offerless_invite_offers_both_laws_and_takes_the_answer_from_the_ack() -> None:
    h = Harness.make()
    out = h.deliver(invite(body=b""))
    ok = find(out, status=200)
    assert parse_sdp(ok.body).media[0].formats == [0, 8]
    assert not h.playbacks
    h.deliver(ack_for(ok, branch="z9hG4bKack1", body=SDP_PCMA))
    assert h.playbacks[0].stream == accept_answer(SDP_PCMA)


def test_no_g711_is_refused_488() -> None:
    h = Harness.make()
    out = h.deliver(invite(body=SDP_PCMU.replace(b"RTP/AVP 0 8 101", b"RTP/AVP 9")))
    assert find(out, status=488)


def test_cancel_while_ringing() -> None:
    h = Harness.make(ring_seconds=2.0)
    out = h.deliver(invite())
    assert [m.status for m in out] == [100, 180]
    out = h.deliver(cancel())
    assert sorted(m.status for m in out) == [200, 487]
    final = find(out, status=487)
    h.deliver(ack_for(final, branch="z9hG4bKinv1"))
    (ended,) = h.ended
    assert ended.outcome is NoticeOutcome.CALLER_HUNG_UP and ended.hand_over is HandOverResult.NONE
    assert h.advance(40) == []


def test_cancel_for_unknown_transaction_is_481() -> None:
    h = Harness.make()
    assert find(h.deliver(cancel(branch="z9hG4bKnone")), status=481)


def test_bye_during_announcement() -> None:
    h = Harness.make()
    ok = answered(h)
    h.advance(2.0)
    out = h.deliver(request("BYE", ok, branch="z9hG4bKbye", cseq=2))
    assert find(out, status=200)
    assert h.of(StopPlayback)
    (ended,) = h.ended
    assert ended.outcome is NoticeOutcome.CALLER_HUNG_UP and ended.announced_to == h.now


def test_refer_403_falls_back_to_operator() -> None:
    h = Harness.make()
    ok = answered(h)
    refer = referred(h)
    out = h.deliver(answer(refer, 403, "Forbidden"))
    second = find(out, method="REFER")
    assert second.header("refer-to") == "<sip:9000@192.0.2.10>"
    h.deliver(answer(second, 202, "Accepted"))
    out = h.deliver(notify(ok, "SIP/2.0 200 OK", cseq=2, branch="z9hG4bKn1", terminated=True))
    h.deliver(answer(find(out, method="BYE"), 200, "OK"))
    (ended,) = h.ended
    assert ended.hand_over is HandOverResult.FALLBACK_OPERATOR and ended.destination == "9000"
    assert ended.outcome is NoticeOutcome.ANNOUNCED


def test_unanswered_refer_times_out_to_operator_and_stops_retransmitting() -> None:
    h = Harness.make(refer_timeout=1.0)
    ok = answered(h)
    refer = referred(h)
    out = h.advance(1.01)
    assert [m.method for m in out] == ["REFER", "REFER"]  # one retransmission (E at T1), then the fallback
    second = out[1]
    assert second.header("refer-to") == "<sip:9000@192.0.2.10>" and second.branch != refer.branch
    out = h.advance(0.95)
    assert all(m.branch == second.branch for m in out)


def test_both_hand_overs_failing_ends_with_bye_and_failed() -> None:
    h = Harness.make(refer_timeout=1.0)
    ok = answered(h)
    refer = referred(h)
    out = h.deliver(answer(refer, 603, "Decline"))
    second = find(out, method="REFER")
    h.deliver(answer(second, 202, "Accepted"))
    out = h.deliver(notify(ok, "SIP/2.0 486 Busy Here", cseq=2, branch="z9hG4bKn1", terminated=True))
    bye = find(out, method="BYE")
    h.deliver(answer(bye, 200, "OK"))
    assert h.ended[0].hand_over is HandOverResult.FAILED


def test_bye_after_accepted_refer_is_the_hand_over() -> None:
    h = Harness.make()
    ok = answered(h)
    refer = referred(h)
    h.deliver(answer(refer, 202, "Accepted"))
    h.deliver(request("BYE", ok, branch="z9hG4bKbye", cseq=2))
    assert h.ended[0].hand_over is HandOverResult.REFER and h.ended[0].outcome is NoticeOutcome.ANNOUNCED


def test_early_media_then_302() -> None:
    h = Harness.make(hand_over="early_media_302")
    out = h.deliver(invite())
    progress = find(out, status=183)
    assert parse_sdp(progress.body).media[0].formats == [0]
    assert len(h.playbacks) == 1
    out = h.playback_done(KEY)
    moved = find(out, status=302)
    assert moved.header("contact") == f"<sip:{DID}@192.0.2.10>"
    assert h.ended[0].hand_over is HandOverResult.REDIRECT_302
    again = h.advance(T1 + 0.01)
    assert [m.status for m in again] == [302]  # timer G until the ACK
    h.deliver(ack_for(moved, branch="z9hG4bKinv1"))
    assert h.advance(40) == []


def test_early_media_mode_offerless_goes_the_refer_way() -> None:
    h = Harness.make(hand_over="early_media_302")
    out = h.deliver(invite(body=b""))
    assert find(out, status=200)


def test_reinvite_moves_the_stream_and_changes_law() -> None:
    h = Harness.make()
    ok = answered(h)
    moved = SDP_PCMA.replace(b"40000", b"40002").replace(b"o=pbx 1 1", b"o=pbx 1 2")
    out = h.deliver(request("INVITE", ok, branch="z9hG4bKre1", cseq=2, body=moved,
                            extra="Contact: <sip:pbx@192.0.2.10>\r\nContent-Type: application/sdp\r\n"))
    reply = find(out, status=200)
    assert parse_sdp(reply.body).origin_version == 2
    (change,) = h.of(RetargetPlayback)
    assert (change.stream.port, change.stream.law) == (40002, "PCMA")
    h.deliver(ack_for(reply, branch="z9hG4bKack2"))
    assert h.advance(5) == []


def test_excluded_line_is_handed_over_at_once_and_keeps_no_number() -> None:
    policy = Policy.model_validate({"excluded_lines": [DID]})
    h = Harness.make(policy)
    ok = answered(h)
    assert not h.playbacks
    refer = find(h.sent, method="REFER")
    h.deliver(answer(refer, 202, "Accepted"))
    out = h.deliver(notify(ok, "SIP/2.0 200 OK", cseq=2, branch="z9hG4bKn1", terminated=True))
    h.deliver(answer(find(out, method="BYE"), 200, "OK"))
    (ended,) = h.ended
    assert ended.outcome is NoticeOutcome.EXCLUDED
    assert ended.calling_number is None and ended.called_number is None and ended.destination is None


def test_line_without_notice_and_destination_override() -> None:
    policy = Policy.model_validate({"announcement": {"lines": [
        {"number": DID, "announce": False, "reason": "threat", "destination": "201"}]}})
    h = Harness.make(policy, hand_over="early_media_302")
    out = h.deliver(invite())
    assert find(out, status=302).header("contact") == "<sip:201@192.0.2.10>"
    assert h.ended[0].outcome is NoticeOutcome.NO_NOTICE_LINE and h.ended[0].reason == "threat"


def test_unknown_address_is_refused_but_options_answered() -> None:
    h = Harness.make()
    stranger = Peer("udp", "203.0.113.9", 5060)
    out = h.deliver(invite(), stranger)
    assert [m.status for m in out] == [403]
    assert not h.ua.calls
    options = (b"OPTIONS sip:announcer@192.0.2.20 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.9;branch=z9hG4bKo\r\n"
               b"From: <sip:mon@203.0.113.9>;tag=m\r\nTo: <sip:announcer@192.0.2.20>\r\nCall-ID: o1\r\n"
               b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    reply = h.deliver(options, stranger)[0]
    assert reply.status == 200 and "INVITE" in (reply.header("allow") or "")


def test_graceful_stop_hands_over_at_once() -> None:
    h = Harness.make()
    ok = answered(h)
    h.ua.stop(h.now)
    out = h._collect()
    refer = find(out, method="REFER")
    assert h.of(StopPlayback)
    h.deliver(answer(refer, 202, "Accepted"))
    out = h.deliver(notify(ok, "SIP/2.0 200 OK", cseq=2, branch="z9hG4bKn1", terminated=True))
    h.deliver(answer(find(out, method="BYE"), 200, "OK"))
    assert h.ended[0].outcome is NoticeOutcome.INTERRUPTED
    assert h.ua.idle
    assert find(h.deliver(invite("call-2@pbx", branch="z9hG4bKinv2")), status=503)


def test_tcp_has_no_retransmissions() -> None:
    h = Harness.make()
    tcp = Peer("tcp", PBX.host, 40123)
    out = h.deliver(invite(), tcp)
    assert out[1].status == 200
    assert [m.status for m in h.advance(T2)] == []


def test_ack_reusing_the_invite_branch_still_confirms_the_call() -> None:
    h = Harness.make()
    out = h.deliver(invite())
    h.deliver(ack_for(out[1], branch="z9hG4bKinv1"))
    assert len(h.playbacks) == 1 and h.advance(5) == []


def test_merged_invite_is_a_loop() -> None:
    h = Harness.make()
    h.deliver(invite())
    assert find(h.deliver(invite(branch="z9hG4bKother")), status=482)


def test_notify_overtaking_the_202_counts_as_accepted() -> None:
    h = Harness.make()
    ok = answered(h)
    refer = referred(h)
    out = h.deliver(notify(ok, "SIP/2.0 200 OK", cseq=2, branch="z9hG4bKn1", terminated=True))
    bye = find(out, method="BYE")
    assert h.deliver(answer(refer, 202, "Accepted")) == []
    h.deliver(answer(bye, 200, "OK"))
    assert h.ended[0].hand_over is HandOverResult.REFER


def test_registration_with_digest_refresh_and_retry(tmp_path) -> None:
    (tmp_path / "pw").write_text("s3cret\n")
    registration = {"registrar": "192.0.2.10:5060", "user": "ann", "password_file": str(tmp_path / "pw"),
                    "expires": 600}
    h = Harness.make(registration=registration)
    h.ua.start(h.now)
    first = find(h._collect(), method="REGISTER")
    assert first.request_uri == "sip:192.0.2.10" and first.header("expires") == "600"
    assert "sip:ann@192.0.2.20:5060" in (first.header("contact") or "")
    challenge = 'WWW-Authenticate: Digest realm="pbx", nonce="abc", qop="auth", algorithm=SHA-256\r\n'
    out = h.deliver(answer(first, 401, "Unauthorized", challenge))
    second = find(out, method="REGISTER")
    auth = second.header("authorization") or ""
    assert 'username="ann"' in auth and "algorithm=SHA-256" in auth and second.cseq[0] == first.cseq[0] + 1
    h.deliver(answer(second, 200, "OK", "Contact: <sip:ann@192.0.2.20:5060>;expires=300\r\n"))
    assert h.ua.registrar is not None and h.ua.registrar.state == "registered"
    refresh = find(h.advance(150.0), method="REGISTER")  # half the granted 300 s
    h.deliver(answer(refresh, 401, "Unauthorized", challenge))
    third = find(h.sent[-1:], method="REGISTER")
    out = h.deliver(answer(third, 401, "Unauthorized", challenge))  # same nonce refused again: bad password
    assert out == [] and h.ua.registrar.state == "failed"
    assert find(h.advance(60.0), method="REGISTER")  # retried a minute later


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 5), st.binary(max_size=40), st.integers(0, 2000)), max_size=6))
def test_hostile_mutations_never_break_the_core(edits: list[tuple[int, bytes, int]]) -> None:
    """Whatever the PBX (or someone on its address) sends, the core answers or drops it."""
    h = Harness.make()
    base = [invite(), cancel(), invite(body=b""), invite(to_tag="x"), invite(branch="z9hG4bK2", cseq=2),
            invite().replace(b"INVITE", b"BYE")]
    for which, junk, at in edits:
        data = bytearray(base[which])
        data[at % len(data):at % len(data) + len(junk)] = junk
        h.deliver(bytes(data))
        h.advance(1.0)
    h.ua.stop(h.now)
    h.advance(100.0)
