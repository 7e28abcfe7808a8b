"""The sweep: carries out the retention planner's plan on the store.

The planner (storage/retention.py) decides from the policy, the date and
the usage; this adapter lists the candidates from the index, shreds the
files of each recording it must erase, leaves a sealed tombstone row, and
writes one ledger entry per sweep (how many, which period, which rule) plus
one for every recording the ring had to erase inside its minimum period;
the seal ledger names each tombstone by id.

Where the policy has an archive stage, the same sweep then moves what the
device period has ended for to the second medium and erases from it what
its own period has ended for (storage/archive.py); its warnings join the
planner's, so `callrec status` and the journal say when the medium is away.

Sweeps are serialised across processes (the daemon's periodic sweep and
`callrec retention run`) by a lock file, and each erasure is its own short
transaction, so a sweep never holds the index long enough to stall
recording and a crash mid-sweep leaves every row either kept or erased.
"""
from __future__ import annotations

import fcntl
import os
from collections import Counter
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator

import structlog

from policy.retention import Retention, describe

from .archive import StageResult, discard_copies, run_stage
from .index import iso
from .ledger import Event
from .marks import MarkBook
from .retention import DAY_SECONDS, Stored, SweepPlan, Usage, plan_sweep
from .seal_ledger import flush_seals
from .store import Store
from .vault import shred

__all__ = ["SweepResult", "sweep"]

log = structlog.get_logger("callrec.storage")

LOCK_FILE = "sweep.lock"
INTAKE_DAYS = 7
"""Days of recent recording the capacity forecast averages over."""


@dataclass(frozen=True, slots=True)
class SweepResult:
    plan: SweepPlan
    erased: list[str]
    dry_run: bool
    archive: StageResult = field(default_factory=StageResult)


@contextmanager
def _sweep_lock(data_dir: Path) -> Iterator[None]:
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def usage_of(store: Store, now: float, incoming_bytes: int = 0) -> Usage:
    st = os.statvfs(store.data_dir)
    intake = store.index.intake_since(now - INTAKE_DAYS * DAY_SECONDS) / INTAKE_DAYS
    return Usage(used_bytes=store.index.used_bytes(), incoming_bytes=incoming_bytes,
                 free_bytes=st.f_bavail * st.f_frsize, daily_intake_bytes=intake, held_bytes=store.index.held_bytes())


def plan(store: Store, rules: Retention, now: float, incoming_bytes: int = 0) -> SweepPlan:
    usage = usage_of(store, now, incoming_bytes)
    with closing(store.index.oldest_unheld()) as candidates:
        return plan_sweep(rules, now, store.tz, (Stored(*item) for item in candidates), usage)


def erase_recording(store: Store, record_id: str, at: str, reason: str) -> None:
    """Shred every file of one recording (its key first), then clear its row."""
    row = store.index.get(record_id)
    if row is None:
        return
    discard_copies(store, row)
    paths = [store.data_dir / side.path for side in row.side_files]
    if row.audio_path:
        audio = store.data_dir / row.audio_path
        paths.append(audio)
        paths.extend(p for p in audio.parent.glob(f"{record_id}.*") if p not in paths)
    for path in paths:
        if path.is_file() and not path.is_symlink():
            shred(path)
    store.index.mark_erased(record_id, at, reason, store.seal_key)


def sweep(store: Store, rules: Retention, now: float, actor: str, *, dry_run: bool = False,
          incoming_bytes: int = 0) -> SweepResult:
    with _sweep_lock(store.data_dir):
        if not dry_run:
            with MarkBook(store) as marks:  # evidence holds whose period is over end first
                marks.lift_expired(now, actor)
        the_plan = plan(store, rules, now, incoming_bytes)
        erased = []
        if not dry_run and the_plan.erase:
            at = store.now().isoformat(timespec="milliseconds")
            for erasure in the_plan.erase:
                erase_recording(store, erasure.id, at, erasure.reason)
                erased.append(erasure.id)
            flush_seals(store.index, store.seals, actor, store.now())
            _ledger(store, rules, the_plan, now, actor)
            with MarkBook(store) as marks:  # a mark's note goes with its recording
                marks.forget_erased_notes()
            log.info("retention.swept", erased=len(erased), freed_bytes=the_plan.freed_bytes)
        staged = run_stage(store, rules, now, actor, dry_run=dry_run)
        if staged.erased and not dry_run:
            flush_seals(store.index, store.seals, actor, store.now())
        the_plan = replace(the_plan, warnings=the_plan.warnings + staged.warnings)
        for warning in the_plan.warnings:
            log.warning("retention.warning", code=warning.code, message=warning.message)
    return SweepResult(the_plan, erased, dry_run, staged)


def _ledger(store: Store, rules: Retention, the_plan: SweepPlan, now: float, actor: str) -> None:
    period = the_plan.period()
    assert period is not None
    reasons = Counter(e.reason for e in the_plan.erase)
    store.ledger.append(
        Event.ERASURE, actor, store.now(), count=len(the_plan.erase), by_reason=dict(reasons),
        recorded_from=iso(period[0], store.tz, "seconds"), recorded_to=iso(period[1], store.tz, "seconds"),
        rule=describe(rules, "en")[0], as_of=iso(now, store.tz, "seconds"), freed_bytes=the_plan.freed_bytes)
    if the_plan.breaches:
        store.ledger.append(
            Event.MINIMUM_PERIOD_BREACH, actor, store.now(), count=len(the_plan.breaches), ids=the_plan.breaches,
            reason="capacity (if_minimum_at_risk: overwrite)", as_of=iso(now, store.tz, "seconds"))
