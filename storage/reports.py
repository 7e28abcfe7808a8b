"""What the monthly report reads of the index (access/reporting.py counts it): the calls that
began in a span, with only the columns a count needs (never a caller's number or a name)."""
from __future__ import annotations

from dataclasses import dataclass

from .index import CallIndex, connect

__all__ = ["CallInSpan", "calls_between"]


@dataclass(frozen=True, slots=True)
class CallInSpan:
    """A call as the report sees it: when it was recorded (epoch), its direction and the
    city-side number (the line, one of the organisation's own numbers), nothing of the caller."""

    id: str
    recorded_at: float
    direction: str
    local_number: str | None


def calls_between(index: CallIndex, start: float, end: float) -> list[CallInSpan]:
    """Calls recorded from `start` to before `end`, erased ones included (they happened); the
    announcer's leg of a call is part of that call, not a call of its own."""
    db = connect(index.path, read_only=True)
    try:
        return [CallInSpan(r["id"], r["recorded_at"], r["direction"], r["local_number"]) for r in db.execute(
            "SELECT id, recorded_at, direction, local_number FROM calls WHERE recorded_at >= ? AND recorded_at < ? "
            "AND (leg IS NULL OR leg <> 'announcer') ORDER BY recorded_at, id", (start, end))]
    finally:
        db.close()
