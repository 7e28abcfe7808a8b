"""Storage faults as an operator needs to hear of them.

A full or failing disk fails every write of every call, many times a
second.  Each kind of fault is logged when it starts, then only counted;
once an hour while it lasts the count is logged again, and once more when
it clears.  What it cost is counted per hour of the calls it hit (calls
without audio, calls whose row could not be written) for `callrec status`,
the journal and the exit status of `callrec replay`.
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime, tzinfo
from typing import Any

import structlog

__all__ = ["FaultLog"]

log = structlog.get_logger("callrec.storage")


class FaultLog:
    """The faults of one recording store; `at` is the affected call's time."""

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self.active: dict[str, str] = {}
        self._failures: Counter[str] = Counter()
        self._logged_hour: dict[str, str] = {}
        self.calls_per_hour: dict[str, Counter[str]] = {}
        self._counting_hour: str | None = None

    def failed(self, code: str, reason: str, event: str, at: float | None = None, **context: Any) -> None:
        """One failed write of kind `code`; logged (as `event`) only when the
        fault starts, and once an hour while it lasts."""
        self._failures[code] += 1
        hour = self._hour(at) if at is not None else None
        if code not in self.active:
            self.active[code] = reason
            self._logged_hour[code] = hour or ""
            log.error(event, fault=code, reason=reason, **context,
                      detail="logged once; further failures are counted until it clears")
        elif hour is not None and hour != self._logged_hour[code]:
            self._logged_hour[code] = hour
            log.error("storage.fault_continues", fault=code, reason=reason, failures=self._failures[code])

    def cleared(self, code: str) -> None:
        if self.active.pop(code, None) is not None:
            log.warning("storage.fault_cleared", fault=code, failures=self._failures[code])
            self._failures[code] = 0

    def lost(self, what: str, at: float | None, count: int = 1) -> None:
        """A call that lost `what` (its audio, its row) to a fault; the first
        loss of a new hour logs what the hour before cost."""
        hour = self._hour(at) if at is not None else "unknown"
        if hour != self._counting_hour:
            before = self.calls_per_hour.get(self._counting_hour or "")
            if before:
                log.error("storage.calls_lost", hour=self._counting_hour, **before)
            self._counting_hour = hour
        self.calls_per_hour.setdefault(hour, Counter())[what] += count

    def totals(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for counts in self.calls_per_hour.values():
            total.update(counts)
        return total

    def as_dict(self) -> dict[str, Any]:
        return {"active": dict(self.active),
                "calls_per_hour": {hour: dict(counts) for hour, counts in sorted(self.calls_per_hour.items())}}

    def _hour(self, at: float) -> str:
        return datetime.fromtimestamp(at, self.tz).replace(minute=0, second=0, microsecond=0).isoformat(
            timespec="minutes")
