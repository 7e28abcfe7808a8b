"""Writes that survive a crash: whole writes, and folders synced so a new
or removed name is on disk too (the store's files, the ledger, the keys)."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_dir", "pwrite_all", "write_all"]


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    # One call writes it all nearly always (a checkpoint's record, twice a
    # second per recording); the view only for what a short write left.
    written = os.pwrite(fd, data, offset)
    if written == len(data):
        return
    view = memoryview(data)[written:]
    offset += written
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
