"""The archive stage on a real second medium: an ext4 image on a loop device, mounted, pulled
(unmounted) and plugged back, filled up, and a sweep killed with SIGKILL in the middle of a move;
through the commands an operator and an auditor use.  After the medium's own period the recordings'
ciphertext and wrapped keys are nowhere in the raw image."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from policy.loader import load_policy
from storage.archive import STAGING
from storage.store import Store
from storage.sweep import sweep
from storage.vault import read_header
from storage.verify import verify_store
from tests.archive_helpers import CAPTURES, ERASE_ALL, MOVE_ALL, POLICY, TOKYO, good_copy, sweep_killed_before, vaults
from tests.disk_image import Ext4Image, found, needles
from tests.interop import capture, run_cli

pytestmark = pytest.mark.root

NOW_MOVE = "2017-05-28T00:00:00"
NOW_ERASE = "2017-11-28T00:00:00"


@pytest.fixture
def medium(tmp_path: Path) -> Iterator[Ext4Image]:
    image = Ext4Image(tmp_path / "medium.img", tmp_path / "mnt", 64)
    try:
        yield image
    finally:
        image.close()


def setup(tmp_path: Path, medium: Ext4Image) -> Path:
    """Recordings of the public captures in a data folder on the test's filesystem, and a config
    naming the image's mount point as archive_dir; returns the config."""
    data = tmp_path / "data"
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    config = tmp_path / "config.yaml"
    config.write_text(f"data_dir: {data}\npolicy: {policy}\narchive_dir: {medium.mount_point}\n")
    for name in CAPTURES:
        run_cli("replay", capture(name), "--config", config)
    return config


def flip(path: Path, offset: int) -> None:
    """One bit changed in place (a rewritten file would leave its old blocks in the image)."""
    with path.open("r+b") as file:
        file.seek(offset, os.SEEK_END)
        byte = file.read(1)[0]
        file.seek(offset, os.SEEK_END)
        file.write(bytes([byte ^ 1]))


def cli_json(*args: str | Path) -> dict | list:
    return json.loads(run_cli(*args, "--json").stdout)


def test_a_second_medium_through_its_life(tmp_path: Path, medium: Ext4Image) -> None:
    config = setup(tmp_path, medium)
    data = tmp_path / "data"
    refused = run_cli("archive", "init", "--config", config, check=False)
    assert refused.returncode == 1 and "same filesystem" in refused.stderr, "an empty mount point is not a medium"
    medium.mount()
    assert "archive medium" in run_cli("archive", "init", "--config", config).stdout

    rows = {r["id"]: r for r in cli_json("calls", "list", "--config", config)}  # type: ignore[union-attr]
    secrets = {}
    for record_id, row in rows.items():
        path = data / row["audio_path"]
        raw = path.read_bytes()
        secrets[record_id] = (read_header(path).wrapped, needles(raw[read_header(path).size:], 20))
    moved = cli_json("retention", "run", "--now", NOW_MOVE, "--config", config)
    assert sorted(moved["archive"]["move"]) == sorted(rows) and moved["warnings"] == []  # type: ignore[index]
    assert vaults(data) == [] and len(vaults(medium.mount_point)) == 4

    first = next(iter(rows))
    run_cli("calls", "audio", first, "-o", tmp_path / "heard.wav", "--config", config)
    assert hashlib.sha256((tmp_path / "heard.wav").read_bytes()).hexdigest() == rows[first]["sha256"]
    assert run_cli("verify", "--config", config).stdout.splitlines()[-1].startswith("ok: 3 recordings checked")

    medium.unmount()
    verify = run_cli("verify", "--config", config, check=False)
    assert verify.returncode == 3, verify.stdout
    assert verify.stdout.count("not checked: it is on archive medium") == 3 and "is missing" not in verify.stdout
    assert "not mounted" in verify.stdout
    audio = run_cli("calls", "audio", first, "-o", tmp_path / "unheard.wav", "--config", config, check=False)
    assert audio.returncode == 1 and "not mounted" in audio.stderr and not (tmp_path / "unheard.wav").exists()
    assert run_cli("archive", "status", "--config", config, check=False).returncode == 1
    overdue = cli_json("retention", "run", "--now", NOW_ERASE, "--config", config)
    assert overdue["archive"]["erase"] == [] and [w["code"] for w in overdue["warnings"]] == [  # type: ignore[index]
        "archive_erasure_overdue"]

    medium.mount()
    target = medium.mount_point / rows[first]["audio_path"]
    flip(target, -30)
    tampered = run_cli("verify", "--config", config, check=False)
    assert tampered.returncode == 1
    assert f"recording {first} on archive medium" in tampered.stdout and str(target) in tampered.stdout
    flip(target, -30)

    before = medium.raw()
    for wrapped, cipher in secrets.values():
        assert found(before, [wrapped]) == [0] and len(found(before, cipher)) == 20, "control: on the medium"
    erased = cli_json("retention", "run", "--now", NOW_ERASE, "--config", config)
    assert sorted(erased["archive"]["erase"]) == sorted(rows)  # type: ignore[index]
    after = medium.raw()
    for record_id, (wrapped, cipher) in secrets.items():
        assert found(after, [wrapped]) == [] and found(after, cipher) == [], f"{record_id} is left on the medium"
    events = [(e["event"], e["details"].get("medium")) for e in cli_json("ledger", "list", "--config", config)]
    label = json.loads((medium.mount_point / "callrec-archive.json").read_text())["medium"]
    assert [e for e in events if e[0] in ("archive_medium", "archive_move", "erasure")] == [
        ("archive_medium", label), ("archive_move", label), ("erasure", label)]
    assert run_cli("verify", "--config", config).stdout.splitlines()[-1].startswith("ok: 0 recordings checked")


def test_a_full_medium_keeps_recordings_on_the_device(tmp_path: Path) -> None:
    small = Ext4Image(tmp_path / "small.img", tmp_path / "mnt", 8)
    try:
        config = setup(tmp_path, small)
        small.mount()
        run_cli("archive", "init", "--config", config)
        filler = small.mount_point / "filler"
        free = os.statvfs(small.mount_point)
        filler.write_bytes(b"\0" * (free.f_bavail * free.f_frsize - 1024 * 1024 - 200 * 1024))
        full = cli_json("retention", "run", "--now", NOW_MOVE, "--config", config)
        assert len(full["archive"]["move"]) == 1, "room above the 1 MiB floor for one recording"  # type: ignore[index]
        (warning,) = full["warnings"]  # type: ignore[index]
        assert warning["code"] == "archive_full" and "no room" in warning["message"]
        assert warning["message"].startswith("2 recording(s) past the period on this device stay on it")
        assert len(vaults(tmp_path / "data")) == 3 and len(vaults(small.mount_point)) == 1, "nothing half-copied"
        filler.unlink()
        again = cli_json("retention", "run", "--now", NOW_MOVE, "--config", config)
        assert len(again["archive"]["move"]) == 2 and again["warnings"] == []  # type: ignore[index]
    finally:
        small.close()


@pytest.mark.parametrize("step", ["_place", "_commit", "_remove_device_copies"])
def test_a_sweep_killed_mid_move_onto_the_medium(tmp_path: Path, medium: Ext4Image, step: str) -> None:
    config = setup(tmp_path, medium)
    data = tmp_path / "data"
    medium.mount()
    run_cli("archive", "init", "--config", config)
    sweep_killed_before(step, data, medium.mount_point, tmp_path / "policy.yaml", MOVE_ALL)
    medium.unmount()  # what the crash left is what reached the medium
    medium.mount()
    rules = load_policy(tmp_path / "policy.yaml").retention
    with Store.open(data, TOKYO, archive_dir=medium.mount_point) as store:
        assert all(good_copy(store, row) for row in store.index.rows())
        sweep(store, rules, MOVE_ALL, "test")
        assert all(row.stored_on and row.archived_at and good_copy(store, row) for row in store.index.rows())
        assert vaults(data) == [] and not any((medium.mount_point / STAGING).iterdir())
        report = verify_store(store)
        assert report.ok and report.archived == 3, report.findings
        assert len(sweep(store, rules, ERASE_ALL, "test").archive.erased) == 3
        assert vaults(medium.mount_point) == []
