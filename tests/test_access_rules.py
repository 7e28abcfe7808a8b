"""The access core alone: roles and deputies, purposes, the request state machine, copy deadlines.

No store and no clock: every decision is a function of the policy, the person and `now`."""
from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from access.copies import CopyRecord, copy_deadline, copy_number, fiscal_year, overdue
from access.errors import AccessError, Forbidden
from access.people import after_failure, hash_password, password_matches
from access.requests import (
    TRANSITIONS,
    AccessEvent,
    RequestState,
    RequestStateError,
    approve,
    close,
    file_request,
    fulfilled,
    instruct,
    may_fulfil,
    refuse,
)
from access.rules import Actor, permit
from policy.access import Access, Action, Wanted, describe_access
from policy.loader import PolicyError, load_policy, parse_policy

POLICIES = Path(__file__).resolve().parents[1] / "policies"
NOW = datetime(2026, 11, 20, 10, 30, tzinfo=ZoneInfo("Asia/Tokyo"))


def access_of(name: str) -> Access:
    access = load_policy(POLICIES / f"{name}.yaml").access
    assert access is not None
    return access


@pytest.mark.parametrize("name", ["shinagawa", "matsumoto", "yamagata", "kumamoto", "saitama"])
def test_every_example_policy_has_access_rules_with_clauses(name: str) -> None:
    access = access_of(name)
    assert access.forms == name
    assert all(role.clause for role in access.roles.values())
    assert all(p.clause for p in access.purposes) and access.copies.clause and access.listening_clause
    assert any(Action.MANAGE_USERS in role.may for role in access.roles.values())


def test_a_role_acts_within_its_rights_only() -> None:
    access = access_of("kumamoto")
    chief = Actor("sato", "requester")
    assert permit(access, chief, Action.REQUEST).role == "requester"
    with pytest.raises(Forbidden, match="主管課長.*may not approve"):
        permit(access, chief, Action.APPROVE)
    with pytest.raises(Forbidden, match="not in the policy"):
        permit(access, Actor("x", "janitor"), Action.SEARCH)


def test_a_deputy_acts_for_the_manager_only_while_the_manager_is_absent() -> None:
    access = access_of("matsumoto")
    with pytest.raises(Forbidden, match="only while tanaka is marked absent"):
        permit(access, Actor("suzuki", "deputy", deputy_of="tanaka"), Action.APPROVE)
    grant = permit(access, Actor("suzuki", "deputy", deputy_of="tanaka", principal_absent=True), Action.APPROVE)
    assert (grant.role, grant.acting_for) == ("manager", "tanaka")
    assert grant.ledger_details() == {"role": "manager", "role_title": "管理責任者（人事課長）", "acting_for": "tanaka"}


def _filed(access: Access, purpose: str, wanted: Wanted, by: Actor) -> tuple:
    return file_request(access, permit(access, by, Action.REQUEST), "R2026-0001", department="市民課",
                        purpose=purpose, wanted=wanted, call_ids=("c1",), details="11/20 10:30頃", now=NOW)


def test_purposes_come_from_the_policy_and_limit_what_is_asked() -> None:
    access = access_of("yamagata")
    handler = Actor("ito", "handler")
    with pytest.raises(Forbidden, match="not one the policy allows"):
        _filed(access, "curiosity", Wanted.COPY, handler)
    with pytest.raises(Forbidden, match="allows extension_only, not copy"):
        _filed(access, "extension", Wanted.COPY, handler)
    request, note = _filed(access, "extension", Wanted.EXTENSION_ONLY, handler)
    assert request.state is RequestState.REQUESTED and note.event is AccessEvent.REQUEST_FILED
    assert "第9条1(4)" in (note.reason or "")


def test_listening_on_the_device_is_refused_where_the_policy_forbids_it() -> None:
    access = parse_policy((POLICIES / "saitama.yaml").read_text(encoding="utf-8").replace(
        "      wanted: [copy]", "      wanted: [copy, listen]"), "saitama.yaml").access
    assert access is not None
    with pytest.raises(Forbidden, match="not listened to on the device"):
        _filed(access, "article1", Wanted.LISTEN, Actor("staff1", "staff"))


def test_nobody_decides_their_own_request_and_refusals_say_why() -> None:
    access = access_of("matsumoto")
    manager = Actor("tanaka", "manager")
    handler = Actor("ito", "handler")
    own, _ = _filed(access, "law", Wanted.COPY, handler)
    with pytest.raises(Forbidden, match="nobody decides their own request"):
        approve(access, replace(own, requester="tanaka"), permit(access, manager, Action.APPROVE), NOW)
    with pytest.raises(AccessError, match="needs a reason"):
        refuse(access, own, permit(access, manager, Action.APPROVE), NOW, " ")
    refused, note = refuse(access, own, permit(access, manager, Action.APPROVE), NOW, "目的に該当しない")
    assert refused.state is RequestState.REFUSED and refused.decision_reason == "目的に該当しない"
    with pytest.raises(RequestStateError, match="refused; it cannot become approved"):
        approve(access, refused, permit(access, manager, Action.APPROVE), NOW)


def test_a_deputy_cannot_approve_a_request_of_the_manager_they_stand_in_for() -> None:
    access = access_of("matsumoto")
    request, _ = _filed(access, "law", Wanted.COPY, Actor("ito", "handler"))
    request = replace(request, requester="tanaka")
    deputy = permit(access, Actor("suzuki", "deputy", deputy_of="tanaka", principal_absent=True), Action.APPROVE)
    with pytest.raises(Forbidden, match="own request"):
        approve(access, request, deputy, NOW)


def test_a_contractor_fulfils_only_what_it_was_instructed_to() -> None:
    access = access_of("saitama")
    request, _ = _filed(access, "article1", Wanted.COPY, Actor("staff1", "staff"))
    manager = permit(access, Actor("kimura", "manager"), Action.APPROVE)
    approved, note = approve(access, request, manager, NOW, "第1条の目的")
    assert note.approved_by == "kimura"
    contractor = permit(access, Actor("vendor", "contractor"), Action.FULFIL)
    with pytest.raises(Forbidden, match="acts only on the manager's instruction"):
        may_fulfil(access, approved, contractor)
    with pytest.raises(AccessError, match="not a role that works on instruction"):
        instruct(access, approved, manager, "staff1", "staff", NOW)
    instructed, note = instruct(access, approved, manager, "vendor", "contractor", NOW)
    assert note.event is AccessEvent.REQUEST_INSTRUCTED and instructed.instructed_to == "vendor"
    may_fulfil(access, instructed, contractor)
    done, _ = fulfilled(instructed, contractor, NOW)
    closed, _ = close(done, manager, NOW)
    assert closed.state is RequestState.CLOSED
    with pytest.raises(RequestStateError):
        may_fulfil(access, closed, contractor)


def test_the_request_table_has_every_state_and_ends_in_closed_or_refused() -> None:
    assert set(TRANSITIONS) == set(RequestState)
    assert [s for s, targets in TRANSITIONS.items() if not targets] == [RequestState.REFUSED, RequestState.CLOSED]


def test_copy_deadlines_follow_the_fiscal_year_or_the_purpose() -> None:
    saitama = access_of("saitama").copies
    assert fiscal_year(date(2026, 3, 31)) == 2025 and fiscal_year(date(2026, 4, 1)) == 2026
    assert copy_deadline(saitama, date(2026, 3, 31)) == date(2027, 3, 31)
    assert copy_deadline(saitama, date(2026, 4, 1)) == date(2028, 3, 31)
    assert copy_deadline(access_of("shinagawa").copies, date(2026, 4, 1)) is None
    assert copy_number(2026, 7) == "C2026-0007"
    late = CopyRecord("C2026-0001", "R2026-0001", "c1", "ab", "p", "h", "m", "2026-01-01", "2026-03-31")
    kept = CopyRecord("C2026-0002", "R2026-0001", "c1", "ab", "p", "h", "m", "2026-01-01", None)
    assert overdue([late, kept], date(2026, 4, 1)) == [late] and overdue([late], date(2026, 3, 31)) == []


def test_passwords_are_argon2id_and_lockout_counts_failures() -> None:
    stored = hash_password("correct horse battery")
    assert stored.startswith("$argon2id$") and password_matches(stored, "correct horse battery")
    assert not password_matches(stored, "wrong") and not password_matches("garbage", "x")
    with pytest.raises(AccessError, match="at least 12"):
        hash_password("short")
    assert after_failure(3, NOW, 5, 15) == (4, None)
    assert after_failure(4, NOW, 5, 15)[1] == NOW.replace(minute=45)


def test_an_access_section_that_contradicts_itself_is_refused_with_the_line() -> None:
    text = (POLICIES / "kumamoto.yaml").read_text(encoding="utf-8").replace("  approvers: [manager]",
                                                                           "  approvers: [requester]")
    with pytest.raises(PolicyError, match="approver roles without 'approve'"):
        parse_policy(text, "kumamoto.yaml")


@pytest.mark.parametrize("name", ["shinagawa", "matsumoto", "yamagata", "kumamoto", "saitama"])
def test_policy_check_says_who_may_do_what_with_the_clauses(name: str) -> None:
    access = access_of(name)
    for lang in ("ja", "en"):
        text = "\n".join(describe_access(access, lang))
        assert all(role.title in text and role.clause in text for role in access.roles.values())
        assert all(p.clause in text for p in access.purposes) and access.copies.clause in text
    assert ("翌年度末" in "\n".join(describe_access(access, "ja"))) == (name == "saitama")
