"""Issue 17 item 1: the capture clock is not the only clock.

A frame stamped far from its neighbours (a damaged capture) and a clock that
steps (NTP after a boot without RTC, an admin's `date`) must not end calls,
drop them as unanswered, or pad recordings with the size of the jump: the
RTP timestamps and sequence numbers of the calls in progress tell how much
time really passed.  Driven through the engine with an in-memory sink, so
the figures are the engine's own."""
from __future__ import annotations

import pytest

from policy.decide import PolicyDecider
from policy.loader import parse_policy
from recorder.engine import Recorder
from tests.builders import PBX, TRUNK, udp_frame
from tests.call_frames import POLICY, T0, bye, media, signalling
from tests.memory_sink import MemoryRecording, MemorySink

Frames = list[tuple[float, bytes]]


def _run(frames: Frames, *, sort: bool = False) -> tuple[MemorySink, Recorder]:
    sink = MemorySink()
    recorder = Recorder(PolicyDecider(parse_policy(POLICY)), sink)
    for ts, frame in sorted(frames, key=lambda f: f[0]) if sort else frames:
        recorder.feed_frame(ts, 1, frame)
    recorder.finish()
    return sink, recorder


def _call(call_id: str, t: float, seconds: float, port: int, ssrc: int) -> tuple[Frames, list[bytes], list[bytes]]:
    """An inbound call answered after 1 s, `seconds` of RTP both ways, BYE."""
    up, up_payloads = media(t + 1.05, seconds, src=(TRUNK, port), dst=(PBX, port + 20000), ssrc=ssrc, seed=ssrc)
    down, down_payloads = media(t + 1.06, seconds, src=(PBX, port + 20000), dst=(TRUNK, port), ssrc=ssrc + 1,
                                seed=ssrc + 1)
    frames = signalling(call_id, t=t, tport=port, pport=port + 20000) + up + down
    frames += bye(t + 1.2 + seconds, call_id)
    return sorted(frames, key=lambda f: f[0]), up_payloads, down_payloads


def _by_call(sink: MemorySink) -> dict[str, MemoryRecording]:
    return {r.started.sip_call_id: r for r in sink.recordings}


def _seconds(recording: MemoryRecording) -> float:
    return len(recording.channel(0)) / 8000


def _two_calls() -> tuple[Frames, Frames, list[bytes], list[bytes]]:
    first, up1, _ = _call("c1@x", T0, 8, 20000, 10)
    second, up2, _ = _call("c2@x", T0 + 20, 8, 20002, 20)
    return first, second, up1, up2


@pytest.mark.parametrize("ahead", [3600.0, 86400.0, 40 * 365 * 86400.0])
def test_one_frame_far_ahead_loses_nothing(ahead: float) -> None:
    """One frame of the first call stamped an hour, a day or decades ahead:
    both calls are recorded in full, as long as they were, and the stray
    frame is counted."""
    first, second, up1, up2 = _two_calls()
    at = next(i for i, (ts, _) in enumerate(first) if ts > T0 + 4)
    stray = (first[at][0] + ahead, first[at][1])
    frames = first[:at] + [stray] + first[at + 1:] + second
    sink, rec = _run(frames)
    calls = _by_call(sink)
    assert set(calls) == {"c1@x", "c2@x"} and not sink.without_audio
    for call_id, payloads in (("c1@x", up1), ("c2@x", up2)):
        recording = calls[call_id]
        assert recording.result is not None and recording.result.call.complete
        assert recording.result.call.end_reason == "bye_remote"
        assert 8.0 <= _seconds(recording) <= 8.5, call_id
        remote = recording.channel(1)
        assert all(p in remote for p in payloads), "every packet of the remote party is in the file"
    assert rec.stats["rtp_unmatched"] == 0 and rec.stats["unanswered"] == 0
    counters = rec.counters()
    assert counters["clock_strays"] == 1 and counters["clock_steps"] == 0


def test_one_frame_far_ahead_while_ringing_keeps_the_call() -> None:
    """The stray comes while the call rings: the call is still answered."""
    first, second, _, _ = _two_calls()
    invite = first[0]
    frames = [invite, (invite[0] + 3600, udp_frame(TRUNK, 5060, PBX, 5060, b"OPTIONS junk"))] + first[1:] + second
    sink, rec = _run(frames)
    assert set(_by_call(sink)) == {"c1@x", "c2@x"}
    assert rec.stats["unanswered"] == 0


def test_frame_far_behind_is_a_stray_too() -> None:
    first, second, _, _ = _two_calls()
    at = next(i for i, (ts, _) in enumerate(first) if ts > T0 + 4)
    frames = first[:at] + [(first[at][0] - 86400, first[at][1])] + first[at + 1:] + second
    sink, rec = _run(frames)
    assert {k: 8.0 <= _seconds(r) <= 8.5 for k, r in _by_call(sink).items()} == {"c1@x": True, "c2@x": True}
    assert rec.counters()["clock_strays"] == 1


@pytest.mark.parametrize("step", [3600.0, -3600.0, 30.0, -30.0, 400 * 86400.0])
def test_clock_step_during_a_call_is_no_silence(step: float) -> None:
    """From the middle of the first call on, every frame carries a clock
    stepped by `step`: the call goes on without a gap and without overlap,
    the next call is recorded, and the step is counted once."""
    first, second, up1, up2 = _two_calls()
    at = next(i for i, (ts, _) in enumerate(first) if ts > T0 + 4)
    frames = first[:at] + [(ts + step, f) for ts, f in first[at:] + second]
    sink, rec = _run(frames)
    calls = _by_call(sink)
    assert set(calls) == {"c1@x", "c2@x"}
    one = calls["c1@x"]
    assert one.result is not None and one.result.call.end_reason == "bye_remote"
    assert 8.0 <= _seconds(one) <= 8.5
    assert b"".join(up1) in one.channel(1), "the remote party's audio is contiguous across the step"
    assert b"".join(up2) in calls["c2@x"].channel(1)
    assert 8.0 <= _seconds(calls["c2@x"]) <= 8.5
    assert rec.stats["rtp_unmatched"] == 0
    counters = rec.counters()
    assert counters["clock_steps"] == 1 and counters["clock_strays"] == 0
    assert abs(one.result.call.end_ts - one.result.call.answer_ts - 8.2) < 0.1, "the row's duration is the call's"
    streams = one.result.streams
    assert all(abs(s.stats["clock_shift"] - step) < 0.1 for s in streams), "the call says its times were moved"


def test_a_real_gap_that_the_media_confirms_stays_silence() -> None:
    """The mirror loses 5 s of both directions: the RTP after the gap has
    moved on by 5 s in its timestamps and sequence numbers, so the gap is
    real time and becomes 5 s of silence, not a clock step."""
    first, _, _ = _call("c1@x", T0, 12, 20000, 10)
    frames = [(ts, f) for ts, f in first if not T0 + 4 <= ts < T0 + 9]
    sink, rec = _run(frames)
    [recording] = sink.recordings
    assert 12.0 <= _seconds(recording) <= 12.5
    assert rec.counters()["clock_steps"] == 0


def test_the_daemons_clock_stepping_with_the_kernels_is_followed() -> None:
    """Live: the system clock steps an hour ahead mid-call (NTP); the
    daemon's one-second timer and the kernel's frame stamps both jump."""
    first, _, _ = _call("c1@x", T0, 8, 20000, 10)
    sink = MemorySink()
    rec = Recorder(PolicyDecider(parse_policy(POLICY)), sink)
    second = T0
    for ts, frame in first:
        shifted = ts + 3600 if ts > T0 + 4 else ts
        while second + 1 <= ts:
            second += 1
            rec.advance(second + 3600 if second > T0 + 4 else second)
        rec.feed_frame(shifted, 1, frame)
    rec.finish()
    [one] = sink.recordings
    assert one.result is not None and one.result.call.end_reason == "bye_remote"
    assert 8.0 <= _seconds(one) <= 8.5
    assert rec.counters()["clock_steps"] == 1


def test_a_quiet_line_keeps_its_times() -> None:
    """Nothing on the wire for 25 s while the phone rings, 6 s between the
    last packet and the BYE, which ends the capture: real time, taken as
    it is (nothing in flight says otherwise)."""
    frames = signalling(answer_after=25.0)
    up, _ = media(T0 + 25.05, 3, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    sink, rec = _run(sorted(frames + up, key=lambda f: f[0]) + bye(T0 + 34))
    [one] = sink.recordings
    assert one.result is not None
    call = one.result.call
    assert call.answer_ts == T0 + 25.0 and call.end_ts == T0 + 34 and call.complete
    assert 8.9 <= _seconds(one) <= 9.1
    counters = rec.counters()
    assert counters["clock_gaps"] == 2 and counters["clock_steps"] == counters["clock_strays"] == 0
