"""Room kept back on the data filesystem for the index and the ledgers.

When something else fills the disk (a log, a copy, a core dump), the index
still has to say which calls came and went: a call with no row is evidence
nobody can find.  A file of `size` bytes is allocated while there is room;
on the first index write a full disk refuses, it is released, and the room
it leaves takes the metadata (rows, seals, seal ledger) of calls that can no
longer be recorded, thousands of them, while no audio is written.  It is
allocated again once the disk has room beyond the recording floor.
"""
from __future__ import annotations

import os
from pathlib import Path

import structlog

__all__ = ["RESERVE_BYTES", "RESERVE_FILE", "Reserve"]

log = structlog.get_logger("callrec.storage")

RESERVE_FILE = "reserve"
RESERVE_BYTES = 8 * 1024 * 1024
"""About 2,500 calls of metadata (measured: the index's journal may first
grow to its 4 MiB, then a row, its seal and its seal ledger share take about
1.7 KiB), about 4,800 when the journal has already grown."""


class Reserve:
    """The reserve file of one data folder."""

    def __init__(self, data_dir: Path, size: int = RESERVE_BYTES) -> None:
        self.path = data_dir / RESERVE_FILE
        self.size = size

    @property
    def held(self) -> bool:
        return self.path.is_file()

    def keep(self, floor: int) -> bool:
        """Allocate the reserve when the disk has room for it beyond `floor`;
        whether it is held now."""
        if self.held:
            return True
        if self.size <= 0:
            return False
        st = os.statvfs(self.path.parent)
        if st.f_bavail * st.f_frsize < floor + self.size:
            return False
        tmp = self.path.with_name(RESERVE_FILE + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            log.warning("storage.reserve_unavailable", reason=exc.strerror or str(exc))
            return False
        log.info("storage.reserve_kept", bytes=self.size)
        return True

    def release(self) -> bool:
        """Give the room back to the filesystem; whether there was any."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.warning("storage.reserve_released", bytes=self.size,
                    detail="the disk is full: calls are kept as metadata only until space returns")
        return True
