"""The monthly harassment report at work: read the month's facts and count them (access/monthly.py).

A call's line is its city-side number when that is one of the organisation's own numbers
(policy numbering.own_numbers: the 代表 or a ダイヤルイン the city publishes, never a person's
number); its department is that entry's label (or an on-demand line's label). Calls on any other
line (internal calls, extensions, erased rows whose numbers are gone) count under 内線・その他, so
no extension and no caller's number can reach the report. Facts:

- calls: every recorded call of the month (the announcer's leg is part of its call);
- marked calls by category: those calls' marks still standing (storage/marks.py);
- holds: evidence holds placed in the month (a call's active marks made in the month, once per
  call) and legal holds (the ledger's hold_added);
- evidence exports: copies made in the month for requests whose purpose is an evidence export.
"""
from __future__ import annotations

from datetime import datetime

from policy.access import Action
from policy.decide import OwnNumbers, normalise_number
from policy.schema import Policy
from storage.ledger import Event
from storage.marks import MarkBook
from storage.reports import calls_between

from .monthly import CallFact, EventFact, EventKind, MonthlyReport, count_month, month_bounds
from .rules import Actor
from .service import AccessService

__all__ = ["OTHER_LINE", "UNSET_DEPARTMENT", "Lines", "monthly_report"]

OTHER_LINE = "内線・その他"
UNSET_DEPARTMENT = "（所属未設定）"


class Lines:
    """The policy's own numbers and on-demand lines, each with the department its label names."""

    def __init__(self, policy: Policy) -> None:
        cc = policy.numbering.country_code
        self._cc = cc
        self._own = [(OwnNumbers([entry], cc), entry.label or UNSET_DEPARTMENT) for entry in policy.numbering.own_numbers]
        lines = policy.on_demand.lines if policy.on_demand is not None else []
        self._labelled = {normalise_number(line.number, cc): line.label for line in lines if line.label}

    def of(self, local_number: str | None) -> tuple[str, str]:
        """(line, department) of a call's city-side number."""
        number = normalise_number(local_number, self._cc)
        if number and number in self._labelled:
            return number, self._labelled[number]
        for numbers, label in self._own:
            if numbers.contains(number):
                return str(number), label
        return OTHER_LINE, UNSET_DEPARTMENT


def monthly_report(service: AccessService, policy: Policy, by: Actor, month: str) -> MonthlyReport:
    """The month's counts for a person who may read the ledger (the report is about its entries)."""
    service.authorise(by, Action.READ_LEDGER)
    start, end = month_bounds(month, policy.timezone)
    store = service.store
    lines = Lines(policy)
    calls = calls_between(store.index, start, end)
    where = {call.id: lines.of(call.local_number) for call in calls}

    def place(call_id: str) -> tuple[str, str]:
        if call_id not in where:
            row = store.index.get(call_id)
            where[call_id] = lines.of(row.local_number if row is not None else None)
        return where[call_id]

    section = policy.harassment
    with MarkBook(store, section) as book:
        marked: dict[str, set[str]] = {}
        for call in calls:
            categories = {m.category for m in book.of_call(call.id) if m.active}
            if categories:
                marked[call.id] = categories
        holds = {m.call_id: m.marked_ts for m in reversed(book.between(start, end)) if m.hold_until is not None}
    facts = [CallFact(call.recorded_at, *where[call.id], tuple(sorted(marked.get(call.id, ())))) for call in calls]
    events = [EventFact(at, EventKind.HOLD, *place(call_id)) for call_id, at in holds.items()]
    for entry in store.ledger.entries():
        call_id = entry.details.get("call_id")
        if entry.event == Event.HOLD_ADDED and isinstance(call_id, str) and start <= entry.at.timestamp() < end:
            events.append(EventFact(entry.at.timestamp(), EventKind.HOLD, *place(call_id)))
    evidence = {p.key for p in service.access.purposes if p.evidence}
    requests = {r.number: r.purpose for r in service.requests()}
    for copy in service.copies():
        made = datetime.fromisoformat(copy.made_at).timestamp()
        if requests.get(copy.request) in evidence and start <= made < end:
            events.append(EventFact(made, EventKind.EXPORT, *place(copy.call_id)))
    categories = [(c.id, c.label) for c in section.categories] if section is not None else []
    return count_month(month, policy.timezone, facts, events, categories, policy.organisation)
