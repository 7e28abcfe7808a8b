"""Erasure as the product does it, on a real filesystem: calls recorded by
`callrec replay` into a data folder on a small ext4 image, then erased by a
retention sweep and by `callrec wipe --all`; afterwards neither the calls'
G.711 bytes, nor their recordings' ciphertext, nor their keys are anywhere
in the raw image."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from storage.keys import load_master_key
from storage.vault import read_header
from tests.builders import PBX, TRUNK, write_pcap
from tests.call_frames import T0, bye, media, signalling
from tests.disk_image import detach, found, needles, require_tools, run
from tests.interop import run_cli

pytestmark = pytest.mark.root

DAY = 86400.0


def call(call_id: str, start: float, port: int, seed: int) -> tuple[list[tuple[float, bytes]], bytes]:
    up, payloads = media(start + 1.05, 4, src=(TRUNK, port), dst=(PBX, port + 20000), ssrc=seed, seed=seed)
    frames = signalling(call_id, t=start, tport=port, pport=port + 20000) + up + bye(start + 6, call_id)
    return frames, b"".join(payloads)


class Disk:
    """An ext4 image mounted on a loop device; `image()` reads it unmounted."""

    def __init__(self, root: Path) -> None:
        self.file = root / "disk.img"
        self.mount = root / "mnt"
        self.mount.mkdir(mode=0o700)
        with self.file.open("wb") as out:
            out.truncate(112 * 1024 * 1024)  # above the store's 64 MiB free-space floor
        run("mkfs.ext4", "-F", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(self.file))
        self.mounted = False
        self.attach()

    def attach(self) -> None:
        try:
            run("mount", "-o", "loop", str(self.file), str(self.mount))
        except subprocess.CalledProcessError as exc:
            pytest.fail(f"cannot mount an ext4 image on a loop device here: {exc.stderr.decode().strip()}",
                        pytrace=False)
        self.mounted = True

    def image(self) -> bytes:
        run("umount", str(self.mount))
        self.mounted = False
        detach(self.file)
        content = self.file.read_bytes()
        self.attach()
        return content

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.mount)], timeout=60)
        detach(self.file)


def test_sweep_and_wipe_leave_nothing_recoverable(tmp_path: Path) -> None:
    require_tools()
    disk = Disk(tmp_path)
    try:
        data = disk.mount / "data"
        key_file = tmp_path / "master.key"
        config = tmp_path / "config.yaml"
        policy = tmp_path / "policy.yaml"
        policy.write_text("network: {trunk: [203.0.113.0/28], pbx: [192.0.2.10]}\n"
                          "retention: {keep: {days: 90}, free_space_floor: 8 MiB}\n")
        config.write_text(f"data_dir: {data}\nkey_file: {key_file}\npolicy: {policy}\n")
        old_frames, old_audio = call("old@x", T0, 20000, 1)
        new_frames, new_audio = call("new@x", T0 + 100 * DAY, 20002, 2)
        capture = write_pcap(tmp_path / "calls.pcap", old_frames + new_frames)
        run_cli("replay", capture, "--config", config)
        rows = json.loads(run_cli("calls", "list", "--json", "--config", config).stdout)
        assert [r["sip_call_id"] for r in rows] == ["old@x", "new@x"]
        master = load_master_key(key_file, data, {})
        secrets = {}
        for row in rows:
            path = data / row["audio_path"]
            header = read_header(path)
            raw = path.read_bytes()
            secrets[row["sip_call_id"]] = {
                "keys": [header.wrapped, master.unwrap(header.wrapped, header.context)],
                "cipher": needles(raw[header.size:], 20),
            }
        wire = {"old@x": needles(old_audio, 30), "new@x": needles(new_audio, 30)}

        before = disk.image()
        for call_id in ("old@x", "new@x"):
            assert found(before, wire[call_id]) == [], "G.711 must never reach the disk unencrypted"
            assert found(before, secrets[call_id]["keys"][:1]) == [0], "control: the wrapped key is found"
            assert len(found(before, secrets[call_id]["cipher"])) == 20, "control: the ciphertext is found"
            assert found(before, secrets[call_id]["keys"][1:]) == [], "the data key is only ever stored wrapped"

        swept = json.loads(run_cli("retention", "run", "--now", "2026-02-24T00:00:00+09:00", "--json",
                                   "--config", config).stdout)
        assert [e["reason"] for e in swept["erase"]] == ["retention"]
        after_sweep = disk.image()
        assert found(after_sweep, secrets["old@x"]["keys"]) == [], "the swept recording's key is still on disk"
        assert found(after_sweep, secrets["old@x"]["cipher"]) == [], "the swept recording's ciphertext remains"
        assert found(after_sweep, secrets["new@x"]["keys"][:1]) == [0], "the kept recording must still be there"

        run_cli("wipe", "--all", "--yes", "--config", config)
        assert not key_file.exists(), "wipe destroys the master key file"
        after_wipe = disk.image()
        for call_id in ("old@x", "new@x"):
            assert found(after_wipe, wire[call_id]) == []
            assert found(after_wipe, secrets[call_id]["keys"]) == [], f"{call_id}: key left after wipe"
            assert found(after_wipe, secrets[call_id]["cipher"]) == [], f"{call_id}: ciphertext left after wipe"
    finally:
        disk.close()
