"""The site's outbox and the sync's sans-I/O core, without a centre: what is queued with each
change (and nothing while no centre is configured), what a batch carries, a ledger that does
not continue the centre's chain, and when the lag is told to the journal."""
from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from storage import outbox
from storage.central_sync import SyncHealth, SyncRefused, build_batch, central_row, ledger_lines
from storage.index import CallIndex
from storage.ledger import Ledger
from storage.marks import MarkBook
from storage.outbox import OutboxEntry, change_kind
from tests.call_frames import T0
from tests.marks_helpers import TOKYO, marks_policy, open_store, record_calls

ROW = {"sip_call_id": "a@192.0.2.10", "started_at": "2026-12-07T09:00:00.000+09:00", "direction": "inbound"}


@pytest.fixture
def index(tmp_path: Path) -> CallIndex:
    return CallIndex(tmp_path / "index.sqlite")


def queued(index: CallIndex) -> list[tuple[str, str]]:
    return [(e.call_id, e.kind) for e in outbox.read(index._db, 0, 1000)]


def test_nothing_is_queued_while_no_centre_is_configured(index: CallIndex) -> None:
    index.insert(id="a", **ROW)
    index.update("a", state="sealed")
    assert queued(index) == [] and not outbox.enabled(index._db)


def test_joining_a_centre_queues_every_row_once_then_each_change_in_order(index: CallIndex) -> None:
    index.insert(id="old", **ROW)
    _, count = outbox.enable(index._db, 1.0)
    assert count == 1 and outbox.enable(index._db, 2.0)[1] == 0
    index.insert(id="a", **ROW)
    index.update("a", state="sealed", ended_at="2026-12-07T09:01:00.000+09:00")
    index.update("a", held=True, hold_reason="request 12")
    index.update("a", held=False, hold_reason=None)
    index.update("a", notice_id="n1", announced_at="2026-12-07T09:00:01.000+09:00")
    index.seal("a", b"k" * 32)
    index.mark_erased("a", "2027-03-08T00:00:00+09:00", "retention", b"k" * 32)
    assert queued(index) == [("old", "existing"), ("a", "new"), ("a", "sealed"), ("a", "held"), ("a", "released"),
                             ("a", "notice"), ("a", "sealed"), ("a", "erased")]


def test_a_change_rolled_back_is_not_queued_and_a_committed_one_always_is(index: CallIndex) -> None:
    outbox.enable(index._db, 1.0)
    with pytest.raises(RuntimeError), index.transaction():
        index.insert(id="a", **ROW)
        raise RuntimeError("crash before commit")
    assert index.get("a") is None and queued(index) == []
    with index.transaction():
        index.insert(id="b", **ROW)
        index.update("b", state="sealed")
    assert queued(index) == [("b", "new"), ("b", "sealed")]


def test_a_process_that_opened_the_index_before_the_centre_was_joined_queues_too(tmp_path: Path) -> None:
    early = CallIndex(tmp_path / "index.sqlite")
    late = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    outbox.enable(late, 1.0)
    early.insert(id="a", **ROW)
    assert [e.call_id for e in outbox.read(late, 0, 10)] == ["a"]


def test_seq_never_goes_back_after_the_centre_has_taken_everything(index: CallIndex) -> None:
    outbox.enable(index._db, 1.0)
    index.insert(id="a", **ROW)
    outbox.remove_through(index._db, 1)
    index.insert(id="b", **ROW)
    assert [e.seq for e in outbox.read(index._db, 0, 10)] == [2]


def test_detaching_empties_the_queue_and_stops_it(index: CallIndex) -> None:
    outbox.enable(index._db, 1.0)
    index.insert(id="a", **ROW)
    assert outbox.disable(index._db) == 1
    index.insert(id="b", **ROW)
    assert queued(index) == []


@pytest.mark.parametrize(("values", "kind"), [
    ({"erased_at": "x", "erased_reason": "retention", "held": False}, "erased"),
    ({"held": True}, "held"), ({"held": False}, "released"), ({"state": "sealed", "complete": True}, "sealed"),
    ({"stored_on": "m1"}, "archived"), ({"codecs": ["PCMA"]}, "updated"),
])
def test_change_kinds(values: dict, kind: str) -> None:
    assert change_kind(values) == kind


def _row(call_id: str, state: str = "sealed") -> dict:
    values = {name: None for name in (
        "answered_at", "ended_at", "duration", "local_number", "remote_number", "caller", "callee", "audio_format",
        "audio_frames", "sha256", "end_reason", "recorded_at", "hold_reason", "held_since", "erased_at",
        "erased_reason", "notice_id", "announced_at", "extension", "withheld_number", "leg", "started_by",
        "start_requested_at", "stored_on", "archived_at", "seal_mac", "evidence_until")}
    return {**values, **ROW, "id": call_id, "caller_withheld": 0, "codecs": "[]", "streams": "[]", "dtmf": "[]",
            "undecoded": "[]", "late_samples": 0, "complete": 1, "state": state, "size_bytes": 0, "held": 0,
            "leg_call_ids": "[]", "gaps": "[]"}


def test_a_batch_sends_each_row_once_at_its_newest_version() -> None:
    entries = [OutboxEntry(11, "a", "new", 1.0), OutboxEntry(12, "b", "new", 1.0), OutboxEntry(13, "a", "sealed", 2.0),
               OutboxEntry(14, "gone", "new", 2.0)]
    batch = build_batch("east", "i1", 10, entries, {"a": _row("a"), "b": _row("b", "recording")},
                        {"a": 20, "b": 12}, [], backlog=3, oldest_pending=5.0)
    assert [(r["id"], r["version"]) for r in batch.rows] == [("a", 20), ("b", 12)]
    assert batch.last_seq == 14 and len(batch.changes) == 4
    assert batch.rows[0]["codecs"] == [] and batch.rows[0]["complete"] is True
    assert "audio_path" not in batch.rows[0] and "seal_seq" not in batch.rows[0]
    with pytest.raises(ValueError):
        build_batch("east", "i1", 11, entries, {}, {}, [], 0, None)


def _ledger(tmp_path: Path, entries: int) -> list[tuple[bytes, int]]:
    ledger = Ledger(tmp_path / "l.jsonl", tmp_path / "l.head", b"k" * 32)
    for n in range(entries):
        ledger.append("verification", "test", datetime(2026, 12, 7, tzinfo=UTC), result=n)
    return ledger.lines_from(0, 100)


def test_ledger_lines_continue_the_centres_chain_or_are_refused(tmp_path: Path) -> None:
    lines = _ledger(tmp_path, 3)
    first = json.loads(lines[0][0])
    assert [e.entry["seq"] for e in ledger_lines("ledger", lines, None)] == [1, 2, 3]
    assert [e.entry["seq"] for e in ledger_lines("ledger", lines, (1, first["mac"]))] == [2, 3]
    assert ledger_lines("ledger", lines, (3, json.loads(lines[2][0])["mac"])) == []
    with pytest.raises(SyncRefused, match="does not continue the chain"):
        ledger_lines("ledger", lines, (1, "f" * 64))
    with pytest.raises(SyncRefused, match="does not continue the chain"):
        ledger_lines("ledger", lines[1:], None)


def test_lines_are_read_on_from_an_offset_and_a_torn_line_is_not_read(tmp_path: Path) -> None:
    lines = _ledger(tmp_path, 3)
    ledger = Ledger(tmp_path / "l.jsonl", tmp_path / "l.head", b"k" * 32)
    assert ledger.lines_from(lines[0][1], 100) == lines[1:]
    with (tmp_path / "l.jsonl").open("ab") as file:
        file.write(b'{"seq": 4, "torn')
    assert ledger.lines_from(lines[1][1], 100) == lines[2:]


def test_the_lag_is_told_once_when_it_passes_the_threshold_and_once_when_it_clears() -> None:
    health = SyncHealth(warn_after=600)
    health.sent(1000.0, backlog=5, oldest_pending=900.0)
    assert health.warning(1000.0) is None
    assert health.failed(1400.0, "connection refused", 50, 900.0) == 1.0
    assert health.failed(1402.0, "connection refused", 60, 900.0) == 2.0
    assert health.warning(1600.0) == "lagging" and health.warning(1700.0) is None
    assert health.as_dict(1700.0)["lagging"] is True and health.as_dict(1700.0)["backlog"] == 60
    health.sent(1800.0, backlog=0, oldest_pending=None)
    assert health.warning(1800.0) == "caught_up" and health.error is None and health.retry_in == 0.0
    for _ in range(10):
        delay = health.failed(1900.0, "down", 1, 1850.0)
    assert delay == health.retry_max


def test_an_evidence_hold_and_its_withdrawal_are_queued_for_the_centre(tmp_path: Path) -> None:
    """A harassment mark holds its call through `evidence_until` (storage/marks.py), outside
    CallIndex.update: the hold and its end still reach the centre, with the row's new value."""
    with open_store(tmp_path / "data") as store, MarkBook(store, marks_policy().harassment) as book:
        (call_id,) = record_calls(store, ["0355501234"])
        outbox.enable(store.index._db, 1.0)
        after = max(e.seq for e in outbox.read(store.index._db, 0, 100))
        mark = book.add(call_id, "threat", marked_by="sato", via="cli", at=datetime.fromtimestamp(T0 + 600, TOKYO))
        book.withdraw(mark.id, by="manager", reason="誤操作")
        kinds = [(e.call_id, e.kind) for e in outbox.read(store.index._db, after, 100)]
        assert kinds == [(call_id, "evidence_held"), (call_id, "evidence_released")]
        row = store.index._db.execute("SELECT * FROM calls WHERE id = ?", (call_id,)).fetchone()
        assert central_row(row, 9)["evidence_until"] is None
