"""A full disk stops recordings cleanly and nothing stored is damaged;
recording resumes when space returns (a small tmpfs of the test's own).
Filled to the last byte by something else, the calls are still kept as
metadata, the fault is logged once and counted, and the read commands work."""
from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import soundfile
import structlog

from policy.decide import PolicyDecider
from policy.loader import parse_policy
from recorder.engine import Recorder
from storage.index import CallIndex
from storage.recordings import RecordingStore
from tests.builders import PBX, TRUNK
from tests.call_frames import POLICY, T0, bye, media, signalling
from tests.interop import REPO, calls, capture, recording_bytes, run_cli, store_key

pytestmark = pytest.mark.root


def test_disk_full_stops_cleanly_and_recording_resumes(small_disk: Callable[[str], Path]) -> None:
    data = small_disk("3m")
    index = CallIndex(data / "index.sqlite3")
    store = RecordingStore(data, index, ZoneInfo("Asia/Tokyo"), store_key(data), min_free_bytes=512 * 1024)
    recorder = Recorder(PolicyDecider(parse_policy(POLICY)), store)
    filler = data / "filler"
    free = os.statvfs(data).f_bavail * os.statvfs(data).f_frsize
    filler.write_bytes(b"\0" * (free - 1200 * 1024))
    long_call, _ = media(T0 + 1.05, 90, src=(TRUNK, 20000), dst=(PBX, 40000), ssrc=1)
    frames = signalling() + long_call + bye(T0 + 92)
    for ts, frame in sorted(frames, key=lambda f: f[0]):
        recorder.feed_frame(ts, 1, frame)
    filler.unlink()
    later, payloads = media(T0 + 101.05, 5, src=(TRUNK, 20002), dst=(PBX, 40002), ssrc=2)
    frames = signalling("c2@x", t=T0 + 100, tport=20002, pport=40002) + later + bye(T0 + 107, "c2@x")
    for ts, frame in sorted(frames, key=lambda f: f[0]):
        recorder.feed_frame(ts, 1, frame)
    recorder.finish()
    first, second = [r.as_dict() for r in index.rows()]
    index.close()
    assert first["end_reason"] == "write_failed" and not first["complete"]
    kept = recording_bytes(data, first)
    info = soundfile.info(io.BytesIO(kept))
    assert info.frames == first["audio_frames"] and 8000 * 10 < info.frames < 8000 * 90
    assert hashlib.sha256(kept).hexdigest() == first["sha256"]
    assert second["complete"] and second["end_reason"] == "bye_remote"
    assert soundfile.info(io.BytesIO(recording_bytes(data, second))).frames > 8000 * 5


def fill(folder: Path) -> None:
    """Fill the filesystem to the last byte, as a runaway log or copy does."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (b"\0" * 65536, b"\0" * 512, b"\0"):
            try:
                while True:
                    os.write(fd, chunk)
            except OSError:
                pass
    finally:
        os.close(fd)
    assert os.statvfs(folder).f_bavail == 0


def call(recorder: Recorder, n: int) -> None:
    start = T0 + n * 30
    port = 20000 + 2 * n
    up, _ = media(start + 1.05, 3, src=(TRUNK, port), dst=(PBX, port + 20000), ssrc=n + 1)
    frames = signalling(f"c{n}@x", t=start, tport=port, pport=port + 20000) + up + bye(start + 5, f"c{n}@x")
    for ts, frame in sorted(frames, key=lambda f: f[0]):
        recorder.feed_frame(ts, 1, frame)


def test_a_disk_filled_while_recording_keeps_every_call_as_metadata(small_disk: Callable[[str], Path]) -> None:
    """Issue 17 item 4: with the filesystem filled to the last byte by something else, every later call
    still gets its row (metadata only, from the reserve), sealed and named in the seal ledger; the fault
    is logged once and the calls it cost are counted per hour."""
    data = small_disk("24m")
    index = CallIndex(data / "index.sqlite3")
    store = RecordingStore(data, index, ZoneInfo("Asia/Tokyo"), store_key(data), min_free_bytes=512 * 1024,
                           reserve_bytes=4 * 1024 * 1024)
    assert store.reserve.held
    recorder = Recorder(PolicyDecider(parse_policy(POLICY)), store)
    with structlog.testing.capture_logs() as logs:
        for n in range(10):
            call(recorder, n)
        fill(data)
        for n in range(10, 120):
            call(recorder, n)
        recorder.finish()
        store.close()
    rows = {r.sip_call_id: r for r in index.rows()}
    index.close()
    assert len(rows) == 120, "every call has a row"
    assert {r.state for r in rows.values()} == {"sealed"}
    assert all(rows[f"c{n}@x"].complete and rows[f"c{n}@x"].sha256 for n in range(10))
    lost = [rows[f"c{n}@x"] for n in range(10, 120)]
    assert all(r.end_reason == "write_failed" and not r.complete and r.audio_path is None for r in lost)
    assert all(r.remote_number == "0312345678" and r.ended_at for r in lost), "the metadata is kept"
    assert store.faults.totals() == {"write_failed": 110}
    assert sum(c["write_failed"] for c in store.faults.as_dict()["calls_per_hour"].values()) == 110
    events = [e["event"] for e in logs]
    assert events.count("recording.write_failed") == 1 and events.count("index.write_failed") <= 1, events
    assert events.count("storage.reserve_released") == 1
    assert "storage.calls_lost" in events
    named = {call_id for line in (data / "seals.jsonl").read_text().splitlines()
             for call_id in json.loads(line)["details"]["rows"]}
    assert named == {r.id for r in rows.values()}, "every seal is in the seal ledger"


def test_read_commands_work_and_replay_fails_loudly_on_a_full_disk(small_disk: Callable[[str], Path]) -> None:
    """`calls list`, `verify`, `ledger verify` and `ledger list` read a full disk without a traceback;
    `replay` keeps the calls' rows (the reserve) and exits 1 saying what the disk cost."""
    data = small_disk("100m")
    run_cli("replay", capture("sip-rtp-g711.pcap"), "--data-dir", data)
    assert (data / "reserve").is_file()
    fill(data)
    for command in (("calls", "list", "--json"), ("verify",), ("ledger", "verify"), ("ledger", "list", "--json")):
        result = run_cli(*command, "--data-dir", data, check=False)
        assert result.returncode == 0 and "Traceback" not in result.stderr, (command, result.stdout, result.stderr)
    assert len(calls(data)) == 2
    assert "could not be recorded" in run_cli("verify", "--data-dir", data).stderr
    result = run_cli("replay", capture("SIP_DTMF2.pcap"), "--data-dir", data, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "calls the disk kept from being recorded in full: 1 write_failed" in result.stderr
    assert result.stderr.count("index.write_failed") <= 1
    rows = calls(data)
    assert len(rows) == 3 and {r["state"] for r in rows} == {"sealed"}
    assert [r["end_reason"] for r in rows if not r["audio_path"]] == ["write_failed"]
    assert run_cli("verify", "--data-dir", data, check=False).returncode == 0


def test_an_index_left_with_a_journal_is_read_whole_on_a_full_disk(small_disk: Callable[[str], Path]) -> None:
    """A recorder that died left rows in the index's journal (-wal); on a full disk `calls list`
    reads them too, from a private copy, since the journal cannot be replayed in place."""
    data = small_disk("8m")
    subprocess.run([sys.executable, "-c", (
        "import os, sys\nfrom pathlib import Path\nfrom storage.index import CallIndex\n"
        "index = CallIndex(Path(sys.argv[1]) / 'index.sqlite3')\n"
        "index.insert(id='20251125T010000-0000abcd', sip_call_id='c@x', started_at='2025-11-25T01:00:00+09:00', "
        "direction='inbound', remote_number='0312345678')\nos._exit(0)\n"), str(data)], cwd=REPO, check=True, timeout=60)
    assert (data / "index.sqlite3-wal").stat().st_size > 0
    fill(data)
    [row] = calls(data)
    assert row["remote_number"] == "0312345678"
