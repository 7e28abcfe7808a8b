"""`callrec verify`: proof for an auditor that nothing was altered.

Every kept recording is read back, each vault record authenticated, and the
SHA-256 of the WAV it hands out compared with the one sealed when the call
ended; erased recordings must have left no file; files no row names are
reported; and the ledger's keyed hash chain is checked end to end.

The rows themselves are checked too: each row's metadata against its seal
(storage/sealing.py), and the index against the seal ledger
(storage/seal_ledger.py), which names every row sealed and every erasure,
so a row deleted with its files, a row set back to `recording`, an edited
number or time, and a row put back over its tombstone are each named.  Both
ledgers are checked against their anchors outside the data folder, which
catches a ledger and head put back from an earlier copy.  Rows still in
`recording` while no recorder holds the data folder are named too: nothing
will ever seal them but the next start's recovery.
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from sqlite3 import Row

from .archive_audit import ArchiveAudit
from .audiofile import AudioFileError, side_digest, wav_digest
from .index import CallRow, call_row
from .layout import RECORDINGS
from .ledger import LedgerError
from .marks import MarkBook
from .seal_ledger import SealEvent, SealRecord, read_seals
from .sealing import seal_matches
from .store import Store
from .vault import VaultError

__all__ = ["Finding", "Report", "ledger_findings", "verify_store", "writer_running"]

LOCK_FILE = "lock"
"""storage/lock.py's DataDirLock: held by the daemon and by replay while they record."""


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
    unsealed_before_upgrade: int = 0
    """Rows finished before rows were sealed, in a store no newer recorder
    has opened yet: their audio is checked, their metadata cannot be."""
    adopted: int = 0
    """Rows finished before rows were sealed, sealed at the upgrade: covered
    from then on, not before."""
    notes: list[str] = field(default_factory=list)

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


def _check_seal(key: bytes, raw: Row, row: CallRow, record: SealRecord | None, sealing: bool) -> Iterator[str]:
    """The row against its own seal and against what the seal ledger says of it."""
    seal = raw["seal_mac"]
    if seal is None:
        if record is not None:
            yield f"the seal ledger names it ({record.event}, seq {record.seq}, {record.at}) but its seal was removed"
        elif sealing and row.state != "recording":
            yield "finished but carries no seal, though every row has been sealed since the seal ledger began"
        return
    if not seal_matches(key, raw, seal):
        yield "metadata differs from its seal: edited after it was sealed (state, a number, a time or a hash)"
    if record is None:
        if raw["seal_seq"] is not None:
            yield f"sealed, but the seal ledger does not name it (it did at seq {raw['seal_seq']})"
    elif record.seal != seal:
        if record.event == SealEvent.ERASED and row.erased_at is None:
            yield f"erased (seal ledger seq {record.seq}, {record.at}) but the row was put back"
        else:
            yield f"its seal is not the one the seal ledger recorded ({record.event}, seq {record.seq}): replaced"
    if record is not None and record.resealed_from is not None:
        yield (f"sealed again (seal ledger seq {record.seq}) after its seal at seq {record.resealed_from}: it was set "
               "back to `recording` and sealed anew")


def _seal_history(store: Store, findings: list[Finding]) -> dict[str, SealRecord]:
    """What the seal ledger last says of each row; a row sealed twice with
    different seals keeps the mark of it (an erasure's new seal is no such
    case)."""
    known: dict[str, SealRecord] = {}
    try:
        for call_id, record in read_seals(store.seals):
            before = known.get(call_id)
            if before is not None:
                if before.seal != record.seal and record.event != SealEvent.ERASED:
                    record = replace(record, resealed_from=before.seq)
                elif before.resealed_from is not None:
                    record = replace(record, resealed_from=before.resealed_from)
            known[call_id] = record
    except LedgerError as exc:
        findings.append(Finding("seal ledger", str(exc)))
    return known


def writer_running(data_dir: Path) -> bool:
    """Whether a recorder (the daemon, replay) holds the data folder now."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _sealing(store: Store) -> bool:
    """Whether a recorder that seals rows and anchors the ledgers has opened
    this store (its seal ledger has begun); before that, neither is required."""
    path = store.seals.path
    return path.exists() and path.stat().st_size > 0


def ledger_findings(store: Store) -> list[Finding]:
    """Both ledgers: chains, heads and anchors."""
    sealing = _sealing(store)
    return ([Finding("ledger", str(p)) for p in store.ledger.verify(require_anchor=sealing)]
            + [Finding("seal ledger", str(p)) for p in store.seals.verify(require_anchor=sealing)])


def verify_store(store: Store) -> Report:
    findings: list[Finding] = []
    notes: list[str] = []
    sealing = _sealing(store)
    findings.extend(Finding("seal ledger", str(p)) for p in store.seals.verify(require_anchor=sealing))
    known = _seal_history(store, findings)
    key = store.seal_key
    running = writer_running(store.data_dir)
    on_disk: dict[str, list[Path]] = {}
    for path in sorted((store.data_dir / RECORDINGS).rglob("*.vault")):
        on_disk.setdefault(path.name.split(".", 1)[0], []).append(path)
    recordings = erased = in_progress = legacy = adopted = unnamed = 0
    media = ArchiveAudit(store)
    for raw in store.index.raw_rows():
        row = call_row(raw)
        subject = f"recording {row.id}"
        record = known.pop(row.id, None)
        findings.extend(Finding(subject, problem) for problem in _check_seal(key, raw, row, record, sealing))
        if raw["seal_mac"] is None and record is None and not sealing and row.state != "recording":
            legacy += 1
        if record is not None and record.event == SealEvent.ADOPTED:
            adopted += 1
        if raw["seal_mac"] is not None and record is None and raw["seal_seq"] is None:
            unnamed += 1
        files = on_disk.pop(row.id, [])
        if row.erased_at:
            erased += 1
            findings.extend(Finding(subject, f"erased {row.erased_at} but "
                                    f"{path.relative_to(store.data_dir)} is still on disk") for path in files)
            continue
        if not row.sealed:
            in_progress += 1
            if not running:
                findings.append(Finding(subject, f"left in state `{row.state}` and no recorder holds the data folder: "
                                        "nothing will seal it (a crash? the next `callrec run` or replay recovers "
                                        "it) or it was set back"))
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
    for call_id, record in known.items():
        what = "its tombstone row" if record.event == SealEvent.ERASED else "its row"
        findings.append(Finding(f"recording {call_id}", f"{record.event} (seal ledger seq {record.seq}, {record.at}) "
                                f"but {what} is gone from the index"))
    ledger_problems = store.ledger.verify(require_anchor=sealing)
    findings.extend(Finding("ledger", str(problem)) for problem in ledger_problems)
    with MarkBook(store) as marks:  # harassment marks: their MACs, the ledger, the evidence holds
        findings.extend(Finding(*problem) for problem in marks.findings())
    entries = sum(1 for _ in store.ledger.entries()) if not ledger_problems else 0
    if legacy:
        notes.append(f"{legacy} recording(s) sealed before metadata MAC (an older version): audio checked, metadata "
                     "not; the next start of the recorder seals them")
    if adopted:
        notes.append(f"{adopted} recording(s) sealed before metadata MAC, covered since the upgrade")
    if unnamed:
        notes.append(f"{unnamed} seal(s) not yet in the seal ledger (the recorder names them within a second)")
    if not sealing:
        notes.append("ledgers not anchored yet (made by an older version); the next start of the recorder anchors "
                     "them")
    return Report(recordings, erased, in_progress, entries, findings, media.archived,
                  [Finding(*item) for item in media.unchecked], legacy, adopted, notes)
