"""The command line as an operator meets it: damaged input, broken
policies, a crash in the middle of recording."""
from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import soundfile

from bench.gen_calls import write_pcap
from tests.interop import REPO, calls, capture, recording_bytes, run_cli


def _open_recordings(index: Path) -> int:
    """Recordings with audio not yet sealed; 0 until the replay has made the index and its table."""
    if not index.exists():
        return 0
    with sqlite3.connect(index) as db:
        try:
            return int(db.execute("SELECT count(*) FROM calls WHERE audio_frames IS NULL "
                                  "AND audio_path IS NOT NULL").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def test_truncated_capture_keeps_what_came_before(tmp_path: Path) -> None:
    original = capture("sip-rtp-g711.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(original[: len(original) * 3 // 4 + 7])
    result = run_cli("replay", cut, "--data-dir", tmp_path / "data", check=False)
    assert result.returncode == 1
    assert "capture.unreadable" in result.stderr and "cut.pcap" in result.stderr
    assert "truncated" in result.stderr
    rows = calls(tmp_path / "data")
    assert len(rows) == 2 and not rows[-1]["complete"]


def test_not_a_capture(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("hello, this is not a capture\n")
    result = run_cli("replay", bogus, "--data-dir", tmp_path / "data", check=False)
    assert result.returncode == 1 and "capture.unreadable" in result.stderr
    assert calls(tmp_path / "data") == []


def test_missing_capture_file(tmp_path: Path) -> None:
    result = run_cli("replay", tmp_path / "nope.pcap", "--data-dir", tmp_path / "data", check=False)
    assert result.returncode == 2 and "no such capture file" in result.stderr


def test_broken_policy_names_file_line_and_field(tmp_path: Path) -> None:
    policy = tmp_path / "site.yaml"
    policy.write_text("version: 1\nnetwork:\n  trunk: [203.0.113.300]\n")
    result = run_cli("policy", "check", policy, check=False)
    assert result.returncode == 2
    assert f"{policy}:3: network.trunk: " in result.stderr
    replay = run_cli("replay", capture("g711a.pcap"), "--policy", policy, "--data-dir", tmp_path / "d", check=False)
    assert replay.returncode == 2 and "network.trunk" in replay.stderr


def test_policy_check_accepts_the_examples() -> None:
    for path in sorted((REPO / "policies").glob("*.yaml")):
        assert run_cli("policy", "check", path).stdout.startswith(f"{path}: ok")


def test_defaults_without_options(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "callrec", "replay", str(capture("sip-rtp-g711.pcap"))],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    index = tmp_path / "callrec-data" / "index.sqlite3"
    assert index.is_file() and oct(index.stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "callrec-data").stat().st_mode & 0o777) == "0o700"
    wavs = list((tmp_path / "callrec-data").rglob("*.wav.vault"))
    assert len(wavs) == 2 and all(oct(w.stat().st_mode & 0o777) == "0o600" for w in wavs)


def test_calls_show(tmp_path: Path) -> None:
    run_cli("replay", capture("rtp-protocol.pcap"), "--data-dir", tmp_path)
    [row] = calls(tmp_path)
    shown = run_cli("calls", "show", row["id"], "--data-dir", tmp_path).stdout
    assert row["sip_call_id"] in shown and "audio_path" in shown
    missing = run_cli("calls", "show", "nope", "--data-dir", tmp_path, check=False)
    assert missing.returncode == 1


def test_kill_9_mid_call_leaves_playable_indexed_recordings(tmp_path: Path) -> None:
    big = tmp_path / "big.pcap"
    with big.open("wb") as out:
        write_pcap(out, calls=40, seconds=120)
    data = tmp_path / "data"
    proc = subprocess.Popen([sys.executable, "-m", "callrec", "replay", str(big), "--data-dir", str(data)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    index = data / "index.sqlite3"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            time.sleep(0.2)
            if _open_recordings(index) >= 40:
                break
        time.sleep(0.5)
        assert proc.poll() is None, "the replay ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    with sqlite3.connect(index) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # The next start repairs, seals and indexes what the crash left open.
    empty = tmp_path / "empty.pcap"
    with empty.open("wb") as out:
        write_pcap(out, calls=0, seconds=0)
    run_cli("replay", empty, "--data-dir", data)
    rows = calls(data)
    assert len(rows) == 40
    for row in rows:
        assert row["state"] == "sealed" and not row["complete"]
        assert row["end_reason"] == "recovered_after_crash"
        info = soundfile.info(io.BytesIO(recording_bytes(data, row)))
        assert info.channels == 2 and info.frames == row["audio_frames"] > 0
        audio, _ = soundfile.read(io.BytesIO(recording_bytes(data, row)), dtype="int16")
        assert len(audio) == row["audio_frames"]
