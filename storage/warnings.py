"""Which callers hear the warning announcement, and the manager's clearing of a number (issue 18).

The policy's `harassment.warning` names a rule: a number marked on `after_marks` calls within
`within_days` hears the warning instead of the notice on its next inbound calls. The numbers are
never stored here. They are read, each time, from the marked calls' own rows (as
storage/marks.py's `repeat_numbers` does), so a number is gone with the last recording that
carries it, or as soon as its marks are withdrawn or fall out of the period.

Clearing a number (the manager decides the caller need not be warned any more) does not store
the number either: it stores the ids of the marks that made it warned (`warning_clears`), and
those marks no longer count towards the warning. They still count everywhere else (the
report, the evidence hold). A later mark on the same number counts afresh. The clear is ledgered
with the mark ids and call ids, never the number.

Withheld callers (caller_withheld) and erased calls never count, as in `repeat_numbers`.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Self

import structlog

from policy.decide import normalise_number
from policy.harassment import HarassmentWarning

from .errors import StorageError
from .index import connect, transaction
from .marks import SCHEMA as MARKS_SCHEMA
from .store import Store

__all__ = ["WarnedNumber", "WarningError", "WarningEvent", "WarningList"]

log = structlog.get_logger("callrec.storage")

SCHEMA = """
CREATE TABLE IF NOT EXISTS warning_clears (
    mark_id TEXT PRIMARY KEY,
    cleared_at TEXT NOT NULL,
    cleared_by TEXT NOT NULL,
    reason TEXT NOT NULL
);
"""

_COUNTED = (
    "SELECT m.id AS mark_id, c.id AS call_id, c.remote_number, m.marked_ts FROM marks m "
    "JOIN calls c ON c.id = m.call_id "
    "WHERE m.withdrawn_at IS NULL AND m.marked_ts >= ? AND c.erased_at IS NULL AND c.remote_number IS NOT NULL "
    "AND c.caller_withheld = 0 AND c.direction IN ('inbound', 'outbound') "
    "AND m.id NOT IN (SELECT mark_id FROM warning_clears)")
"""The marks that count towards the warning: active, within the period, not cleared, on a call
whose row still shows an outside number the caller did not withhold."""


class WarningEvent(StrEnum):
    CLEARED = "harassment_warning_cleared"  # mark ids, call ids; reason (never the number)


class WarningError(StorageError):
    """A clear that cannot be made as asked; nothing was changed."""


@dataclass(frozen=True, slots=True)
class WarnedNumber:
    """A number (national form) that hears the warning: on how many marked calls, the last mark."""

    number: str
    calls: int
    last_marked_ts: float


class WarningList:
    """The warned numbers of one index; `path` is the index file (the announcer has no Store)."""

    def __init__(self, path: Path, rule: HarassmentWarning, country_code: str) -> None:
        self.rule = rule
        self.country_code = country_code
        self._db = connect(path)
        self._db.executescript(MARKS_SCHEMA + SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _since(self, now: float) -> float:
        return now - timedelta(days=self.rule.within_days).total_seconds()

    def _counted(self, now: float, number: str | None = None) -> dict[str, tuple[dict[str, list[str]], float]]:
        """number -> (call id -> the counted mark ids on that call, the last mark's time); only
        that number's when one is given (the announcer's question at each INVITE: the rows are
        picked in SQL, in the forms the index may hold it, so the answer costs no scan of every
        marked number)."""
        query, values = _COUNTED, [self._since(now)]
        if number is not None:
            forms = sorted({number, f"+{self.country_code}{number[1:]}" if number.startswith("0") else number})
            query += f" AND c.remote_number IN ({', '.join('?' for _ in forms)})"
            values += forms
        found: dict[str, tuple[dict[str, list[str]], float]] = {}
        for row in self._db.execute(query, values):
            number = normalise_number(row["remote_number"], self.country_code)
            if number and any(ch.isdigit() for ch in number):
                calls, last = found.get(number, ({}, 0.0))
                calls.setdefault(row["call_id"], []).append(row["mark_id"])
                found[number] = (calls, max(last, row["marked_ts"]))
        return found

    def numbers(self, now: float) -> list[WarnedNumber]:
        """Every number that hears the warning now, in number order (for the manager's list)."""
        return [WarnedNumber(number, len(calls), last) for number, (calls, last) in sorted(self._counted(now).items())
                if len(calls) >= self.rule.after_marks]

    def warned(self, number: str, now: float) -> bool:
        """Whether this caller (national form, as the announcer normalises it) hears the warning."""
        wanted = normalise_number(number, self.country_code) or number
        calls, _ = self._counted(now, wanted).get(wanted, ({}, 0.0))
        return len(calls) >= self.rule.after_marks

    def clear(self, store: Store, number: str, *, by: str, reason: str, role: Mapping[str, str] | None = None,
              now: datetime | None = None) -> int:
        """The manager's decision that this number hears the ordinary notice again: the marks that
        made it warned (as of `now`, the store's clock by default) stop counting towards the
        warning. Returns how many marks were cleared."""
        if not reason.strip():
            raise WarningError("clearing a number needs a reason (--reason TEXT)")
        now = now or store.now()
        wanted = normalise_number(number, self.country_code) or number
        calls, _ = self._counted(now.timestamp(), wanted).get(wanted, ({}, 0.0))
        if len(calls) < self.rule.after_marks:
            raise WarningError("that number does not hear the warning (list them with `callrec warnings list`)")
        marks = sorted(mark for ids in calls.values() for mark in ids)
        at = now.isoformat(timespec="seconds")
        with transaction(self._db):
            for mark in marks:
                self._db.execute("INSERT INTO warning_clears (mark_id, cleared_at, cleared_by, reason) "
                                 "VALUES (?, ?, ?, ?)", (mark, at, by, reason.strip()))
        store.ledger.append(WarningEvent.CLEARED, by, now, reason=reason.strip(), mark_ids=marks,
                            call_ids=sorted(calls), **(role or {}))
        log.info("warnings.cleared", marks=len(marks), calls=len(calls))
        return len(marks)
