"""storage/notices.py: the proof of notice in the index file."""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from storage.index import CallIndex
from announcer.outcomes import HandOverResult, NoticeOutcome
from storage.notices import Dialog, Notice, NoticeLog

T0 = 1_790_000_000.0  # 2026-09-21 (JST)


def notice(**changes: object) -> Notice:
    values: dict[str, object] = dict(sip_call_id="c1@pbx", received_at=T0, outcome=NoticeOutcome.ANNOUNCED,
                                     hand_over=HandOverResult.REFER, announced_from=T0 + 0.5, announced_to=T0 + 7.4,
                                     calling_number="09011112222", called_number="0355550100", destination="0355550100",
                                     announcement_sha256="ab" * 32)
    values.update(changes)
    return Notice(**values)  # type: ignore[arg-type]


def trunk_leg(start: float, end: float) -> Dialog:
    """The caller's leg to the DID, as the recorder saw it (another Call-ID than the announcer's)."""
    return Dialog(sip_call_id="trunk@carrier", invite_ts=start, end_ts=end, caller="09011112222", callee="0355550100")


def test_record_get_find(tmp_path: Path) -> None:
    os.umask(0o077)
    log = NoticeLog(tmp_path / "index.sqlite3")
    first = log.record(notice())
    log.record(notice(sip_call_id="c2@pbx", received_at=T0 + 30))
    log.record(notice(sip_call_id="c3@pbx", calling_number="0311112222"))
    row = log.get(first)
    assert row is not None and row.announced_from.endswith("+09:00") and row.announced_from[:10] == "2026-09-21"
    assert row.outcome == "announced" and row.hand_over == "refer"
    assert [m.row.sip_call_id for m in log.find(trunk_leg(T0 + 20, T0 + 32))] == ["c2@pbx"]
    assert [m.row.sip_call_id for m in log.find(trunk_leg(T0 + 1, T0 + 40))] == ["c1@pbx", "c2@pbx"]
    assert log.find(trunk_leg(T0 + 940, T0 + 1060)) == []
    assert log.get("nope") is None
    log.close()
    assert (tmp_path / "index.sqlite3").stat().st_mode & 0o777 == 0o600


def test_excluded_rows_keep_no_number(tmp_path: Path) -> None:
    log = NoticeLog(tmp_path / "index.sqlite3")
    row = log.get(log.record(notice(outcome=NoticeOutcome.EXCLUDED, hand_over=HandOverResult.REFER)))
    assert row is not None
    assert (row.calling_number, row.called_number, row.destination) == (None, None, None)
    raw = (tmp_path / "index.sqlite3").read_bytes() + (tmp_path / "index.sqlite3-wal").read_bytes()
    assert b"0355550100" not in raw and b"09011112222" not in raw


def test_shares_the_index_file_without_touching_calls(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    calls = CallIndex(path)
    calls.insert(id="r1", sip_call_id="x", started_at="2026-01-01T00:00:00+09:00", direction="inbound")
    log = NoticeLog(path)
    log.record(notice())
    assert calls.get("r1") is not None
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT count(*) FROM notices").fetchone()[0] == 1
    db.close()
