"""On-demand lines through `callrec replay` into a real data folder: the call asked for by its
start code is recorded from its start, its row saying who asked, when, and where memory's bounds
left a gap; the call nobody asked for leaves no file, no row and no number, in the folder, in the
log, and (as root) anywhere in the raw image of the filesystem it was recorded on."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.builders import write_pcap
from tests.call_frames import T0
from tests.disk_image import require_tools
from tests.interop import calls, recording, run_cli
from tests.on_demand_frames import AUTOMATIC, START, STOP, call, on_demand_policy
from tests.test_store_erasure import Disk
from wire import g711

NEVER = "0355501234"
"""The caller of the call nobody asks to record."""
ASKED = "0398765432"
AUTO_LINE = "0263999999"


def traffic(tmp: Path) -> Path:
    never = call(6, keyed={2.0: "5", 3.0: STOP}, remote_keyed={4.0: START}, call_id="never@x", caller=NEVER,
                 start=T0, tport=20000, pport=40000, seed=1)
    asked = call(20, keyed={19.0: START}, call_id="asked@x", caller=ASKED, start=T0 + 10, tport=20002,
                 pport=40002, seed=5)
    other = call(3, call_id="auto@x", callee=AUTO_LINE, start=T0 + 40, tport=20004, pport=40004, seed=9)
    return write_pcap(tmp / "calls.pcap", sorted(never + asked + other, key=lambda f: f[0]))


def replay(tmp: Path, data: Path, policy: str, capture: Path) -> str:
    path = tmp / f"{data.name}.yaml"
    path.write_text(policy)
    config = tmp / f"{data.name}-config.yaml"
    config.write_text(f"data_dir: {data}\npolicy: {path}\nlog_level: debug\n")
    done = run_cli("replay", capture, "--config", config)
    return done.stdout + done.stderr


def test_only_the_call_asked_for_is_recorded_and_from_its_start(tmp_path: Path) -> None:
    capture = traffic(tmp_path)
    log = replay(tmp_path, tmp_path / "ondemand", on_demand_policy(first_minutes=0.05, last_minutes=0.05), capture)
    replay(tmp_path, tmp_path / "auto", AUTOMATIC, capture)
    rows = calls(tmp_path / "ondemand")
    assert [r["sip_call_id"] for r in rows] == ["asked@x", "auto@x"]
    asked, other = rows
    assert asked["started_by"] == "dtmf" and asked["remote_number"] == ASKED and asked["complete"]
    assert asked["start_requested_at"] > asked["answered_at"]
    assert other["started_by"] is None and other["gaps"] == [], "another line is recorded automatically"
    [gap] = asked["gaps"]
    assert gap["reason"] == "memory_bound" and gap["offset"] == 3.0 and 11 < gap["seconds"] < 13.5
    assert gap["from"] < gap["to"] < asked["ended_at"]

    [reference] = [r for r in calls(tmp_path / "auto") if r["sip_call_id"] == "asked@x"]
    wav, auto = recording(tmp_path / "ondemand", asked), recording(tmp_path / "auto", reference)
    assert len(wav.data) == len(auto.data) and asked["audio_frames"] == reference["audio_frames"]
    start, end = round(gap["offset"] * 8000) * 2, round((gap["offset"] + gap["seconds"]) * 8000) * 2
    assert wav.data[:start] == auto.data[:start] and wav.data[end:] == auto.data[end:]
    assert set(wav.data[start:end]) == {g711.SILENCE_BYTE["PCMU"]}
    assert run_cli("verify", "--data-dir", tmp_path / "ondemand").returncode == 0

    files = [p for p in (tmp_path / "ondemand").rglob("*") if p.is_file()]
    assert len([p for p in files if p.name.endswith(".vault")]) == 2, "one recording per row, nothing else"
    for path in files:
        blob = path.read_bytes()
        for needle in (NEVER.encode(), NEVER.encode("utf-16-le"), b"never@x"):
            assert needle not in blob and needle not in path.name.encode(), f"{path} holds {needle!r}"
    assert NEVER not in log and "never@x" not in log, "the call nobody asked for reached the log"
    assert "recording.started" in log and "started_by='dtmf'" in log


@pytest.mark.root
def test_a_call_nobody_asked_for_leaves_nothing_in_the_disk_image(tmp_path: Path) -> None:
    """As the excluded line's test reads the folder, this reads the raw ext4 image the data folder
    lives on, free blocks and journal included: the number of the call nobody asked for is not
    there, nor its Call-ID, while the call asked for is found (the search works)."""
    require_tools()
    disk = Disk(tmp_path)
    try:
        capture = traffic(tmp_path)
        log = replay(tmp_path, disk.mount / "data", on_demand_policy(first_minutes=0.05, last_minutes=0.05),
                     capture)
        image = disk.image()
        assert ASKED.encode() in image and b"asked@x" in image, "control: the recorded call's row is found"
        for needle in (NEVER.encode(), NEVER.encode("utf-16-le"), b"never@x"):
            assert needle not in image, f"{needle!r} is in the disk image"
        assert NEVER not in log and "never@x" not in log
    finally:
        disk.close()
