"""An index that cannot be written (a full disk, a read-only file) never
crashes the recorder and never leaves audio nobody could find: the call's
audio is not recorded, its row is written once the index takes it, the
failure is logged once, and later calls record again."""
from __future__ import annotations

import sqlite3
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog

from policy.decide import PolicyDecider
from policy.loader import parse_policy
from recorder.engine import Recorder
from storage.faults import FaultLog
from storage.index import CallIndex
from storage.recordings import RecordingStore
from tests.builders import PBX, TRUNK
from tests.call_frames import POLICY, T0, bye, media, signalling
from tests.interop import store_key


class FailingIndex(CallIndex):
    """The real index, with writes refused while `failing` is set, as SQLite
    refuses them on a full disk ("database or disk is full")."""

    failing = False

    def insert(self, **values: object) -> None:
        if self.failing:
            raise sqlite3.OperationalError("database or disk is full")
        super().insert(**values)

    def update(self, call_id: str, **values: object) -> None:
        if self.failing:
            raise sqlite3.OperationalError("database or disk is full")
        super().update(call_id, **values)

    def get_row_state(self, sip_call_id: str) -> str:
        return next(r.state for r in self.rows() if r.sip_call_id == sip_call_id)


def call(recorder: Recorder, n: int) -> None:
    start = T0 + n * 30
    port = 20000 + 2 * n
    up, _ = media(start + 1.05, 3, src=(TRUNK, port), dst=(PBX, port + 20000), ssrc=n + 1)
    frames = signalling(f"c{n}@x", t=start, tport=port, pport=port + 20000) + up + bye(start + 5, f"c{n}@x")
    for ts, frame in sorted(frames, key=lambda f: f[0]):
        recorder.feed_frame(ts, 1, frame)


def recorder_on(tmp_path: Path) -> tuple[Path, FailingIndex, Recorder]:
    """A recorder writing to a data folder whose index can be made to fail."""
    data = tmp_path / "data"
    data.mkdir()
    index = FailingIndex(data / "index.sqlite3")
    store = RecordingStore(data, index, ZoneInfo("Asia/Tokyo"), store_key(data))
    return data, index, Recorder(PolicyDecider(parse_policy(POLICY)), store)


def test_unwritable_index_skips_the_call_and_recording_resumes(tmp_path: Path) -> None:
    data, index, recorder = recorder_on(tmp_path)
    with structlog.testing.capture_logs() as logs:
        index.failing = True
        call(recorder, 0)
        index.failing = False
        call(recorder, 1)
        recorder.finish()
    rows = [r.as_dict() for r in index.rows()]
    index.close()
    assert [r["sip_call_id"] for r in rows] == ["c0@x", "c1@x"]
    lost, kept = rows
    assert lost["end_reason"] == "not_recorded_index" and not lost["complete"] and lost["audio_path"] is None
    assert lost["state"] == "sealed" and lost["remote_number"] == "0312345678", "the call's metadata is kept"
    assert kept["complete"]
    files = [p.name for p in (data / "recordings").rglob("*.vault")]
    assert files == [Path(kept["audio_path"]).name], "no audio without a row"
    assert [e["event"] for e in logs].count("index.write_failed") == 1, "logged once, then counted"


def test_a_seal_the_index_refused_is_written_once_it_has_room(tmp_path: Path) -> None:
    _, index, recorder = recorder_on(tmp_path)
    up, _ = media(T0 + 1.05, 3, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    for ts, frame in sorted(signalling("c0@x", t=T0) + up, key=lambda f: f[0]):
        recorder.feed_frame(ts, 1, frame)
    index.failing = True
    for ts, frame in bye(T0 + 5, "c0@x"):
        recorder.feed_frame(ts, 1, frame)
    assert index.get_row_state("c0@x") == "recording"
    index.failing = False
    call(recorder, 1)
    recorder.finish()
    rows = {r.sip_call_id: r.as_dict() for r in index.rows()}
    index.close()
    assert rows["c0@x"]["state"] == "sealed" and rows["c0@x"]["complete"] and rows["c0@x"]["sha256"]
    assert rows["c1@x"]["state"] == "sealed"


def test_a_fault_is_logged_once_then_counted_per_hour() -> None:
    faults = FaultLog(ZoneInfo("Asia/Tokyo"))
    with structlog.testing.capture_logs() as logs:
        for n in range(1000):
            faults.failed("index", "database or disk is full", "index.write_failed", at=T0 + n)
        for n in range(3):
            faults.lost("write_failed", T0 + n * 1800)
        faults.cleared("index")
    assert [(e["event"], e.get("failures"), e.get("write_failed")) for e in logs] == [
        ("index.write_failed", None, None), ("storage.calls_lost", None, 2), ("storage.fault_cleared", 1000, None)]
    assert faults.as_dict() == {"active": {}, "calls_per_hour": {"2025-11-25T01:00+09:00": {"write_failed": 2},
                                                                "2025-11-25T02:00+09:00": {"write_failed": 1}}}
