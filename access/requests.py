"""A request for a recording, from filing to closing: the state machine and its rules.

requested → approved or refused → fulfilled → closed, in one table; every move is made by one
function that checks it (as the announcer's states are), takes `now` and the grant of the
person acting, and returns the new request with the ledger note that records the move.  Nothing
is read or written here: the service stores the request and appends the note.

The rules that are not about states: a request names a purpose the policy lists and asks only
for what that purpose allows (熊本市 第5条, 山形市 第9条1); listening where the policy forbids
it is refused at filing (さいたま 第4条1); nobody approves their own request; a contractor
fulfils only what the manager instructed it to (さいたま 第3条6, 第5条 様式1).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from policy.access import Access, Wanted

from .errors import AccessError, Forbidden
from .rules import Grant, check_listening, check_purpose

__all__ = ["AccessEvent", "LedgerNote", "Request", "RequestState", "RequestStateError", "TRANSITIONS", "approve",
           "close", "file_request", "fulfilled", "instruct", "may_fulfil", "refuse"]


class RequestState(StrEnum):
    REQUESTED = "requested"
    APPROVED = "approved"
    REFUSED = "refused"
    FULFILLED = "fulfilled"
    CLOSED = "closed"


TRANSITIONS: dict[RequestState, frozenset[RequestState]] = {
    RequestState.REQUESTED: frozenset({RequestState.APPROVED, RequestState.REFUSED}),
    RequestState.APPROVED: frozenset({RequestState.FULFILLED}),
    RequestState.FULFILLED: frozenset({RequestState.CLOSED}),
    RequestState.REFUSED: frozenset(),
    RequestState.CLOSED: frozenset(),
}


class AccessEvent(StrEnum):
    """Ledger event names of the access layer; stable, auditors grep them."""

    REQUEST_FILED = "request_filed"
    REQUEST_APPROVED = "request_approved"
    REQUEST_REFUSED = "request_refused"
    REQUEST_INSTRUCTED = "request_instructed"
    REQUEST_FULFILLED = "request_fulfilled"
    REQUEST_CLOSED = "request_closed"
    COPY_MADE = "copy_made"
    COPY_DISPOSED = "copy_disposed"
    COPY_DOWNLOADED = "copy_downloaded"
    LISTENED = "listened"
    EXTENSION_DISCLOSED = "extension_disclosed"
    WITHHELD_NUMBER_DISCLOSED = "withheld_number_disclosed"
    USER_ADDED = "user_added"
    USER_DISABLED = "user_disabled"
    PASSWORD_CHANGED = "password_changed"
    ABSENCE_CHANGED = "absence_changed"
    LOGIN = "login"
    LOGOUT = "logout"
    LOGIN_FAILED = "login_failed"
    ACCOUNT_LOCKED = "account_locked"
    REFUSED_ACTION = "refused_action"
    RECORDING_STARTED = "recording_started"  # an on-demand line's live call, asked for in the console


class RequestStateError(AccessError):
    """The request is not in a state that allows this step."""


@dataclass(frozen=True, slots=True)
class LedgerNote:
    """One ledger entry to append: who acted (and as what), what, why, approved by whom."""

    event: AccessEvent
    grant: Grant
    reason: str | None = None
    approved_by: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Request:
    number: str
    requester: str
    requester_role: str
    department: str
    purpose: str
    wanted: Wanted
    call_ids: tuple[str, ...]
    details: str
    filed_at: str
    state: RequestState = RequestState.REQUESTED
    decided_by: str | None = None
    decided_role: str | None = None
    decided_at: str | None = None
    decision_reason: str | None = None
    instructed_to: str | None = None
    instructed_by: str | None = None
    instructed_at: str | None = None
    fulfilled_by: str | None = None
    fulfilled_at: str | None = None
    closed_at: str | None = None

    def moved(self, new: RequestState, **changes: Any) -> Request:
        if new not in TRANSITIONS[self.state]:
            raise RequestStateError(f"request {self.number} is {self.state}; it cannot become {new}")
        return replace(self, state=new, **changes)

    def summary(self) -> dict[str, Any]:
        return {"request": self.number, "purpose": self.purpose, "wanted": str(self.wanted),
                "calls": list(self.call_ids)}


def _stamp(now: datetime) -> str:
    return now.isoformat(timespec="seconds")


def file_request(access: Access, grant: Grant, number: str, *, department: str, purpose: str, wanted: Wanted,
                 call_ids: tuple[str, ...], details: str, now: datetime) -> tuple[Request, LedgerNote]:
    """A new request.  It must name the calls it is about (found with `calls find`), a purpose
    the policy lists, and something that purpose allows."""
    chosen = check_purpose(access, purpose, wanted)
    check_listening(access, wanted)
    if not call_ids:
        raise AccessError("a request names the calls it is about (find them with `callrec calls find`)")
    if not department.strip():
        raise AccessError("a request names the requesting department (主管課)")
    request = Request(number, grant.actor, grant.role, department.strip(), chosen.key, wanted, call_ids,
                      details.strip(), _stamp(now))
    note = LedgerNote(AccessEvent.REQUEST_FILED, grant, reason=f"{chosen.label} ({chosen.clause})",
                      details={**request.summary(), "department": request.department})
    return request, note


def _decider(access: Access, request: Request, grant: Grant) -> None:
    if grant.role not in access.approvers:
        raise Forbidden(f"only {', '.join(access.roles[r].title for r in access.approvers)} may decide requests "
                        f"({access.approvers_clause})")
    if request.requester in (grant.actor, grant.acting_for):
        raise Forbidden(f"{grant.actor} filed request {request.number} (or acts for who did): "
                        "nobody decides their own request")


def approve(access: Access, request: Request, grant: Grant, now: datetime,
            reason: str = "") -> tuple[Request, LedgerNote]:
    _decider(access, request, grant)
    moved = request.moved(RequestState.APPROVED, decided_by=grant.actor, decided_role=grant.role,
                          decided_at=_stamp(now), decision_reason=reason.strip() or None)
    return moved, LedgerNote(AccessEvent.REQUEST_APPROVED, grant, reason=reason.strip() or None,
                             approved_by=grant.actor, details=moved.summary())


def refuse(access: Access, request: Request, grant: Grant, now: datetime, reason: str) -> tuple[Request, LedgerNote]:
    """A refusal always says why: it is printed on the answer (熊本市 様式2)."""
    if not reason.strip():
        raise AccessError("a refusal needs a reason; it is printed on the answer")
    _decider(access, request, grant)
    moved = request.moved(RequestState.REFUSED, decided_by=grant.actor, decided_role=grant.role,
                          decided_at=_stamp(now), decision_reason=reason.strip())
    return moved, LedgerNote(AccessEvent.REQUEST_REFUSED, grant, reason=reason.strip(), details=moved.summary())


def instruct(access: Access, request: Request, grant: Grant, contractor: str, contractor_role: str,
             now: datetime) -> tuple[Request, LedgerNote]:
    """The manager's instruction to a contractor to carry out an approved request
    (さいたま 第5条 様式1 作成指示書)."""
    rule = access.role(contractor_role)
    if rule is None or not rule.needs_instruction:
        raise AccessError(f"{contractor} is not a role that works on instruction; they fulfil requests themselves")
    if request.state is not RequestState.APPROVED:
        raise RequestStateError(f"request {request.number} is {request.state}; only an approved request is instructed")
    moved = replace(request, instructed_to=contractor, instructed_by=grant.actor, instructed_at=_stamp(now))
    return moved, LedgerNote(AccessEvent.REQUEST_INSTRUCTED, grant, approved_by=request.decided_by,
                             details={**moved.summary(), "instructed_to": contractor})


def may_fulfil(access: Access, request: Request, grant: Grant) -> None:
    """Whether this person may carry out this request now; raises otherwise."""
    if request.state is not RequestState.APPROVED:
        raise RequestStateError(f"request {request.number} is {request.state}; only an approved request is fulfilled")
    rule = access.roles[grant.role]
    if rule.needs_instruction and request.instructed_to != grant.actor:
        raise Forbidden(f"{rule.title} {grant.actor} acts only on the manager's instruction, and request "
                        f"{request.number} was not instructed to them ({rule.clause})")


def fulfilled(request: Request, grant: Grant, now: datetime, **details: Any) -> tuple[Request, LedgerNote]:
    moved = request.moved(RequestState.FULFILLED, fulfilled_by=grant.actor, fulfilled_at=_stamp(now))
    return moved, LedgerNote(AccessEvent.REQUEST_FULFILLED, grant, approved_by=request.decided_by,
                             details={**moved.summary(), **details})


def close(request: Request, grant: Grant, now: datetime, reason: str = "") -> tuple[Request, LedgerNote]:
    """The requester's use is over (its copies are tracked on until disposed)."""
    moved = request.moved(RequestState.CLOSED, closed_at=_stamp(now))
    return moved, LedgerNote(AccessEvent.REQUEST_CLOSED, grant, reason=reason.strip() or None,
                             details=moved.summary())
