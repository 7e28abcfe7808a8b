"""The archive stage: recordings moved, as sealed, to a second medium when the device period ends.

松本市 別紙2 row 4 (大阪市水道局): 6か月保存経過後に別記憶媒体で6か月; the policy's
`retention.archive` gives the second period, the config's `archive_dir` the medium.

The vault files travel as they are: ciphertext and wrapped data key unchanged, so a moved
recording still authenticates under the same master key and still hashes to the SHA-256 sealed
when the call ended; nothing is decrypted and written again on the way.

The medium is a folder on another mounted filesystem, prepared once with `callrec archive init`,
which writes a label naming the medium under a MAC of this recorder's master key.  A row moved
there names its medium (`stored_on`), so "the medium is not mounted" (no label, or another
medium's) is never mistaken for "the file is gone", and nothing is ever written to the empty
mount point a missing medium leaves behind.

A move survives a crash at any instant.  Each file is copied to a hidden folder on the medium,
fsynced, read back from the medium and authenticated against its seal, then renamed into place
and its folder fsynced; only then does the row name the medium (the index fsynced), only then is
the device copy shredded, and the row then says the move finished.  Until the row names the
medium the device copy is the recording; from then on the medium's is.  The next sweep redoes or
finishes whatever a crash interrupted, and a copy it does not keep is shredded, not unlinked,
because it carries the recording's wrapped key like the original.
"""
from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath

import structlog

from policy.retention import Retention, describe

from .audiofile import AudioFileError, side_digest, wav_digest
from .durable import fsync_dir, write_all
from .errors import StorageError
from .index import CallRow, iso
from .layout import DIR_MODE, RECORDINGS, ensure_private_dir
from .ledger import Event, canonical
from .retention import SweepWarning, final_cutoff, move_cutoff
from .store import Store
from .vault import VaultError, shred

__all__ = ["LABEL_FILE", "ArchiveError", "ArchiveEvent", "Medium", "MediumUnavailable", "StageResult",
           "discard_copies", "file_root", "init_medium", "medium_names", "mounted", "run_stage", "shred_medium"]

log = structlog.get_logger("callrec.storage")

LABEL_FILE = "callrec-archive.json"
STAGING = ".incoming"
"""Where copies are made on the medium before they are renamed into place: what a crash leaves
half-copied is only ever here, and the next sweep shreds it."""
LABEL_KEY = "callrec archive label v1"
MAX_MOVES = 200
"""Recordings moved by one sweep: a day's calls take a few sweeps rather than one long one, so
the capacity ring (the same sweep) is never kept waiting for hours by a first, large backlog."""
_CHUNK = 1024 * 1024


class ArchiveEvent(StrEnum):
    """The archive stage's ledger events (the ledger accepts the layers' own StrEnums)."""

    MEDIUM = "archive_medium"  # a medium prepared: its id and folder
    MOVE = "archive_move"  # one per sweep: which recordings went to which medium


class ArchiveError(StorageError):
    """The archive cannot do what was asked (no folder configured, a medium that is not empty)."""


class MediumUnavailable(ArchiveError):
    """The medium is not there or cannot take more; `code` is the stable warning code."""

    def __init__(self, message: str, code: str = "archive_unavailable") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Medium:
    root: Path
    id: str


# ---- the medium's label -------------------------------------------------------------------------

def _label_mac(store: Store, body: dict[str, str]) -> str:
    return hmac.new(store.master.derive(LABEL_KEY), canonical(body), hashlib.sha256).hexdigest()


def _configured(store: Store) -> Path:
    if store.archive_dir is None:
        raise MediumUnavailable("the config sets no archive_dir (the second medium's folder)")
    return store.archive_dir


def mounted(store: Store) -> Medium:
    """The medium at the configured folder, if it is this recorder's; MediumUnavailable says
    why not in words an operator can act on."""
    root = _configured(store)
    try:
        raw = (root / LABEL_FILE).read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise MediumUnavailable(f"the archive medium is not mounted at {root} (no {LABEL_FILE} there)") from None
    except OSError as exc:
        raise MediumUnavailable(f"the archive medium at {root} cannot be read: {exc.strerror or exc}") from None
    try:
        label = json.loads(raw)
        body = {name: label[name] for name in ("medium", "key_id", "created")}
        if not all(isinstance(value, str) for value in body.values()) or not isinstance(label["mac"], str):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise MediumUnavailable(f"{root / LABEL_FILE} is not readable: not a callrec archive label") from None
    if body["key_id"] != store.master.key_id:
        raise MediumUnavailable(f"the medium at {root} is the archive of a recorder with another master key "
                                f"({body['key_id']})")
    if not hmac.compare_digest(label["mac"], _label_mac(store, body)):
        raise MediumUnavailable(f"the label {root / LABEL_FILE} fails its MAC: written without this recorder's key")
    return Medium(root, body["medium"])


def init_medium(store: Store, actor: str, *, require_own_filesystem: bool = True) -> Medium:
    """Prepare the medium mounted at the configured folder (once; again is a no-op).

    Refused on the data folder's filesystem or the root filesystem: that is where an unmounted
    medium's mount point lies, and recordings "archived" there would be on the device after all.
    `require_own_filesystem=False` is for tests on one filesystem.
    """
    root = _configured(store)
    try:
        return mounted(store)
    except MediumUnavailable:
        if (root / LABEL_FILE).exists():
            raise
    if not root.is_dir():
        raise ArchiveError(f"{root} does not exist: mount the second medium and make the folder first")
    device = root.stat().st_dev
    if require_own_filesystem and device in (store.data_dir.stat().st_dev, Path("/").stat().st_dev):
        raise ArchiveError(f"{root} is on the same filesystem as {store.data_dir} or as /: the second medium is not "
                           "mounted there")
    if any(entry.name != "lost+found" for entry in root.iterdir()):
        raise ArchiveError(f"{root} is not empty: give callrec a folder of its own on the second medium")
    ensure_private_dir(root)
    body = {"medium": secrets.token_hex(8), "key_id": store.master.key_id,
            "created": store.now().isoformat(timespec="seconds")}
    _write_new(root / LABEL_FILE, canonical({**body, "mac": _label_mac(store, body)}) + b"\n")
    medium = Medium(root, body["medium"])
    store.ledger.append(ArchiveEvent.MEDIUM, actor, store.now(), medium=medium.id, folder=str(root))
    log.info("archive.medium_prepared", medium=medium.id, folder=str(root))
    return medium


def _write_new(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


# ---- where a recording's files are --------------------------------------------------------------

def _relative(name: str) -> str:
    """A path from the index, checked to stay inside the recordings folder (an altered index must
    not steer a move or a shred anywhere else)."""
    parts = PurePosixPath(name).parts
    if not parts or parts[0] != RECORDINGS or ".." in parts or PurePosixPath(name).is_absolute():
        raise ArchiveError(f"{name!r} is not a path inside {RECORDINGS}/")
    return name


def medium_names(row: CallRow) -> list[str]:
    """The recording's files, relative to the device's or the medium's folder."""
    names = [row.audio_path] if row.audio_path else []
    return [_relative(name) for name in names + [side.path for side in row.side_files]]


def medium_of(store: Store, row: CallRow) -> Medium:
    """The mounted medium, if it is the one the row was moved to."""
    medium = mounted(store)
    if medium.id != row.stored_on:
        raise MediumUnavailable(f"{row.id} is on archive medium {row.stored_on}, which is not mounted at "
                                f"{medium.root} (medium {medium.id} is)")
    return medium


def file_root(store: Store, row: CallRow) -> Path:
    """The folder the row's file names are relative to: the data folder, or the medium the
    recording was moved to (MediumUnavailable when that medium is not mounted)."""
    if row.stored_on is None:
        return store.data_dir
    return medium_of(store, row).root


# ---- moving -------------------------------------------------------------------------------------

def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        while chunk := os.read(fd, _CHUNK):
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


def _copy(source: Path, target: Path) -> str:
    """Byte for byte, fsynced, then dropped from the page cache so that reading it back reads
    the medium; returns the SHA-256 of the bytes copied."""
    if target.exists():
        shred(target)
    digest = hashlib.sha256()
    src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        dst = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            while chunk := os.read(src, _CHUNK):
                digest.update(chunk)
                write_all(dst, chunk)
            os.fsync(dst)
            os.posix_fadvise(dst, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return digest.hexdigest()


def _check_copy(store: Store, row: CallRow, name: str, copy: Path, copied: str) -> None:
    """The copy as read back from the medium: the very bytes copied, and (where the row has
    them) the seals of the call."""
    if _sha256_of(copy) != copied:
        raise ArchiveError(f"{row.id}: the copy of {name} read back from the medium differs from what was written")
    if name == row.audio_path and row.sha256 is not None:
        _, digest = wav_digest(copy, store.master, row.id)
        if digest != row.sha256:
            raise ArchiveError(f"{row.id}: {name} does not match its sealed SHA-256")
    for side in row.side_files:
        if side.path == name and side_digest(copy, store.master, row.id) != side.sha256:
            raise ArchiveError(f"{row.id}: {name} does not match its sealed SHA-256")


def _make_dirs(root: Path, folder: Path) -> None:
    """Private folders down to `folder`, each new one's parent fsynced so the name survives."""
    missing = []
    while folder != root and not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for new in reversed(missing):
        new.mkdir(mode=DIR_MODE)
        fsync_dir(new.parent)


def _stage_copies(store: Store, medium: Medium, row: CallRow, names: list[str]) -> list[Path]:
    """Every file copied into the staging folder and checked there."""
    staging = medium.root / STAGING
    _make_dirs(medium.root, staging)
    parts = []
    try:
        for name in names:
            part = staging / f"{PurePosixPath(name).name}.part"
            parts.append(part)
            _check_copy(store, row, name, part, _copy(store.data_dir / name, part))
        fsync_dir(staging)
    except Exception:
        _shred_all(p for p in parts if p.exists())
        raise
    return parts


def _place(medium: Medium, names: list[str], parts: list[Path]) -> None:
    for name, part in zip(names, parts, strict=True):
        target = medium.root / name
        _make_dirs(medium.root, target.parent)
        os.replace(part, target)
        fsync_dir(target.parent)
    fsync_dir(medium.root / STAGING)


def _sync_index(store: Store) -> None:
    """The index made durable now: it runs with synchronous=NORMAL, where a commit reaches the
    disk with the next checkpoint or syncfs, and the device copy must not go before the row
    that names the medium is on disk."""
    for path in (store.index.path, store.index.path.with_name(store.index.path.name + "-wal")):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _commit(store: Store, medium: Medium, record_id: str) -> None:
    store.index.update(record_id, stored_on=medium.id, archived_at=None)
    _sync_index(store)


def _remove_device_copies(store: Store, names: list[str]) -> None:
    _shred_all(path for name in names if (path := store.data_dir / name).is_file() and not path.is_symlink())


def _mark_finished(store: Store, ids: list[str]) -> None:
    at = store.now().isoformat(timespec="milliseconds")
    with store.index.transaction():
        for record_id in ids:
            store.index.update(record_id, archived_at=at)


def _shred_all(paths: Iterable[Path]) -> None:
    for path in list(paths):
        shred(path)


def _free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def move(store: Store, medium: Medium, row: CallRow, floor: int) -> None:
    """Move one sealed recording from the device to the medium (see the module docstring for
    the order).  MediumUnavailable when the medium is full or fails; ArchiveError when the copy
    does not match (the recording then stays on the device, untouched)."""
    names = medium_names(row)
    size = sum((store.data_dir / name).stat().st_size for name in names)
    try:
        if _free_bytes(medium.root) - size < floor:
            raise MediumUnavailable(f"the archive medium at {medium.root} has no room for {row.id} ({size} bytes) "
                                    f"above its free-space floor of {floor} bytes", "archive_full")
        parts = _stage_copies(store, medium, row, names)
        _place(medium, names, parts)
    except OSError as exc:
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        raise MediumUnavailable(f"cannot write {row.id} to the archive medium at {medium.root}: "
                                f"{exc.strerror or exc}", "archive_full" if full else "archive_unavailable") from None
    except (VaultError, AudioFileError) as exc:
        raise ArchiveError(f"{row.id}: the copy on the archive medium does not authenticate: {exc}") from None
    _commit(store, medium, row.id)
    _remove_device_copies(store, names)


def _finish(store: Store, medium: Medium, record_id: str) -> bool:
    """A move a crash interrupted after the row named the medium: the device copy goes once the
    medium's copy checks out.  Should the medium's copy not check out while the device's does,
    the row goes back to the device, which is then the recording.  True when finished."""
    row = store.index.get(record_id)
    if row is None or row.stored_on != medium.id:
        return False
    names = medium_names(row)
    try:
        for name in names:
            copy = medium.root / name
            _check_copy(store, row, name, copy, _sha256_of(copy))
    except (OSError, VaultError, AudioFileError, ArchiveError) as exc:
        if all((store.data_dir / name).is_file() for name in names):
            store.index.update(record_id, stored_on=None, archived_at=None)
            _sync_index(store)
            log.error("archive.move_undone", call_id=record_id, reason=str(exc))
        else:
            log.critical("archive.copy_bad", call_id=record_id, reason=str(exc))
        return False
    _remove_device_copies(store, names)
    return True


def discard_copies(store: Store, row: CallRow) -> None:
    """Before a recording still on the device is erased: copies a crash left on the mounted
    medium (a move interrupted before the row named the medium) go with it."""
    try:
        medium = mounted(store)
    except MediumUnavailable:
        return
    _shred_all(path for name in medium_names(row) if (path := medium.root / name).is_file() and not path.is_symlink())


def _erase_archived(store: Store, medium: Medium, row: CallRow, at: str, reason: str) -> None:
    paths = [medium.root / name for name in medium_names(row)]
    if row.audio_path:
        audio = medium.root / row.audio_path
        paths.extend(p for p in audio.parent.glob(f"{row.id}.*") if p not in paths)
    _shred_all(p for p in paths if p.is_file() and not p.is_symlink())
    store.index.mark_erased(row.id, at, reason, store.seal_key)


def _clear_staging(medium: Medium) -> None:
    staging = medium.root / STAGING
    if staging.is_dir():
        _shred_all(p for p in staging.iterdir() if p.is_file() and not p.is_symlink())


# ---- one sweep's work ---------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class StageResult:
    """What the archive stage did in one sweep (or would do, in a dry run)."""

    moved: list[str] = field(default_factory=list)
    erased: list[str] = field(default_factory=list)
    warnings: tuple[SweepWarning, ...] = ()
    finished: list[str] = field(default_factory=list)
    """Moves a crash had interrupted, finished by this sweep (also in `moved`)."""


def run_stage(store: Store, rules: Retention, now: float, actor: str, *, dry_run: bool = False) -> StageResult:
    """The archive's part of a sweep: finish interrupted moves, move what the device period
    has ended for, erase from the medium what its own period has ended for.  A medium that is
    missing, foreign or full moves nothing and erases nothing: the recordings stay where they
    are and a warning says so (in `callrec status` and the journal)."""
    to_move = move_cutoff(rules, now, store.tz)
    to_erase = final_cutoff(rules, now, store.tz)
    due_moves = store.index.on_device_before(to_move, 2 * MAX_MOVES) if to_move is not None else []
    due_erasures = store.index.archived_before(to_erase) if to_erase is not None else []
    if not due_moves and not due_erasures and not store.index.moves_unfinished():
        return StageResult()
    try:
        medium: Medium | None = mounted(store)
        problem: MediumUnavailable | None = None
    except MediumUnavailable as exc:
        medium, problem = None, exc
    warnings: list[SweepWarning] = []
    if medium is None:
        assert problem is not None
        if due_moves:
            more = "+" if len(due_moves) == 2 * MAX_MOVES else ""
            warnings.append(SweepWarning(problem.code, now, f"{len(due_moves)}{more} recording(s) past the period on "
                                         f"this device stay on it, not moved to the archive: {problem}"))
        if due_erasures:
            warnings.append(_overdue(due_erasures, now, str(problem)))
        return StageResult(warnings=tuple(warnings))
    if dry_run:
        elsewhere = [item for item in due_erasures if item[3] != medium.id]
        if elsewhere:
            warnings.append(_overdue(elsewhere, now, f"the medium mounted at {medium.root} is {medium.id}"))
        return StageResult([i for i, *_ in due_moves[:MAX_MOVES]], [i for i, _, _, m in due_erasures if m == medium.id],
                           tuple(warnings))
    _clear_staging(medium)
    finished = [i for i in store.index.moves_unfinished() if _finish(store, medium, i)]
    moved, stopped, refused = _move_due(store, medium, rules, due_moves)
    if refused:
        warnings.append(SweepWarning("archive_move_refused", now, f"{len(refused)} recording(s) are not moved to the "
                                     f"archive because their files do not match their seals ({', '.join(refused)}): "
                                     "run `callrec verify`"))
    if stopped is not None:
        warnings.append(SweepWarning(stopped.code, now, f"{len(due_moves) - len(moved)} recording(s) past the period "
                                     f"on this device stay on it, not moved to the archive: {stopped}"))
    if moved or finished:
        _ledger_moves(store, rules, medium, now, actor, moved, finished)
        _mark_finished(store, moved + finished)
    erased, overdue = _erase_due(store, medium, rules, now, actor, due_erasures)
    if overdue:
        warnings.append(_overdue(overdue, now, f"the medium mounted at {medium.root} is {medium.id}"))
    if moved or erased:
        log.info("archive.swept", medium=medium.id, moved=len(moved), finished=len(finished), erased=len(erased))
    return StageResult(moved + finished, erased, tuple(warnings), finished)


def _move_due(store: Store, medium: Medium, rules: Retention,
              due: list[tuple[str, float, int]]) -> tuple[list[str], MediumUnavailable | None, list[str]]:
    """(moved, why moving stopped, refused): a full or failing medium stops the moves; a
    recording whose copy does not match its seal is left on the device and the rest go on."""
    floor = rules.archive.free_space_floor if rules.archive is not None else 0
    moved: list[str] = []
    refused: list[str] = []
    for record_id, _, _ in due:
        if len(moved) == MAX_MOVES:
            break
        row = store.index.get(record_id)
        if row is None or row.stored_on is not None or row.erased_at or row.held:
            continue
        try:
            move(store, medium, row, floor)
        except MediumUnavailable as exc:
            log.warning("archive.move_stopped", code=exc.code, reason=str(exc))
            return moved, exc, refused
        except ArchiveError as exc:
            log.error("archive.move_refused", call_id=record_id, reason=str(exc))
            refused.append(record_id)
            continue
        moved.append(record_id)
    return moved, None, refused


def _ledger_moves(store: Store, rules: Retention, medium: Medium, now: float, actor: str, moved: list[str],
                  finished: list[str]) -> None:
    rows = [row for i in moved + finished if (row := store.index.get(i)) is not None]
    times = [row.recorded_at for row in rows if row.recorded_at is not None]
    store.ledger.append(
        ArchiveEvent.MOVE, actor, store.now(), count=len(rows), ids=[row.id for row in rows], medium=medium.id,
        folder=str(medium.root), bytes=sum(row.size_bytes for row in rows),
        recorded_from=iso(min(times), store.tz, "seconds") if times else None,
        recorded_to=iso(max(times), store.tz, "seconds") if times else None,
        finished_after_interruption=finished, rule=describe(rules, "en")[0], as_of=iso(now, store.tz, "seconds"))


def _erase_due(store: Store, medium: Medium, rules: Retention, now: float, actor: str,
               due: list[tuple[str, float, int, str]]) -> tuple[list[str], list[tuple[str, float, int, str]]]:
    """Erase from the medium what is past its period there; what lies on another medium is overdue."""
    here = [item for item in due if item[3] == medium.id]
    if not here:
        return [], due
    at = store.now().isoformat(timespec="milliseconds")
    erased = []
    for record_id, _, _, _ in here:
        row = store.index.get(record_id)
        if row is None or row.erased_at or row.held or row.stored_on != medium.id:
            continue
        _erase_archived(store, medium, row, at, "retention")
        erased.append(record_id)
    if erased:
        times = [recorded_at for record_id, recorded_at, _, _ in here if record_id in set(erased)]
        rule = " ".join(describe(rules, "en")[:2]) if rules.archive is not None else describe(rules, "en")[0]
        store.ledger.append(
            Event.ERASURE, actor, store.now(), count=len(erased), by_reason={"retention": len(erased)},
            recorded_from=iso(min(times), store.tz, "seconds"), recorded_to=iso(max(times), store.tz, "seconds"),
            rule=rule, as_of=iso(now, store.tz, "seconds"),
            freed_bytes=sum(size for record_id, _, size, _ in here if record_id in set(erased)),
            medium=medium.id, ids=erased)
    return erased, [item for item in due if item[3] != medium.id]


def _overdue(items: list[tuple[str, float, int, str]], now: float, why: str) -> SweepWarning:
    media = ", ".join(sorted({item[3] for item in items}))
    return SweepWarning("archive_erasure_overdue", now, f"{len(items)} recording(s) on archive medium {media} are past "
                        f"their period there but cannot be erased until it is mounted: {why}")


# ---- decommissioning ----------------------------------------------------------------------------

def shred_medium(store: Store) -> int | None:
    """Every recording file on the mounted medium shredded (`callrec wipe --all`); None when no
    medium of this recorder is mounted (its files are then unreadable without the master key,
    which the wipe destroys last)."""
    try:
        medium = mounted(store)
    except MediumUnavailable:
        return None
    files = [p for folder in (medium.root / RECORDINGS, medium.root / STAGING) if folder.is_dir()
             for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()]
    _shred_all(files)
    return len(files)
