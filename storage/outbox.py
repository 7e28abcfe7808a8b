"""The site's outbox: every change of a call row, queued in the index file in the same
transaction as the change itself, for the sync to the centre (storage/central_sync.py).

Why in the index and in the same transaction: a change that committed is then always queued,
and a queued change always committed, whatever crashes when; the centre being away for a day
only makes the queue longer.  An entry names the row and what happened to it, never the row's
values: the sync reads the row as it stands when it sends, so a row erased while the centre
was away reaches it erased, and nothing personal waits in the queue.

The queue is off by default (the one-box appliance has no centre and must not grow a table
nobody empties).  `enable` turns it on and queues every existing row once, so a site that joins
a centre sends its whole history; `disable` empties it.  `seq` never goes back (SQLite's
AUTOINCREMENT), so the centre's cursor (the highest seq it applied) stays valid forever; the
folder's `instance` tells the centre which data folder a site name belongs to.
"""
from __future__ import annotations

import sqlite3
import time
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = ["INSTANCE_SETTING", "OutboxEntry", "change_kind", "disable", "enable", "enabled", "ensure_table",
           "queue_sql", "read", "remove_through", "requeue", "stats"]

INSTANCE_SETTING = "outbox_instance"
ENABLED_SETTING = "outbox"

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    queued_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_call ON outbox(call_id, seq);
"""

QUEUE = ("INSERT INTO outbox (call_id, kind, queued_at) SELECT ?, ?, ? "
         "WHERE EXISTS (SELECT 1 FROM settings WHERE name = 'outbox' AND value = 'on')")
"""One statement that queues only when the outbox is on, read in the same transaction as the
change: a process that opened the index before `enable` still queues after it."""


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    seq: int
    call_id: str
    kind: str
    queued_at: float


def ensure_table(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)


def change_kind(values: dict[str, Any]) -> str:
    """What an update of these columns is, for the centre's list of changes (first match wins:
    an erasure also clears the hold reason, a seal also sets the state)."""
    if values.get("erased_at"):
        return "erased"
    if "held" in values:
        return "held" if values["held"] else "released"
    if values.get("state") == "sealed":
        return "sealed"
    if "notice_id" in values or "announced_at" in values:
        return "notice"
    if "stored_on" in values or "archived_at" in values:
        return "archived"
    return "updated"


def queue_sql(call_id: str, kind: str) -> tuple[str, tuple[str, str, float]]:
    """The statement and parameters that queue one change (storage/index.py runs it)."""
    return QUEUE, (call_id, kind, time.time())


def enabled(db: sqlite3.Connection) -> bool:
    row = db.execute("SELECT value FROM settings WHERE name = ?", (ENABLED_SETTING,)).fetchone()
    return row is not None and row[0] == "on"


def enable(db: sqlite3.Connection, now: float) -> tuple[str, int]:
    """Turn the queue on (if it is off, every row is queued once as `existing`); returns the
    folder's instance id and how many rows were queued now."""
    ensure_table(db)
    db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute("SELECT value FROM settings WHERE name = ?", (INSTANCE_SETTING,)).fetchone()
        instance = row[0] if row is not None else uuid.uuid4().hex
        queued = 0
        if not enabled(db):
            queued = db.execute("INSERT INTO outbox (call_id, kind, queued_at) SELECT id, 'existing', ? "
                                "FROM calls ORDER BY recorded_at, id", (now,)).rowcount
            db.execute("INSERT INTO settings (name, value) VALUES (?, 'on') "
                       "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (ENABLED_SETTING,))
        db.execute("INSERT INTO settings (name, value) VALUES (?, ?) ON CONFLICT(name) DO NOTHING",
                   (INSTANCE_SETTING, instance))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return instance, queued


def requeue(db: sqlite3.Connection, now: float) -> int:
    """Queue every row once more (kind `existing`): for a centre that has less than this site
    sent it (restored from an older backup, or a new one under the same name)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        queued = db.execute("INSERT INTO outbox (call_id, kind, queued_at) SELECT id, 'existing', ? "
                            "FROM calls ORDER BY recorded_at, id", (now,)).rowcount
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return queued


def disable(db: sqlite3.Connection) -> int:
    """Turn the queue off and empty it (nothing will send it); returns how many entries went."""
    ensure_table(db)
    db.execute("BEGIN IMMEDIATE")
    try:
        dropped = db.execute("DELETE FROM outbox").rowcount
        db.execute("DELETE FROM settings WHERE name = ?", (ENABLED_SETTING,))
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return dropped


def read(db: sqlite3.Connection, after: int, limit: int) -> list[OutboxEntry]:
    """The next entries after seq `after`, in order."""
    return [OutboxEntry(int(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in db.execute(
        "SELECT seq, call_id, kind, queued_at FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after, limit))]


def remove_through(db: sqlite3.Connection, seq: int) -> int:
    """Forget the entries the centre has applied (seq <= `seq`)."""
    return db.execute("DELETE FROM outbox WHERE seq <= ?", (seq,)).rowcount


def stats(db: sqlite3.Connection) -> tuple[int, float | None]:
    """(entries waiting, when the oldest was queued)."""
    row = db.execute("SELECT COUNT(*), MIN(queued_at) FROM outbox").fetchone()
    return int(row[0]), (None if row[1] is None else float(row[1]))
