"""An INVITE flood (a SIP scanner on the trunk) against the recorder: the open dialogs stay
within the policy's bound, what the bound forgets is counted, the calls during and after the
flood are recorded, and a flood aimed at one Call-ID is bounded too.  How the time per INVITE
holds up at 100,000 open dialogs is bench/bench_invite_flood.py's to measure."""
from __future__ import annotations

import pytest

from policy.decide import PolicyDecider
from policy.loader import PolicyError, parse_policy
from recorder.engine import Recorder
from tests.builders import PBX, TRUNK, sip, udp_frame
from tests.call_frames import POLICY, T0, bye, media, signalling
from tests.memory_sink import MemorySink

BOUND = 1000
FLOOD = 5000
RATE = 7500.0
"""INVITEs a second, as the scanner in the issue sent them."""
SCANNER_PORT = 5070


def flood_policy(extra: str = "") -> str:
    return POLICY + f"recording: {{max_open_dialogs: {BOUND}{extra}}}\n"


def scanner_invite(n: int, *, call_id: str | None = None) -> bytes:
    return sip(f"INVITE sip:{100 + n % 900}@{PBX} SIP/2.0", cseq="1 INVITE", call_id=call_id or f"scan-{n}@x",
               from_tag=f"s{n}", caller="100", callee=f"{100 + n % 900}")


def flood(start: float, count: int = FLOOD, *, first: int = 0, rejected: bool = False,
          call_id: str | None = None) -> list[tuple[float, bytes]]:
    """count INVITEs from the trunk, each answered 401 by the PBX when rejected; first numbers
    the first of them, so that two floods do not share Call-IDs."""
    frames = []
    for n in range(first, first + count):
        ts = start + (n - first) / RATE
        frames.append((ts, udp_frame(TRUNK, SCANNER_PORT, PBX, 5060, scanner_invite(n, call_id=call_id), ident=n)))
        if rejected:
            challenge = sip("SIP/2.0 401 Unauthorized", cseq="1 INVITE", call_id=call_id or f"scan-{n}@x",
                            from_tag=f"s{n}", to_tag=f"r{n}", caller="100", callee=f"{100 + n % 900}")
            frames.append((ts + 0.00005, udp_frame(PBX, 5060, TRUNK, SCANNER_PORT, challenge, ident=n)))
    return frames


def run(frames: list[tuple[float, bytes]], policy: str) -> tuple[MemorySink, Recorder]:
    sink = MemorySink()
    recorder = Recorder(PolicyDecider(parse_policy(policy)), sink)
    recorder.feed_frames((ts, 1, frame) for ts, frame in sorted(frames, key=lambda f: f[0]))
    return sink, recorder


def a_call(start: float) -> list[tuple[float, bytes]]:
    """The shared test call (answered 1 s after its INVITE, 2 s of RTP, BYE) at start."""
    up, _ = media(start + 1.05, 2, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    return signalling(t=start) + up + bye(start + 4)


def test_a_call_after_the_flood_is_recorded_and_the_evictions_are_counted() -> None:
    after = T0 + FLOOD / RATE + 1
    sink, recorder = run(flood(T0) + a_call(after), flood_policy())
    counters = recorder.counters()
    # Every INVITE past the bound, the call's included, made room by forgetting one.
    assert counters["calls_evicted"] == FLOOD + 1 - BOUND
    assert counters["tombstones_evicted"] == 0
    assert recorder.tracker._live_calls == BOUND
    [rec] = sink.recordings
    assert rec.result is not None and rec.result.call.complete and rec.result.call.end_reason == "bye_remote"
    assert rec.started.remote_number == "0312345678"
    assert abs(rec.result.frames - 3.0 * 8000) < 800
    # What the bound forgot is dropped as unanswered, as a timeout would have dropped it.
    assert counters["unanswered"] == counters["calls_evicted"]


def test_a_call_ringing_through_a_flood_of_unanswered_invites_is_recorded() -> None:
    """The scanner's INVITEs get no answer at all; the call that rings through the flood has a
    180 from the far end, so the bound forgets every scanner dialog before it."""
    ringing = sip("SIP/2.0 180 Ringing", cseq="1 INVITE", call_id="c1@x", to_tag="t1",
                  caller="0312345678", callee="0263111111")
    call = signalling(t=T0, answer_after=FLOOD / RATE + 2)
    frames = call + [(T0 + 0.1, udp_frame(PBX, 5060, TRUNK, 5060, ringing))] + flood(T0 + 0.5)
    answered = call[1][0]
    up, _ = media(answered + 0.05, 2, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    sink, recorder = run(frames + up + bye(answered + 3), flood_policy())
    [rec] = sink.recordings
    assert rec.result is not None and rec.result.call.complete
    assert recorder.counters()["calls_evicted"] == FLOOD + 1 - BOUND


def test_a_call_ringing_through_a_flood_the_pbx_refuses_is_recorded() -> None:
    """Each scanner INVITE is challenged (401): a refused dialog goes before any unanswered
    one, so even a call with no provisional response survives the flood."""
    call = signalling(t=T0, answer_after=FLOOD / RATE + 2)
    frames = call + flood(T0 + 0.5, rejected=True)
    answered = call[1][0]
    up, _ = media(answered + 0.05, 2, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    sink, recorder = run(frames + up + bye(answered + 3), flood_policy())
    [rec] = sink.recordings
    assert rec.result is not None and rec.result.call.complete
    assert recorder.counters()["calls_evicted"] == FLOOD + 1 - BOUND


def test_refused_and_ended_dialogs_are_forgotten_in_time_and_the_rest_is_dropped() -> None:
    """The timers read only what is due: a refused dialog ends after the fork grace, its
    Call-ID is forgotten after the tombstone time, an unanswered one after rtp_timeout."""
    refused = flood(T0, 600, rejected=True)
    unanswered = flood(T0 + 1, 300, first=600)
    sink, recorder = run(refused + unanswered, flood_policy(", rtp_timeout_seconds: 60"))
    tracker = recorder.tracker
    assert tracker._live_calls == 900
    recorder.advance(T0 + 31)
    assert recorder.counters()["unanswered"] == 0
    recorder.advance(T0 + 33)
    assert recorder.counters()["unanswered"] == 600 and tracker._live_calls == 900
    recorder.advance(T0 + 62)
    assert recorder.counters()["unanswered"] == 900 and tracker._live_calls == 900
    recorder.advance(T0 + 64.5)
    assert tracker._live_calls == 300
    recorder.advance(T0 + 66)
    assert tracker._live_calls == 0 and tracker._by_call_id == {}
    assert recorder.counters()["calls_evicted"] == 0 and sink == MemorySink()


def test_a_flood_under_one_call_id_is_bounded_too() -> None:
    """Every message under a Call-ID is matched among that Call-ID's calls: a scanner that
    keeps one Call-ID and changes the From tag must not make that list long."""
    _, recorder = run(flood(T0, 100, call_id="same@x"), flood_policy())
    assert len(recorder.tracker._by_call_id["same@x"]) == 16
    assert recorder.counters()["calls_evicted"] == 100 - 16


def test_the_bound_is_checked_when_the_policy_is_loaded() -> None:
    with pytest.raises(PolicyError) as refused:
        parse_policy("recording: {max_open_dialogs: 10}\n")
    assert "max_open_dialogs" in str(refused.value)
    assert parse_policy("").recording.max_open_dialogs == 100_000
