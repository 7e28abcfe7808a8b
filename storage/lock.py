"""One writer per data folder: two processes recording into the same index
would seal each other's open recordings as crashed."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import StorageError

__all__ = ["DataDirBusy", "DataDirLock"]


class DataDirBusy(StorageError):
    """Another callrec process holds this data folder (one writer per folder)."""


class DataDirLock:
    """An exclusive flock on DATA/lock, released when the process ends."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "lock"
        self._fd: int | None = None

    def __enter__(self) -> DataDirLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirBusy(f"data folder {self.path.parent} is in use by another callrec process") from None
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
