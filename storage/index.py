"""The SQLite index of recordings (the embedded default store).

WAL mode and one short transaction per change keep the index consistent if
the process dies at any moment: a row is written when a recording starts
(marked incomplete) and completed when it is sealed, so a crash leaves a row
that says exactly what is known.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id TEXT PRIMARY KEY,
    sip_call_id TEXT NOT NULL,
    started_at TEXT NOT NULL,
    answered_at TEXT,
    ended_at TEXT,
    duration REAL,
    direction TEXT NOT NULL,
    local_number TEXT,
    remote_number TEXT,
    caller TEXT,
    callee TEXT,
    caller_withheld INTEGER NOT NULL DEFAULT 0,
    codecs TEXT NOT NULL DEFAULT '[]',
    audio_path TEXT,
    audio_format TEXT,
    audio_frames INTEGER,
    sha256 TEXT,
    streams TEXT NOT NULL DEFAULT '[]',
    dtmf TEXT NOT NULL DEFAULT '[]',
    undecoded TEXT NOT NULL DEFAULT '[]',
    side_files TEXT NOT NULL DEFAULT '[]',
    late_samples INTEGER NOT NULL DEFAULT 0,
    end_reason TEXT,
    complete INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'recording'
);
CREATE INDEX IF NOT EXISTS calls_started ON calls(started_at);
CREATE INDEX IF NOT EXISTS calls_sip_call_id ON calls(sip_call_id);
"""

JSON_COLUMNS = ("codecs", "streams", "dtmf", "undecoded", "side_files")
BOOL_COLUMNS = ("caller_withheld", "complete")


@dataclass(frozen=True, slots=True)
class CallRow:
    """The index's view of one recording."""

    values: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.values["id"])


class CallIndex:
    """Rows of the calls table; the only writer of the index file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def insert(self, **values: Any) -> None:
        cols = list(values)
        self._db.execute(
            f"INSERT INTO calls ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
            [self._encode(c, values[c]) for c in cols],
        )

    def update(self, call_id: str, **values: Any) -> None:
        cols = list(values)
        self._db.execute(
            f"UPDATE calls SET {', '.join(f'{c} = ?' for c in cols)} WHERE id = ?",
            [self._encode(c, values[c]) for c in cols] + [call_id],
        )

    def get(self, call_id: str) -> CallRow | None:
        row = self._db.execute("SELECT * FROM calls WHERE id = ?", (call_id,)).fetchone()
        return None if row is None else self._decode(row)

    def rows(self) -> Iterator[CallRow]:
        for row in self._db.execute("SELECT * FROM calls ORDER BY started_at, id"):
            yield self._decode(row)

    def unfinished(self) -> list[CallRow]:
        return [self._decode(r) for r in self._db.execute("SELECT * FROM calls WHERE state = 'recording'")]

    @staticmethod
    def _encode(column: str, value: Any) -> Any:
        if column in JSON_COLUMNS:
            return json.dumps(value, ensure_ascii=False, sort_keys=True)
        if column in BOOL_COLUMNS:
            return int(bool(value))
        return value

    @staticmethod
    def _decode(row: sqlite3.Row) -> CallRow:
        values = dict(row)
        for column in JSON_COLUMNS:
            values[column] = json.loads(values[column])
        for column in BOOL_COLUMNS:
            values[column] = bool(values[column])
        return CallRow(values)
