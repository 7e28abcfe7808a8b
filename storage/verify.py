"""`callrec verify`: proof for an auditor that nothing was altered.

Every kept recording is read back, each vault record authenticated, and the
SHA-256 of the WAV it hands out compared with the one sealed when the call
ended; erased recordings must have left no file; files no row names are
reported; and the ledger's keyed hash chain is checked end to end.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .archive_audit import ArchiveAudit
from .audiofile import AudioFileError, side_digest, wav_digest
from .index import CallRow
from .layout import RECORDINGS
from .store import Store
from .vault import VaultError

__all__ = ["Finding", "Report", "verify_store"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing that does not match, named so an auditor can find it."""

    subject: str
    problem: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.problem}"


@dataclass(frozen=True, slots=True)
class Report:
    recordings: int
    erased: int
    in_progress: int
    ledger_entries: int
    findings: list[Finding]
    archived: int = 0
    unchecked: list[Finding] = field(default_factory=list)
    """Recordings on an archive medium that is not mounted: neither good nor bad, not checked."""

    @property
    def ok(self) -> bool:
        return not self.findings


def _check_row(store: Store, row: CallRow, root: Path) -> Iterator[Finding]:
    subject = f"recording {row.id}"
    if not row.audio_path:
        return
    path = root / row.audio_path
    if not path.exists():
        yield Finding(subject, f"audio file {row.audio_path} is missing")
        return
    try:
        audio, digest = wav_digest(path, store.master, row.id)
    except (VaultError, AudioFileError, OSError) as exc:
        yield Finding(subject, f"audio file does not authenticate: {exc}")
        return
    if row.sha256 != digest:
        yield Finding(subject, f"audio SHA-256 {digest} differs from the sealed {row.sha256}")
    elif audio.frames != row.audio_frames:
        yield Finding(subject, f"{audio.frames} frames on disk, {row.audio_frames} sealed")
    if not audio.sealed:
        yield Finding(subject, "audio file was cut short (no final record)")
    for side in row.side_files:
        side_path = root / side.path
        try:
            if side_digest(side_path, store.master, row.id) != side.sha256:
                yield Finding(subject, f"side file {side.path} differs from its sealed SHA-256")
        except (VaultError, AudioFileError, OSError) as exc:
            yield Finding(subject, f"side file {side.path}: {exc}")


def verify_store(store: Store) -> Report:
    findings: list[Finding] = []
    on_disk: dict[str, list[Path]] = {}
    for path in sorted((store.data_dir / RECORDINGS).rglob("*.vault")):
        on_disk.setdefault(path.name.split(".", 1)[0], []).append(path)
    recordings = erased = in_progress = 0
    media = ArchiveAudit(store)
    for row in store.index.rows():
        files = on_disk.pop(row.id, [])
        if row.erased_at:
            erased += 1
            findings.extend(Finding(f"recording {row.id}", f"erased {row.erased_at} but "
                                    f"{path.relative_to(store.data_dir)} is still on disk") for path in files)
            continue
        if not row.sealed:
            in_progress += 1
            continue
        recordings += 1
        if row.stored_on is not None:  # moved to the archive medium (storage/archive.py)
            root, problems = media.check(row, files)
            findings.extend(Finding(*problem) for problem in problems)
            if root is not None:
                findings.extend(Finding(f"{f.subject} on archive medium {row.stored_on}", f.problem)
                                for f in _check_row(store, row, root))
            continue
        named = {store.data_dir / side.path for side in row.side_files}
        if row.audio_path:
            named.add(store.data_dir / row.audio_path)
        findings.extend(_check_row(store, row, store.data_dir))
        findings.extend(Finding(str(path.relative_to(store.data_dir)), "no index row names this file")
                        for path in files if path not in named)
    findings.extend(Finding(str(path.relative_to(store.data_dir)), "no index row names this file")
                    for paths in on_disk.values() for path in paths)
    findings.extend(Finding(*problem) for problem in media.leftovers())
    ledger_problems = store.ledger.verify()
    findings.extend(Finding("ledger", str(problem)) for problem in ledger_problems)
    entries = sum(1 for _ in store.ledger.entries()) if not ledger_problems else 0
    return Report(recordings, erased, in_progress, entries, findings, media.archived,
                  [Finding(*item) for item in media.unchecked])
