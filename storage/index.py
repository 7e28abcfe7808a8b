"""The SQLite index of recordings (the embedded default store).

WAL mode and one short transaction per change keep the index consistent if
the process dies at any moment: a row is written when a recording starts
(marked incomplete) and completed when it is sealed, so a crash leaves a row
that says exactly what is known.
"""
from __future__ import annotations

import json
import sqlite3
import tempfile
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import quote

import structlog

from .outbox import change_kind, ensure_table, queue_sql
from .sealing import row_mac

__all__ = ["MASKED", "CallIndex", "CallRow", "SideFile", "call_row", "connect", "iso", "transaction"]

log = structlog.get_logger("callrec.storage")

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
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

ADDED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("recorded_at", "REAL"),
    ("size_bytes", "INTEGER NOT NULL DEFAULT 0"),
    ("held", "INTEGER NOT NULL DEFAULT 0"),
    ("hold_reason", "TEXT"),
    ("held_since", "TEXT"),
    ("erased_at", "TEXT"),
    ("erased_reason", "TEXT"),
    ("notice_id", "TEXT"),
    ("announced_at", "TEXT"),
    ("extension", "TEXT"),
    ("withheld_number", "TEXT"),
    ("leg_call_ids", "TEXT NOT NULL DEFAULT '[]'"),
    ("leg", "TEXT"),
    ("started_by", "TEXT"),
    ("start_requested_at", "TEXT"),
    ("gaps", "TEXT NOT NULL DEFAULT '[]'"),
    ("stored_on", "TEXT"),
    ("archived_at", "TEXT"),
    ("seal_mac", "TEXT"),  # the row's seal (storage/sealing.py); not in CallRow, so no listing shows it
    ("seal_seq", "INTEGER"),  # the seal ledger entry that names that seal; NULL until it does
    ("evidence_until", "REAL"),  # a harassment mark's evidence hold (storage/marks.py); unsealed, like `held`
)
"""Columns the storage issue added; an index made by an older version gets
them on open, so an upgrade never needs a manual migration."""

LATE_INDEXES = """
CREATE INDEX IF NOT EXISTS calls_kept ON calls(held, state, recorded_at, size_bytes) WHERE erased_at IS NULL;
CREATE INDEX IF NOT EXISTS calls_recorded ON calls(recorded_at);
CREATE INDEX IF NOT EXISTS calls_on_device ON calls(held, state, recorded_at, size_bytes)
    WHERE erased_at IS NULL AND stored_on IS NULL;
CREATE INDEX IF NOT EXISTS calls_on_archive ON calls(held, state, recorded_at, size_bytes)
    WHERE erased_at IS NULL AND stored_on IS NOT NULL;
CREATE INDEX IF NOT EXISTS calls_moving ON calls(stored_on)
    WHERE stored_on IS NOT NULL AND archived_at IS NULL AND erased_at IS NULL;
CREATE INDEX IF NOT EXISTS calls_unledgered ON calls(id) WHERE seal_mac IS NOT NULL AND seal_seq IS NULL;
"""

ERASED_CLEAR: dict[str, Any] = {
    "sip_call_id": "", "local_number": None, "remote_number": None, "caller": None, "callee": None,
    "streams": [], "dtmf": [], "audio_path": None, "side_files": [], "size_bytes": 0, "hold_reason": None,
    "extension": None, "withheld_number": None, "leg_call_ids": [],
}
"""What erasure clears from a row.  The row itself stays, so `verify` can
tell an erasure by the rules from a file that went missing, but nothing
personal is left: no numbers, no SIP identifiers, no stream addresses."""

JSON_COLUMNS = ("codecs", "streams", "dtmf", "undecoded", "side_files", "leg_call_ids", "gaps")
MASKED = "(masked)"
"""What every listing shows for a withheld caller's kept number: only an approved request
discloses it (access.service)."""
BOOL_COLUMNS = ("caller_withheld", "complete", "held")


@dataclass(frozen=True, slots=True)
class SideFile:
    """Payloads of a codec callrec does not decode, kept beside the audio."""

    channel: int
    path: str
    sha256: str


@dataclass(frozen=True, slots=True)
class CallRow:
    """The index's view of one recording, column by column.

    Times are ISO 8601 with the site's offset, as stored; `recorded_at` is
    the epoch the retention rules count from.  `streams` and `dtmf` are the
    per-channel statistics and digits as documents (their keys are the
    recorder's counters, which grow without a schema change)."""

    id: str
    sip_call_id: str
    started_at: str
    answered_at: str | None
    ended_at: str | None
    duration: float | None
    direction: str
    local_number: str | None
    remote_number: str | None
    caller: str | None
    callee: str | None
    caller_withheld: bool
    codecs: list[str]
    audio_path: str | None
    audio_format: str | None
    audio_frames: int | None
    sha256: str | None
    streams: list[dict[str, Any]]
    dtmf: list[dict[str, Any]]
    undecoded: list[str]
    side_files: list[SideFile]
    late_samples: int
    end_reason: str | None
    complete: bool
    state: str
    recorded_at: float | None
    size_bytes: int
    held: bool
    hold_reason: str | None
    held_since: str | None
    erased_at: str | None
    erased_reason: str | None
    notice_id: str | None
    announced_at: str | None
    extension: str | None
    withheld_number: str | None
    leg_call_ids: list[str]
    started_by: str | None
    """An on-demand line's recording: "dtmf" (the start code on the extension) or
    "console:<account>"; None for a call recorded automatically."""
    start_requested_at: str | None
    gaps: list[dict[str, Any]]
    """Stretches of the call the audio does not hold (an on-demand call's dropped middle, a stop):
    offset and seconds from the origin, from/to times, reason."""
    stored_on: str | None
    """None on this device; else the archive medium the recording was moved to (storage/archive.py)."""
    archived_at: str | None
    """When the move to the archive finished (the device copy removed)."""
    leg: str | None = None
    """'announcer': this dialog is the announcer's leg of the call that shares its notice_id (the
    caller heard the notice here and was then passed on), not a call of its own."""
    evidence_until: float | None = None
    """Kept as evidence of harassment until this instant (storage/marks.py): no rule and no ring
    takes the call before, whatever `held` says."""

    @property
    def sealed(self) -> bool:
        return self.state == "sealed"

    def as_dict(self) -> dict[str, Any]:
        """Every column, in the table's order, for JSON output; a withheld caller's kept number
        masked, as everywhere a row is shown."""
        values = asdict(self)
        if values["withheld_number"]:
            values["withheld_number"] = MASKED
        return values


_ROW_FIELDS = tuple(f.name for f in fields(CallRow))


def connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    """A connection to the index file as every part of callrec opens it:
    WAL (readers never wait), writers wait for each other rather than fail
    (the recorder, the sweep, the announcer's notices and CLI commands share
    the file), and freed pages are zeroed so erased rows leave nothing.

    `read_only` is for commands that only read, when the normal open failed
    (a full disk: opening in WAL mode must create the -shm file); see
    _connect_read_only."""
    if read_only:
        return _connect_read_only(path)
    db = sqlite3.connect(path, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA secure_delete=ON")
    db.execute("PRAGMA busy_timeout=10000")
    return db


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """The index opened without writing a byte.

    `mode=ro` shares the running writer's -shm, so it sees every commit.  It
    cannot start without one on a full disk; then nobody is writing (a
    writer would have the -shm), and the file is read as it stands
    (`immutable=1`) when no journal is left to replay, or else from a
    private copy of file and journal on another filesystem."""
    uri = f"file:{quote(str(path.resolve()))}"
    try:
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None)
        db.execute("PRAGMA busy_timeout=10000")
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            db = _snapshot(path, wal)
        else:
            db = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)
        log.warning("index.read_only", path=str(path), reason=str(exc))
    db.row_factory = sqlite3.Row
    return db


def _snapshot(path: Path, wal: Path) -> sqlite3.Connection:
    """The index with its journal replayed into memory, from a copy made in a
    private temporary folder that is gone again before this returns."""
    with tempfile.TemporaryDirectory(prefix="callrec-index-") as folder:
        copy = Path(folder) / path.name
        copy.write_bytes(path.read_bytes())
        copy.with_name(copy.name + "-wal").write_bytes(wal.read_bytes())
        source = sqlite3.connect(copy)
        db = sqlite3.connect(":memory:", isolation_level=None)
        try:
            source.backup(db)
        finally:
            source.close()
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """Group changes into one commit on a connection from connect() (which autocommits
    otherwise); the write lock is taken at once, so two writers queue rather than deadlock."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def iso(ts: float | None, tz: tzinfo, timespec: str = "milliseconds") -> str | None:
    """ISO 8601 with the site's offset, as the index stores times."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz).isoformat(timespec=timespec)


class CallIndex:
    """Rows of the calls table; the only writer of the index file."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._db = connect(path, read_only=read_only)
        if read_only:
            return
        try:
            self._db.executescript(SCHEMA)
            present = {r["name"] for r in self._db.execute("PRAGMA table_info(calls)")}
            for name, decl in ADDED_COLUMNS:
                if name not in present:
                    self._db.execute(f"ALTER TABLE calls ADD COLUMN {name} {decl}")
            self._db.executescript(LATE_INDEXES)
            ensure_table(self._db)
        except sqlite3.Error:
            self._db.close()
            raise

    @classmethod
    def for_reading(cls, path: Path) -> CallIndex:
        """The index for a command that only reads: opened as usual (which
        brings an older index up to date), or read-only when that fails, so
        that a full disk never keeps anyone from reading or checking."""
        try:
            return cls(path)
        except sqlite3.OperationalError:
            return cls(path, read_only=True)

    def close(self) -> None:
        self._db.close()

    def insert(self, **values: Any) -> None:
        cols = list(values)
        with self._changing(values["id"], "new"):
            self._db.execute(
                    f"INSERT INTO calls ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                [self._encode(c, values[c]) for c in cols],
            )

    def update(self, call_id: str, **values: Any) -> None:
        cols = list(values)
        with self._changing(call_id, change_kind(values)):
            self._db.execute(
                f"UPDATE calls SET {', '.join(f'{c} = ?' for c in cols)} WHERE id = ?",
                [self._encode(c, values[c]) for c in cols] + [call_id],
            )

    def get(self, call_id: str) -> CallRow | None:
        row = self._db.execute("SELECT * FROM calls WHERE id = ?", (call_id,)).fetchone()
        return None if row is None else call_row(row)

    def parts(self, row: CallRow) -> list[CallRow]:
        """The other dialogs of the phone call `row` is: for the conversation, the announcer's leg
        that shares its notice (the caller heard the 録音告知 there and was then passed on); for
        that leg, the conversation.  Listings show the conversation alone, as one call."""
        if not row.notice_id:
            return []
        return [call_row(r) for r in self._db.execute(
            "SELECT * FROM calls WHERE notice_id = ? AND id <> ? ORDER BY recorded_at, id", (row.notice_id, row.id))]

    def rows(self) -> Iterator[CallRow]:
        for row in self._db.execute("SELECT * FROM calls ORDER BY started_at, id"):
            yield call_row(row)

    def unfinished(self) -> list[CallRow]:
        return [call_row(r) for r in self._db.execute("SELECT * FROM calls WHERE state = 'recording'")]

    def setting(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row["value"])

    def set_setting(self, name: str, value: str) -> None:
        self._db.execute("INSERT INTO settings (name, value) VALUES (?, ?) "
                         "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))

    def kept(self) -> Iterator[CallRow]:
        """Rows whose recording has not been erased, oldest first."""
        for row in self._db.execute("SELECT * FROM calls WHERE erased_at IS NULL ORDER BY recorded_at, id"):
            yield call_row(row)

    def expired(self, cutoff: float) -> list[tuple[str, float, int]]:
        """Sealed, unheld recordings made before `cutoff`: (id, recorded_at, size)."""
        return [(r[0], r[1], r[2]) for r in self._db.execute(
            "SELECT id, recorded_at, size_bytes FROM calls WHERE erased_at IS NULL AND held = 0 "
            "AND evidence_until IS NULL AND state = 'sealed' AND recorded_at < ? ORDER BY recorded_at, id",
            (cutoff,))]

    def oldest_unheld(self) -> Iterator[tuple[str, float, int]]:
        """Sealed, unheld recordings on this device, oldest first, fetched
        lazily: the capacity ring rarely needs more than the first few."""
        cursor = self._db.execute(
            "SELECT id, recorded_at, size_bytes FROM calls WHERE erased_at IS NULL AND stored_on IS NULL "
            "AND held = 0 AND evidence_until IS NULL AND state = 'sealed' ORDER BY recorded_at, id")
        while batch := cursor.fetchmany(256):
            yield from ((r[0], r[1], r[2]) for r in batch)

    def recorded_sizes(self, start: float, end: float) -> list[tuple[float, int]]:
        """(recorded_at, size_bytes) of recordings made between start and end, erased or not:
        what a chart of calls per hour or storage per day needs, without decoding a row."""
        return [(r[0], r[1]) for r in self._db.execute(
            "SELECT recorded_at, size_bytes FROM calls WHERE recorded_at >= ? AND recorded_at < ?", (start, end))]

    def used_bytes(self) -> int:
        """Bytes of recordings on this device (the archive medium's are not its capacity's)."""
        row = self._db.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM calls WHERE erased_at IS NULL "
                               "AND stored_on IS NULL").fetchone()
        return int(row[0])

    def held_bytes(self) -> int:
        """Bytes on this device that no rule and no ring takes: legal holds and harassment evidence."""
        row = self._db.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM calls WHERE erased_at IS NULL "
                               "AND stored_on IS NULL AND (held = 1 OR evidence_until IS NOT NULL)").fetchone()
        return int(row[0])

    def intake_since(self, since: float) -> int:
        """Bytes recorded since `since` (epoch), for the capacity forecast."""
        row = self._db.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM calls WHERE erased_at IS NULL "
                               "AND held IN (0, 1) AND recorded_at >= ?", (since,)).fetchone()
        return int(row[0])

    def mark_erased(self, call_id: str, at: str, reason: str, seal_key: bytes | None = None) -> None:
        """Clear the row to a tombstone; with the seal key the tombstone is
        sealed in its place, for the seal ledger to name as erased."""
        values = {**ERASED_CLEAR, "erased_at": at, "erased_reason": reason}
        if seal_key is None:
            self.update(call_id, **values)
        else:
            self.seal(call_id, seal_key, **values)

    def seal(self, call_id: str, key: bytes, **values: Any) -> str | None:
        """Write the values and seal the row as it then reads back (what a
        later reader sees, whatever the database did to the values); the seal
        is not yet in the seal ledger (seal_seq NULL) until flushed there.
        Returns the seal, or None when there is no such row."""
        def write() -> str | None:
            if values:
                self.update(call_id, **values)
            row = self._db.execute("SELECT * FROM calls WHERE id = ?", (call_id,)).fetchone()
            if row is None:
                return None
            mac = row_mac(key, row)
            self._db.execute("UPDATE calls SET seal_mac = ?, seal_seq = NULL WHERE id = ?", (mac, call_id))
            if not values:
                self._db.execute(*queue_sql(call_id, "sealed"))
            return mac

        if self._db.in_transaction:
            return write()
        with self.transaction():
            return write()

    def unledgered(self, limit: int) -> list[tuple[str, str, bool]]:
        """Sealed rows the seal ledger does not name yet: (id, seal, erased)."""
        return [(r[0], r[1], r[2] is not None) for r in self._db.execute(
            "SELECT id, seal_mac, erased_at FROM calls WHERE seal_mac IS NOT NULL AND seal_seq IS NULL "
            "ORDER BY id LIMIT ?", (limit,))]

    def mark_ledgered(self, seals: dict[str, str], seq: int) -> None:
        """Note the seal ledger entry that names these seals; a row sealed
        again meanwhile (its seal differs) stays to be named again."""
        with self.transaction():
            self._db.executemany("UPDATE calls SET seal_seq = ? WHERE id = ? AND seal_mac = ?",
                                 [(seq, call_id, mac) for call_id, mac in seals.items()])

    def seal_of(self, call_id: str) -> str | None:
        row = self._db.execute("SELECT seal_mac FROM calls WHERE id = ?", (call_id,)).fetchone()
        return None if row is None else row[0]

    def unsealed_finished(self) -> list[str]:
        """Rows finished before rows were sealed (an index of an older
        version): sealed or erased, yet without a seal."""
        return [r[0] for r in self._db.execute(
            "SELECT id FROM calls WHERE seal_mac IS NULL AND (state = 'sealed' OR erased_at IS NOT NULL) ORDER BY id")]

    def raw_rows(self) -> Iterator[sqlite3.Row]:
        """Every row as stored, for checking seals against what is on disk; an
        index of an older version read read-only (a full disk) has no seals."""
        present = {r["name"] for r in self._db.execute("PRAGMA table_info(calls)")}
        missing = "".join(f", NULL AS {name}" for name in ("seal_mac", "seal_seq") if name not in present)
        yield from self._db.execute(f"SELECT *{missing} FROM calls ORDER BY started_at, id")

    def compact(self) -> None:
        """Rewrite the file without free pages and empty the WAL, so what
        erasure cleared is not left in either (secure_delete zeroes pages
        freed from then on; VACUUM also rewrites the rest)."""
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.execute("VACUUM")
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def transaction(self) -> AbstractContextManager[None]:
        return transaction(self._db)

    def on_device_before(self, cutoff: float, limit: int) -> list[tuple[str, float, int]]:
        """Sealed, unheld recordings on this device made before `cutoff`, oldest first, at most
        `limit`: what the archive stage moves next."""
        return [(r[0], r[1], r[2]) for r in self._db.execute(
            "SELECT id, recorded_at, size_bytes FROM calls WHERE erased_at IS NULL AND stored_on IS NULL "
            "AND held = 0 AND evidence_until IS NULL AND state = 'sealed' AND recorded_at < ? "
            "ORDER BY recorded_at, id LIMIT ?",
            (cutoff, limit))]

    def archived_before(self, cutoff: float) -> list[tuple[str, float, int, str]]:
        """Unheld recordings on an archive medium made before `cutoff`: (id, recorded_at, size, medium)."""
        return [(r[0], r[1], r[2], r[3]) for r in self._db.execute(
            "SELECT id, recorded_at, size_bytes, stored_on FROM calls WHERE erased_at IS NULL "
            "AND stored_on IS NOT NULL AND held = 0 AND evidence_until IS NULL AND state = 'sealed' "
            "AND recorded_at < ? "
            "ORDER BY recorded_at, id", (cutoff,))]

    def moves_unfinished(self) -> list[str]:
        """Recordings whose row names the archive but whose device copy may not be gone yet."""
        return [r[0] for r in self._db.execute(
            "SELECT id FROM calls WHERE stored_on IS NOT NULL AND archived_at IS NULL AND erased_at IS NULL")]

    def archived_totals(self) -> list[tuple[str, int, int]]:
        """(medium, recordings, bytes) of what each archive medium holds."""
        return [(r[0], r[1], r[2]) for r in self._db.execute(
            "SELECT stored_on, COUNT(*), COALESCE(SUM(size_bytes), 0) FROM calls WHERE erased_at IS NULL "
            "AND stored_on IS NOT NULL GROUP BY stored_on ORDER BY stored_on")]

    @contextmanager
    def _changing(self, call_id: str, kind: str) -> Iterator[None]:
        """A change of a row with its outbox entry (storage/outbox.py) in one transaction: the
        caller's, or one of its own."""
        if self._db.in_transaction:
            yield
            self._db.execute(*queue_sql(call_id, kind))
            return
        with self.transaction():
            yield
            self._db.execute(*queue_sql(call_id, kind))

    @staticmethod
    def _encode(column: str, value: Any) -> Any:
        if column in JSON_COLUMNS:
            return json.dumps(value, ensure_ascii=False, sort_keys=True, default=asdict)
        if column in BOOL_COLUMNS:
            return int(bool(value))
        return value


def call_row(row: sqlite3.Row) -> CallRow:
    """A row of the calls table as the typed CallRow (JSON and boolean columns decoded)."""
    values = {name: row[name] for name in _ROW_FIELDS}
    for column in JSON_COLUMNS:
        values[column] = json.loads(values[column])
    for column in BOOL_COLUMNS:
        values[column] = bool(values[column])
    values["side_files"] = [SideFile(**side) for side in values["side_files"]]
    return CallRow(**values)
