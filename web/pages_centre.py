"""The console at the centre (web.centre): every site's calls searched at once with a site
column and filter, the page of one call of any site (its metadata, seal, hold, and the erasure
tombstone: "erased on DATE under RULE"), and the sites' sync status (last sync, backlog, lag).

The centre keeps no audio: a call page here has no waveform, and listening or a copy is fetched
from the owning site for an approved request.  Every page asks the access layer first, as the
local pages do; the centre's connection is web/centre.py's.
"""
from __future__ import annotations

import time
from datetime import date, datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from access.centre_book import CENTRE
from access.centre_service import CentreService, call_ref
from access.requests import RequestState
from access.rules import Actor
from policy.access import Action, Wanted
from storage.search import shown_remote

from .centre import CentreView
from .context import Console, actor_of, console_of, lang_of, on_loop, render
from .i18n import translate
from .pages_calls import DIRECTIONS, _query, page_of, pages, stream_wav

__all__ = ["add_routes", "ledger"]

SITES_ACTIONS = (Action.SEARCH, Action.VERIFY, Action.READ_LEDGER)
"""Who sees the sites' sync status: whoever finds calls, and whoever checks the records' integrity."""
LEDGER_PAGE = 100
"""Entries on one page of the combined book."""
RULES = ("retention", "capacity", "wipe")
"""The erasure reasons the sweep and the wipe write (storage/search.ERASURE_WORDS), in words by i18n."""


def _centre(console: Console) -> CentreView:
    assert console.centre is not None, "pages_centre is routed only with web.centre"
    return console.centre


async def sites(request: web.Request) -> web.StreamResponse:
    """Each site's last sync, backlog and lag, the lagging ones marked (and counted on top), and
    the centre's copies past their disposal date, as the single box's status page shows its own."""
    console = console_of(request)
    me = actor_of(request)
    if not any(console.access.may(me, action) for action in SITES_ACTIONS):
        console.access.authorise(me, Action.SEARCH)  # refused, and ledgered as every refusal is
    assert console.config.centre is not None
    warn_after = console.config.centre.lag_warning_seconds
    now = time.time()
    found = _centre(console).read(lambda search: search.sites(now, warn_after))
    shown = [{**site, "last_sync_shown": _local(console, site["last_sync"]),
              "oldest_shown": _local(console, site["oldest_pending"]), "lag_shown": _span(site["lag_seconds"])}
             for site in found]
    return render(request, "sites.html", sites=shown, lagging=[s["site"] for s in found if s["lagging"]],
                  warn_after=_span(warn_after), overdue=console.access.overdue_copies())


async def search(request: web.Request) -> web.StreamResponse:
    """`calls find` over every site, or the sites ticked; each candidate says its site."""
    console = console_of(request)
    console.access.authorise(actor_of(request), Action.SEARCH)
    centre = _centre(console)
    names = centre.read(lambda s: s.site_names())
    chosen = [name for name in request.query.getall("site", []) if name in names]
    query = _query(request)
    limit, start = page_of(request)
    found = centre.read(lambda s: s.find(query, sites=chosen or None, limit=limit, start=start)) \
        if query is not None else None
    result = found.result if found else None
    return render(request, "search.html", result=result,
                  erased_sites=found.erased_sites if found else (), q=request.query, directions=DIRECTIONS,
                  shown_remote=shown_remote, sites=names, chosen=chosen, **pages(request, result, limit))


async def call(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    me: Actor = actor_of(request)
    console.access.authorise(me, Action.SEARCH)
    centre = _centre(console)
    site, call_id = request.match_info["site"], request.match_info["id"]
    row = centre.read(lambda s: s.call(site, call_id))
    if row is None:
        raise web.HTTPNotFound()
    erasure = centre.erasure(site, call_id) if row.erased_at else None
    ref = call_ref(site, call_id)
    access = console.access.access
    listening = [r for r in console.access.requests()
                 if ref in r.call_ids and r.wanted is Wanted.LISTEN
                 and r.state in (RequestState.APPROVED, RequestState.FULFILLED)
                 and access.on_device_listening != "never" and console.access.may(me, Action.FULFIL)]
    return render(request, "centre_call.html", row=row, ref=ref, shown_remote=shown_remote,
                  erased=_erased_words(request, erasure) if erasure else None, erasure=erasure,
                  listening=listening, may_request=console.access.may(me, Action.REQUEST),
                  purposes=access.purposes, wanted=[w.value for w in Wanted],
                  evidence_until=datetime.fromtimestamp(row.evidence_until - 1, console.tz).date().isoformat()
                  if row.evidence_until else None)


@on_loop
async def listen(request: web.Request) -> web.StreamResponse:
    """An approved listening request's call, fetched from its site over mutual TLS (the centre's
    service checks it against the seal and ledgers it) in a worker thread, then streamed to the
    browser's player from the loop."""
    console = console_of(request)
    ref = call_ref(request.match_info["site"], request.match_info["id"])
    by, number = actor_of(request), request.match_info["number"]
    return await stream_wav(request, await console.run(lambda: console.access.listen(by, number, ref)))


async def ledger(request: web.Request) -> web.StreamResponse:
    """The one 通話記録管理簿 of the city: the centre's entries and every site's synced ones, newest
    first, with a 拠点 column, a site and an event filter, a page at a time; on asking, each book
    checked as far as the centre can (access/centre_book.py), and what was checked said in words."""
    console = console_of(request)
    me = actor_of(request)
    assert isinstance(console.access, CentreService)
    book = console.access.book(me)
    q = request.query
    filters = book.filters(site=q.get("site"), event=q.get("event"), actor=q.get("actor"),
                           since=_day(q.get("from")), until=_day(q.get("to")))
    page = book.page(filters, _page_number(q.get("page")), LEDGER_PAGE)
    problems, checks = console.access.verify_book(me) if q.get("verify") else (None, None)
    return render(request, "centre_ledger.html", page=page, q=q, sites=book.sites(), events=book.events(),
                  centre_site=CENTRE, problems=problems, checks=checks,
                  prev_url=_page_url(request, page.page - 1) if page.page > 1 else None,
                  next_url=_page_url(request, page.page + 1) if page.page < page.pages else None)


def _day(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


def _page_number(text: str | None) -> int:
    try:
        return max(1, int(text or 1))
    except ValueError:
        raise ValueError(f"page {text!r} is not a number") from None


def _page_url(request: web.Request, number: int) -> str:
    kept = [(k, v) for k, v in request.query.items() if k not in ("page", "verify")]
    return "/ledger?" + urlencode([*kept, ("page", str(number))])


def _erased_words(request: web.Request, erasure: dict[str, Any]) -> str:
    """"erased on DATE under RULE", the date in the console's zone and the rule in words."""
    console = console_of(request)
    lang = lang_of(request)
    rule = erasure["rule"]
    date = datetime.fromisoformat(erasure["erased_at"]).astimezone(console.tz).date().isoformat()
    words = translate(f"rule_{rule}", lang) if rule in RULES else (rule or translate("no_rule", lang))
    return translate("erased_on", lang).format(date=date, rule=words)


def _local(console: Console, stamp: str | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromisoformat(stamp).astimezone(console.tz).strftime("%Y-%m-%d %H:%M:%S")


def _span(seconds: float) -> str:
    """A lag as people read it: 0 s, 45 s, 12 min, 3 h 05 min, 2 d 4 h."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60:02} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/status", sites)
    router.add_get("/sites", sites)
    router.add_get("/calls", search)
    router.add_get("/sites/{site}/calls/{id}", call)
    router.add_get("/requests/{number}/listen/{site}/{id}", listen)
