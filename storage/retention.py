"""The retention planner: which recordings a sweep erases, and why.

Sans-I/O: the store passes `now`, its usage and its unheld recordings
(oldest first, lazily) and carries out the plan; nothing here reads a clock
or a file, so `callrec retention run --now` and the tests see exactly what the
daemon would do on that date.

Days are the calendar days of the policy's time zone (民法 counts calendar
days; see policy/retention.py for how periods are counted).  A day starts at
its first instant on that zone's clock; where a clock change skips midnight,
the day starts at the change, and where the clock goes back across midnight,
the repeated hour still belongs to the new day, so days never run backwards
and every rule stays monotonic in the recording time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime, time, tzinfo
from functools import lru_cache
from itertools import chain
from typing import Iterable, Iterator, Literal

from policy.retention import ONE_DAY, Period, Retention

DAY_SECONDS = 86400.0

Reason = Literal["retention", "capacity"]


@lru_cache(maxsize=8192)
def start_of_day(day: date, tz: tzinfo) -> float:
    """The first instant (epoch seconds) whose date on the zone's clock is `day`.

    Cached because a sweep asks for the same few days for every recording.
    """
    midnight = datetime.combine(day, time())
    first = midnight.replace(tzinfo=tz, fold=0).timestamp()
    second = midnight.replace(tzinfo=tz, fold=1).timestamp()
    low, high = min(first, second), max(first, second)
    if datetime.fromtimestamp(low, tz).date() >= day:
        return low
    # Midnight is skipped by a clock change: the day starts at the change,
    # which zones put on a whole second.
    lo, hi = math.floor(low), math.ceil(high)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).date() >= day:
            hi = mid
        else:
            lo = mid
    return float(hi)


def day_of(instant: float, tz: tzinfo) -> date:
    """The calendar day an instant belongs to (never decreasing with time)."""
    local = datetime.fromtimestamp(instant, tz)
    day = local.date()
    if local.fold and start_of_day(day + ONE_DAY, tz) <= instant:
        return day + ONE_DAY
    return day


def deadline(keep: Period | None, recorded_at: float, tz: tzinfo) -> float | None:
    """The instant from which a recording is due for erasure; None when only
    capacity ends it (the ring)."""
    if keep is None:
        return None
    return start_of_day(keep.last_day(day_of(recorded_at, tz)) + ONE_DAY, tz)


def minimum_until(minimum: Period | None, recorded_at: float, tz: tzinfo) -> float | None:
    """The instant before which capacity must not erase a recording."""
    return deadline(minimum, recorded_at, tz)


def expiry_cutoff(keep: Period | None, now: float, tz: tzinfo) -> float | None:
    """C such that a recording is expired at `now` exactly when recorded_at < C.

    It exists because a later recording never has an earlier deadline; it lets
    the store find the expired rows of a million with one indexed query.
    """
    if keep is None:
        return None
    return start_of_day(keep.last_recorded_on(day_of(now, tz) - ONE_DAY) + ONE_DAY, tz)


def final_cutoff(rules: Retention, now: float, tz: tzinfo) -> float | None:
    """C such that a recording is past every stage at `now` exactly when recorded_at < C: its
    device period, and the archive's period after it where the policy has an archive stage.
    Wherever such a recording still is (the device, when the archive medium was away), it goes.

    Both stages' last days never decrease with the recording day, so their composition has the
    inverse of the two inverses, taken in the opposite order."""
    if rules.archive is None:
        return expiry_cutoff(rules.keep, now, tz)
    assert rules.keep is not None, "the policy refuses an archive stage after until_overwritten"
    archived_on = rules.archive.keep.last_recorded_on(day_of(now, tz) - ONE_DAY)
    return start_of_day(rules.keep.last_recorded_on(archived_on) + ONE_DAY, tz)


def final_deadline(rules: Retention, recorded_at: float, tz: tzinfo) -> float | None:
    """The instant from which a recording is past every stage (None: only capacity ends it)."""
    if rules.archive is None or rules.keep is None:
        return deadline(rules.keep, recorded_at, tz)
    return start_of_day(rules.archive.last_day(rules.keep.last_day(day_of(recorded_at, tz))) + ONE_DAY, tz)


def move_cutoff(rules: Retention, now: float, tz: tzinfo) -> float | None:
    """C such that a recording on the device is due to move to the archive when recorded_at < C
    (None: the policy has no archive stage)."""
    return expiry_cutoff(rules.keep, now, tz) if rules.archive is not None else None


@dataclass(frozen=True)
class Stored:
    """A sealed, unheld recording as the store lists it."""

    id: str
    recorded_at: float
    size_bytes: int


@dataclass(frozen=True)
class Usage:
    """What the store knows about its space at the time of the sweep.

    `used_bytes` counts what the store holds; `incoming_bytes` is room kept
    for calls in progress; `free_bytes` is the filesystem's free space (None
    when not measured); `daily_intake_bytes` is the recent average per day,
    for the forecast.
    """

    used_bytes: int
    incoming_bytes: int = 0
    free_bytes: int | None = None
    daily_intake_bytes: float = 0.0
    held_bytes: int = 0
    """Of `used_bytes`, what no rule and no ring takes: legal holds and harassment evidence
    (storage/marks.py)."""


@dataclass(frozen=True)
class Erasure:
    id: str
    recorded_at: float
    size_bytes: int
    reason: Reason
    breaches_minimum: bool = False


@dataclass(frozen=True)
class SweepWarning:
    """Something an operator must hear about; `code` is stable for logs and
    `callrec status`, `at` is when it happens (now, or the forecast date)."""

    code: Literal["minimum_period_at_risk", "only_held_left", "capacity_near", "floor_unreachable",
                  "archive_unavailable", "archive_full", "archive_erasure_overdue", "archive_move_refused",
                  "holds_fill_store"]
    at: float
    message: str


@dataclass(frozen=True)
class Forecast:
    """When the ring, at the recent intake, would first erase a recording
    before its minimum period or before its retention deadline (None: not
    within the horizon looked at)."""

    minimum_cut_at: float | None
    deadline_cut_at: float | None


@dataclass(frozen=True)
class SweepPlan:
    now: float
    cutoff: float | None
    limit_bytes: int | None
    used_after_bytes: int
    erase: tuple[Erasure, ...]
    stop_recording: bool
    warnings: tuple[SweepWarning, ...]

    def ids(self, reason: Reason | None = None) -> list[str]:
        """Ids to erase, oldest first, optionally for one reason only."""
        return [e.id for e in self.erase if reason is None or e.reason == reason]

    @property
    def breaches(self) -> list[str]:
        """Ids the ring erases before their minimum period (for the ledger)."""
        return [e.id for e in self.erase if e.breaches_minimum]

    @property
    def freed_bytes(self) -> int:
        return sum(e.size_bytes for e in self.erase)

    def period(self, reason: Reason | None = None) -> tuple[float, float] | None:
        """Earliest and latest recorded_at erased, for the sweep's ledger entry."""
        times = [e.recorded_at for e in self.erase if reason is None or e.reason == reason]
        return (min(times), max(times)) if times else None

    def warning(self, code: str) -> SweepWarning | None:
        return next((w for w in self.warnings if w.code == code), None)


def floor_reachable(rules: Retention, usage: Usage) -> bool:
    """Whether erasing recordings can bring the free space up to the floor
    at all.  On a filesystem smaller than the floor it cannot, and obeying
    the floor would erase every recording at every sweep: evidence lost to
    a setting that does not fit the disk."""
    return usage.free_bytes is None or usage.used_bytes + usage.free_bytes > rules.free_space_floor


def limit_bytes(rules: Retention, usage: Usage) -> int | None:
    """The most the store may hold: the device capacity, and no more than
    leaves the free-space floor on the filesystem (when the disk can)."""
    limits = []
    if rules.capacity is not None:
        limits.append(rules.capacity)
    if usage.free_bytes is not None and floor_reachable(rules, usage):
        limits.append(usage.used_bytes + usage.free_bytes - rules.free_space_floor)
    return min(limits) if limits else None


class _Oldest:
    """The store's candidates with one item of look-ahead, checked for order:
    a store that lists them out of order would make the ring erase the wrong
    recordings, which must fail loudly rather than quietly."""

    def __init__(self, items: Iterable[Stored]) -> None:
        self._items: Iterator[Stored] = iter(items)
        self._head: Stored | None = None
        self._last = -math.inf

    def peek(self) -> Stored | None:
        if self._head is None:
            item = next(self._items, None)
            if item is not None:
                if item.recorded_at < self._last:
                    raise ValueError(f"recordings are not listed oldest first (at {item.id})")
                self._last = item.recorded_at
            self._head = item
        return self._head

    def take(self) -> None:
        self._head = None

    def rest(self) -> Iterator[Stored]:
        while (item := self.peek()) is not None:
            self.take()
            yield item


def plan_sweep(rules: Retention, now: float, tz: tzinfo, oldest_unheld: Iterable[Stored], usage: Usage) -> SweepPlan:
    """Plan one sweep.

    `oldest_unheld` lists the sealed recordings that are not on hold, oldest
    first; it is read only as far as needed (the expired ones, those the ring
    must take, and those the forecast looks at), so the store can stream it
    from an index.  Expired recordings go first ("retention": past every stage,
    the archive's too where the policy has one); then, while
    the store plus the reserve for calls in progress is over its limit, the
    oldest go ("capacity").  A recording still inside its minimum period is
    only taken when the policy says `overwrite`, and is then marked as a
    breach; with `stop_recording` the plan stops recording instead.
    """
    cutoff = final_cutoff(rules, now, tz)
    oldest = _Oldest(oldest_unheld)
    erase: list[Erasure] = []
    warnings: dict[str, SweepWarning] = {}
    used = usage.used_bytes
    while cutoff is not None and (item := oldest.peek()) is not None and item.recorded_at < cutoff:
        oldest.take()
        erase.append(Erasure(item.id, item.recorded_at, item.size_bytes, "retention"))
        used -= item.size_bytes

    limit = limit_bytes(rules, usage)
    stop = False
    if not floor_reachable(rules, usage):
        warnings["floor_unreachable"] = SweepWarning(
            "floor_unreachable", now,
            f"the filesystem holds {usage.used_bytes} bytes of recordings and has {usage.free_bytes} bytes free: "
            f"erasing every recording would not bring the free space up to free_space_floor "
            f"({rules.free_space_floor} bytes), so recordings are kept: something else fills the disk, or the "
            "disk is smaller than the floor")
    if limit is not None:
        while used + usage.incoming_bytes > limit:
            item = oldest.peek()
            if item is None:
                stop = True
                warnings["only_held_left"] = SweepWarning(
                    "only_held_left", now,
                    f"the store is over its limit of {limit} bytes and only recordings on hold are left; "
                    "new calls are not recorded until a hold is released or space is freed")
                break
            protected = _protected(rules, item, now, tz)
            if protected and rules.if_minimum_at_risk == "stop_recording":
                stop = True
                warnings["minimum_period_at_risk"] = SweepWarning(
                    "minimum_period_at_risk", now,
                    f"capacity would erase {item.id} (recorded {_when(item.recorded_at, tz)}) inside its minimum "
                    "period; new calls are not recorded (if_minimum_at_risk: stop_recording)")
                break
            oldest.take()
            erase.append(Erasure(item.id, item.recorded_at, item.size_bytes, "capacity", protected))
            used -= item.size_bytes
            if protected and "minimum_period_at_risk" not in warnings:
                warnings["minimum_period_at_risk"] = SweepWarning(
                    "minimum_period_at_risk", now,
                    f"capacity erases {item.id} (recorded {_when(item.recorded_at, tz)}) inside its minimum period "
                    "(if_minimum_at_risk: overwrite); the breach goes into the ledger")
            if not protected and rules.keep is not None and "capacity_near" not in warnings:
                warnings["capacity_near"] = SweepWarning(
                    "capacity_near", now,
                    f"capacity erases {item.id} (recorded {_when(item.recorded_at, tz)}) before the end of its "
                    "retention period")

        if usage.daily_intake_bytes > 0 and (rules.minimum is not None or rules.keep is not None):
            seen = forecast(rules, now, tz, oldest.rest(), used + usage.incoming_bytes, limit,
                            usage.daily_intake_bytes)
            if seen.minimum_cut_at is not None and "minimum_period_at_risk" not in warnings:
                warnings["minimum_period_at_risk"] = SweepWarning(
                    "minimum_period_at_risk", seen.minimum_cut_at,
                    f"at the recent intake the capacity ring will cut into the minimum period from "
                    f"{_when(seen.minimum_cut_at, tz)}; add capacity or lower the intake "
                    f"(if_minimum_at_risk: {rules.if_minimum_at_risk})")
            if seen.deadline_cut_at is not None and "capacity_near" not in warnings:
                warnings["capacity_near"] = SweepWarning(
                    "capacity_near", seen.deadline_cut_at,
                    f"at the recent intake capacity will erase recordings before the end of their retention "
                    f"period from {_when(seen.deadline_cut_at, tz)}")

    if limit is not None and "only_held_left" not in warnings:
        early = _holds_fill(rules, now, usage, limit)
        if early is not None:
            warnings["holds_fill_store"] = early
    return SweepPlan(now=now, cutoff=cutoff, limit_bytes=limit, used_after_bytes=used, erase=tuple(erase),
                     stop_recording=stop, warnings=tuple(warnings.values()))


def forecast(rules: Retention, now: float, tz: tzinfo, oldest_unheld: Iterable[Stored], used_bytes: int,
             limit: int, daily_intake_bytes: float) -> Forecast:
    """When the ring would first cut a recording short, at the recent intake.

    The store fills at `daily_intake_bytes` a day and the ring takes the
    oldest unheld recording each time it would pass `limit`.  A day's calls
    can all come in one morning, so the forecast assumes each day's intake
    arrives at once and is a day early rather than late.  Only cuts within
    `warn_days_before` calendar days are looked for, so the store's list is
    read no further than the recordings the ring would take by then.  When the
    list runs out, the next to go are the calls recorded from now on.
    """
    today = day_of(now, tz)
    horizon = rules.warn_days_before
    want_minimum, want_deadline = rules.minimum is not None, rules.keep is not None
    minimum_cut: float | None = None
    deadline_cut: float | None = None
    freed = 0

    def due(recorded_at: float, cut: float) -> tuple[bool, bool]:
        ends = deadline(rules.keep, recorded_at, tz)
        if ends is not None and ends <= cut:
            return False, False
        held_to = minimum_until(rules.minimum, recorded_at, tz)
        return held_to is not None and cut < held_to, ends is not None

    for item in chain(oldest_unheld, [None]):
        days = max(0.0, (limit - used_bytes + freed) / daily_intake_bytes - 1.0)
        # The first test keeps far-off dates (years ahead on a large disk) out of the calendar.
        if days > horizon + 2 or (day_of(cut := now + days * DAY_SECONDS, tz) - today).days > horizon:
            break
        recorded_at = item.recorded_at if item is not None else now
        into_minimum, before_deadline = due(recorded_at, cut)
        if into_minimum and minimum_cut is None:
            minimum_cut = cut
        if before_deadline and deadline_cut is None:
            deadline_cut = cut
        if item is None or ((minimum_cut is not None or not want_minimum)
                            and (deadline_cut is not None or not want_deadline)):
            break
        freed += item.size_bytes
    return Forecast(minimum_cut, deadline_cut)


def _holds_fill(rules: Retention, now: float, usage: Usage, limit: int) -> SweepWarning | None:
    """The ring passes over held recordings (legal holds, harassment evidence), so as they grow
    it keeps ever fewer days of the other calls, and once they fill the store nothing new is
    recorded (`only_held_left`).  Warned `warn_days_before` ahead, as the minimum-period guard
    is: when what is left beside the holds holds fewer days of calls at the recent intake."""
    if usage.held_bytes <= 0 or usage.daily_intake_bytes <= 0:
        return None
    days = (limit - usage.held_bytes - usage.incoming_bytes) / usage.daily_intake_bytes
    if days >= rules.warn_days_before:
        return None
    return SweepWarning(
        "holds_fill_store", now,
        f"recordings on hold or kept as evidence take {usage.held_bytes} of the store's {limit} bytes: the ring "
        f"keeps only {max(days, 0.0):.1f} days of other calls at the recent intake, and records nothing once the "
        "holds fill it; release holds that are no longer needed or add capacity")


def _protected(rules: Retention, item: Stored, now: float, tz: tzinfo) -> bool:
    held_to = minimum_until(rules.minimum, item.recorded_at, tz)
    return held_to is not None and now < held_to


def _when(instant: float, tz: tzinfo) -> str:
    return datetime.fromtimestamp(instant, tz).isoformat(timespec="seconds")
