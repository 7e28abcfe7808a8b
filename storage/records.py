"""What may be done with a recording once it is sealed: hand it out, hold it.

These are the rules, kept beside the store so every way in (the CLI today,
the access layer and the console next) obeys the same ones: a copy is the
WAV whose SHA-256 was sealed or nothing at all, it is never written over an
existing file, and every hand-out and hold goes into the ledger with who,
when and why.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from wire.wav import write_new_file

from .archive import MediumUnavailable, file_root
from .audiofile import AudioFileError, side_bytes, wav_bytes
from .errors import StorageError
from .index import CallRow
from .ledger import Event, LedgerEntry
from .store import Store
from .vault import VaultError

__all__ = ["HandOut", "RecordUnavailable", "RequestRefused", "SealedFile", "hand_out", "held_rows", "ledger_hold",
           "sealed_files", "sealed_row", "set_hold"]


class RequestRefused(StorageError):
    """The request itself breaks a rule (no reason where one is required, a
    file that would be overwritten); nothing was read or written."""


class RecordUnavailable(StorageError):
    """The recording cannot serve the request as it stands (unknown, erased,
    still recording, no audio, not matching its seal)."""


@dataclass(frozen=True, slots=True)
class SealedFile:
    """One file of a recording as it is handed out: a name suffix, its bytes
    (streamed, each vault record authenticated as it is read) and the SHA-256
    sealed when the call ended, which the bytes must match."""

    suffix: str
    chunks: Iterator[bytes]
    sha256: str


@dataclass(frozen=True, slots=True)
class HandOut:
    """A copy written: the sealed SHA-256 it matched and the files made."""

    sha256: str
    files: tuple[Path, ...]


def sealed_row(store: Store, call_id: str) -> CallRow:
    row = store.index.get(call_id)
    if row is None:
        raise RecordUnavailable(f"no call with id {call_id}")
    if row.erased_at:
        raise RecordUnavailable(f"{call_id} was erased on {row.erased_at} ({row.erased_reason})")
    if not row.sealed:
        raise RecordUnavailable(f"{call_id} is still being recorded")
    return row


def sealed_files(store: Store, row: CallRow) -> list[SealedFile]:
    """The WAV (suffix "") and its side files (".chN.rtp.pcap") of a sealed
    recording, to be written somewhere and checked against their seals
    there.  Raises RecordUnavailable when it has no audio, or when it was
    moved to an archive medium that is not mounted (read from the medium
    otherwise, as from the device)."""
    if not row.audio_path or row.sha256 is None:
        raise RecordUnavailable(f"{row.id} has no audio ({row.end_reason})")
    try:
        root = file_root(store, row)
    except MediumUnavailable as exc:
        raise RecordUnavailable(f"{row.id} cannot be read now: {exc}") from None
    _, wav = wav_bytes(root / row.audio_path, store.master, row.id)
    files = [SealedFile("", wav, row.sha256)]
    files.extend(SealedFile(f".ch{side.channel}.rtp.pcap", side_bytes(root / side.path, store.master, row.id),
                            side.sha256) for side in row.side_files)
    return files


def hand_out(store: Store, call_id: str, output: Path, *, actor: str, reason: str | None,
             reason_required: bool) -> HandOut:
    """Write the recording exactly as sealed (and its side files beside it),
    then ledger the access; on any mismatch or failure nothing is left."""
    if reason_required and not (reason or "").strip():
        raise RequestRefused("this site's policy lets recordings be heard only for a stated reason: "
                             "give --reason TEXT")
    if output.exists():
        raise RequestRefused(f"{output} exists; callrec never overwrites a file")
    row = sealed_row(store, call_id)
    outputs: list[Path] = []
    try:
        for sealed in sealed_files(store, row):
            out = output.with_name(output.name + sealed.suffix)
            digest = write_new_file(out, sealed.chunks)
            outputs.append(out)
            if digest != sealed.sha256:
                what = "the stored audio" if not sealed.suffix else f"side file {out.name}"
                raise RecordUnavailable(f"{call_id}: {what} does not match its sealed SHA-256 "
                                        f"({digest} != {sealed.sha256}); nothing was handed out — "
                                        "run `callrec verify`")
        store.ledger.append(Event.AUDIO_ACCESS, actor, store.now(), reason=reason, call_id=call_id,
                            sha256=row.sha256, files=[str(p.resolve()) for p in outputs])
    except (VaultError, AudioFileError) as exc:
        _remove(outputs)
        raise RecordUnavailable(f"{call_id}: {exc}") from None
    except BaseException:
        _remove(outputs)
        raise
    return HandOut(str(row.sha256), tuple(outputs))


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def set_hold(store: Store, call_id: str, hold: bool, *, actor: str, reason: str,
             approved_by: str | None, role: Mapping[str, str] | None = None) -> LedgerEntry:
    """Legal hold (松本市 第7条5): kept past every rule until released.  `role` is what the
    ledger says of the role the actor acted in, where the site has access rules.  The row
    changes before the ledger does: a crash in between leaves the recording kept (never
    erased on a hold the ledger claims and the row lacks), and a caller that noted its
    intent first can write the missing entry on its next try (`ledger_hold`)."""
    if not reason.strip():
        raise RequestRefused("a hold needs a reason (--reason TEXT)")
    row = sealed_row(store, call_id)
    if row.held == hold:
        raise RecordUnavailable(f"{call_id} is {'already' if hold else 'not'} held")
    now = store.now()
    store.index.update(call_id, held=hold, hold_reason=reason if hold else None,
                       held_since=now.isoformat(timespec="seconds") if hold else None)
    return ledger_hold(store, call_id, hold, actor=actor, reason=reason, approved_by=approved_by, role=role, now=now)


def ledger_hold(store: Store, call_id: str, hold: bool, *, actor: str, reason: str, approved_by: str | None,
                role: Mapping[str, str] | None, now: datetime) -> LedgerEntry:
    """The 管理簿's entry for a hold placed or released (the row already says so)."""
    return store.ledger.append(Event.HOLD_ADDED if hold else Event.HOLD_RELEASED, actor, now,
                               reason=reason, approved_by=approved_by, call_id=call_id, **(role or {}))


def held_rows(store: Store) -> list[CallRow]:
    return [row for row in store.index.rows() if row.held and not row.erased_at]
