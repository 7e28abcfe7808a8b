"""The marks table on a real store: a mark places its category's evidence hold, withdrawing it
undoes the hold unless another mark holds the call, the manager releases it, the sweep lifts it
when its period ends, every change is ledgered, counts and repeated numbers come from the marks
and the calls' own rows, and `verify` names a mark or a hold changed outside callrec."""
from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from storage.index import connect
from storage.marks import MarkBook, MarkError, MarkEvent
from storage.verify import verify_store
from tests.call_frames import T0
from tests.marks_helpers import TOKYO, marks_policy, open_store, record_calls

A, B, C = "0312345678", "09011112222", "+81312345678"


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, TOKYO)


def test_a_mark_holds_its_call_and_withdrawing_it_undoes_the_hold(tmp_path: Path) -> None:
    section = marks_policy().harassment
    with open_store(tmp_path / "data") as store, MarkBook(store, section) as book:
        first, second = record_calls(store, [A, B])
        threat = book.add(first, "threat", marked_by="sato", via="cli", note="「燃やすぞ」", at=_at(T0 + 600))
        demand = book.add(first, "demand", marked_by="ext:201", via="dtmf", at=_at(T0 + 30))
        assert threat.id.startswith("M20251125") and threat.holding and demand.holding
        row = store.index.get(first)
        assert row is not None and row.evidence_until == threat.hold_until
        assert _at(threat.hold_until).isoformat() == "2030-11-26T00:00:00+09:00", "five years from the mark's day"
        assert _at(demand.hold_until).isoformat() == "2026-05-26T00:00:00+09:00", "six months"
        assert store.index.get(second).evidence_until is None  # type: ignore[union-attr]

        with pytest.raises(MarkError, match="reason"):
            book.withdraw(threat.id, by="manager", reason=" ")
        withdrawn = book.withdraw(threat.id, by="manager", reason="誤操作")
        assert not withdrawn.active and withdrawn.withdrawn_by == "manager"
        assert store.index.get(first).evidence_until == demand.hold_until, "the other mark still holds it"  # type: ignore[union-attr]
        with pytest.raises(MarkError, match="already withdrawn"):
            book.withdraw(threat.id, by="manager", reason="again")
        book.withdraw(demand.id, by="manager", reason="誤操作")
        assert store.index.get(first).evidence_until is None, "no active mark: no hold"  # type: ignore[union-attr]
        assert [m.id for m in book.of_call(first)] == [demand.id, threat.id]

        events = [(e.event, e.actor, e.reason) for e in store.ledger.entries()]
        assert events == [(MarkEvent.MARKED, "sato", None), (MarkEvent.MARKED, "ext:201", None),
                          (MarkEvent.WITHDRAWN, "manager", "誤操作"), (MarkEvent.WITHDRAWN, "manager", "誤操作")]
        assert "燃やすぞ" not in store.ledger.path.read_text(), "the note stays in the mark, never in the ledger"
        marked = next(store.ledger.entries()).details
        assert marked["category_label"] == "脅迫・恐喝" and marked["clause"] == "品川区 第5条(2)"
        assert marked["hold_until"] == "2030-11-26T00:00:00+09:00" and marked["call_id"] == first
        assert verify_store(store).findings == []


def test_refusals_change_nothing(tmp_path: Path) -> None:
    with open_store(tmp_path / "data") as store:
        [call] = record_calls(store, [A])
        with MarkBook(store, None) as book, pytest.raises(MarkError, match="no harassment: section"):
            book.add(call, "threat", marked_by="sato", via="cli")
        with MarkBook(store, marks_policy().harassment) as book:
            with pytest.raises(MarkError, match="unknown category 'rude'.*threat"):
                book.add(call, "rude", marked_by="sato", via="cli")
            with pytest.raises(MarkError, match="no call"):
                book.add("nope", "threat", marked_by="sato", via="cli")
            with pytest.raises(MarkError, match="via"):
                book.add(call, "threat", marked_by="sato", via="fax")
            with pytest.raises(MarkError, match="not kept as evidence"):
                book.release_hold(call, by="manager", reason="x")
            assert book.of_call(call) == [] and list(store.ledger.entries()) == []


def test_release_and_expiry_end_the_hold_and_the_sweep_then_applies_the_rule(tmp_path: Path) -> None:
    from policy.retention import Retention
    from storage.sweep import sweep

    section = marks_policy().harassment
    rules = Retention(keep={"days": 30}, free_space_floor=1024 * 1024)
    with open_store(tmp_path / "data") as store, MarkBook(store, section) as book:
        kept, released, plain = record_calls(store, [A, B, C])
        demand = book.add(kept, "demand", marked_by="sato", via="console", at=_at(T0 + 300))
        book.add(released, "threat", marked_by="sato", via="console", note="氏名と住所を名乗った", at=_at(T0 + 300))
        [gone] = book.release_hold(released, by="manager", reason="示談成立")
        assert gone.released_by == "manager" and gone.active and not gone.holding
        assert store.index.get(released).evidence_until is None  # type: ignore[union-attr]

        past_rule = T0 + 40 * 86400
        result = sweep(store, rules, past_rule, "test")
        assert set(result.erased) == {released, plain}, "past its rule; the marked call is kept as evidence"
        assert store.index.get(kept).erased_at is None  # type: ignore[union-attr]
        [gone] = book.of_call(released)
        assert gone.note == "" and gone.category == "threat", "the note went with the recording; the mark stays"

        past_hold = demand.hold_until + 1  # type: ignore[operator]
        result = sweep(store, rules, past_hold, "test")
        assert result.erased == [kept], "its evidence period over, the ordinary rule takes it"
        [mark] = book.of_call(kept)
        assert mark.released_by == "retention" and mark.active, "the mark stays, counted; its hold ended"
        expired = [e for e in store.ledger.entries() if e.event == MarkEvent.HOLD_EXPIRED]
        assert len(expired) == 1 and expired[0].details["call_ids"] == [kept]
        assert verify_store(store).findings == []


def test_counts_by_month_category_and_line(tmp_path: Path) -> None:
    section = marks_policy().harassment
    with open_store(tmp_path / "data") as store, MarkBook(store, section) as book:
        calls = record_calls(store, [A, B, C, A])
        end_of_nov = datetime(2025, 11, 30, 23, 59, tzinfo=TOKYO)
        book.add(calls[0], "threat", marked_by="a", via="cli", at=end_of_nov)
        book.add(calls[0], "demand", marked_by="a", via="cli", at=end_of_nov)
        book.add(calls[1], "threat", marked_by="a", via="cli", at=end_of_nov + timedelta(minutes=2))
        late = book.add(calls[2], "threat", marked_by="a", via="cli", at=end_of_nov + timedelta(days=3))
        book.add(calls[3], "demand", marked_by="a", via="cli", at=end_of_nov + timedelta(days=3))
        book.withdraw(late.id, by="m", reason="誤り")
        counts = [(c.month, c.category, c.marks, c.calls) for c in book.counts(T0 - 86400, T0 + 86400 * 60)]
        assert counts == [("2025-11", "demand", 1, 1), ("2025-11", "threat", 1, 1),
                          ("2025-12", "demand", 1, 1), ("2025-12", "threat", 1, 1)], "months in Tokyo time"
        lines = book.counts(T0 - 86400, T0 + 86400 * 60, by_line=True)
        assert {c.line for c in lines} == {"0263111111"}
        assert len(book.between(T0 - 86400, T0 + 86400 * 60)) == 4
        assert len(book.between(T0 - 86400, T0 + 86400 * 60, withdrawn=True)) == 5


def test_repeat_numbers_come_from_the_calls_rows_in_national_form(tmp_path: Path) -> None:
    section = marks_policy().harassment
    with open_store(tmp_path / "data") as store, MarkBook(store, section) as book:
        calls = record_calls(store, [A, B, C, B])
        for call in calls:
            book.add(call, "threat", marked_by="a", via="cli", at=_at(T0 + 3600))
        book.add(calls[0], "demand", marked_by="a", via="cli", at=_at(T0 + 3600))
        repeats = book.repeat_numbers(2, T0, "81")
        assert [(r.number, r.calls) for r in repeats] == [("0312345678", 2), ("09011112222", 2)]
        assert book.repeat_numbers(2, T0 + 7200, "81") == [], "marks before the period do not count"
        [withdraw] = [m for m in book.of_call(calls[3])]
        book.withdraw(withdraw.id, by="m", reason="誤り")
        assert [r.number for r in book.repeat_numbers(2, T0, "81")] == ["0312345678"]
        db = connect(store.index.path)
        assert "0312345678" not in str(db.execute("SELECT * FROM marks").fetchall()), "no number in the marks table"
        db.close()


def test_verify_names_a_mark_or_hold_changed_outside_callrec(tmp_path: Path) -> None:
    section = marks_policy().harassment
    with open_store(tmp_path / "data") as store:
        first, second, third = record_calls(store, [A, B, C])
        with MarkBook(store, section) as book:
            edited = book.add(first, "threat", marked_by="a", via="cli")
            deleted = book.add(second, "threat", marked_by="a", via="cli")
            book.add(third, "threat", marked_by="a", via="cli")
        db = sqlite3.connect(store.index.path)
        db.execute("UPDATE marks SET category = 'demand' WHERE id = ?", (edited.id,))
        db.execute("DELETE FROM marks WHERE id = ?", (deleted.id,))
        db.execute("UPDATE calls SET evidence_until = NULL WHERE id = ?", (third,))
        db.commit()
        db.close()
        found = {str(f) for f in verify_store(store).findings}
    assert f"mark {edited.id}: differs from its MAC: edited outside callrec" in found
    assert any(f.startswith(f"mark {deleted.id}: ledgered") for f in found)
    assert any(f.startswith(f"recording {third}: evidence hold none but its marks say 20") for f in found)
    assert any(f.startswith(f"recording {second}: evidence hold 20") for f in found)
