"""Which numbers hear the warning (storage/warnings.py), on a real store: numbers come from the
marked calls' own rows in national form, withdrawn and old marks stop counting, withheld callers
never count, and the manager's clear (ledgered, without the number) makes a number hear the
ordinary notice again until it is marked afresh."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from access.forms import EVENT_LABELS
from storage.marks import MarkBook
from storage.warnings import WarningError, WarningEvent, WarningList
from tests.call_frames import T0
from tests.marks_helpers import TOKYO, marks_policy, open_store, record_calls

A, A_INTL, B = "0312345678", "+81312345678", "09011112222"
DAY = 86400.0


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, TOKYO)


def test_twice_marked_within_the_period_is_warned_and_a_clear_undoes_it(tmp_path: Path) -> None:
    policy = marks_policy()
    section = policy.harassment
    assert section is not None and section.warning is not None
    with open_store(tmp_path / "data") as store, MarkBook(store, section) as book:
        first, second, third, other = record_calls(store, [A, A_INTL, A, B])
        book.add(first, "threat", marked_by="sato", via="cli", at=_at(T0 + 100))
        book.add(other, "demand", marked_by="sato", via="cli", at=_at(T0 + 100))
        with WarningList(store.index.path, section.warning, "81") as warnings:
            assert not warnings.warned(A, T0 + 200), "once is not enough (after_marks: 2)"
            two = book.add(first, "demand", marked_by="sato", via="cli", at=_at(T0 + 150))
            assert not warnings.warned(A, T0 + 200), "two marks on one call are one marked call"
            book.add(second, "threat", marked_by="ext:201", via="dtmf", at=_at(T0 + 300))
            assert warnings.warned(A, T0 + 400) and warnings.warned(A_INTL, T0 + 400)
            assert not warnings.warned(B, T0 + 400)
            (listed,) = warnings.numbers(T0 + 400)
            assert (listed.number, listed.calls) == (A, 2)
            assert not warnings.warned(A, T0 + 100 + 91 * DAY), "the first mark fell out of the 90 days"

            book.withdraw(two.id, by="kanri", reason="wrong call")
            assert warnings.warned(A, T0 + 400), "the call still carries its threat mark"

            with pytest.raises(WarningError, match="reason"):
                warnings.clear(store, A, by="kanri", reason=" ")
            with pytest.raises(WarningError, match="does not hear"):
                warnings.clear(store, B, by="kanri", reason="x", now=_at(T0 + 400))
            assert warnings.clear(store, A_INTL, by="kanri", reason="謝罪があった", role={"role": "manager"},
                                  now=_at(T0 + 400)) == 2
            assert not warnings.warned(A, T0 + 400) and warnings.numbers(T0 + 400) == []
            entry = next(e for e in store.ledger.entries() if e.event == WarningEvent.CLEARED)
            assert entry.actor == "kanri" and entry.reason == "謝罪があった"
            assert sorted(entry.details["call_ids"]) == sorted([first, second])
            assert A not in str(entry.details) and "312345678" not in str(entry.details), "never the number"

            book.add(third, "threat", marked_by="sato", via="cli", at=_at(T0 + 500))
            assert not warnings.warned(A, T0 + 600), "one fresh mark after the clear"
            book.add(second, "demand", marked_by="sato", via="cli", at=_at(T0 + 550))
            assert warnings.warned(A, T0 + 600), "two fresh marked calls: warned again"


def test_withheld_callers_never_count(tmp_path: Path) -> None:
    section = marks_policy().harassment
    assert section is not None and section.warning is not None
    with open_store(tmp_path / "data") as store, MarkBook(store, section) as book:
        ids = record_calls(store, [A, A])
        for call_id in ids:
            store.index.update(call_id, caller_withheld=True)
            book.add(call_id, "threat", marked_by="sato", via="cli", at=_at(T0 + 100))
        with WarningList(store.index.path, section.warning, "81") as warnings:
            assert not warnings.warned(A, T0 + 200) and warnings.numbers(T0 + 200) == []


def test_the_clear_has_its_words_in_the_ledger_book() -> None:
    assert set(WarningEvent) <= set(EVENT_LABELS)
