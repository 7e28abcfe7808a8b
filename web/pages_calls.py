"""The status screen, the search, and one call (its metadata, notice, seal, hold and waveform)."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from aiohttp import web

from access.requests import RequestState
from access.service import DISCLOSING
from policy.access import Action, Wanted
from storage.index import CallRow
from storage.marks import MarkBook
from storage.notices import NoticeLog
from storage.records import sealed_files, sealed_row, set_hold
from storage.search import DEFAULT_WINDOW_SECONDS, CallQuery, SearchResult, find, parse_span, parse_time, shown_remote
from wire import g711
from wire.wav import read_wav

from .context import actor_of, console_of, render
from .daemon_status import daemon_status
from .plots import bar_chart, waveform

__all__ = ["SHOWN", "add_routes", "page_of", "pages", "stream_wav"]

SHOWN = 50
"""Candidates on one page of the search: the best first; the rest are counted (ほかN件) and a
link shows the next ones."""
MOST_SHOWN = 500
"""The most a page may be asked to hold (`?per=`): each is read whole and drawn."""

DIRECTIONS = ("inbound", "outbound", "internal")
DAEMON_DEFAULTS: dict[str, object] = {
    "healthy": False, "problems": [], "warnings": [], "recording_stopped": None, "announcer_calls": None,
    "active_calls": 0, "kernel_drops": 0, "last_sip": None, "last_rtp": None, "disk_used_percent": 0.0,
    "store_bytes": None, "capacity_bytes": None, "calls_evicted": 0,
}
"""What the status screen shows when a daemon of another version leaves a field out."""


async def status(request: web.Request) -> web.StreamResponse:
    """Is recording working now: the daemon's own report, today's calls per hour, storage by
    day, and the copies past their disposal date."""
    console = console_of(request)
    health = await daemon_status(console.status_socket)
    if health is not None:
        health = {**DAEMON_DEFAULTS, **health}
    now = datetime.now(console.tz)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month_start = midnight - timedelta(days=29)
    recent = console.store.index.recorded_sizes(month_start.timestamp(), now.timestamp() + 1)
    hours: Counter[int] = Counter()
    days: Counter[object] = Counter()
    for recorded_at, size in recent:
        moment = datetime.fromtimestamp(recorded_at, console.tz)
        days[moment.date()] += size / 2**20
        if moment >= midnight:
            hours[moment.hour] += 1
    day_list = [(month_start + timedelta(days=i)).date() for i in range(30)]
    last = max((at for at, _ in recent if at >= midnight.timestamp()), default=None)
    return render(request, "status.html", health=health, today=sum(hours.values()),
                  last=datetime.fromtimestamp(last, console.tz).isoformat(timespec="seconds") if last else None,
                  per_hour=bar_chart([hours.get(h, 0) for h in range(24)], [f"{h}" for h in range(24)], "calls"),
                  storage=bar_chart([round(days.get(d, 0), 1) for d in day_list], [f"{d:%m/%d}" for d in day_list],
                                    "MiB"),
                  overdue=console.access.overdue_copies())


def _query(request: web.Request) -> CallQuery | None:
    """The search form's fields, read as `callrec calls find` reads its options."""
    q = request.query
    console = console_of(request)
    if not any(q.get(k) for k in ("at", "from", "to", "number", "local", "extension")):
        return None
    at = q.get("at", "").strip()
    return CallQuery(
        around=parse_time(at, console.tz, "about when") if at else None,
        window_seconds=parse_span(q["window"]) if q.get("window") else DEFAULT_WINDOW_SECONDS,
        start=parse_time(q["from"], console.tz, "from") if q.get("from") and not at else None,
        end=parse_time(q["to"], console.tz, "to") if q.get("to") and not at else None,
        duration_seconds=parse_span(q["duration"]) if q.get("duration") else None,
        remote_number=q.get("number") or None, local_number=q.get("local") or None,
        direction=q.get("direction") if q.get("direction") in DIRECTIONS else None,
        country_code=console.policy.numbering.country_code, extension=q.get("extension") or None)


def page_of(request: web.Request) -> tuple[int, int]:
    """The search's page (`?page=`, from 1; `?per=`, candidates a page, `SHOWN` unless given) as
    the candidates to show and how many come before: a person reads the best, and asks for the
    next ones."""
    number, per = _whole_number(request, "page", 1), _whole_number(request, "per", SHOWN)
    if per > MOST_SHOWN:
        raise web.HTTPBadRequest(text=f"per: at most {MOST_SHOWN} candidates a page")
    return per, (number - 1) * per


def _whole_number(request: web.Request, name: str, default: int) -> int:
    try:
        value = int(request.query.get(name) or default)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: a whole number from 1") from None
    if value < 1:
        raise web.HTTPBadRequest(text=f"{name}: a whole number from 1")
    return value


def pages(request: web.Request, result: SearchResult | None, per: int) -> dict[str, Any]:
    """The links to the previous and the next page of candidates, with the form's fields kept."""
    if result is None:
        return {"previous_url": None, "next_url": None, "page_size": per}
    number = result.start // per + 1

    def url(n: int) -> str:
        return str(request.rel_url.update_query({"page": str(n)}))
    return {"previous_url": url(number - 1) if number > 1 else None,
            "next_url": url(number + 1) if result.more or result.erased_more else None, "page_size": per}


async def search(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    console.access.authorise(actor_of(request), Action.SEARCH)
    query = _query(request)
    limit, start = page_of(request)
    result = find(console.store.index, query, tz=console.tz, limit=limit, start=start) if query is not None else None
    return render(request, "search.html", result=result, q=request.query, directions=DIRECTIONS,
                  shown_remote=shown_remote, **pages(request, result, limit))


def _row(request: web.Request) -> CallRow:
    row = console_of(request).store.index.get(request.match_info["id"])
    if row is None:
        raise web.HTTPNotFound()
    return row


async def call(request: web.Request, revealed: tuple[str, str] | None = None) -> web.StreamResponse:
    console = console_of(request)
    me = actor_of(request)
    console.access.authorise(me, Action.SEARCH)
    row = _row(request)
    parts = console.store.index.parts(row)
    notice = None
    if row.notice_id:
        log = NoticeLog(console.store.index.path, console.policy.timezone)
        try:
            notice = log.get(row.notice_id)
        finally:
            log.close()
    access = console.access.access
    listening = [r for r in console.access.requests()
                 if row.id in r.call_ids and r.wanted is Wanted.LISTEN
                 and r.state in (RequestState.APPROVED, RequestState.FULFILLED)
                 and access.on_device_listening != "never" and console.access.may(me, Action.FULFIL)]
    disclosing = [r for r in console.access.requests()
                  if row.withheld_number and row.id in r.call_ids and r.wanted in DISCLOSING
                  and r.state is RequestState.FULFILLED and console.access.may(me, Action.FULFIL)]
    section = console.policy.harassment
    with MarkBook(console.store, section) as book:
        marks = book.of_call(row.id)
    return render(request, "call.html", row=row, parts=parts, notice=notice, listening=listening, disclosing=disclosing,
                  revealed=revealed, shown_remote=shown_remote,
                  may_hold=console.access.may(me, Action.HOLD), may_request=console.access.may(me, Action.REQUEST),
                  purposes=access.purposes, wanted=[w.value for w in Wanted], marks=marks,
                  categories=section.categories if section is not None else [],
                  category_labels={c.id: c.label for c in section.categories} if section is not None else {},
                  may_mark=section is not None and console.access.may(me, Action.MARK),
                  may_manage_marks=console.access.may(me, Action.MANAGE_MARKS),
                  evidence_until=datetime.fromtimestamp(row.evidence_until - 1, console.tz).date().isoformat()
                  if row.evidence_until else None)


async def withheld(request: web.Request) -> web.StreamResponse:
    """A withheld caller's kept number, shown only through a fulfilled request for the whole
    recording of this call, to a person who carries requests out; ledgered each time."""
    console = console_of(request)
    found = dict(console.access.withheld_numbers(actor_of(request), request.match_info["number"]))
    number = found.get(request.match_info["id"])
    if number is None:
        raise web.HTTPNotFound()
    return await call(request, (request.match_info["number"], number))


async def hold(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    grant = console.access.authorise(actor_of(request), Action.HOLD)
    form = await request.post()
    set_hold(console.store, request.match_info["id"], form.get("action") == "add", actor=grant.actor,
             reason=str(form.get("reason", "")), approved_by=str(form.get("approved_by", "")) or None,
             role=grant.ledger_details())
    raise web.HTTPSeeOther(f"/calls/{request.match_info['id']}")


async def waveform_svg(request: web.Request) -> web.StreamResponse:
    """Both channels' envelopes, read from the sealed recording (nothing written anywhere)."""
    console = console_of(request)
    console.access.authorise(actor_of(request), Action.SEARCH)
    row = sealed_row(console.store, request.match_info["id"])
    encoding, channels, _, data = read_wav(b"".join(sealed_files(console.store, row)[0].chunks))
    samples = (np.frombuffer(data, dtype="<i2") if encoding == "L16"
               else np.frombuffer(g711.decode(encoding, data), dtype="<i2"))
    lanes = [samples[c::channels] for c in range(channels)]
    svg = waveform(lanes, ["職員側 / staff", "相手方 / other party"][:channels])
    return web.Response(text=svg, content_type="image/svg+xml")


async def listen(request: web.Request) -> web.StreamResponse:
    """An approved listening request's call, streamed from the vault to the browser's player."""
    console = console_of(request)
    chunks = console.access.listen(actor_of(request), request.match_info["number"], request.match_info["id"])
    return await stream_wav(request, chunks)


async def stream_wav(request: web.Request, chunks: Iterable[bytes]) -> web.StreamResponse:
    """A recording to the browser's player as it is read, never whole in memory."""
    response = web.StreamResponse(headers={"Content-Type": "audio/wav", "Content-Disposition": "inline"})
    await response.prepare(request)
    for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/status", status)
    router.add_get("/calls", search)
    router.add_get("/calls/{id}", call)
    router.add_post("/calls/{id}/hold", hold)
    router.add_get("/calls/{id}/waveform.svg", waveform_svg)
    router.add_get("/calls/{id}/withheld/{number}", withheld)
    router.add_get("/requests/{number}/listen/{id}", listen)
