"""The access layer's rules at work, wherever the records are: sign people in, and carry out
what the core decides, ledgering every act and every refusal.

One class holds what does not depend on where the calls and the ledger are, so a rule holds the
same on one appliance (access/service.py: the local index, the data folder's ledger, audio read
from its own vaults) and at the centre of several sites (access/centre_service.py: the centre's
PostgreSQL, its own ledger chain, audio fetched from the owning site).  The subclasses say where
calls are found, where the ledger is, and how a recording is handed out.  Every ledger entry names
the person, the role they acted in and, for a deputy, whom they acted for; a refusal that touched
records is ledgered too.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Protocol, Self, TypeVar

from policy.access import Access, Action, Wanted
from policy.schema import Policy
from storage.layout import ensure_private_dir
from storage.ledger import LedgerEntry
from storage.store import actor as shell_user

from . import requests as core
from .copies import CopyRecord, overdue
from .errors import AccessError, Forbidden
from .forms import AnswerForm, FormCall, RequestForm, answer_pdf, ledger_book_csv, ledger_book_pdf, request_pdf
from .people import Account, BadCredentials, after_failure, hash_password, password_matches
from .requests import AccessEvent, LedgerNote, Request, RequestState
from .rules import Actor, Grant, permit
from .store import AccessStore

__all__ = ["DISCLOSING", "AccessDesk", "CallFacts", "Fulfilment"]

T = TypeVar("T")

DISCLOSING = (Wanted.COPY, Wanted.LISTEN)
"""What a request may ask for that discloses a withheld caller's kept number with the call:
the whole recording, approved for its purpose.  The extension alone discloses nothing else."""


class CallFacts(Protocol):
    """What the rules and the forms read of a call: a row of the local index (storage.index.CallRow)
    or of the centre's calls table (access.centre_service.CentreCall)."""

    @property
    def id(self) -> str: ...
    @property
    def started_at(self) -> str: ...
    @property
    def ended_at(self) -> str | None: ...
    @property
    def duration(self) -> float | None: ...
    @property
    def direction(self) -> str: ...
    @property
    def local_number(self) -> str | None: ...
    @property
    def remote_number(self) -> str | None: ...
    @property
    def extension(self) -> str | None: ...
    @property
    def withheld_number(self) -> str | None: ...
    @property
    def sha256(self) -> str | None: ...
    @property
    def erased_at(self) -> str | None: ...
    @property
    def erased_reason(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Fulfilment:
    """What carrying out a request produced: copies, files to listen to, or extensions; and the
    withheld callers' numbers the policy kept masked for its calls (call id, number)."""

    request: Request
    copies: tuple[CopyRecord, ...] = ()
    files: tuple[Path, ...] = ()
    extensions: tuple[tuple[str, str | None], ...] = ()
    numbers: tuple[tuple[str, str], ...] = ()


class AccessDesk:
    """People, requests and copies over one set of access tables; the subclass says where calls,
    the ledger and the recordings are."""

    tables: AccessStore
    access: Access
    timezone: str

    def _setup(self, policy: Policy, tables: Callable[[], AccessStore]) -> None:
        """Read the policy's access rules, then open the tables (not before: a policy without
        rules is refused without touching a database)."""
        if policy.access is None:
            raise AccessError("the policy has no access: section; add the organisation's roles, purposes and "
                              "copy rules (see policies/ for each guideline's)")
        self.access = policy.access
        self._extension = re.compile(policy.numbering.extension_pattern)
        self.timezone = policy.timezone
        self.tables = tables()

    def close(self) -> None:
        self.tables.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _may_listen(self, by: Actor, number: str, call_id: str) -> tuple[Grant, Request]:
        """The checks before a call of a listening request is played, wherever its audio is: the
        policy allows listening, the actor may fulfil, the request asks for this call, and an
        unfulfilled one may be fulfilled now."""
        if self.access.on_device_listening == "never":
            raise Forbidden(f"recordings are not listened to on the device ({self.access.listening_clause})")
        grant = self._permit(by, Action.FULFIL)
        request = self.request(number)
        if request.wanted is not Wanted.LISTEN or call_id not in request.call_ids:
            raise Forbidden(f"request {number} does not ask to listen to {call_id}")
        if request.state is not RequestState.FULFILLED:
            self._core(grant, lambda: core.may_fulfil(self.access, request, grant))
        return grant, request

    # ---- where things are (the subclass's) ----------------------------------------
    def now(self) -> datetime:
        raise NotImplementedError

    def _append(self, event: AccessEvent, actor: str, now: datetime, reason: str | None = None,
                approved_by: str | None = None, **details: object) -> LedgerEntry:
        raise NotImplementedError

    def _find_call(self, call_id: str) -> CallFacts | None:
        raise NotImplementedError

    def _ledger_entries(self) -> Iterable[LedgerEntry]:
        raise NotImplementedError

    def _signing_fingerprint(self, copies: list[CopyRecord]) -> str | None:
        raise NotImplementedError

    def _default_exports(self) -> Path:
        raise NotImplementedError

    def _copies(self, grant: Grant, request: Request, holder: str, folder: Path, now: datetime) -> Fulfilment:
        raise NotImplementedError

    def _listening(self, grant: Grant, request: Request, folder: Path, now: datetime) -> Fulfilment:
        raise NotImplementedError

    def _call(self, call_id: str) -> CallFacts:
        row = self._find_call(call_id)
        if row is None:
            raise AccessError(f"no call with id {call_id}")
        return row

    # ---- people -----------------------------------------------------------------
    def sign_in(self, name: str, password: str) -> Actor:
        """The person behind a name and password, or BadCredentials (ledgered, with lockout)."""
        now = self.now()
        found = self.tables.account(name)
        if found is None or found[0].disabled:
            self._ledger_plain(AccessEvent.LOGIN_FAILED, name, now, reason="unknown or disabled account")
            raise BadCredentials("wrong name or password, or the account is disabled")
        account, stored = found
        if account.locked_until is not None and now < datetime.fromisoformat(account.locked_until):
            raise BadCredentials(f"{name} is locked until {account.locked_until} after repeated failures")
        if not password_matches(stored, password):
            failures, locked = after_failure(account.failed_logins, now, self.access.max_failed_logins,
                                             self.access.lockout_minutes)
            until = locked.isoformat(timespec="seconds") if locked is not None else None
            self.tables.update_account(name, failed_logins=failures, locked_until=until)
            self._ledger_plain(AccessEvent.LOGIN_FAILED, name, now, reason="wrong password", failures=failures)
            if until is not None:
                self._ledger_plain(AccessEvent.ACCOUNT_LOCKED, name, now, reason=f"{failures} failed sign-ins",
                                   until=until)
            raise BadCredentials("wrong name or password, or the account is disabled")
        if account.failed_logins or account.locked_until:
            self.tables.update_account(name, failed_logins=0, locked_until=None)
        return self._actor(account)

    def actor_named(self, name: str) -> Actor:
        """The person behind a live session, as they are now: a session of an account disabled
        since it began ends here."""
        found = self.tables.account(name)
        if found is None or found[0].disabled:
            raise BadCredentials("the account no longer exists or is disabled; sign in again")
        return self._actor(found[0])

    def note_session(self, by: Actor, started: bool, via: str) -> None:
        """Sign-in and sign-out of the console, in the ledger like everything else."""
        self._ledger(LedgerNote(AccessEvent.LOGIN if started else AccessEvent.LOGOUT,
                                Grant(by.name, by.role, self.access.roles[by.role].title), details={"via": via}),
                     self.now())

    def may(self, by: Actor, action: Action) -> bool:
        """Whether a screen should offer an action; the action itself asks again and ledgers a
        refusal, so this is a courtesy, never the rule."""
        try:
            permit(self.access, by, action)
        except Forbidden:
            return False
        return True

    def authorise(self, by: Actor, action: Action) -> Grant:
        """The grant for an action outside requests (hold, verify, the ledger, search), or
        Forbidden, ledgered."""
        return self._permit(by, action)

    def _actor(self, account: Account) -> Actor:
        principal = self.tables.account(account.deputy_of) if account.deputy_of else None
        return Actor(account.name, account.role, account.deputy_of,
                     principal_absent=principal is not None and principal[0].absent)

    def add_user(self, by: Actor | None, name: str, role: str, password: str, deputy_of: str | None = None) -> Account:
        """A new account.  The first one (by=None, from the administrator's shell) must be able to
        manage users; after that only a person whose role may manage users adds accounts."""
        now = self.now()
        rule = self.access.role(role)
        if rule is None:
            raise AccessError(f"role {role!r} is not in the policy; roles: {', '.join(self.access.roles)}")
        if by is None and self.tables.account_count():
            raise Forbidden("accounts exist: sign in as a person who may manage users")
        if by is None and Action.MANAGE_USERS not in rule.may:
            raise Forbidden("the first account must be one that may manage users (the 管理責任者)")
        grant = permit(self.access, by, Action.MANAGE_USERS) if by is not None else None
        if rule.acts_for is not None and (deputy_of is None or self.tables.account(deputy_of) is None):
            raise AccessError(f"a {rule.title} stands in for someone: give --deputy-of NAME of an existing account")
        if self.tables.account(name) is not None:
            raise AccessError(f"an account named {name} exists")
        account = Account(name, role, deputy_of if rule.acts_for else None, False, False, 0, None,
                          now.isoformat(timespec="seconds"))
        self.tables.add_account(account, hash_password(password))
        details = {"user": name, "user_role": role, "deputy_of": account.deputy_of}
        if grant is None:
            self._ledger_plain(AccessEvent.USER_ADDED, shell_user(), now, reason="first account", **details)
        else:
            self._ledger(LedgerNote(AccessEvent.USER_ADDED, grant, details=details), now)
        return account

    def disable_user(self, by: Actor, name: str, reason: str) -> None:
        grant = self._permit(by, Action.MANAGE_USERS)
        self._existing(name)
        self.tables.update_account(name, disabled=True)
        self._ledger(LedgerNote(AccessEvent.USER_DISABLED, grant, reason=reason, details={"user": name}),
                     self.now())

    def change_password(self, by: Actor, name: str, new_password: str) -> None:
        """One's own password, or anyone's by a person who manages users."""
        grant = (Grant(by.name, by.role, self.access.roles[by.role].title) if by.name == name
                 else self._permit(by, Action.MANAGE_USERS))
        self._existing(name)
        self.tables.update_account(name, password_hash=hash_password(new_password), failed_logins=0,
                                   locked_until=None)
        self._ledger(LedgerNote(AccessEvent.PASSWORD_CHANGED, grant, details={"user": name}), self.now())

    def set_absent(self, by: Actor, name: str, absent: bool) -> None:
        """Mark a person absent or back: while a manager is absent, their deputy acts for them."""
        grant = (Grant(by.name, by.role, self.access.roles[by.role].title) if by.name == name
                 else self._permit(by, Action.MANAGE_USERS))
        self._existing(name)
        self.tables.update_account(name, absent=absent)
        self._ledger(LedgerNote(AccessEvent.ABSENCE_CHANGED, grant, details={"user": name, "absent": absent}),
                     self.now())

    def users(self) -> list[Account]:
        return self.tables.accounts()

    def _existing(self, name: str) -> Account:
        found = self.tables.account(name)
        if found is None:
            raise AccessError(f"no account named {name}")
        return found[0]

    # ---- requests ---------------------------------------------------------------
    def file(self, by: Actor, *, department: str, purpose: str, wanted: Wanted, call_ids: tuple[str, ...],
             details: str = "") -> Request:
        grant = self._permit(by, Action.REQUEST)
        for call_id in call_ids:
            self._call(call_id)
        now = self.now()
        try:
            with self.tables.transaction():
                number = f"R{now.year}-{self.tables.next_serial(f'request-{now.year}'):04d}"
                request, note = core.file_request(self.access, grant, number, department=department,
                                                  purpose=purpose, wanted=wanted, call_ids=call_ids,
                                                  details=details, now=now)
                self.tables.save_request(request)
        except Forbidden as exc:
            self._refused(grant, exc)  # after the rollback: where the ledger is in the same database, it stays
            raise
        self._ledger(note, now)
        return request

    def approve(self, by: Actor, number: str, reason: str = "") -> Request:
        return self._decide(by, number, lambda grant, request, now: core.approve(self.access, request, grant, now,
                                                                                 reason))

    def refuse(self, by: Actor, number: str, reason: str) -> Request:
        return self._decide(by, number, lambda grant, request, now: core.refuse(self.access, request, grant, now,
                                                                                reason))

    def _decide(self, by: Actor, number: str,
                step: Callable[[Grant, Request, datetime], tuple[Request, LedgerNote]]) -> Request:
        grant = self._permit(by, Action.APPROVE)
        request = self.request(number)
        now = self.now()
        moved, note = self._core(grant, lambda: step(grant, request, now))
        self.tables.save_request(moved)
        self._ledger(note, now)
        return moved

    def instruct(self, by: Actor, number: str, contractor: str) -> Request:
        grant = self._permit(by, Action.INSTRUCT)
        request = self.request(number)
        account = self._existing(contractor)
        now = self.now()
        moved, note = self._core(grant, lambda: core.instruct(self.access, request, grant, contractor,
                                                              account.role, now))
        self.tables.save_request(moved)
        self._ledger(note, now)
        return moved

    def fulfil(self, by: Actor, number: str, *, holder: str, out_dir: Path | None = None) -> Fulfilment:
        """Carry out an approved request: numbered copy packages, a file to listen to, or the
        extension of each call; then the request is fulfilled."""
        grant = self._permit(by, Action.FULFIL)
        request = self.request(number)
        self._core(grant, lambda: core.may_fulfil(self.access, request, grant))
        now = self.now()
        if request.wanted is Wanted.EXTENSION_ONLY:
            result = self._extensions(grant, request, now)
        else:
            folder = self._export_dir(out_dir)
            if request.wanted is Wanted.COPY:
                result = self._copies(grant, request, holder, folder, now)
            else:
                result = self._listening(grant, request, folder, now)
        numbers = self._disclose(grant, request, now, via="fulfilment")
        moved, note = core.fulfilled(request, grant, now, holder=holder)
        self.tables.save_request(moved)
        self._ledger(note, now)
        return Fulfilment(moved, result.copies, result.files, result.extensions, numbers)

    def withheld_numbers(self, by: Actor, number: str) -> tuple[tuple[str, str], ...]:
        """The kept numbers of withheld callers among a fulfilled request's calls, for the person
        who carries requests out (the console's request page); each showing is ledgered."""
        grant = self._permit(by, Action.FULFIL)
        request = self.request(number)
        if request.state is not RequestState.FULFILLED:
            return ()
        return self._disclose(grant, request, self.now(), via="console")

    def _disclose(self, grant: Grant, request: Request, now: datetime, via: str) -> tuple[tuple[str, str], ...]:
        """A withheld caller's number is shown only here: for a request approved for the whole
        recording (copy, listening), to the person carrying it out, ledgered with the request."""
        if request.wanted not in DISCLOSING:
            return ()
        found = []
        for call_id in request.call_ids:
            row = self._call(call_id)
            if row.withheld_number and not row.erased_at:
                found.append((call_id, row.withheld_number))
                self._ledger(LedgerNote(AccessEvent.WITHHELD_NUMBER_DISCLOSED, grant, approved_by=request.decided_by,
                                        details={"request": request.number, "call_id": call_id, "via": via}), now)
        return tuple(found)

    def close_request(self, by: Actor, number: str, reason: str = "") -> Request:
        request = self.request(number)
        grant = self._permit(by, Action.APPROVE if by.name != request.requester else Action.REQUEST)
        now = self.now()
        moved, note = self._core(grant, lambda: core.close(request, grant, now, reason))
        self.tables.save_request(moved)
        self._ledger(note, now)
        return moved

    def request(self, number: str) -> Request:
        request = self.tables.request(number)
        if request is None:
            raise AccessError(f"no request numbered {number}")
        return request

    def requests(self) -> list[Request]:
        return self.tables.requests()


    # ---- fulfilment -------------------------------------------------------------
    def _export_dir(self, out_dir: Path | None) -> Path:
        """Copies are written only inside the folder the policy allows (default: the data folder's
        exports/), so nobody can drop a recording on a share the administrator did not choose."""
        allowed = (self.access.copies.export_dir or self._default_exports()).resolve()
        folder = (out_dir or allowed).resolve()
        if folder != allowed and not folder.is_relative_to(allowed):
            raise Forbidden(f"copies are written only under {allowed} (the policy's access.copies.export_dir)")
        ensure_private_dir(folder)
        return folder

    def _extensions(self, grant: Grant, request: Request, now: datetime) -> Fulfilment:
        """Which extension placed each outbound call (山形市 第9条1(4)): the extension and
        nothing else of the call is disclosed.  The recorder keeps it apart from the city-side
        number (the DID or representative number the trunk showed)."""
        found = []
        for call_id in request.call_ids:
            row = self._call(call_id)
            older = row.local_number if row.local_number and self._extension.fullmatch(row.local_number) else None
            extension = (row.extension or older) if row.direction == "outbound" else None
            found.append((call_id, extension))
            self._ledger(LedgerNote(AccessEvent.EXTENSION_DISCLOSED, grant, approved_by=request.decided_by, details={
                "request": request.number, "call_id": call_id, "extension": extension}), now)
        return Fulfilment(request, extensions=tuple(found))

    # ---- forms ------------------------------------------------------------------
    def request_form(self, by: Actor, number: str) -> bytes:
        """The request on the organisation's form (依頼書 / 申請書 / 作成指示書), for its
        requester or a person who decides requests."""
        request = self.request(number)
        self._permit(by, Action.REQUEST if by.name == request.requester else Action.APPROVE)
        return request_pdf(self._request_form(request))

    def answer_form(self, by: Actor, number: str) -> bytes:
        """The decision on the organisation's form (回答書 / 決定通知書 / 提出書): the calls
        provided with their sealed SHA-256, erased ones with their date, or 該当データなし; the
        copies, their deadline and the fingerprint their packages are signed with."""
        self._permit(by, Action.APPROVE)
        request = self.request(number)
        if request.decided_at is None:
            raise AccessError(f"request {number} is not decided yet; there is no answer to print")
        copies = [c for c in self.tables.copies() if c.request == number]
        deadlines = sorted(date.fromisoformat(c.deadline) for c in copies if c.deadline)
        decider = self.access.roles.get(request.decided_role or "")
        return answer_pdf(AnswerForm(
            request=self._request_form(request),
            decision="refused" if request.state is RequestState.REFUSED else "approved",
            decided_on=datetime.fromisoformat(request.decided_at).date(),
            decided_by=f"{decider.title if decider else ''}　{request.decided_by}".strip(),
            decision_reason=request.decision_reason or "",
            calls=tuple(self._form_call(call_id) for call_id in request.call_ids
                        if request.state is not RequestState.REFUSED),
            copy_numbers=tuple(c.number for c in copies),
            disposal_deadline=deadlines[0] if deadlines else None,
            recipient_conditions=self.access.copies.conditions,
            signing_key_fingerprint=self._signing_fingerprint(copies) if copies else None))

    def _request_form(self, request: Request) -> RequestForm:
        """The form's approximate fields come from the calls the request identified."""
        purpose = self.access.purpose(request.purpose)
        first = self._find_call(request.call_ids[0])
        started = datetime.fromisoformat(first.started_at) if first is not None else None
        ended = datetime.fromisoformat(first.ended_at) if first is not None and first.ended_at else None
        approver = self.access.roles[self.access.approvers[0]].title
        return RequestForm(
            form_set=self.access.forms, request_number=request.number,
            requested_on=datetime.fromisoformat(request.filed_at).date(),
            requester_name=request.requester, requester_department=request.department, requester_contact="",
            purpose_label=purpose.label if purpose else request.purpose,
            purpose_clause=purpose.clause if purpose else "", wanted=str(request.wanted),
            call_from=started, call_to=ended, call_at_approx=started,
            duration_approx_seconds=round(first.duration) if first is not None and first.duration else None,
            other_party_number=(first.remote_number or "") if first is not None else "",
            city_side_number=(first.local_number or "") if first is not None else "",
            details=request.details, addressee=approver)

    def _form_call(self, call_id: str) -> FormCall:
        row = self._call(call_id)
        return FormCall(record_id=call_id, started_at=row.started_at, duration_seconds=row.duration,
                        direction=row.direction, remote_number=row.remote_number, local_number=row.local_number,
                        sha256=row.sha256 or "", erased_at=row.erased_at, erased_reason=row.erased_reason)

    def ledger_book(self, by: Actor, pdf: bool) -> bytes:
        """The ledger as the 通話記録管理簿 (松本市 第10条): CSV for a spreadsheet, or PDF to file."""
        self._permit(by, Action.READ_LEDGER)
        entries = list(self._ledger_entries())
        if pdf:
            return ledger_book_pdf(entries, organisation=self.access.forms)
        return ledger_book_csv(entries)

    # ---- copies -----------------------------------------------------------------
    def dispose(self, by: Actor, number: str, *, how: str, witness: str | None) -> CopyRecord:
        """Record that a copy was destroyed (品川区 第7条4 復元不可能な方法で): how, by whom, witnessed."""
        grant = self._permit(by, Action.DISPOSE)
        copy = self._held_copy(number)
        if not how.strip():
            raise AccessError("say how the copy was destroyed (--how, e.g. 'DVD-R shredded')")
        now = self.now()
        self.tables.mark_disposed(number, at=now.isoformat(timespec="seconds"), how=how.strip(), by=grant.actor,
                                  witness=witness)
        self._ledger(LedgerNote(AccessEvent.COPY_DISPOSED, grant, reason=how.strip(), details={
            "copy": number, "request": copy.request, "witness": witness}), now)
        disposed = self.tables.copy(number)
        assert disposed is not None
        return disposed

    def package(self, by: Actor, number: str) -> Path:
        """A copy's package, to hand to its holder through the console (ledgered each time)."""
        grant = self._permit(by, Action.FULFIL)
        copy = self._held_copy(number)
        self._ledger(LedgerNote(AccessEvent.COPY_DOWNLOADED, grant, details={"copy": number, "request": copy.request}),
                     self.now())
        return Path(copy.package)

    def _held_copy(self, number: str) -> CopyRecord:
        """A copy still held: a disposed one can be neither handed out nor disposed again."""
        copy = self.tables.copy(number)
        if copy is None:
            raise AccessError(f"no copy numbered {number}")
        if copy.disposed:
            raise AccessError(f"copy {number} was disposed of on {copy.disposed_at}")
        return copy

    def copies(self) -> list[CopyRecord]:
        return self.tables.copies()

    def overdue_copies(self) -> list[CopyRecord]:
        return overdue(self.tables.copies(), self.now().date())

    # ---- plumbing ---------------------------------------------------------------
    def _permit(self, by: Actor, action: Action) -> Grant:
        try:
            return permit(self.access, by, action)
        except Forbidden as exc:
            self._ledger_plain(AccessEvent.REFUSED_ACTION, by.name, self.now(), reason=str(exc),
                               action=str(action), role=by.role)
            raise

    def _core(self, grant: Grant, step: Callable[[], T]) -> T:
        """Run a core decision; a refusal by the rules is ledgered with who tried."""
        try:
            return step()
        except Forbidden as exc:
            self._refused(grant, exc)
            raise

    def _refused(self, grant: Grant, exc: Forbidden) -> None:
        self._ledger_plain(AccessEvent.REFUSED_ACTION, grant.actor, self.now(), reason=str(exc),
                           **grant.ledger_details())

    def _ledger(self, note: LedgerNote, now: datetime) -> None:
        self._append(note.event, note.grant.actor, now, reason=note.reason, approved_by=note.approved_by,
                                 **note.grant.ledger_details(), **note.details)

    def _ledger_plain(self, event: AccessEvent, actor: str, now: datetime, reason: str | None = None,
                      **details: object) -> None:
        self._append(event, actor, now, reason=reason, **details)
