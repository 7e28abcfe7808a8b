"""What `callrec verify` checks of the archive medium (storage/archive.py), beside each moved
recording's seal, which verify checks in the medium's folder as it does on the device."""
from __future__ import annotations

from pathlib import Path

from .archive import STAGING, Medium, MediumUnavailable, medium_names, mounted
from .index import CallRow
from .layout import RECORDINGS
from .store import Store

__all__ = ["ArchiveAudit"]


class ArchiveAudit:
    """What `callrec verify` checks of the archive, beside each archived recording's seal:
    which medium holds it (a medium that is not mounted is "not checked", never "missing"),
    copies left on the device, and files on the medium that no row accounts for."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.unchecked: list[tuple[str, str]] = []
        self.archived = 0
        self.medium: Medium | None = None
        self.problem = ""
        self._on_medium: dict[str, list[Path]] = {}
        if store.archive_dir is None and not store.index.archived_totals():
            return
        try:
            self.medium = mounted(store)
        except MediumUnavailable as exc:
            self.problem = str(exc)
            return
        for folder in (self.medium.root / RECORDINGS, self.medium.root / STAGING):
            for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
                if path.is_file():
                    self._on_medium.setdefault(path.name.split(".", 1)[0], []).append(path)

    def check(self, row: CallRow, device_files: list[Path]) -> tuple[Path | None, list[tuple[str, str]]]:
        """For a row on an archive medium: the folder to check its files in (None: not
        mounted, said in `unchecked`), and what is wrong around it."""
        self.archived += 1
        subject = f"recording {row.id}"
        problems = [(subject, f"{path.relative_to(self.store.data_dir)} is still on the device although the recording "
                     f"was moved to archive medium {row.stored_on}"
                     + (" (a move a crash interrupted: the next sweep removes it)" if row.archived_at is None else ""))
                    for path in device_files]
        if self.medium is None or self.medium.id != row.stored_on:
            why = self.problem or f"the medium mounted at {self.store.archive_dir} is {self.medium and self.medium.id}"
            self.unchecked.append((subject, f"not checked: it is on archive medium {row.stored_on}, and {why}"))
            return None, problems
        named = {self.medium.root / name for name in medium_names(row)}
        stray = f"on archive medium {self.medium.id}, named by no index row"
        problems += [(str(path.relative_to(self.medium.root)), stray)
                     for path in self._on_medium.pop(row.id, []) if path not in named]
        return self.medium.root, problems

    def leftovers(self) -> list[tuple[str, str]]:
        """Files on the medium no archived row named: erased recordings' (must be gone), copies a
        crash left while the recording was still on the device, and strangers."""
        if self.medium is None:
            return []
        found = []
        for record_id, paths in sorted(self._on_medium.items()):
            row = self.store.index.get(record_id)
            for path in paths:
                where = f"{path.relative_to(self.medium.root)} on archive medium {self.medium.id}"
                if row is not None and row.erased_at:
                    found.append((f"recording {row.id}", f"erased {row.erased_at} but {where} is still there"))
                elif row is not None and row.stored_on is None:
                    left = (f"{where} is a copy a crash left while the recording was being moved; it is still on "
                            "the device, and the next sweep redoes the move")
                    found.append((f"recording {row.id}", left))
                else:
                    found.append((where, "no index row names this file"))
        return found
