"""The five example policies over more than a year of simulated calls.

An in-memory store (a dict in recorded order, a byte count, holds, a
filesystem size) runs the planner as the real store does: before each call
with the call's size as reserve, and in sweeps at midnight, at noon and one
second before each month ends.  The calendar runs from January 2027 to April
2028: February in a common and a leap year, two fiscal year ends (31 March),
every 31-day month, calls at 00:00:00 and 23:59:59.9 Tokyo time.
"""
from __future__ import annotations

import random
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from itertools import islice
from pathlib import Path
from typing import Iterator
from zoneinfo import ZoneInfo

import pytest

from policy.loader import load_policy, parse_policy
from policy.retention import describe
from policy.schema import Policy
from storage.retention import (
    SweepPlan,
    Stored,
    Usage,
    day_of,
    deadline,
    limit_bytes,
    minimum_until,
    plan_sweep,
)

POLICIES = Path(__file__).resolve().parents[1] / "policies"
FIRST, LAST = date(2027, 1, 15), date(2028, 4, 30)
BYTES_PER_SECOND = 16000          # stereo 8 kHz G.711
GIB, MIB, TB = 2**30, 2**20, 10**12
ONE_DAY = timedelta(days=1)


@pytest.mark.parametrize(
    ("name", "ja", "en"),
    [
        ("shinagawa", "保存容量(200 GiB)の範囲で保存し、容量に達したときは古い録音から順に消去(上書き)", "the oldest are erased (overwritten)"),
        ("yamagata", "保存容量(200 GiB)の範囲で保存し、容量に達したときは古い録音から順に消去(上書き)", "the oldest are erased (overwritten)"),
        ("kumamoto", "起算して90日を経過した後", "after 90 days have passed"),
        ("matsumoto", "起算して3か月を経過した後", "after 3 calendar months have passed"),
        ("saitama", "録音日の属する月の翌月の末日まで", "until the end of the month after the month of recording"),
    ],
    ids=["shinagawa", "yamagata", "kumamoto", "matsumoto", "saitama"],
)
def test_each_example_policy_states_its_rule(name: str, ja: str, en: str) -> None:
    policy = load_policy(POLICIES / f"{name}.yaml")
    assert ja in describe(policy, "ja")[0] and en in describe(policy, "en")[0]
    text = (POLICIES / f"{name}.yaml").read_text(encoding="utf-8")
    assert "retention:" in text and ("第6条" in text or "第8条" in text or "第4条" in text or "第7条" in text)


def policy_file(name: str, **replace: str) -> Policy:
    """An example policy as shipped, or with some of its lines changed (a
    smaller device, so the ring wraps within the simulated year)."""
    path = POLICIES / f"{name}.yaml"
    if not replace:
        return load_policy(path)
    text = path.read_text(encoding="utf-8")
    for old, new in replace.items():
        assert old in text, f"{path} has no {old!r}"
        text = text.replace(old, new)
    return parse_policy(text, str(path))


def calendar_days(first: date = FIRST, last: date = LAST) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += ONE_DAY


def office_calls(tz: ZoneInfo, seed: int) -> list[Stored]:
    """Three to six calls a working day of 30 s to 15 min, deterministic,
    plus calls on the stroke of midnight and a tenth of a second before it."""
    rng = random.Random(seed)
    out = []
    for day in calendar_days():
        times = [datetime.combine(day, time(9), tz).timestamp() + rng.randrange(9 * 3600)
                 for _ in range(3 + rng.randrange(4))]
        if day.toordinal() % 3 == 0:
            times.append(datetime.combine(day, time(0), tz).timestamp())
        if day.toordinal() % 3 == 1:
            times.append(datetime.combine(day, time(23, 59, 59, 900000), tz).timestamp())
        for at in sorted(times):
            out.append(Stored(f"c{len(out)}", at, BYTES_PER_SECOND * rng.randrange(30, 900)))
    return out


def sweep_times(tz: ZoneInfo) -> list[float]:
    out = []
    for day in calendar_days():
        out.append(datetime.combine(day, time(0), tz).timestamp())
        out.append(datetime.combine(day, time(12), tz).timestamp())
        if (day + ONE_DAY).day == 1:
            out.append(datetime.combine(day, time(23, 59, 59), tz).timestamp())
    return out


@dataclass
class SimStore:
    """The store as the planner sees it, checking every rule at every step."""

    policy: Policy
    filesystem_bytes: int | None = None
    kept: dict[str, Stored] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)
    used: int = 0
    deadlines: dict[str, float | None] = field(default_factory=dict)
    erased: dict[str, tuple[float, str, bool]] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    plans: list[SweepPlan] = field(default_factory=list)
    offered: dict[str, Stored] = field(default_factory=dict)
    recorded_bytes: int = 0
    max_used: int = 0
    min_free: float = float("inf")
    week: deque[tuple[float, int]] = field(default_factory=deque)
    week_bytes: int = 0

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.policy.timezone)

    def unheld(self) -> Iterator[Stored]:
        return (s for s in self.kept.values() if s.id not in self.held)

    def usage(self, now: float, incoming: int) -> Usage:
        while self.week and self.week[0][0] <= now - 7 * 86400:
            self.week_bytes -= self.week.popleft()[1]
        free = None if self.filesystem_bytes is None else self.filesystem_bytes - self.used
        return Usage(used_bytes=self.used, incoming_bytes=incoming, free_bytes=free,
                     daily_intake_bytes=self.week_bytes / 7)

    def sweep(self, now: float, incoming: int = 0) -> SweepPlan:
        rules = self.policy.retention
        usage = self.usage(now, incoming)
        plan = plan_sweep(rules, now, self.tz, self.unheld(), usage)
        assert plan.ids() == [s.id for s in islice(self.unheld(), len(plan.erase))], "oldest unheld first"
        for erasure in plan.erase:
            assert erasure.id not in self.held
            due = self.deadlines[erasure.id]
            if erasure.reason == "retention":
                assert due is not None and due <= now, f"{erasure.id} erased before its deadline"
            held_to = minimum_until(rules.minimum, erasure.recorded_at, self.tz)
            assert erasure.breaches_minimum == (held_to is not None and now < held_to)
            del self.kept[erasure.id]
            self.used -= erasure.size_bytes
            self.erased[erasure.id] = (now, erasure.reason, erasure.breaches_minimum)
        for stored in self.unheld():
            due = self.deadlines[stored.id]
            assert due is None or due > now, f"{stored.id} survived the first sweep after its deadline"
        self.plans.append(plan)
        return plan

    def record(self, call: Stored) -> None:
        self.offered[call.id] = call
        plan = self.sweep(call.recorded_at, call.size_bytes)
        if plan.stop_recording:
            self.dropped.append(call.id)
            return
        limit = limit_bytes(self.policy.retention, self.usage(call.recorded_at, call.size_bytes))
        assert limit is None or self.used + call.size_bytes <= limit, "capacity passed"
        self.kept[call.id] = call
        self.deadlines[call.id] = deadline(self.policy.retention.keep, call.recorded_at, self.tz)
        self.used += call.size_bytes
        self.recorded_bytes += call.size_bytes
        self.max_used = max(self.max_used, self.used)
        if self.filesystem_bytes is not None:
            self.min_free = min(self.min_free, self.filesystem_bytes - self.used)
        self.week.append((call.recorded_at, call.size_bytes))
        self.week_bytes += call.size_bytes

    def run(self, calls: list[Stored], holds: dict[int, int] | None = None) -> None:
        """Play calls and sweeps in time order; holds maps a call's index to
        the number of days after which its hold is released (0: never)."""
        holds = holds or {}
        releases: list[tuple[float, str]] = []
        events = [(t, 0, None) for t in sweep_times(self.tz)] + [(c.recorded_at, 1, i) for i, c in enumerate(calls)]
        for at, kind, index in sorted(events, key=lambda e: (e[0], e[1])):
            while releases and releases[0][0] <= at:
                self.held.discard(releases.pop(0)[1])
            if kind == 0:
                self.sweep(at)
                continue
            call = calls[index]
            self.record(call)
            if index in holds and call.id in self.kept:
                self.held.add(call.id)
                if holds[index]:
                    releases.append((at + holds[index] * 86400, call.id))
                    releases.sort()

    def erased_for(self, reason: str) -> list[str]:
        return [i for i, (_, why, _) in self.erased.items() if why == reason]


HOLDS = {10: 0, 200: 120, 700: 0, 1100: 45, 1600: 0}


def check_first_sweep_after_deadline(store: SimStore) -> None:
    """Each recording is erased by the first sweep at or after its deadline
    (unless held then), and never before."""
    sweeps = sorted({p.now for p in store.plans})
    held = {f"c{i}" for i in HOLDS}
    checked = 0
    for call_id, (when, reason, _) in store.erased.items():
        due = store.deadlines[call_id]
        assert reason == "retention" and due is not None and when >= due
        if call_id not in held:
            assert when == sweeps[bisect_left(sweeps, due)], call_id
            checked += 1
    assert checked > 1000


def check_holds(store: SimStore) -> None:
    """Held recordings outlive every rule; released ones follow it again."""
    for index, release_after in HOLDS.items():
        call_id = f"c{index}"
        if release_after == 0:
            assert call_id in store.kept and call_id not in store.erased
        else:
            assert call_id in store.erased


@pytest.mark.parametrize("name", ["shinagawa", "yamagata"])
def test_capacity_ring_wraps_several_times(name: str) -> None:
    store = SimStore(policy_file(name, **{"capacity: 200 GiB": "capacity: 300 MiB"}),
                     filesystem_bytes=TB)
    assert store.policy.retention.keep is None and store.policy.retention.capacity == 300 * MIB
    store.run(office_calls(store.tz, seed=1), HOLDS)
    assert store.recorded_bytes > 10 * store.policy.retention.capacity
    assert store.max_used <= store.policy.retention.capacity
    assert store.erased_for("retention") == [] and store.dropped == []
    assert len(store.erased_for("capacity")) > 1000
    assert all(p.warnings == () for p in store.plans)
    check_holds(store)


def test_ring_with_only_held_recordings_left_stops_and_says_so() -> None:
    store = SimStore(policy_file("shinagawa", **{"capacity: 200 GiB": "capacity: 100 MiB"}))
    calls = office_calls(store.tz, seed=2)[:200]
    store.run(calls, {i: 0 for i in range(200)})
    assert store.dropped and store.erased == {}
    assert all(p.stop_recording == (p.warning("only_held_left") is not None) for p in store.plans)
    assert store.used <= 100 * MIB


def test_kumamoto_ninety_days() -> None:
    store = SimStore(policy_file("kumamoto"), filesystem_bytes=TB)
    assert store.policy.retention.keep.days == 90 and store.policy.retention.capacity == 200 * GIB
    store.run(office_calls(store.tz, seed=3), HOLDS)
    assert store.erased_for("capacity") == [] and len(store.erased_for("retention")) > 1000
    first = next(iter(store.erased.values()))
    check_holds(store)
    assert day_of(first[0], store.tz) >= FIRST + timedelta(days=91)
    assert all(p.warnings == () for p in store.plans)


def test_kumamoto_ninety_days_within_a_small_device() -> None:
    """第4条2 「保存容量の範囲において」: a device that holds less than 90 days
    loses the oldest early, and says so ahead of time."""
    store = SimStore(policy_file("kumamoto", **{"capacity: 200 GiB": "capacity: 2 GiB"}), filesystem_bytes=TB)
    store.run(office_calls(store.tz, seed=4), HOLDS)
    cut = store.erased_for("capacity")
    assert cut and all(store.erased[i][0] < store.deadlines[i] for i in cut)
    assert store.erased_for("retention")
    first_cut = min(store.erased[i][0] for i in cut)
    warned = [p.now for p in store.plans if p.warning("capacity_near")]
    assert warned and (day_of(first_cut, store.tz) - day_of(min(warned), store.tz)).days >= 30
    check_holds(store)


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "Europe/Berlin"])
def test_matsumoto_three_calendar_months(zone: str) -> None:
    store = SimStore(policy_file("matsumoto", **{"timezone: Asia/Tokyo": f"timezone: {zone}"}), filesystem_bytes=TB)
    store.run(office_calls(store.tz, seed=5), HOLDS)
    assert store.erased_for("capacity") == [] and len(store.erased_for("retention")) > 1000
    check_first_sweep_after_deadline(store)
    for call_id in set(store.erased_for("retention")) - {f"c{i}" for i in HOLDS}:
        recorded_on = day_of(store.offered[call_id].recorded_at, store.tz)
        erased_on = day_of(store.erased[call_id][0], store.tz)
        assert 89 <= (erased_on - recorded_on).days <= 93
    check_holds(store)


def test_saitama_end_of_the_following_month() -> None:
    store = SimStore(policy_file("saitama"), filesystem_bytes=TB)
    store.run(office_calls(store.tz, seed=6), HOLDS)
    assert store.erased_for("capacity") == [] and len(store.erased_for("retention")) > 1000
    check_first_sweep_after_deadline(store)
    held = {f"c{i}" for i in HOLDS}
    for call_id, (when, _, _) in store.erased.items():
        if call_id in held:
            continue
        recorded = datetime.fromtimestamp(store.offered[call_id].recorded_at, store.tz)
        erased = datetime.fromtimestamp(when, store.tz)
        months_later = (erased.year - recorded.year) * 12 + erased.month - recorded.month
        assert (months_later, erased.day, erased.time()) == (2, 1, time(0)), call_id
    check_holds(store)


def test_free_space_floor_bounds_a_store_without_capacity() -> None:
    store = SimStore(policy_file("matsumoto"), filesystem_bytes=GIB + 200 * MIB)
    store.run(office_calls(store.tz, seed=7))
    floor = store.policy.retention.free_space_floor
    assert store.erased_for("capacity") and store.min_free >= floor


HASHIMA = """\
# 羽島市 (松本市 別紙2): 少なくとも3か月. The ring must not cut a recording short of
# three months; the device below holds 134 days at first, 67 after the intake doubles.
organisation: 羽島市 (test)
timezone: Asia/Tokyo
retention:
  keep: until_overwritten
  minimum: {months: 3}
  if_minimum_at_risk: CHOICE
  warn_days_before: 30
  capacity: 1 GiB
"""
DOUBLING = FIRST + timedelta(days=200)


def hashima_calls(tz: ZoneInfo) -> list[Stored]:
    """Four 2 MB calls a day, eight from the 200th day on."""
    out = []
    for day in calendar_days():
        hours = (9, 10, 11, 13, 14, 15, 16, 17) if day >= DOUBLING else (9, 11, 14, 16)
        for hour in hours:
            out.append(Stored(f"c{len(out)}", datetime.combine(day, time(hour), tz).timestamp(), 2_000_000))
    return out


def run_hashima(choice: str) -> tuple[SimStore, date, date, float]:
    store = SimStore(parse_policy(HASHIMA.replace("CHOICE", choice), "hashima.yaml"), filesystem_bytes=TB)
    store.run(hashima_calls(store.tz))
    warned = [p for p in store.plans if p.warning("minimum_period_at_risk")]
    assert warned and all(day_of(p.now, store.tz) >= DOUBLING for p in warned)
    hit = [p for p in store.plans if p.breaches or p.stop_recording]
    assert hit, "the small device must run into the minimum"
    first_hit, first_warning = hit[0], warned[0]
    forecast_at = first_warning.warning("minimum_period_at_risk").at
    return store, day_of(first_warning.now, store.tz), day_of(first_hit.now, store.tz), forecast_at


@pytest.mark.parametrize("choice", ["stop_recording", "overwrite"])
def test_minimum_period_warning_comes_early_enough(choice: str) -> None:
    store, warned_on, hit_on, forecast_at = run_hashima(choice)
    assert (hit_on - warned_on).days >= store.policy.retention.warn_days_before
    assert day_of(forecast_at, store.tz) <= hit_on, "the forecast must not be late"
    assert store.max_used <= store.policy.retention.capacity


def test_minimum_period_stop_recording_never_cuts_it_short() -> None:
    store, _, hit_on, _ = run_hashima("stop_recording")
    assert store.dropped and not any(breach for _, _, breach in store.erased.values())
    rules = store.policy.retention
    for call_id in store.erased_for("capacity"):
        assert store.erased[call_id][0] >= minimum_until(rules.minimum, store.offered[call_id].recorded_at, store.tz)
    first_dropped = day_of(store.offered[store.dropped[0]].recorded_at, store.tz)
    assert first_dropped == hit_on


def test_minimum_period_overwrite_records_every_breach() -> None:
    store, _, hit_on, _ = run_hashima("overwrite")
    breaches = [i for i, (_, _, breach) in store.erased.items() if breach]
    assert breaches and store.dropped == []
    assert day_of(store.erased[breaches[0]][0], store.tz) == hit_on
    assert sum(len(p.breaches) for p in store.plans) == len(breaches)
