"""Harassment marks on the console (issue 18): mark a call, withdraw a mark, release an evidence
hold, the live alert, the warned numbers and the monthly report with its plot.

Every handler asks the access rules (mark, manage_marks, read_ledger) before it does anything,
so a forged form or another role's URL is refused on the server and the refusal ledgered. The
live alert is for the roles the policy's `harassment.alert` names: it shows the line (the
city-side number) and the extension that marked the call, never the caller's number; a
listen-in link only where the policy lets those roles listen (alert.listen, itself allowed only
where recordings may be heard on the device), checked again when it is followed and ledgered.
The alert page reloads itself (a meta refresh: the console runs no script).
"""
from __future__ import annotations

import time
from datetime import datetime

from aiohttp import web

from access.errors import Forbidden
from access.monthly import report_csv, report_pdf
from access.reporting import Lines, monthly_report
from access.requests import AccessEvent
from access.rules import Actor
from policy.access import Action
from storage.marks import MarkBook
from storage.records import sealed_files, sealed_row
from storage.warnings import WarningList

from .context import Console, actor_of, console_of, render
from .plots import bar_chart

__all__ = ["ALERT_HOURS", "add_routes", "may_see_alerts"]

ALERT_HOURS = 12
"""How far back the alert page lists marks made during calls: a working day."""
REFRESH_SECONDS = 10
SHOWN = "%Y-%m-%d %H:%M:%S"
"""How the console shows a time: the same as its `when` filter, in the policy's zone."""


def _text(form: object, name: str) -> str:
    value = form.get(name, "")  # type: ignore[attr-defined]
    return value.strip() if isinstance(value, str) else ""


def _local(console: Console, stamp: str) -> str:
    """A stored ISO time as the supervisor reads a clock: in the city's zone, to the second."""
    return datetime.fromisoformat(stamp).astimezone(console.tz).strftime(SHOWN)


def may_see_alerts(console: Console, me: Actor) -> bool:
    section = console.policy.harassment
    return section is not None and me.role in section.alert.roles


def _alert_roles(console: Console, me: Actor) -> None:
    """Only the roles the policy names see the live alert (a refusal is ledgered like any other)."""
    if not may_see_alerts(console, me):
        section = console.policy.harassment
        clause = f" ({section.alert.clause})" if section is not None and section.alert.clause else ""
        console.store.ledger.append(AccessEvent.REFUSED_ACTION, me.name, console.store.now(),
                                    reason="not a role the policy's harassment alert names", action="alerts",
                                    role=me.role)
        raise Forbidden(f"the live harassment alert is for the roles the policy names{clause}")


def _labels(console: Console) -> dict[str, str]:
    section = console.policy.harassment
    return {c.id: c.label for c in section.categories} if section is not None else {}


async def mark(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    grant = console.access.authorise(actor_of(request), Action.MARK)
    form = await request.post()
    with MarkBook(console.store, console.policy.harassment) as book:
        book.add(request.match_info["id"], _text(form, "category"), marked_by=grant.actor, via="console",
                 note=_text(form, "note"), role=grant.ledger_details())
    raise web.HTTPSeeOther(f"/calls/{request.match_info['id']}#marks")


async def withdraw(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    grant = console.access.authorise(actor_of(request), Action.MANAGE_MARKS)
    form = await request.post()
    with MarkBook(console.store, console.policy.harassment) as book:
        withdrawn = book.withdraw(request.match_info["mark"], by=grant.actor, reason=_text(form, "reason"),
                                  role=grant.ledger_details())
    raise web.HTTPSeeOther(f"/calls/{withdrawn.call_id}#marks")


async def release(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    grant = console.access.authorise(actor_of(request), Action.MANAGE_MARKS)
    form = await request.post()
    with MarkBook(console.store, console.policy.harassment) as book:
        book.release_hold(request.match_info["id"], by=grant.actor, reason=_text(form, "reason"),
                          role=grant.ledger_details())
    raise web.HTTPSeeOther(f"/calls/{request.match_info['id']}#marks")


async def alerts(request: web.Request) -> web.StreamResponse:
    """Marks staff made during their calls in the last hours, newest first; the ongoing ones first
    in line for the supervisor. Reloads itself."""
    console = console_of(request)
    me = actor_of(request)
    _alert_roles(console, me)
    section = console.policy.harassment
    assert section is not None
    lines = Lines(console.policy)
    with MarkBook(console.store, section) as book:
        found = book.alerts(time.time() - ALERT_HOURS * 3600)
    shown = [{"mark": a.mark_id, "call": a.call_id, "category": _labels(console).get(a.category, a.category),
              "at": _local(console, a.marked_at), "line": a.line or "-", "department": lines.of(a.line)[1],
              "extension": a.extension or "-", "ongoing": a.ongoing} for a in found]
    return render(request, "alerts.html", alerts=shown, refresh=REFRESH_SECONDS, hours=ALERT_HOURS,
                  listen=section.alert.listen, clause=section.alert.clause)


async def listen_in(request: web.Request) -> web.StreamResponse:
    """The marked call's audio for a role the alert names, where the policy lets it listen;
    ledgered as listening. A call still going on is not sealed yet: it says so, and can be heard
    as soon as it ends."""
    console = console_of(request)
    me = actor_of(request)
    _alert_roles(console, me)
    section = console.policy.harassment
    assert section is not None
    if not section.alert.listen or console.access.access.on_device_listening != "allowed":
        console.store.ledger.append(AccessEvent.REFUSED_ACTION, me.name, console.store.now(),
                                    reason="the policy does not let the alert's roles listen in", action="listen_in",
                                    role=me.role)
        raise Forbidden(f"listening in is not allowed by the policy ({console.access.access.listening_clause})")
    call_id = request.match_info["id"]
    with MarkBook(console.store, section) as book:
        if not any(m.active and m.via == "dtmf" for m in book.of_call(call_id)):
            raise web.HTTPNotFound()
    row = console.store.index.get(call_id)
    if row is None or not row.sealed:
        return render(request, "error.html", status=409, heading="still_on_call", message="")
    sealed = sealed_row(console.store, call_id)
    console.store.ledger.append(AccessEvent.LISTENED, me.name, console.store.now(), call_id=call_id,
                                sha256=sealed.sha256, via="harassment_alert", role=me.role)
    response = web.StreamResponse(headers={"Content-Type": "audio/wav", "Content-Disposition": "inline"})
    await response.prepare(request)
    for chunk in sealed_files(console.store, sealed)[0].chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


async def warnings(request: web.Request) -> web.StreamResponse:
    """The numbers that hear the warning, for the manager who may clear them."""
    console = console_of(request)
    console.access.authorise(actor_of(request), Action.MANAGE_MARKS)
    rule = console.policy.harassment.warning if console.policy.harassment is not None else None
    numbers = []
    if rule is not None:
        with WarningList(console.store.index.path, rule, console.policy.numbering.country_code) as found:
            numbers = [{"number": n.number, "calls": n.calls,
                        "last": datetime.fromtimestamp(n.last_marked_ts, console.tz).strftime(SHOWN)}
                       for n in found.numbers(time.time())]
    return render(request, "warnings.html", rule=rule, numbers=numbers)


async def clear_warning(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    grant = console.access.authorise(actor_of(request), Action.MANAGE_MARKS)
    rule = console.policy.harassment.warning if console.policy.harassment is not None else None
    if rule is None:
        raise web.HTTPNotFound()
    form = await request.post()
    with WarningList(console.store.index.path, rule, console.policy.numbering.country_code) as found:
        found.clear(console.store, _text(form, "number"), by=grant.actor, reason=_text(form, "reason"),
                    role=grant.ledger_details())
    raise web.HTTPSeeOther("/warnings")


def _month(request: web.Request, console: Console) -> str:
    month = request.query.get("month", "").strip()
    return month or datetime.now(console.tz).strftime("%Y-%m")


async def report(request: web.Request) -> web.StreamResponse:
    """The month's counts as a table and a bar chart of marked calls per category."""
    console = console_of(request)
    month = _month(request, console)
    counts = monthly_report(console.access, console.policy, actor_of(request), month)
    total = counts.total
    plot = bar_chart([float(total.marks.get(key, 0)) for key, _ in counts.categories],
                     [label for _, label in counts.categories], "件")
    per_line = bar_chart([float(c.marked_calls) for _, _, c in counts.lines],
                         [f"{dept}" if line == dept else f"{dept} {line}" for line, dept, _ in counts.lines], "件")
    return render(request, "report.html", report=counts, month=month, plot=plot, per_line=per_line)


async def report_file(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    month = _month(request, console)
    counts = monthly_report(console.access, console.policy, actor_of(request), month)
    kind = request.match_info["kind"]
    if kind == "pdf":
        body, content_type = report_pdf(counts), "application/pdf"
    elif kind == "csv":
        body, content_type = report_csv(counts), "text/csv; charset=utf-8"
    else:
        raise web.HTTPNotFound()
    return web.Response(body=body, headers={
        "Content-Type": content_type,
        "Content-Disposition": f'attachment; filename="harassment-report-{counts.month}.{kind}"'})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/calls/{id}/mark", mark)
    router.add_post("/marks/{mark}/withdraw", withdraw)
    router.add_post("/calls/{id}/release-evidence", release)
    router.add_get("/alerts", alerts)
    router.add_get("/calls/{id}/listen-in", listen_in)
    router.add_get("/warnings", warnings)
    router.add_post("/warnings/clear", clear_warning)
    router.add_get("/report", report)
    router.add_get("/report/monthly.{kind}", report_file)
