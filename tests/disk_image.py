"""Erasure checked on a raw disk image: the root and tools an ext4 image on
a loop device needs, its loop device detached whatever happened, and byte
windows ("needles") of what must not survive, searched for in the image."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def needles(data: bytes, count: int, size: int = 48) -> list[bytes]:
    step = max(1, (len(data) - size) // count)
    return [data[start : start + size] for start in range(0, len(data) - size + 1, step)][:count]


def found(image: bytes, wanted: list[bytes]) -> list[int]:
    return [number for number, needle in enumerate(wanted) if needle in image]


def run(*command: str) -> None:
    subprocess.run(command, check=True, timeout=60, capture_output=True)


def require_tools() -> None:
    assert os.geteuid() == 0, "the erasure test mounts an ext4 image on a loop device and must run as root (CI does)"
    for tool, package in (("mkfs.ext4", "e2fsprogs"), ("losetup", "mount"), ("mount", "mount")):
        assert shutil.which(tool), f"{tool} is missing: apt-get install {package}"


def detach(image: Path) -> None:
    """Whatever loop device still holds the image goes, even after a failure."""
    listed = subprocess.run(["losetup", "-j", str(image)], capture_output=True, text=True, timeout=30)
    for line in listed.stdout.splitlines():
        subprocess.run(["losetup", "-d", line.split(":", 1)[0]], timeout=30)



class Ext4Image:
    """An ext4 image of `mib` MiB mounted at `mount` on a loop device: `unmount()` and `mount()`
    take it away and bring it back as pulling and plugging a medium would, `raw()` reads the image
    unmounted, `close()` leaves nothing mounted or attached whatever happened."""

    def __init__(self, file: Path, mount: Path, mib: int) -> None:
        require_tools()
        self.file, self.mount_point = file, mount
        mount.mkdir(mode=0o700, exist_ok=True)
        with file.open("wb") as out:
            out.truncate(mib * 1024 * 1024)
        run("mkfs.ext4", "-F", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(file))
        self.mounted = False

    def mount(self) -> None:
        try:
            run("mount", "-o", "loop", str(self.file), str(self.mount_point))
        except subprocess.CalledProcessError as exc:
            raise AssertionError(f"cannot mount an ext4 image on a loop device: {exc.stderr.decode().strip()}") from None
        self.mounted = True

    def unmount(self) -> None:
        run("umount", str(self.mount_point))
        self.mounted = False
        detach(self.file)

    def raw(self) -> bytes:
        was = self.mounted
        if was:
            self.unmount()
        content = self.file.read_bytes()
        if was:
            self.mount()
        return content

    def close(self) -> None:
        if self.mounted and subprocess.run(["umount", str(self.mount_point)], check=False, timeout=60).returncode:
            subprocess.run(["umount", "-l", str(self.mount_point)], check=False, timeout=60)
        detach(self.file)
