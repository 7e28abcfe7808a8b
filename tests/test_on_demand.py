"""On-demand lines (品川区 第2条(2)) in the recorder core, against an in-memory sink: a call nobody
asks for never reaches the sink; a call asked for (the staff side's start code, or the console's
request) reaches it exactly as the automatic recording of the same traffic would have, with who
asked and when; memory's bounds and the stop code leave gaps the result names."""
from __future__ import annotations

import pytest

from policy.decide import PolicyDecider
from policy.loader import PolicyError, parse_policy
from recorder.engine import Recorder
from recorder.on_demand import StartOutcome
from recorder.record import Gap
from tests.builders import PBX, TRUNK, sdp, sip, udp_frame
from tests.call_frames import T0, bye, media, signalling
from tests.memory_sink import MemoryRecording, MemorySink
from tests.on_demand_frames import AUTOMATIC, LINE, START, STOP, call, on_demand_policy
from wire import g711

ANSWER = T0 + 1.0


def run(frames: list[tuple[float, bytes]], policy: str, *, ask_at: float | None = None,
        by: str = "console:kanri") -> tuple[MemorySink, Recorder]:
    """The frames through a recorder; at `ask_at` (capture time) the console asks for the call."""
    sink = MemorySink()
    recorder = Recorder(PolicyDecider(parse_policy(policy)), sink)
    asked = False
    for ts, frame in frames:
        if ask_at is not None and not asked and ts >= ask_at:
            asked = True
            [live] = recorder.on_demand.live()
            assert not live.recording and live.label == "相談窓口"
            assert recorder.on_demand.start(live.serial, by, ts) is StartOutcome.STARTED
            assert recorder.on_demand.start(live.serial, by, ts) is StartOutcome.ALREADY
        recorder.feed_frame(ts, 1, frame)
    recorder.finish()
    return sink, recorder


def automatic(frames: list[tuple[float, bytes]]) -> MemoryRecording:
    sink, _ = run(frames, AUTOMATIC)
    [recording] = sink.recordings
    return recording


def test_a_call_nobody_asks_for_never_reaches_the_sink() -> None:
    sink, recorder = run(call(6, keyed={2.0: "5"}, remote_keyed={3.0: START}), on_demand_policy())
    assert sink == MemorySink(), "not a row, not a byte: the caller's start code does not count either"
    assert recorder.on_demand.live() == []
    counters = recorder.counters()
    assert counters["rtp_packets"] > 500 and counters["on_demand_calls"] == counters["on_demand_discarded"] == 1


def test_the_start_code_records_the_call_from_its_start_as_if_automatic() -> None:
    frames = call(6, keyed={3.0: START})
    sink, _ = run(frames, on_demand_policy())
    [(started, origin)] = sink.begun
    [recording] = sink.recordings
    auto = automatic(frames)
    assert origin == auto.origin and recording.encoding == auto.encoding
    assert bytes(recording.audio) == bytes(auto.audio), "every frame the automatic recording has, no more"
    assert started.started_by == "dtmf" and started.local_number == "0263111111"
    # The code's last digit went out 0.3 s after its first, which was keyed 3 s into the staff side's audio.
    assert started.start_requested_at == pytest.approx(T0 + 1.06 + 3.3, abs=0.05)
    result = recording.result
    assert result is not None and result.gaps == () and result.call.started_by == "dtmf"
    assert [m.digit for m in result.dtmf if m.channel == 0] == list(START)


def test_a_code_keyed_just_before_the_hang_up_still_counts() -> None:
    frames = call(4, keyed={3.4: START})
    sink, _ = run(frames, on_demand_policy())
    [recording] = sink.recordings
    assert bytes(recording.audio) == bytes(automatic(frames).audio)


def test_the_console_starts_a_call_and_the_row_names_the_person() -> None:
    frames = call(5)
    sink, _ = run(frames, on_demand_policy(), ask_at=ANSWER + 4)
    [(started, _)] = sink.begun
    assert started.started_by == "console:kanri" and started.start_requested_at >= ANSWER + 4
    [recording] = sink.recordings
    assert bytes(recording.audio) == bytes(automatic(frames).audio)


def test_memory_keeps_the_first_and_last_minutes_and_the_gap_is_silence_where_the_row_says() -> None:
    frames = call(20, keyed={19.0: START})
    sink, _ = run(frames, on_demand_policy(first_minutes=0.05, last_minutes=0.05))  # 3 s each
    [recording] = sink.recordings
    auto = bytes(automatic(frames).audio)
    audio = bytes(recording.audio)
    result = recording.result
    assert result is not None
    [gap] = result.gaps
    assert gap.reason == "memory_bound" and gap.offset == 3.0
    start, end = int(gap.offset * 8000) * 2, int((gap.offset + gap.seconds) * 8000) * 2
    assert len(audio) == len(auto), "the gap keeps every later offset the time since the origin"
    assert audio[:start] == auto[:start], "the first 3 s as memory kept them"
    assert audio[end:] == auto[end:], "the end as memory kept it, and what came after the code"
    assert audio[start:end] == bytes([g711.SILENCE_BYTE["PCMU"]]) * (end - start)
    # Memory held the last 3 s when the code came (about 18.3 s into the call); later audio went straight on.
    assert 11.0 < gap.seconds < 13.5


def test_the_stop_code_ends_the_recording_and_a_start_resumes_it_after_a_silent_gap() -> None:
    frames = call(12, keyed={1.0: START, 4.0: STOP, 8.0: START})
    sink, _ = run(frames, on_demand_policy())
    [recording] = sink.recordings
    result = recording.result
    assert result is not None
    [gap] = result.gaps
    assert gap.reason == "stopped"
    auto = bytes(automatic(frames).audio)
    audio = bytes(recording.audio)
    assert len(audio) == len(auto)
    start, end = round(gap.offset * 8000) * 2, round((gap.offset + gap.seconds) * 8000) * 2
    assert audio[:start] == auto[:start] and audio[end:] == auto[end:]
    assert set(audio[start:end]) == {g711.SILENCE_BYTE["PCMU"]}
    # The codes' last digits went out 4.36 s and 8.36 s after the origin; each took effect at the
    # checkpoint that saw it, where the audio committed so far ends (the commit lag is 0.5 s, a
    # tick 0.5 s), so within a second either side.
    assert 3.36 < gap.offset < 5.36 and 7.36 < gap.offset + gap.seconds < 9.36


def test_a_stop_at_the_end_leaves_the_rest_out_and_says_so() -> None:
    frames = call(8, keyed={1.0: START, 4.0: STOP})
    sink, _ = run(frames, on_demand_policy())
    [recording] = sink.recordings
    result = recording.result
    assert result is not None
    [gap] = result.gaps
    frames_kept = len(recording.audio) // 2
    assert gap == Gap(frames_kept / 8000, gap.seconds, "stopped")
    assert frames_kept + round(gap.seconds * 8000) == result.frames


def test_a_law_change_while_held_is_kept_as_16_bit_pcm() -> None:
    first, _ = media(T0 + 1.06, 3, src=(PBX, 40000), dst=(TRUNK, 20000), ssrc=2)
    reinvite = [(T0 + 4.2, udp_frame(PBX, 5060, TRUNK, 5060, sip(
        f"INVITE sip:x@{TRUNK} SIP/2.0", cseq="7 INVITE", from_tag="t1", to_tag="f1", call_id="c1@x",
        callee=LINE, body=sdp(PBX, 40000, codec=(8, "PCMA")))))]
    second, _ = media(T0 + 4.3, 3, src=(PBX, 40000), dst=(TRUNK, 20000), ssrc=3, pt=8, seed=3)
    caller, _ = media(T0 + 1.05, 6, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    frames = sorted(signalling(callee=LINE) + first + reinvite + second + caller + bye(T0 + 7.5, callee=LINE),
                    key=lambda f: f[0])
    sink, _ = run(frames, on_demand_policy(), ask_at=T0 + 6.5)
    [recording] = sink.recordings
    auto = automatic(frames)
    assert recording.encoding == auto.encoding == "L16"
    assert bytes(recording.audio) == bytes(auto.audio)


@pytest.mark.parametrize(("section", "field", "reason"), [
    ("  start_code: '*1'\n  stop_code: '1'\n", "on_demand", "neither may end with the other"),
    ("  start_code: '*1'\n  stop_code: '*1x'\n", "on_demand.stop_code", "should match pattern"),
    ("  start_code: '*1'\n  stop_code: '#9'\n  keep_last_minutes: 90\n", "on_demand.keep_last_minutes",
     "less than or equal to 60"),
    ("  start_code: '*1'\n  stop_code: '#9'\n  keep_last_minute: 9\n", "on_demand.keep_last_minute",
     "Extra inputs are not permitted"),
])
def test_a_misspelt_section_is_refused_with_its_line(section: str, field: str, reason: str) -> None:
    text = (AUTOMATIC + "on_demand:\n  clause: 品川区 第2条(2)\n  lines: [{number: '0263111111'}]\n" + section)
    with pytest.raises(PolicyError) as refused:
        parse_policy(text, "p.yaml")
    assert refused.value.field == field and reason in refused.value.reason and refused.value.line is not None


def test_an_excluded_line_cannot_also_be_on_demand() -> None:
    text = on_demand_policy() + "excluded_lines: ['+81 263 111 111']\n"
    with pytest.raises(PolicyError) as refused:
        parse_policy(text, "p.yaml")
    assert refused.value.field == "on_demand" and "excluded line" in refused.value.reason
