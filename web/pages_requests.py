"""Requests from filing to closing, their forms, and the copy register, on screen."""
from __future__ import annotations

import re

from aiohttp import web

from policy.access import Action, Wanted

from .context import actor_of, console_of, render

__all__ = ["add_routes"]


def _text(form: object, name: str) -> str:
    value = form.get(name, "")  # type: ignore[attr-defined]
    return value.strip() if isinstance(value, str) else ""


async def requests_list(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    me = actor_of(request)
    if not (console.access.may(me, Action.REQUEST) or console.access.may(me, Action.APPROVE)
            or console.access.may(me, Action.FULFIL)):
        console.access.authorise(me, Action.REQUEST)
    access = console.access.access
    return render(request, "requests.html", requests=console.access.requests(),
                  labels={p.key: p.label for p in access.purposes}, purposes=access.purposes,
                  wanted=[w.value for w in Wanted], may_request=console.access.may(me, Action.REQUEST))


async def file_request(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    form = await request.post()
    wanted = _text(form, "wanted")
    if wanted not in {w.value for w in Wanted}:
        raise ValueError(f"{wanted!r} is not something a request may ask for")
    typed = re.split(r"[\s,、]+", _text(form, "calls"))
    call_ids = tuple(c for c in [*map(str, form.getall("call", [])), *typed] if c)
    filed = console.access.file(actor_of(request), department=_text(form, "department"), purpose=_text(form, "purpose"),
                                wanted=Wanted(wanted), call_ids=call_ids, details=_text(form, "details"))
    raise web.HTTPSeeOther(f"/requests/{filed.number}")


async def request_page(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    me = actor_of(request)
    number = request.match_info["number"]
    shown = console.access.request(number)
    if me.name != shown.requester:
        if not (console.access.may(me, Action.APPROVE) or console.access.may(me, Action.FULFIL)):
            console.access.authorise(me, Action.APPROVE)
    copies = [c for c in console.access.copies() if c.request == number]
    contractors = [u.name for u in console.access.users()
                   if (rule := console.access.access.role(u.role)) is not None and rule.needs_instruction]
    return render(request, "request.html", r=shown, copies=copies, contractors=contractors,
                  labels={p.key: p.label for p in console.access.access.purposes},
                  may_decide=console.access.may(me, Action.APPROVE), may_fulfil=console.access.may(me, Action.FULFIL),
                  may_instruct=console.access.may(me, Action.INSTRUCT), listening=shown.wanted is Wanted.LISTEN
                  and console.access.access.on_device_listening != "never")


async def decide(request: web.Request) -> web.StreamResponse:
    """approve, refuse, instruct, fulfil or close: each a step of the access layer's state machine."""
    console = console_of(request)
    me = actor_of(request)
    number, step = request.match_info["number"], request.match_info["step"]
    form = await request.post()
    service = console.access
    if step == "approve":
        service.approve(me, number, _text(form, "reason"))
    elif step == "refuse":
        service.refuse(me, number, _text(form, "reason"))
    elif step == "instruct":
        service.instruct(me, number, _text(form, "to"))
    elif step == "fulfil":
        service.fulfil(me, number, holder=_text(form, "holder"))
    elif step == "close":
        service.close_request(me, number, _text(form, "reason"))
    else:
        raise web.HTTPNotFound()
    raise web.HTTPSeeOther(f"/requests/{number}")


async def form_pdf(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    number, which = request.match_info["number"], request.match_info["which"]
    if which == "form":
        pdf = console.access.request_form(actor_of(request), number)
    elif which == "answer":
        pdf = console.access.answer_form(actor_of(request), number)
    else:
        raise web.HTTPNotFound()
    return web.Response(body=pdf, content_type="application/pdf",
                        headers={"Content-Disposition": f'inline; filename="{number}-{which}.pdf"'})


async def copies_list(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    me = actor_of(request)
    if not console.access.may(me, Action.DISPOSE):
        console.access.authorise(me, Action.FULFIL)
    late = {c.number for c in console.access.overdue_copies()}
    return render(request, "copies.html", copies=console.access.copies(), late=late,
                  may_dispose=console.access.may(me, Action.DISPOSE))


async def dispose(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    form = await request.post()
    console.access.dispose(actor_of(request), request.match_info["number"], how=_text(form, "how"),
                           witness=_text(form, "witness") or None)
    raise web.HTTPSeeOther("/copies")


async def package(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    number = request.match_info["number"]
    path = console.access.package(actor_of(request), number)
    return web.FileResponse(path, headers={"Content-Type": "application/zip",
                                           "Content-Disposition": f'attachment; filename="{number}.zip"'})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/requests", requests_list)
    router.add_post("/requests", file_request)
    router.add_get("/requests/{number}", request_page)
    router.add_post("/requests/{number}/{step}", decide)
    router.add_get("/requests/{number}/{which}.pdf", form_pdf)
    router.add_get("/copies", copies_list)
    router.add_post("/copies/{number}/dispose", dispose)
    router.add_get("/copies/{number}/package", package)
