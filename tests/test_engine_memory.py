"""The recorder engine alone, against an in-memory sink: what it hands to storage, with no
file, key or index in the way (tests/test_engine.py runs the same traffic through the real store)."""
from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest

from policy.decide import Direction, PolicyDecider
from policy.loader import parse_policy
from recorder.engine import Recorder
from tests.builders import PBX, TRUNK, sdp, sip, udp_frame
from tests.call_frames import POLICY, T0, bye, media, signalling
from tests.memory_sink import MemorySink
from wire import g711


def record(frames: list[tuple[float, bytes]], policy: str = POLICY) -> tuple[MemorySink, Recorder]:
    sink = MemorySink()
    recorder = Recorder(PolicyDecider(parse_policy(policy)), sink)
    recorder.feed_frames((ts, 1, frame) for ts, frame in sorted(frames, key=lambda f: f[0]))
    recorder.finish()
    return sink, recorder


def test_an_inbound_call_is_handed_over_with_its_metadata_and_both_channels() -> None:
    up, up_payloads = media(T0 + 1.05, 3, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    down, down_payloads = media(T0 + 1.06, 3, src=(PBX, 40000), dst=(TRUNK, 20000), ssrc=2, seed=2)
    sink, _ = record(signalling() + up + down + bye(T0 + 5))
    [(started, origin)] = sink.begun
    [rec] = sink.recordings
    assert started.direction is Direction.INBOUND and started.end_ts is None
    assert (started.local_number, started.remote_number) == ("0263111111", "0312345678")
    assert rec.encoding == "PCMU" and rec.origin == origin
    assert b"".join(down_payloads) in rec.channel(0) and b"".join(up_payloads) in rec.channel(1)
    result = rec.result
    assert result is not None and result.call.serial == started.serial
    assert result.call.end_ts == T0 + 5 and result.call.complete and result.call.end_reason == "bye_remote"
    assert result.frames == len(rec.audio) // 2 and abs(result.frames - 4.0 * 8000) < 400
    assert result.call.codecs == ("PCMU",) and result.encoding == "PCMU"
    assert [s.flows for s in result.streams] == [(f"{PBX}:40000>{TRUNK}:20000",), (f"{TRUNK}:20000>{PBX}:40000",)]
    assert [s.stats["packets"] for s in result.streams] == [150, 150]
    assert sink.without_audio == []


def test_the_snapshot_storage_holds_cannot_change() -> None:
    sink, _ = record(signalling() + bye(T0 + 3))
    [(started, _)] = sink.begun
    with pytest.raises(FrozenInstanceError):
        started.end_reason = "tampered"  # type: ignore[misc]


def test_checkpoints_come_about_twice_a_second_of_capture_time() -> None:
    up, _ = media(T0 + 1.05, 10, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    sink, _ = record(signalling() + up + bye(T0 + 11.1))
    [rec] = sink.recordings
    assert 18 <= rec.checkpoints <= 21


def test_an_excluded_line_never_reaches_the_sink() -> None:
    excluded = signalling("ex@x", callee="0263000000")
    ex_media, _ = media(T0 + 1.05, 2, src=(TRUNK, 20002), dst=(PBX, 40002), ssrc=9)
    sink, recorder = record(excluded + ex_media + bye(T0 + 4, "ex@x", "0263000000"))
    assert sink == MemorySink()
    assert recorder.counters()["recordings"] == 0


def test_an_unanswered_call_is_counted_and_not_handed_over() -> None:
    invite_only = signalling()[:1]
    sink, recorder = record(invite_only + [(T0 + 2, udp_frame(TRUNK, 5060, PBX, 5060, sip(
        f"CANCEL sip:0263111111@{PBX} SIP/2.0", cseq="1 CANCEL", call_id="c1@x", callee="0263111111",
        caller="0312345678")))])
    assert sink == MemorySink()
    assert recorder.counters()["unanswered"] == 1


def test_an_answered_call_without_media_finishes_without_audio() -> None:
    sink, _ = record(signalling() + bye(T0 + 3))
    [result] = sink.without_audio
    assert sink.recordings == [] and result.frames == 0 and result.encoding is None
    assert result.call.complete and result.streams[0].stats["packets"] == 0


def test_a_law_change_converts_the_recording_once_and_keeps_the_audio() -> None:
    first, first_payloads = media(T0 + 1.05, 2, src=(PBX, 40000), dst=(TRUNK, 20000), ssrc=2)
    reinvite = [(T0 + 3.1, udp_frame(PBX, 5060, TRUNK, 5060, sip(
        f"INVITE sip:x@{TRUNK} SIP/2.0", cseq="7 INVITE", from_tag="t1", to_tag="f1",
        body=sdp(PBX, 40000, codec=(8, "PCMA")))))]
    second, second_payloads = media(T0 + 3.2, 2, src=(PBX, 40000), dst=(TRUNK, 20000), ssrc=3, pt=8, seed=3)
    sink, _ = record(signalling() + first + reinvite + second + bye(T0 + 5.5))
    [rec] = sink.recordings
    assert rec.conversions == 1 and rec.encoding == "L16"
    local = rec.channel(0)
    assert g711.decode("PCMU", b"".join(first_payloads)) in local
    assert g711.decode("PCMA", b"".join(second_payloads)) in local
