"""The console's aiohttp application: sessions, CSRF, security headers, errors, and the routes.

Every request but the sign-in page needs a live session; every POST needs the session's CSRF
token; every screen asks the access layer whether this person may see or do what it shows, so
a forged form, another role's URL or a button shown by mistake is refused on the server.
Pages are Jinja2 templates with autoescaping; pictures are SVG made on the server; there is no
script, so nothing a browser runs can leak or alter a record.

At the centre a page's work runs in the console's worker threads (`off_the_loop`), so a slow
centre query holds up its own page and no other.
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
import structlog
from aiohttp import web

from access.errors import AccessError, Forbidden
from access.people import BadCredentials
from wire.errors import CallrecError

from . import pages_admin, pages_calls, pages_centre, pages_live, pages_marks, pages_requests
from .centre import CentreUnavailable
from .context import (
    CONSOLE,
    COOKIE,
    LANG_COOKIE,
    LOGIN_COOKIE,
    ON_LOOP,
    Console,
    actor_of,
    console_of,
    on_loop,
    render,
    set_cookie,
)
from .i18n import LANGUAGES

__all__ = ["make_app"]

log = structlog.get_logger("callrec.web")

MAX_BODY = 256 * 1024
"""Forms are small; anything larger is refused before it is read (a 10 MB post is an attack)."""
PUBLIC = ("/login", "/lang/", "/static/")
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; "
                               "script-src 'none'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.update(HEADERS)
    return response


@web.middleware
async def refusals(request: web.Request, handler: Handler) -> web.StreamResponse:
    """What the rules refuse is shown as what it is: 403 with the rule and its clause; bad input
    400 with what to fix.  Nothing was changed in either case (the service ledgers refusals)."""
    try:
        return await handler(request)
    except Forbidden as exc:
        log.info("web.refused", path=request.path, reason=str(exc))
        return render(request, "error.html", status=403, heading="forbidden", message=str(exc))
    except BadCredentials as exc:
        return render(request, "error.html", status=401, heading="login", message=str(exc))
    except CentreUnavailable as exc:
        return render(request, "error.html", status=503, heading="centre_down", message=str(exc))
    except psycopg.OperationalError as exc:
        return _centre_lost(request, exc)
    except (AccessError, CallrecError, ValueError) as exc:
        return render(request, "error.html", status=400, heading="bad_request", message=str(exc))


def _centre_lost(request: web.Request, exc: psycopg.OperationalError) -> web.StreamResponse:
    """The centre's service lost its connection (the centre restarted or went away): said as a
    503; every thread opens its service again before its next use (`Console.access`)."""
    console = console_of(request)
    log.warning("web.centre_lost", error=str(exc).strip())
    console.losses += 1
    return render(request, "error.html", status=503, heading="centre_down", message=str(exc).strip())


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A live session for every page but the public ones; a matching CSRF token on every POST."""
    if request.path.startswith(PUBLIC):
        return await handler(request)
    console = console_of(request)
    session = console.sessions.resume(request.cookies.get(COOKIE), time.time())
    if session is None:
        if request.method == "GET":
            raise web.HTTPSeeOther("/login")
        return render(request, "error.html", status=401, heading="expired", message="")
    request["session"] = session
    request["actor"] = await console.run(lambda: console.access.actor_named(session.account))
    if request.method == "POST":
        form = await request.post()  # read here, on the loop: a page in a worker thread gets it cached
        token = form.get("csrf")
        if not session.csrf_ok(token if isinstance(token, str) else None):
            log.warning("web.csrf_refused", path=request.path, account=session.account)
            return render(request, "error.html", status=403, heading="forbidden",
                          message="the form's security token is missing or wrong; reload the page and try again")
    return await handler(request)


@web.middleware
async def off_the_loop(request: web.Request, handler: Handler) -> web.StreamResponse:
    """At the centre, the page in a worker thread, driven there by an event loop of the thread's
    own; the request's form was read on the loop already (`authenticate`), so the handler awaits
    nothing of the connection's.  The response it returns is sent from here, on the loop."""
    console = console_of(request)
    if console.centre is None or request.path.startswith(PUBLIC) or getattr(handler, ON_LOOP, False):
        return await handler(request)
    await request.post()
    return await console.run(lambda: console.worker_loop().run_until_complete(handler(request)))


@on_loop
async def login_page(request: web.Request) -> web.StreamResponse:
    """The sign-in form; an existing form token is kept, so a second tab or a stray request
    while signed out does not invalidate the form already on screen."""
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)
    response = render(request, "login.html", login_token=token, message="")
    set_cookie(response, console_of(request), LOGIN_COOKIE, token, 600)
    return response


@on_loop
async def login(request: web.Request) -> web.StreamResponse:
    """Double-submit token for the sign-in form (there is no session yet), then the access
    layer's sign-in: lockout and every failure ledgered there."""
    console = console_of(request)
    form = await request.post()
    cookie = request.cookies.get(LOGIN_COOKIE)
    if not cookie or not secrets.compare_digest(cookie, str(form.get("login_token", ""))):
        return render(request, "error.html", status=403, heading="forbidden",
                      message="the sign-in form's security token is missing or wrong; reload the page")
    name, password = str(form.get("name", "")), str(form.get("password", ""))
    actor = await console.run(lambda: console.access.sign_in(name, password))
    token, _ = console.sessions.begin(actor.name, time.time())
    await console.run(lambda: console.access.note_session(actor, True, "console"))
    response = web.HTTPSeeOther("/status")
    set_cookie(response, console, COOKIE, token, console.config.session_max_hours * 3600)
    response.del_cookie(LOGIN_COOKIE, path="/")
    raise response


@on_loop
async def logout(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    console.sessions.end(request.cookies.get(COOKIE, ""))
    actor = actor_of(request)
    await console.run(lambda: console.access.note_session(actor, False, "console"))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


async def language(request: web.Request) -> web.StreamResponse:
    lang = request.match_info["lang"]
    if lang not in LANGUAGES:
        raise web.HTTPNotFound()
    back = request.query.get("next", "/status")
    local = back.startswith("/") and not back.startswith("//") and "\\" not in back
    response = web.HTTPSeeOther(back if local else "/status")
    set_cookie(response, console_of(request), LANG_COOKIE, lang, 365 * 86400)
    raise response


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/status")


def make_app(console: Console) -> web.Application:
    app = web.Application(middlewares=[security_headers, refusals, authenticate, off_the_loop],
                          client_max_size=MAX_BODY)
    app[CONSOLE] = console
    app.router.add_get("/", home)
    app.router.add_get("/login", login_page)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/lang/{lang}", language)
    app.router.add_static("/static/", Path(__file__).parent / "static")
    # At the centre the calls are every site's (pages_centre); the audio, the lines and the marks
    # stay at the sites.
    modules = ((pages_centre, pages_requests, pages_admin) if console.centre is not None
               else (pages_calls, pages_requests, pages_admin, pages_live, pages_marks))
    for module in modules:
        module.add_routes(app.router)
    return app
