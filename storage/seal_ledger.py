"""The seal ledger: every row sealed and every erasure, by id and seal, in a
keyed chain of its own (`seals.jsonl`, `seals.head`, the same format and
checks as the 通話記録管理簿 in ledger.py, under a key of its own).

With it `verify` names a row that is gone (deleted with its files, or its
tombstone deleted), a row sealed again after being set back to `recording`,
and a row put back over its tombstone.  It is kept apart from the 管理簿,
which records what people did and stays readable as a book: this one grows
by a line per second of calls.

Rows are sealed in the index first and named here in batches (about once a
second, by whoever sealed them: the recorder, the sweep, recovery); a row
sealed but not yet named has `seal_seq` NULL, so a crash in between leaves
a list of rows the next start names, not a gap.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path

from .index import CallIndex
from .keys import MasterKey
from .ledger import Ledger
from .sealing import SEAL_LABEL

__all__ = ["SealEvent", "SealRecord", "flush_seals", "read_seals", "seal_key", "seal_ledger", "seal_unsealed"]

SEALS_LABEL = "callrec seal ledger v1"
SEALS_FILE = "seals.jsonl"
SEALS_HEAD = "seals.head"
BATCH = 1000
"""Rows named per entry: a sweep erasing thousands writes lines of a bounded length."""


class SealEvent(StrEnum):
    """What a seal ledger entry says about the rows it names ({id: seal})."""

    SEALED = "sealed"
    ERASED = "erased"
    ADOPTED = "adopted"  # finished before rows were sealed (an older version); sealed at the upgrade as they read


@dataclass(frozen=True, slots=True)
class SealRecord:
    """What the seal ledger last says about one row."""

    event: str
    seal: str
    seq: int
    at: str
    resealed_from: int | None = None
    """The seq of an earlier, different seal of the same row: set back to
    `recording` and sealed again (crash recovery does not reseal a sealed row)."""


def seal_key(master: MasterKey) -> bytes:
    return master.derive(SEAL_LABEL)


def seal_ledger(data_dir: Path, master: MasterKey, anchor_dir: Path | None) -> Ledger:
    return Ledger(data_dir / SEALS_FILE, data_dir / SEALS_HEAD, master.derive(SEALS_LABEL),
                  anchor_dir / SEALS_HEAD if anchor_dir is not None else None)


def flush_seals(index: CallIndex, ledger: Ledger, actor: str, now: datetime) -> int:
    """Name every row sealed since the last flush; returns how many.  Under
    the ledger's lock, so two processes never name a row twice."""
    named = 0
    previous: set[str] = set()
    with ledger.batch() as append:
        while rows := index.unledgered(BATCH):
            ids = {call_id for call_id, _, _ in rows}
            if ids <= previous:
                break  # each was sealed again while being named; the next flush names them
            previous = ids
            for event, erased in ((SealEvent.SEALED, False), (SealEvent.ERASED, True)):
                group = {call_id: seal for call_id, seal, was_erased in rows if was_erased is erased}
                if group:
                    entry = append(event, actor, now, rows=group)
                    index.mark_ledgered(group, entry.seq)
                    named += len(group)
    return named


def seal_unsealed(index: CallIndex, ledger: Ledger, key: bytes, actor: str, now: datetime) -> int:
    """At the first start after an upgrade: rows finished before rows were
    sealed are sealed as they now read and named as `adopted`, so from here
    on their loss or any edit is caught (what happened to them before
    cannot be told)."""
    ids = index.unsealed_finished()
    with ledger.batch() as append:
        for start in range(0, len(ids), BATCH):
            group = {call_id: seal for call_id in ids[start:start + BATCH]
                     if (seal := index.seal(call_id, key)) is not None}
            if group:
                entry = append(SealEvent.ADOPTED, actor, now, rows=group)
                index.mark_ledgered(group, entry.seq)
    return len(ids)


def read_seals(ledger: Ledger) -> Iterator[tuple[str, SealRecord]]:
    """(id, what the ledger says) per entry and row, in ledger order; a row
    named again later is yielded again (the later one counts)."""
    for entry in ledger.entries():
        rows = entry.details.get("rows")
        if not isinstance(rows, dict):
            continue
        at = entry.at.isoformat(timespec="seconds")
        for call_id, seal in rows.items():
            yield call_id, SealRecord(entry.event, str(seal), entry.seq, at)
