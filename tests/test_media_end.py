"""Issue 17 item 6: a recording ends where its media ended.

A call closed without a BYE (the RTP timeout, the end of a capture, the
daemon stopping) used to be padded with silence up to the moment it was
closed: minutes for a timeout.  The file now stops with the last packet;
a pause inside the call is still silence of its true length, written in
bounded pieces however long it is."""
from __future__ import annotations

from pathlib import Path

from policy.decide import PolicyDecider
from policy.loader import parse_policy
from recorder.engine import Recorder
from recorder.record import CallSnapshot
from tests.builders import PBX, TRUNK, sip, udp_frame
from tests.call_frames import POLICY, T0, bye, media, signalling
from tests.interop import recording
from tests.memory_sink import MemoryRecording, MemorySink
from tests.test_engine import replay

BIG_APPEND = 8000 * 2 * 2 * 20
"""Bytes of 20 s of 16-bit stereo: no single write may be larger."""


class WatchedRecording(MemoryRecording):
    """Remembers the largest piece of audio handed over at once."""

    largest = 0

    def append(self, data: bytes) -> None:
        self.largest = max(self.largest, len(data))
        super().append(data)


class WatchedSink(MemorySink):
    def open_audio(self, call: CallSnapshot, origin: float, encoding: str, rate: int = 8000) -> MemoryRecording:
        super().open_audio(call, origin, encoding, rate)
        self.recordings[-1] = WatchedRecording(call, origin, encoding, rate)
        return self.recordings[-1]


def _seconds(rec: MemoryRecording) -> float:
    return len(rec.audio) / 2 / 8000


def _keepalives(t: float, until: float, every: float = 1.0) -> list[tuple[float, bytes]]:
    """A phone's OPTIONS pings: traffic on the mirror that belongs to no call."""
    count = int((until - t) / every)
    return [(t + n * every, udp_frame("192.0.2.50", 5060, PBX, 5060,
                                      sip(f"OPTIONS sip:{PBX} SIP/2.0", cseq=f"{n + 1} OPTIONS", call_id=f"ka{n}@x")))
            for n in range(count)]


def _engine(policy: str = POLICY) -> tuple[WatchedSink, Recorder]:
    sink = WatchedSink()
    return sink, Recorder(PolicyDecider(parse_policy(policy)), sink)


def test_rtp_timeout_ends_the_file_with_the_media() -> None:
    """10 s of media, then nothing: the daemon's clock runs on (advance each
    second) until the 300 s RTP timeout closes the call."""
    up, _ = media(T0 + 1.05, 10, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    sink, rec = _engine()
    for ts, frame in sorted(signalling() + up, key=lambda f: f[0]):
        rec.feed_frame(ts, 1, frame)
    for second in range(12, 400):
        rec.advance(T0 + second)
    [one] = sink.recordings
    assert one.result is not None and one.result.call.end_reason == "rtp_timeout"
    assert 10.0 <= _seconds(one) <= 10.2, "the file stops at the last packet, not 300 s later"


def test_rtp_timeout_row_and_file_agree(tmp_path: Path) -> None:
    """The same through storage, in a replay whose other traffic lets the
    timeout fire: the row's duration and the file's length agree."""
    up, _ = media(T0 + 1.05, 10, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    data, [row], _ = replay(tmp_path, signalling() + up + _keepalives(T0 + 12, T0 + 330))
    assert row["end_reason"] == "rtp_timeout"
    frames = recording(data, row).frames
    assert abs(frames / 8000 - row["duration"]) < 0.2 and frames / 8000 < 10.2


def test_capture_end_does_not_pad_to_the_last_packet(tmp_path: Path) -> None:
    """A call without BYE whose media stopped a minute before the capture
    ended (another call went on): the file is as long as the media."""
    up, _ = media(T0 + 1.05, 5, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    other = signalling("c2@x", callee="0263222222", t=T0 + 2, tport=20002, pport=40002)
    other_media, _ = media(T0 + 3.05, 60, src=(TRUNK, 20002), dst=(PBX, 40002), ssrc=2, seed=2)
    data, rows, _ = replay(tmp_path, signalling() + up + other + other_media)
    row = next(r for r in rows if r["sip_call_id"] == "c1@x")
    assert row["end_reason"] == "capture_end"
    assert 5.0 <= recording(data, row).frames / 8000 <= 5.2


def test_a_pause_is_silence_of_its_length_written_in_pieces() -> None:
    """With a 15-minute RTP timeout, a 10-minute pause without RTP (the rest
    of the line keeps the clock honest) and then more audio: the pause is
    silence of its true length, and no single write holds more than 20 s."""
    policy = POLICY + "recording: {rtp_timeout_seconds: 900}\n"
    before, before_payloads = media(T0 + 1.05, 2, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    after, after_payloads = media(T0 + 603.05, 2, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1, seq0=100,
                                  ts0=100 * 160, seed=2)
    sink, rec = _engine(policy)
    frames = signalling() + before + _keepalives(T0 + 4, T0 + 603) + after + bye(T0 + 605.5)
    for ts, frame in sorted(frames, key=lambda f: f[0]):
        rec.feed_frame(ts, 1, frame)
    rec.finish()
    [one] = sink.recordings
    assert isinstance(one, WatchedRecording)
    remote = bytes(one.audio[1::2])
    at = remote.find(b"".join(after_payloads))
    assert abs(at / 8000 - 602.05) < 0.1, "the audio after the pause sits at its wall-clock time"
    assert remote.find(b"".join(before_payloads)) >= 0
    assert abs(_seconds(one) - 604.5) < 0.1
    assert one.largest <= BIG_APPEND
    assert rec.counters()["clock_steps"] == 0


def test_bye_still_ends_the_file_at_the_bye() -> None:
    up, _ = media(T0 + 1.05, 3, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    sink, rec = _engine()
    for ts, frame in sorted(signalling() + up + bye(T0 + 6), key=lambda f: f[0]):
        rec.feed_frame(ts, 1, frame)
    rec.finish()
    [one] = sink.recordings
    assert abs(_seconds(one) - 5.0) < 0.05, "a complete call's file covers the call, up to its BYE"
