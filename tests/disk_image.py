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

