"""The 通話記録管理簿, the accounts (the manager only), and the policy in force in plain words."""
from __future__ import annotations

from aiohttp import web

from policy.access import Action, describe_access
from policy.retention import describe

from . import pages_centre
from .context import actor_of, console_of, lang_of, on_loop, render

__all__ = ["add_routes"]

LEDGER_PAGE = 200


async def ledger(request: web.Request) -> web.StreamResponse:
    """The book with filters (event, person, period), newest first, and its verification; at the
    centre the one book of every site (pages_centre.ledger)."""
    console = console_of(request)
    if console.centre is not None:
        return await pages_centre.ledger(request)
    console.access.authorise(actor_of(request), Action.READ_LEDGER)
    q = request.query
    entries = list(console.ledger.entries())
    if q.get("event"):
        entries = [e for e in entries if e.event == q["event"]]
    if q.get("actor"):
        entries = [e for e in entries if e.actor == q["actor"]]
    if q.get("from"):
        entries = [e for e in entries if e.at.date().isoformat() >= q["from"]]
    if q.get("to"):
        entries = [e for e in entries if e.at.date().isoformat() <= q["to"]]
    problems = console.ledger.verify() if q.get("verify") else None
    return render(request, "ledger.html", entries=entries[::-1][:LEDGER_PAGE], total=len(entries), q=q,
                  problems=problems, events=sorted({e.event for e in console.ledger.entries()}))


async def ledger_book(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    kind = request.match_info["kind"]
    if kind not in ("csv", "pdf"):
        raise web.HTTPNotFound()
    book = console.access.ledger_book(actor_of(request), pdf=kind == "pdf")
    return web.Response(body=book, content_type="application/pdf" if kind == "pdf" else "text/csv",
                        headers={"Content-Disposition": f'attachment; filename="kanribo.{kind}"'})


async def users(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    console.access.authorise(actor_of(request), Action.MANAGE_USERS)
    return render(request, "users.html", users=console.access.users(), roles=console.access.access.roles)


async def add_user(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    form = await request.post()
    deputy = str(form.get("deputy_of", "")).strip() or None
    console.access.add_user(actor_of(request), str(form.get("name", "")).strip(), str(form.get("role", "")),
                            str(form.get("password", "")), deputy)
    raise web.HTTPSeeOther("/users")


@on_loop
async def disable_user(request: web.Request) -> web.StreamResponse:
    """On the loop for the sessions it ends; the centre's part in a worker thread."""
    console = console_of(request)
    form = await request.post()
    name, by = request.match_info["name"], actor_of(request)
    await console.run(lambda: console.access.disable_user(by, name, str(form.get("reason", ""))))
    console.sessions.end_all(name)
    raise web.HTTPSeeOther("/users")


async def policy(request: web.Request) -> web.StreamResponse:
    """The policy in force, read-only, as `callrec policy check` says it."""
    console = console_of(request)
    lang = lang_of(request)
    lines = describe(console.policy, lang)
    if console.policy.access is not None:
        lines += describe_access(console.policy.access, lang)
    return render(request, "policy.html", lines=lines)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/ledger", ledger)
    router.add_get("/ledger/book.{kind}", ledger_book)
    router.add_get("/users", users)
    router.add_post("/users", add_user)
    router.add_post("/users/{name}/disable", disable_user)
    router.add_get("/policy", policy)
