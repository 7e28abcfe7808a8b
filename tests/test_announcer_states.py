"""The announcer's state machines: every state is in its transition table, the moves calls and
transactions make are the table's, a move the table lacks raises IllegalTransition, and the
announcer's errors sit on callrec's one base and say whose fault they are."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import StrEnum

import pytest

from announcer.audio import AudioError
from announcer.call import CALL_TRANSITIONS, Call, CallState
from announcer.digest import DigestError, parse_challenge
from announcer.errors import AnnouncerError, IllegalTransition
from announcer.media import NegotiationError, accept_offer
from announcer.transaction import (
    INVITE_SERVER_TRANSITIONS, NON_INVITE_CLIENT_TRANSITIONS, NON_INVITE_SERVER_TRANSITIONS, T1, T4, ClientNonInvite,
    InviteServerState, NonInviteState, ServerInvite, ServerNonInvite, Transaction,
)
from tests.announcer.pbx import (
    KEY, SDP_PCMA, Harness, ack_for, answer, answered, cancel, find, invite, notify, referred, request,
)
from tests.announcer.transactions import UDP, run_timers, status
from wire.errors import CallrecError, LocalProtocolError, RemoteInputError
from wire.sip import SipMessage, parse_sip

I, N, C = InviteServerState, NonInviteState, CallState
Move = tuple[object, StrEnum, StrEnum]


@pytest.fixture
def moves(monkeypatch: pytest.MonkeyPatch) -> list[Move]:
    """Every move any call or transaction makes, as (who, from, to), in order."""
    seen: list[Move] = []

    def spy(original: Callable) -> Callable:
        def move(self, new):
            old = self.state
            original(self, new)
            seen.append((self, old, new))
        return move

    monkeypatch.setattr(Call, "_move", spy(Call._move))
    monkeypatch.setattr(Transaction, "_move", spy(Transaction._move))
    return seen


def path(moves: list[Move], who: object) -> list[StrEnum]:
    """The states `who` went through: where it was at its first move, then each state it entered."""
    mine = [(old, new) for obj, old, new in moves if obj is who]
    return [mine[0][0], *(new for _, new in mine)] if mine else []


def kinds(moves: list[Move], kind: type) -> list[list[StrEnum]]:
    return [path(moves, obj) for obj in dict.fromkeys(obj for obj, _, _ in moves if isinstance(obj, kind))]


# ---- (a) the tables --------------------------------------------------------------------
@pytest.mark.parametrize(("states", "table", "initial"), [
    (CallState, CALL_TRANSITIONS, C.RINGING),
    (InviteServerState, INVITE_SERVER_TRANSITIONS, I.PROCEEDING),
    (NonInviteState, NON_INVITE_SERVER_TRANSITIONS, N.TRYING),
    (NonInviteState, NON_INVITE_CLIENT_TRANSITIONS, N.TRYING),
])
def test_every_state_is_in_its_table(states: type[StrEnum], table: Mapping, initial: StrEnum) -> None:
    assert set(table) == set(states)
    assert all(targets <= set(states) for targets in table.values())
    entered = {initial}.union(*table.values())
    assert entered == set(states)  # no state that nothing enters


# ---- (b) the moves the cores make -------------------------------------------------------
def answered_call() -> tuple[Harness, SipMessage, Call]:
    """A call answered and playing: the harness, the 200 OK the PBX saw, and the call."""
    h = Harness.make()
    ok = answered(h)
    return h, ok, h.ua.calls[KEY]


def final_notify(ok: SipMessage, sipfrag: str) -> bytes:
    """The PBX's last NOTIFY of the transfer, reporting sipfrag."""
    return notify(ok, sipfrag, cseq=2, branch="z9hG4bKn1", terminated=True)


def test_normal_call(moves: list[Move]) -> None:
    h, ok, call = answered_call()
    h.deliver(answer(referred(h), 202, "Accepted"))
    out = h.deliver(final_notify(ok, "SIP/2.0 200 OK"))
    h.deliver(answer(find(out, method="BYE"), 200, "OK"))
    assert path(moves, call) == [C.RINGING, C.ANSWERED, C.PLAYING, C.REFERRING, C.TRANSFERRING, C.CLOSING, C.ENDED]
    assert kinds(moves, ServerInvite) == [[I.PROCEEDING, I.ACCEPTED]]  # timer L has not fired yet
    assert kinds(moves, ServerNonInvite) == [[N.TRYING, N.COMPLETED]]  # the NOTIFY, answered 200
    assert kinds(moves, ClientNonInvite) == [[N.TRYING, N.COMPLETED]] * 2  # REFER and BYE
    h.advance(64 * T1)
    assert all(txn.terminated for txn in dict.fromkeys(obj for obj, _, _ in moves if isinstance(obj, Transaction)))


def test_early_media_call(moves: list[Move]) -> None:
    h = Harness.make(hand_over="early_media_302")
    h.deliver(invite())
    call = h.ua.calls[KEY]
    moved = find(h.playback_done(KEY), status=302)
    h.deliver(ack_for(moved, branch="z9hG4bKinv1"))
    h.advance(T4)
    assert path(moves, call) == [C.RINGING, C.PLAYING, C.ENDED]
    assert kinds(moves, ServerInvite) == [[I.PROCEEDING, I.COMPLETED, I.CONFIRMED, I.TERMINATED]]


def test_cancelled_call(moves: list[Move]) -> None:
    h = Harness.make(ring_seconds=2.0)
    h.deliver(invite())
    call = h.ua.calls[KEY]
    h.deliver(cancel())
    assert path(moves, call) == [C.RINGING, C.ENDED]


def test_refer_refused_then_notify_error_then_operator_refused(moves: list[Move]) -> None:
    h, ok, call = answered_call()
    second = find(h.deliver(answer(referred(h), 403, "Forbidden")), method="REFER")
    h.deliver(answer(second, 202, "Accepted"))
    h.deliver(final_notify(ok, "SIP/2.0 486 Busy Here"))
    assert path(moves, call) == [C.RINGING, C.ANSWERED, C.PLAYING, C.REFERRING, C.REFERRING, C.TRANSFERRING,
                                 C.CLOSING]  # the operator was tried already: BYE


def test_notify_error_refers_to_the_operator(moves: list[Move]) -> None:
    h, ok, call = answered_call()
    h.deliver(answer(referred(h), 202, "Accepted"))
    out = h.deliver(final_notify(ok, "SIP/2.0 486 Busy Here"))
    h.deliver(answer(find(out, method="REFER"), 603, "Decline"))
    assert path(moves, call) == [C.RINGING, C.ANSWERED, C.PLAYING, C.REFERRING, C.TRANSFERRING, C.REFERRING,
                                 C.CLOSING]


def test_server_invite_moves(moves: list[Move]) -> None:
    received = parse_sip(invite())
    ack = parse_sip(invite().replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK"))
    accepted, confirmed, timed_out = (ServerInvite(received, UDP) for _ in range(3))
    accepted.respond(100, b"100", 0.0)  # a provisional response is no move
    accepted.respond(200, b"200", 0.0)
    run_timers(accepted, 0.0, 100)
    confirmed.respond(486, b"486", 0.0)
    confirmed.receive(ack, 1.0)
    run_timers(confirmed, 0.0, 100)
    timed_out.respond(487, b"487", 0.0)
    run_timers(timed_out, 0.0, 100)
    assert path(moves, accepted) == [I.PROCEEDING, I.ACCEPTED, I.TERMINATED]
    assert path(moves, confirmed) == [I.PROCEEDING, I.COMPLETED, I.CONFIRMED, I.TERMINATED]
    assert path(moves, timed_out) == [I.PROCEEDING, I.COMPLETED, I.TERMINATED]


def test_server_non_invite_moves(moves: list[Move]) -> None:
    txn = ServerNonInvite(parse_sip(invite().replace(b"INVITE", b"OPTIONS")), UDP)
    txn.respond(100, b"100", 0.0)
    txn.respond(100, b"100", 0.1)
    txn.respond(200, b"200", 0.2)
    run_timers(txn, 0.2, 100)
    assert path(moves, txn) == [N.TRYING, N.PROCEEDING, N.PROCEEDING, N.COMPLETED, N.TERMINATED]


def test_client_non_invite_moves(moves: list[Move]) -> None:
    answered_, timed_out, abandoned = (ClientNonInvite("REFER", "z9hG4bKc", b"REFER", UDP, 0.0) for _ in range(3))
    answered_.receive(parse_sip(status(100)), 0.1)
    answered_.receive(parse_sip(status(100)), 0.2)
    answered_.receive(parse_sip(status(202)), 0.3)
    run_timers(answered_, 0.3, 100)
    run_timers(timed_out, 0.0, 100)
    abandoned.receive(parse_sip(status(100)), 0.1)
    abandoned.abandon()
    assert path(moves, answered_) == [N.TRYING, N.PROCEEDING, N.PROCEEDING, N.COMPLETED, N.TERMINATED]
    assert path(moves, timed_out) == [N.TRYING, N.TERMINATED]
    assert path(moves, abandoned) == [N.TRYING, N.PROCEEDING, N.TERMINATED]


# ---- moves the RFC does not draw, which the tables keep ---------------------------------
def test_refer_abandoned_after_timer_f_ended_it(moves: list[Move]) -> None:
    """refer_timeout may outlast timer F (64*T1); the call then abandons a terminated REFER."""
    h = Harness.make(refer_timeout=40.0)
    answered(h)
    call = h.ua.calls[KEY]
    referred(h)
    txn = call.refer_txn
    h.advance(40.5)
    assert path(moves, txn) == [N.TRYING, N.TERMINATED, N.TERMINATED]
    assert call.state is C.REFERRING and call.refer_txn is not txn  # referred to the operator


def test_closing_call_refers_when_its_refer_deadline_fires(moves: list[Move]) -> None:
    """Today's behaviour, kept as CLOSING -> REFERRING: a re-INVITE's 2xx never acknowledged during
    a hand-over sends BYE, yet the REFER's deadline still runs and refers the operator after it."""
    h = Harness.make(refer_timeout=60.0)
    ok = answered(h)
    call = h.ua.calls[KEY]
    referred(h)
    h.deliver(request("INVITE", ok, branch="z9hG4bKre1", cseq=2, body=SDP_PCMA.replace(b"o=pbx 1 1", b"o=pbx 1 2"),
                      extra="Contact: <sip:pbx@192.0.2.10>\r\nContent-Type: application/sdp\r\n"))
    h.advance(61.0)
    assert path(moves, call) == [C.RINGING, C.ANSWERED, C.PLAYING, C.REFERRING, C.CLOSING, C.REFERRING]


# ---- (c) moves the tables refuse -------------------------------------------------------
def test_terminated_transaction_cannot_go_back_to_proceeding() -> None:
    txn = ClientNonInvite("REFER", "z9hG4bKc", b"REFER", UDP, 0.0)
    txn.abandon()
    with pytest.raises(IllegalTransition, match="terminated to proceeding"):
        txn._move(N.PROCEEDING)
    assert txn.state is N.TERMINATED


@pytest.mark.parametrize(("respond", "illegal"), [(200, I.COMPLETED), (486, I.ACCEPTED), (486, I.PROCEEDING)])
def test_server_invite_refuses_a_second_final_state(respond: int, illegal: InviteServerState) -> None:
    txn = ServerInvite(parse_sip(invite()), UDP)
    txn.respond(respond, b"final", 0.0)
    before = txn.state
    with pytest.raises(IllegalTransition):
        txn._move(illegal)
    assert txn.state is before


def test_ended_call_cannot_play() -> None:
    h, ok, call = answered_call()
    h.deliver(request("BYE", ok, branch="z9hG4bKbye", cseq=2))
    assert call.state is C.ENDED
    with pytest.raises(IllegalTransition, match="from ended to playing"):
        call._play(h.now)
    assert call.state is C.ENDED and h.ua.pop_effects() == []


def test_ringing_call_cannot_refer() -> None:
    h = Harness.make(ring_seconds=2.0)
    h.deliver(invite())
    call = h.ua.calls[KEY]
    with pytest.raises(IllegalTransition):
        call._move(C.REFERRING)
    assert call.state is C.RINGING


# ---- the error classes -------------------------------------------------------------------
def test_illegal_transition_is_our_bug() -> None:
    assert issubclass(IllegalTransition, AnnouncerError)
    assert issubclass(IllegalTransition, CallrecError) and issubclass(IllegalTransition, LocalProtocolError)
    assert not issubclass(IllegalTransition, RemoteInputError)


@pytest.mark.parametrize("error", [DigestError, NegotiationError])
def test_a_peers_bad_input_is_remote(error: type[Exception]) -> None:
    assert issubclass(error, AnnouncerError) and issubclass(error, RemoteInputError)
    assert not issubclass(error, LocalProtocolError)


def test_audio_error_is_an_announcer_error() -> None:
    assert issubclass(AudioError, AnnouncerError) and issubclass(AudioError, CallrecError)


def test_refused_input_is_caught_as_remote() -> None:
    with pytest.raises(RemoteInputError):
        parse_challenge('Basic realm="r"')
    with pytest.raises(RemoteInputError):
        accept_offer(b"not sdp")


def test_a_via_without_sent_by_is_keyed_not_a_crash() -> None:
    """Found by the hostile-mutation fuzz: a top Via that is only parameters."""
    from announcer.transaction import server_key
    from wire.sip import parse_sip

    request = parse_sip(b"INVITE sip:0355550100@192.0.2.20 SIP/2.0\r\nVia: ;branch=z9hG4bKabc\r\n"
                        b"From: <sip:09011112222@192.0.2.10>;tag=a\r\nTo: <sip:0355550100@192.0.2.20>\r\n"
                        b"Call-ID: c@x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
    assert server_key(request) == ("z9hG4bKabc", "", "INVITE")
