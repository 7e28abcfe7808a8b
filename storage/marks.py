"""Harassment marks (カスハラ) on recorded calls, and the evidence hold each places.

Staff mark the call they are on with the policy's keypad code (the recorder reads it and hands
it over: `via="dtmf"`), or someone marks it afterwards from the console or the CLI.  A mark is a
row of the `marks` table in the index database, never a change to the call's own sealed row:

=================  ======================================================================
id                 ``M<yyyymmddHHMMSS>-<8 hex>`` in the site's time
call_id            the calls row it marks
category           a category id of the policy's `harassment:` section
marked_by          an account ("sato"), or the staff side's extension ("ext:201")
marked_at          ISO 8601 with the site's offset; `marked_ts` the same instant as epoch
via                dtmf | console | cli
note               free text (may be empty); kept in this row only (the ledger says
                   whether there was one), and cleared when the call is erased
hold_until         epoch from which the evidence hold no longer keeps the call: the day
                   after the category's `keep` period, counted from the day of the mark
withdrawn_*        by, at, reason: a wrong or late mark taken back by the manager
released_*         by, at, reason: its evidence hold ended by the manager, or by the
                   sweep ("retention") once `hold_until` has passed
mac                HMAC over every other column (the row seal's key): an edit is caught
=================  ======================================================================

The evidence hold itself is the calls row's `evidence_until`: the latest `hold_until` among
the call's marks neither withdrawn nor released, NULL when none holds it.  Retention, the
capacity ring and the archive stage take no row with `evidence_until` set (storage/index.py), so
a marked call outlives its ordinary rule and the ring; the sweep lifts holds whose time has come
first (`lift_expired`), and the ring's forecast then warns early as holds fill the store.

Every change is ledgered (`MarkEvent`, labelled in Japanese for the 管理簿), and `findings`
(called by `callrec verify`) checks each row against its MAC, each ledgered mark against the
table (a deleted mark is named), and each call's `evidence_until` against its marks (a hold
cleared by hand to let the ring take the call is named).

Numbers are not copied here: `repeat_numbers` derives the numbers marked often enough for the
warning announcement from the marked calls' own rows, so a number is gone with the last
recording that carries it (or as soon as its marks are withdrawn or fall out of the period).

API (all on `MarkBook(store, section)`; `section` is the policy's `harassment:` or None):

- ``add(call_id, category, marked_by=, via=, note="", at=None) -> Mark``  (places the hold)
- ``withdraw(mark_id, by=, reason=, role=None) -> Mark``  (undoes its hold unless another active
  mark holds the call; the caller checks `Action.MANAGE_MARKS`)
- ``release_hold(call_id, by=, reason=, role=None) -> list[Mark]``  (the marks stay, the hold goes)
- ``of_call(call_id)``, ``get(mark_id)``, ``between(start, end, withdrawn=False)``
- ``counts(start, end, by_line=False) -> list[MarkCount]``  (per month in the site's zone and
  category, optionally per city-side line: counts only, no numbers)
- ``repeat_numbers(after_marks, since, country_code) -> list[RepeatNumber]``
- ``alerts(since) -> list[Alert]``  (marks keyed during calls, newest first, with the line, the
  extension and whether the call is still going on: the console's live alert page polls this)
- ``marked_call_ids(ids) -> set[str]``  (which of these calls carry an active mark: listings)
- ``lift_expired(now, actor) -> list[str]``  (the sweep calls it first)
- ``forget_erased_notes() -> int``  (the sweep calls it after its erasures)
- ``findings() -> list[tuple[str, str]]``  (for verify)

`KeypadMarks(store, section, recordings)` is the recorder's `MarkSink` (recorder/record.py) that
the daemon and `callrec replay` hand the recorder: it turns a code keyed on the extension into
`add(..., via="dtmf", marked_by="ext:<extension>")` and logs the journal entry
`harassment.marked` (fields: call_id, mark_id, category, line, extension, marked_at; never the
caller's number) at warning level, or `harassment.mark_failed` with the reason.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

import structlog

from policy.decide import normalise_number
from policy.harassment import Harassment, evidence_last_day
from policy.retention import ONE_DAY
from recorder.record import CallSnapshot

from .errors import StorageError
from .index import connect, transaction
from .ledger import LedgerError
from .outbox import queue_sql
from .retention import start_of_day
from .store import Store

__all__ = ["MARK_VIAS", "Alert", "KeypadMarks", "Mark", "MarkBook", "MarkCount", "MarkError", "MarkEvent",
           "RepeatNumber"]

log = structlog.get_logger("callrec.storage")

MARK_VIAS = ("dtmf", "console", "cli")
MAC_VERSION = "m1"
SCHEMA = """
CREATE TABLE IF NOT EXISTS marks (
    id TEXT PRIMARY KEY,
    call_id TEXT NOT NULL,
    category TEXT NOT NULL,
    marked_by TEXT NOT NULL,
    marked_at TEXT NOT NULL,
    marked_ts REAL NOT NULL,
    via TEXT NOT NULL,
    note TEXT NOT NULL DEFAULT '',
    hold_until REAL,
    withdrawn_by TEXT,
    withdrawn_at TEXT,
    withdrawn_reason TEXT,
    released_by TEXT,
    released_at TEXT,
    released_reason TEXT,
    mac TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS marks_call ON marks(call_id);
CREATE INDEX IF NOT EXISTS marks_time ON marks(marked_ts);
"""
COLUMNS = ("id", "call_id", "category", "marked_by", "marked_at", "marked_ts", "via", "note", "hold_until",
           "withdrawn_by", "withdrawn_at", "withdrawn_reason", "released_by", "released_at", "released_reason")
EXPIRED_BY = "retention"
"""`released_by` of a hold the sweep ended because its period was over."""


class MarkEvent(StrEnum):
    """The marks' ledger events (the ledger accepts the layers' own StrEnums)."""

    MARKED = "harassment_marked"  # mark id, call id, category, via, hold until
    WITHDRAWN = "harassment_mark_withdrawn"  # mark id, call id; reason
    HOLD_RELEASED = "evidence_hold_released"  # call id, mark ids; reason
    HOLD_EXPIRED = "evidence_hold_expired"  # one per sweep: call ids whose evidence period ended


class MarkError(StorageError):
    """A mark that cannot be made, withdrawn or released as asked; nothing was changed."""


@dataclass(frozen=True, slots=True)
class Mark:
    """One row of the marks table (see the module docstring for the columns)."""

    id: str
    call_id: str
    category: str
    marked_by: str
    marked_at: str
    marked_ts: float
    via: str
    note: str
    hold_until: float | None
    withdrawn_by: str | None
    withdrawn_at: str | None
    withdrawn_reason: str | None
    released_by: str | None
    released_at: str | None
    released_reason: str | None

    @property
    def active(self) -> bool:
        return self.withdrawn_at is None

    @property
    def holding(self) -> bool:
        """Whether this mark still keeps its call as evidence."""
        return self.withdrawn_at is None and self.released_at is None and self.hold_until is not None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in COLUMNS}


@dataclass(frozen=True, slots=True)
class MarkCount:
    """Active marks of one category in one month (YYYY-MM in the site's zone), per line if asked."""

    month: str
    category: str
    marks: int
    calls: int
    line: str | None = None


@dataclass(frozen=True, slots=True)
class RepeatNumber:
    """A caller's number (national form) marked on `calls` distinct calls since the period began."""

    number: str
    calls: int
    last_marked_ts: float


@dataclass(frozen=True, slots=True)
class Alert:
    """A mark staff made during a call, as the console's live alert shows it: the line (the
    city-side number) and the extension, never the caller's number.  `ongoing`: the call is
    still being recorded, so the people the policy names may listen in where it allows."""

    mark_id: str
    call_id: str
    category: str
    marked_at: str
    marked_ts: float
    line: str | None
    extension: str | None
    ongoing: bool


def _mac(key: bytes, values: Mapping[str, Any]) -> str:
    body = {name: values[name] for name in COLUMNS}
    data = json.dumps([MAC_VERSION, body], sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()
    return f"{MAC_VERSION}:{hmac.new(key, data, hashlib.sha256).hexdigest()}"


def _mark(row: Mapping[str, Any]) -> Mark:
    return Mark(**{name: row[name] for name in COLUMNS})


class MarkBook:
    """The marks table of one store; see the module docstring."""

    def __init__(self, store: Store, section: Harassment | None = None) -> None:
        self.store = store
        self.section = section
        self._db = connect(store.index.path, read_only=store.index.read_only)
        self._present = True
        if store.index.read_only:
            self._present = self._db.execute(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'marks'").fetchone()[0] > 0
        else:
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> MarkBook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- changes --------------------------------------------------------------------------
    def add(self, call_id: str, category: str, *, marked_by: str, via: str, note: str = "",
            at: datetime | None = None, role: Mapping[str, str] | None = None) -> Mark:
        """Mark a call and keep it as evidence for the category's period from the day of the mark.
        `at` is when the mark was made (a keypad mark: its capture time); now by default."""
        section = self.section
        if section is None:
            raise MarkError("the policy has no harassment: section, so calls cannot be marked")
        rule = section.category(category)
        if rule is None:
            raise MarkError(f"unknown category {category!r}; the policy has "
                            + ", ".join(f"{c.id} ({c.label})" for c in section.categories))
        if via not in MARK_VIAS:
            raise MarkError(f"via must be one of {', '.join(MARK_VIAS)}")
        call = self._db.execute("SELECT id, erased_at FROM calls WHERE id = ?", (call_id,)).fetchone()
        if call is None:
            raise MarkError(f"no call with id {call_id}")
        if call["erased_at"] is not None:
            raise MarkError(f"{call_id} was erased on {call['erased_at']}: there is nothing left to keep")
        tz = self.store.tz
        moment = (at or self.store.now()).astimezone(tz)
        hold_until = start_of_day(evidence_last_day(rule, moment.date()) + ONE_DAY, tz)
        values: dict[str, Any] = {name: None for name in COLUMNS}
        values.update(id=f"M{moment:%Y%m%d%H%M%S}-{secrets.token_hex(4)}", call_id=call_id, category=category,
                      marked_by=marked_by, marked_at=moment.isoformat(timespec="milliseconds"),
                      marked_ts=moment.timestamp(), via=via, note=note.strip(), hold_until=hold_until)
        with transaction(self._db):
            self._insert(values)
            self._refresh_hold(call_id)
        mark = _mark(values)
        self.store.ledger.append(MarkEvent.MARKED, marked_by, self.store.now(), has_note=bool(mark.note),
                                 mark_id=mark.id, call_id=call_id, category=category, category_label=rule.label,
                                 clause=rule.clause, via=via, marked_at=mark.marked_at,
                                 hold_until=_iso(hold_until, tz), **(role or {}))
        log.info("marks.added", mark_id=mark.id, call_id=call_id, category=category, via=via)
        return mark

    def withdraw(self, mark_id: str, *, by: str, reason: str, role: Mapping[str, str] | None = None) -> Mark:
        """Take a wrong or late mark back; its hold goes unless another active mark holds the call."""
        if not reason.strip():
            raise MarkError("withdrawing a mark needs a reason (--reason TEXT)")
        mark = self.get(mark_id)
        if mark is None:
            raise MarkError(f"no mark with id {mark_id}")
        if not mark.active:
            raise MarkError(f"{mark_id} was already withdrawn on {mark.withdrawn_at} by {mark.withdrawn_by}")
        at = self.store.now().isoformat(timespec="milliseconds")
        with transaction(self._db):
            self._update(mark, withdrawn_by=by, withdrawn_at=at, withdrawn_reason=reason.strip())
            until = self._refresh_hold(mark.call_id)
        self.store.ledger.append(MarkEvent.WITHDRAWN, by, self.store.now(), reason=reason.strip(), mark_id=mark_id,
                                 call_id=mark.call_id, category=mark.category,
                                 evidence_until=_iso(until, self.store.tz), **(role or {}))
        log.info("marks.withdrawn", mark_id=mark_id, call_id=mark.call_id, still_held=until is not None)
        return self.get(mark_id)  # type: ignore[return-value]

    def release_hold(self, call_id: str, *, by: str, reason: str,
                     role: Mapping[str, str] | None = None) -> list[Mark]:
        """End the evidence hold of a call: its marks stay (counted, shown), nothing keeps the call
        past its ordinary rule any more."""
        if not reason.strip():
            raise MarkError("releasing an evidence hold needs a reason (--reason TEXT)")
        holding = [m for m in self.of_call(call_id) if m.holding]
        if not holding:
            raise MarkError(f"{call_id} is not kept as evidence")
        at = self.store.now().isoformat(timespec="milliseconds")
        with transaction(self._db):
            for mark in holding:
                self._update(mark, released_by=by, released_at=at, released_reason=reason.strip())
            self._refresh_hold(call_id)
        self.store.ledger.append(MarkEvent.HOLD_RELEASED, by, self.store.now(), reason=reason.strip(),
                                 call_id=call_id, mark_ids=[m.id for m in holding], **(role or {}))
        log.info("marks.hold_released", call_id=call_id, marks=len(holding))
        return [self.get(m.id) for m in holding]  # type: ignore[misc]

    def lift_expired(self, now: float, actor: str) -> list[str]:
        """End the evidence holds whose period is over by `now` (the sweep does this first, so the
        ordinary rule then takes those calls); one ledger entry for all.  Returns the call ids."""
        if not self._present:
            return []
        due = [_mark(r) for r in self._db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM marks WHERE withdrawn_at IS NULL AND released_at IS NULL "
            "AND hold_until IS NOT NULL AND hold_until <= ? ORDER BY call_id, id", (now,))]
        if not due:
            return []
        at = self.store.now().isoformat(timespec="milliseconds")
        calls = sorted({m.call_id for m in due})
        with transaction(self._db):
            for mark in due:
                self._update(mark, released_by=EXPIRED_BY, released_at=at, released_reason="evidence period ended")
            for call_id in calls:
                self._refresh_hold(call_id)
        self.store.ledger.append(MarkEvent.HOLD_EXPIRED, actor, self.store.now(), count=len(calls), call_ids=calls,
                                 mark_ids=[m.id for m in due], as_of=_iso(now, self.store.tz))
        log.info("marks.holds_expired", calls=len(calls))
        return calls

    def forget_erased_notes(self) -> int:
        """Clear the notes of marks whose call has been erased: a note may tell what the caller
        said, and goes with the recording; the mark itself stays (category, who, when: counted).
        The sweep calls this after its erasures.  Returns how many notes were cleared."""
        if not self._present:
            return 0
        due = [_mark(r) for r in self._db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM marks WHERE note <> '' AND call_id IN "
            "(SELECT id FROM calls WHERE erased_at IS NOT NULL)")]
        if due:
            with transaction(self._db):
                for mark in due:
                    self._update(mark, note="")
        return len(due)

    # ---- reading --------------------------------------------------------------------------
    def get(self, mark_id: str) -> Mark | None:
        if not self._present:
            return None
        row = self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM marks WHERE id = ?", (mark_id,)).fetchone()
        return None if row is None else _mark(row)

    def of_call(self, call_id: str) -> list[Mark]:
        if not self._present:
            return []
        return [_mark(r) for r in self._db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM marks WHERE call_id = ? ORDER BY marked_ts, id", (call_id,))]

    def between(self, start: float, end: float, *, withdrawn: bool = False) -> list[Mark]:
        """Marks made from `start` to before `end` (epoch), oldest first; withdrawn ones only if asked."""
        if not self._present:
            return []
        where = "" if withdrawn else " AND withdrawn_at IS NULL"
        return [_mark(r) for r in self._db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM marks WHERE marked_ts >= ? AND marked_ts < ?{where} "
            "ORDER BY marked_ts, id", (start, end))]

    def counts(self, start: float, end: float, *, by_line: bool = False) -> list[MarkCount]:
        """Active marks per month (the site's zone: `marked_at` carries its offset) and category,
        and the distinct calls they mark; per city-side line too when asked.  Counts only."""
        if not self._present:
            return []
        line = ", c.local_number" if by_line else ""
        rows = self._db.execute(
            f"SELECT SUBSTR(m.marked_at, 1, 7) AS month, m.category, COUNT(*) AS marks, "
            f"COUNT(DISTINCT m.call_id) AS calls{line} FROM marks m JOIN calls c ON c.id = m.call_id "
            f"WHERE m.withdrawn_at IS NULL AND m.marked_ts >= ? AND m.marked_ts < ? "
            f"GROUP BY SUBSTR(m.marked_at, 1, 7), m.category{line} ORDER BY 1, 2{line}", (start, end))
        return [MarkCount(r["month"], r["category"], r["marks"], r["calls"], r["local_number"] if by_line else None)
                for r in rows]

    def repeat_numbers(self, after_marks: int, since: float, country_code: str) -> list[RepeatNumber]:
        """Outside numbers (national form) on at least `after_marks` distinct calls with an active
        mark made since `since`, read from those calls' own rows: withheld callers never, erased
        calls no more."""
        if not self._present:
            return []
        seen: dict[str, tuple[set[str], float]] = {}
        for r in self._db.execute(
                "SELECT c.id, c.remote_number, MAX(m.marked_ts) AS last FROM marks m JOIN calls c ON c.id = m.call_id "
                "WHERE m.withdrawn_at IS NULL AND m.marked_ts >= ? AND c.erased_at IS NULL "
                "AND c.remote_number IS NOT NULL AND c.caller_withheld = 0 AND c.direction IN ('inbound', 'outbound') "
                "GROUP BY c.id, c.remote_number", (since,)):
            number = normalise_number(r["remote_number"], country_code)
            if not number:
                continue
            calls, last = seen.get(number, (set(), 0.0))
            calls.add(r["id"])
            seen[number] = (calls, max(last, r["last"]))
        return sorted((RepeatNumber(n, len(c), last) for n, (c, last) in seen.items() if len(c) >= after_marks),
                      key=lambda r: r.number)

    def alerts(self, since: float) -> list[Alert]:
        """Active marks keyed on an extension (made during the call) since `since`, newest first:
        what the console's live alert page shows (the daemon writes them the moment the code is
        keyed; the console polls this)."""
        if not self._present:
            return []
        return [Alert(r["id"], r["call_id"], r["category"], r["marked_at"], r["marked_ts"], r["local_number"],
                      r["extension"], r["state"] == "recording") for r in self._db.execute(
            "SELECT m.id, m.call_id, m.category, m.marked_at, m.marked_ts, c.local_number, c.extension, c.state "
            "FROM marks m JOIN calls c ON c.id = m.call_id WHERE m.via = 'dtmf' AND m.withdrawn_at IS NULL "
            "AND m.marked_ts >= ? ORDER BY m.marked_ts DESC, m.id DESC", (since,))]

    def findings(self) -> list[tuple[str, str]]:
        """(subject, problem) for `callrec verify`: rows against their MACs, the ledger's marks
        against the table, and each call's evidence hold against its marks."""
        if not self._present:
            return []
        found: list[tuple[str, str]] = []
        key = self.store.seal_key
        table: dict[str, Mark] = {}
        for r in self._db.execute(f"SELECT {', '.join(COLUMNS)}, mac FROM marks ORDER BY id"):
            mark = _mark(r)
            table[mark.id] = mark
            if not hmac.compare_digest(_mac(key, r), r["mac"] or ""):
                found.append((f"mark {mark.id}", "differs from its MAC: edited outside callrec"))
        ledgered: dict[str, int] = {}
        withdrawn: dict[str, int] = {}
        for entry in self.store.ledger.entries():
            if entry.event == MarkEvent.MARKED:
                ledgered[entry.details.get("mark_id", "")] = entry.seq
            elif entry.event == MarkEvent.WITHDRAWN:
                withdrawn[entry.details.get("mark_id", "")] = entry.seq
        for mark_id, seq in ledgered.items():
            mark = table.get(mark_id)
            if mark is None:
                found.append((f"mark {mark_id}", f"ledgered (seq {seq}) but gone from the marks table"))
            elif mark_id in withdrawn and mark.active:
                found.append((f"mark {mark_id}", f"withdrawn in the ledger (seq {withdrawn[mark_id]}) but active"))
        found.extend((f"mark {mark_id}", "not in the ledger: added outside callrec")
                     for mark_id in table if mark_id not in ledgered)
        expected: dict[str, float] = {}
        for mark in table.values():
            if mark.holding:
                expected[mark.call_id] = max(expected.get(mark.call_id, 0.0), mark.hold_until or 0.0)
        for r in self._db.execute("SELECT id, evidence_until FROM calls WHERE evidence_until IS NOT NULL "
                                  "OR id IN (SELECT call_id FROM marks)"):
            want, have = expected.get(r["id"]), r["evidence_until"]
            if want != have:
                tz = self.store.tz
                problem = (f"evidence hold {_iso(have, tz) or 'none'} but its marks say {_iso(want, tz) or 'none'}: "
                           "changed outside callrec")
                found.append((f"recording {r['id']}", problem))
        return found

    def marked_call_ids(self, call_ids: list[str]) -> set[str]:
        """Which of these calls carry an active mark (for listings)."""
        if not self._present or not call_ids:
            return set()
        found: set[str] = set()
        for chunk in _chunks(call_ids, 500):
            found.update(r[0] for r in self._db.execute(
                f"SELECT DISTINCT call_id FROM marks WHERE withdrawn_at IS NULL AND call_id IN "
                f"({', '.join('?' for _ in chunk)})", chunk))
        return found

    # ---- inside ---------------------------------------------------------------------------
    def _insert(self, values: dict[str, Any]) -> None:
        values["mac"] = _mac(self.store.seal_key, values)
        names = list(values)
        self._db.execute(f"INSERT INTO marks ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})",
                         [values[n] for n in names])

    def _update(self, mark: Mark, **changes: Any) -> None:
        values = {**mark.as_dict(), **changes}
        mac = _mac(self.store.seal_key, values)
        self._db.execute(f"UPDATE marks SET {', '.join(f'{c} = ?' for c in changes)}, mac = ? WHERE id = ?",
                         [*changes.values(), mac, mark.id])

    def _refresh_hold(self, call_id: str) -> float | None:
        """Set the call's evidence hold to what its marks say; returns it."""
        until = self._db.execute(
            "SELECT MAX(hold_until) FROM marks WHERE call_id = ? AND withdrawn_at IS NULL AND released_at IS NULL",
            (call_id,)).fetchone()[0]
        self._db.execute("UPDATE calls SET evidence_until = ? WHERE id = ?", (until, call_id))
        self._db.execute(*queue_sql(call_id, "evidence_held" if until is not None else "evidence_released"))
        return None if until is None else float(until)


class RecordIds(Protocol):
    """The recording store's side: the row id of the recorder's open call (storage/recordings.py)."""

    def record_id(self, serial: int) -> str | None: ...


class KeypadMarks:
    """The recorder's MarkSink (recorder/record.py) over a store: a code keyed on the extension
    becomes a mark on the call's row (`via="dtmf"`, `marked_by="ext:<extension>"`), with its
    evidence hold and its ledger entry, and is told at once: the journal entry
    `harassment.marked` (line, extension, category, call id and mark id; no caller number) and
    the marks table the console's live alert page reads (`MarkBook.alerts`).

    A mark that cannot be stored (no row yet on a full disk, a ledger that refuses) is logged as
    `harassment.mark_failed` with the same fields and the reason; the recording goes on."""

    def __init__(self, store: Store, section: Harassment | None, recordings: RecordIds) -> None:
        self.book = MarkBook(store, section)
        self._recordings = recordings
        self._tz = store.tz

    def close(self) -> None:
        self.book.close()

    def mark(self, call: CallSnapshot, category: str, at: float) -> None:
        record_id = self._recordings.record_id(call.serial)
        fields = {"call_id": record_id, "category": category, "line": call.local_number,
                  "extension": call.extension}
        if record_id is None:
            log.error("harassment.mark_failed", reason="the call has no recording", **fields)
            return
        marked_by = f"ext:{call.extension}" if call.extension else "staff side"
        try:
            mark = self.book.add(record_id, category, marked_by=marked_by, via="dtmf",
                                 at=datetime.fromtimestamp(at, self._tz))
        except (MarkError, LedgerError, sqlite3.Error, OSError) as exc:
            log.error("harassment.mark_failed", reason=str(exc), **fields)
            return
        log.warning("harassment.marked", mark_id=mark.id, marked_at=mark.marked_at, **fields)


def _iso(ts: float | None, tz: Any) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for n in range(0, len(items), size):
        yield items[n:n + size]
