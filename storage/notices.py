"""Proof of notice: one row per call the announcer handled, in the index file.

Shinagawa 第5条 asks that whether (and when) a caller was told of the recording can be shown
later; the recorder links its recording to the row of the same call (find()). The row is written
once the call has left the announcer, in one short transaction, in WAL mode like the calls table.
Rows of excluded lines keep no number at all (matsumoto §3(2)): the caller must not be traceable
through the notice log either.
"""
from __future__ import annotations

import sqlite3
import uuid
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from .index import connect, iso

__all__ = ["EXCLUDED", "Notice", "NoticeLog", "NoticeRow"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS notices (
    id TEXT PRIMARY KEY,
    sip_call_id TEXT NOT NULL,
    received_at TEXT NOT NULL,
    received_epoch REAL NOT NULL,
    announced_from TEXT,
    announced_to TEXT,
    calling_number TEXT,
    called_number TEXT,
    announcement_sha256 TEXT,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    hand_over TEXT NOT NULL,
    destination TEXT
);
CREATE INDEX IF NOT EXISTS notices_received ON notices(received_epoch);
"""


EXCLUDED = "excluded"
"""The outcome of a call to an excluded line: its row keeps no number."""


@dataclass(frozen=True, slots=True)
class Notice:
    """One handled call; times are Unix epoch seconds.  The outcome and the
    hand-over are the announcer's words for them (announcer.outcomes)."""

    sip_call_id: str
    received_at: float
    outcome: str
    hand_over: str
    announced_from: float | None = None
    announced_to: float | None = None
    calling_number: str | None = None
    called_number: str | None = None
    destination: str | None = None
    announcement_sha256: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class NoticeRow:
    """One stored notice; times are ISO 8601 with the site's offset (received_epoch is the
    epoch the matcher searches by)."""

    id: str
    sip_call_id: str
    received_at: str
    received_epoch: float
    announced_from: str | None
    announced_to: str | None
    calling_number: str | None
    called_number: str | None
    announcement_sha256: str | None
    outcome: str
    reason: str
    hand_over: str
    destination: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_NOTICE_FIELDS = tuple(f.name for f in fields(NoticeRow))


class NoticeLog:
    """The notices table of the index file at path."""

    def __init__(self, path: Path, timezone: str = "Asia/Tokyo") -> None:
        self.path = path
        self._zone = ZoneInfo(timezone)
        self._db = connect(path)
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def record(self, notice: Notice) -> str:
        """Store notice; returns its id. Numbers of an excluded line are dropped here as well,
        whatever the caller passed."""
        excluded = notice.outcome == EXCLUDED
        row_id = uuid.uuid4().hex
        self._db.execute(
            "INSERT INTO notices (id, sip_call_id, received_at, received_epoch, announced_from, announced_to,"
            " calling_number, called_number, announcement_sha256, outcome, reason, hand_over, destination)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row_id, notice.sip_call_id, iso(notice.received_at, self._zone), notice.received_at,
             iso(notice.announced_from, self._zone), iso(notice.announced_to, self._zone),
             None if excluded else notice.calling_number, None if excluded else notice.called_number,
             notice.announcement_sha256, str(notice.outcome), notice.reason, str(notice.hand_over),
             None if excluded else notice.destination))
        return row_id

    def get(self, notice_id: str) -> NoticeRow | None:
        row = self._db.execute("SELECT * FROM notices WHERE id = ?", (notice_id,)).fetchone()
        return None if row is None else _row(row)

    def find(self, calling: str | None, called: str | None, start: float, end: float) -> list[NoticeRow]:
        """Rows of the call between calling and called received between start and end (epoch), in
        the order received: how the recorder finds the notice of the call it recorded, whose leg to
        the announcer has another Call-ID than the leg it saw."""
        rows = self._db.execute(
            "SELECT * FROM notices WHERE received_epoch BETWEEN ? AND ?"
            " AND calling_number IS ? AND called_number IS ? ORDER BY received_epoch",
            (start, end, calling, called)).fetchall()
        return [_row(row) for row in rows]


def _row(row: sqlite3.Row) -> NoticeRow:
    return NoticeRow(**{name: row[name] for name in _NOTICE_FIELDS})
