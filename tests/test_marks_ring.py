"""The evidence hold against the capacity ring and the ordinary rule: calls recorded until the
ring wraps several times, two of them marked as harassment; the marked ones survive every wrap,
the ring takes the oldest unmarked, and withdrawing a mark gives its call back to the ring.  As
holds fill the store, the planner warns `warn_days_before` ahead, as the minimum-period guard does."""
from __future__ import annotations

from pathlib import Path

from policy.decide import PolicyDecider
from policy.retention import Retention
from recorder.engine import Recorder
from storage.marks import MarkBook
from storage.recordings import RecordingStore
from storage.retention import DAY_SECONDS, Stored, Usage, plan_sweep
from storage.sweep import sweep
from tests.call_frames import T0
from tests.marks_helpers import TOKYO, marks_policy, open_store
from tests.test_capacity_ring import record_call

CAPACITY = 1024 * 1024
CALLS = 40
MIB = 1024 * 1024


def test_marked_calls_outlive_the_ring_and_a_withdrawn_mark_gives_its_call_back(tmp_path: Path) -> None:
    policy = marks_policy()
    rules = Retention(capacity=CAPACITY, free_space_floor=MIB, keep={"days": 1})
    with open_store(tmp_path / "data") as store, MarkBook(store, policy.harassment) as book:
        sink = RecordingStore(store.data_dir, store.index, TOKYO, store.master)
        recorder = Recorder(PolicyDecider(policy), sink)
        order: list[str] = []
        marks = {}
        erased: list[str] = []
        size = 0
        for n in range(CALLS):
            start = T0 + n * 60
            erased += sweep(store, rules, start, "test", incoming_bytes=size).erased
            newest = record_call(recorder, store, n, start)
            order.append(newest.id)
            size = max(size, newest.size_bytes)
            assert store.index.used_bytes() <= CAPACITY
            if n in (3, 4):
                marks[newest.id] = book.add(newest.id, "threat", marked_by="ext:201", via="dtmf")
        kept = {r.id for r in store.index.kept()}
        unmarked = [i for i in order if i not in marks]
        assert set(marks) <= kept, "marked calls survive the ring"
        assert erased == unmarked[:len(erased)] and len(erased) > 4 * CAPACITY // size, "the oldest unmarked go"

        days_later = T0 + 10 * DAY_SECONDS
        result = sweep(store, rules, days_later, "test")
        assert set(marks) <= {r.id for r in store.index.kept()}, "past the ordinary rule (1 day) too"
        assert not set(marks) & set(result.erased)

        first, second = marks
        book.withdraw(marks[first].id, by="kanri", reason="誤操作")
        result = sweep(store, rules, days_later + 1, "test")
        assert result.erased == [first], "withdrawn, its call is back under the rule"
        assert second in {r.id for r in store.index.kept()}


def test_holds_filling_the_store_are_warned_of_ahead() -> None:
    rules = Retention(capacity=100 * MIB, free_space_floor=MIB, warn_days_before=30)
    candidates = [Stored(f"r{n}", T0 - DAY_SECONDS * (n + 1), MIB) for n in range(10)]
    intake = 2 * MIB  # a day's calls
    roomy = plan_sweep(rules, T0, TOKYO, candidates, Usage(used_bytes=40 * MIB, held_bytes=30 * MIB,
                                                             daily_intake_bytes=intake))
    assert roomy.warning("holds_fill_store") is None, "35 days of calls beside the holds: no warning"
    tight = plan_sweep(rules, T0, TOKYO, candidates, Usage(used_bytes=60 * MIB, held_bytes=50 * MIB,
                                                             daily_intake_bytes=intake))
    warning = tight.warning("holds_fill_store")
    assert warning is not None and warning.at == T0 and "25.0 days" in warning.message
    assert tight.erase == () and not tight.stop_recording, "a warning ahead, nothing cut yet"
    full = plan_sweep(rules, T0, TOKYO, [], Usage(used_bytes=100 * MIB, held_bytes=100 * MIB,
                                                  incoming_bytes=MIB, daily_intake_bytes=intake))
    assert full.stop_recording and full.warning("only_held_left") and not full.warning("holds_fill_store")
