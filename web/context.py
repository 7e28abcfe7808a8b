"""What every handler of the console works with: the open store, the access service, the
sessions, the templates, and the few helpers that read them from a request.

At the centre, the pages' work (the centre's queries, which may wait on a slow statement or a
row lock) runs off the event loop, in a pool of CENTRE_WORKERS threads (`Console.run`), each
with a connection of its own: a psycopg connection serves one statement at a time, so threads
sharing one would still queue behind the slow one.  A thread pool rather than psycopg's async
connection because the access layer (access/desk.py) is synchronous and shared with the box and
the CLI; an async copy of it would be a second implementation of every rule.  The sign-in
sessions stay on the loop (their SQLite connection belongs to its thread).
"""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import jinja2
import psycopg
import structlog
from aiohttp import web

from access.centre_service import CentreService
from access.rules import Actor
from access.service import AccessService
from policy.schema import Policy
from storage.store import Store
from wire.errors import CallrecError

from .centre import CentreUnavailable, CentreView
from .config import WebConfig
from .i18n import LANGUAGES, translate
from .sessions import Session, SessionStore

__all__ = ["CENTRE_WORKERS", "CONSOLE", "COOKIE", "LANG_COOKIE", "LOGIN_COOKIE", "ON_LOOP", "Console", "actor_of",
           "console_of", "lang_of", "on_loop", "render", "set_cookie"]

log = structlog.get_logger("callrec.web")

T = TypeVar("T")
CENTRE_WORKERS = 4
"""Pages served at once at the centre, and so the console's connections to it (one each, plus
the loop's own for sign-in): a fifth page waits for a thread, the event loop never does."""

COOKIE = "callrec_session"
LOGIN_COOKIE = "callrec_login"
LANG_COOKIE = "callrec_lang"


@dataclass
class Console:
    """What every handler works with: the open store, the access service and the sessions."""

    config: WebConfig
    policy: Policy
    store: Store
    main_access: AccessService | CentreService
    """The store's AccessService, or at the centre the centre's CentreService of the event loop's
    thread (`access` gives each worker thread its own)."""
    sessions: SessionStore
    status_socket: Path
    templates: jinja2.Environment
    secure: bool
    centre: CentreView | None = None
    """Set: the console shows the centre's calls of every site (web.centre), not this store's."""
    reconnect: Callable[[], AbstractContextManager[CentreService]] | None = None
    """At the centre: opens the centre's service on a connection of its own (closed on leaving);
    the console opens one for the loop and one for each worker thread, and again after a loss."""
    losses: int = 0
    """How often a page found the centre's connection lost (a restart): a worker thread whose
    service was opened before the last loss opens it again rather than fail on it in turn."""
    _threads: threading.local = field(default_factory=threading.local, repr=False)
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)
    _opened: dict[int, ExitStack] = field(default_factory=dict, repr=False)
    """Per thread (the loop's and each worker's), its centre service.  Closed when replaced and
    at close, so a console that outlived many centre restarts holds one service per thread, and
    the centre sees each connection closed."""
    _loops: list[asyncio.AbstractEventLoop] = field(default_factory=list, repr=False)
    """The worker threads' event loops, closed after the workers stopped."""
    _opened_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def access(self) -> AccessService | CentreService:
        """The access service for this thread: the store's AccessService, or at the centre the
        centre's CentreService (people, requests and copies of every site, audio fetched from the
        owning site), one per thread (the loop's and each worker's), opened again once its
        connection broke or another thread found the centre gone since it was opened."""
        if self.reconnect is None:
            return self.main_access
        service: CentreService | None = getattr(self._threads, "access", None)
        stale = getattr(self._threads, "losses", 0) != self.losses
        if service is None or stale or service.conn.closed or service.conn.broken:
            try:
                service = self._open_centre()
            except (psycopg.Error, CallrecError) as exc:
                log.warning("web.centre_unavailable", error=str(exc).strip())
                raise CentreUnavailable(f"the centre cannot be reached: {str(exc).strip()}") from None
        return service

    def adopt(self, opened: ExitStack, service: CentreService) -> None:
        """The centre's service the console was opened with, as the calling thread's (the loop's)."""
        with self._opened_lock:
            self._opened[threading.get_ident()] = opened
        self._threads.access, self._threads.losses = service, self.losses

    def _open_centre(self) -> CentreService:
        """The centre's service opened anew for the calling thread, the one it opened before closed
        first (a lost connection is closed, not left to the end of the process)."""
        assert self.reconnect is not None
        with self._opened_lock:
            before = self._opened.pop(threading.get_ident(), None)
        self._threads.access = None
        if before is not None:
            before.close()
        opened = ExitStack()
        service = opened.enter_context(self.reconnect())
        self.adopt(opened, service)
        return service

    def worker_loop(self) -> asyncio.AbstractEventLoop:
        """The calling worker thread's event loop, which drives its pages (`web.app.off_the_loop`);
        made once per thread and closed with the workers."""
        loop: asyncio.AbstractEventLoop | None = getattr(self._threads, "loop", None)
        if loop is None:
            loop = self._threads.loop = asyncio.new_event_loop()
            with self._opened_lock:
                self._loops.append(loop)
        return loop

    async def run(self, work: Callable[[], T]) -> T:
        """`work` at the centre in a worker thread (the loop answers other pages meanwhile); on
        the box here, as before (its SQLite connections belong to the loop's thread)."""
        if self.centre is None:
            return work()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(CENTRE_WORKERS, thread_name_prefix="callrec-centre",
                                            initializer=setattr, initargs=(self._threads, "worker", True))
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    def close(self) -> None:
        """The worker threads stopped, then everything the loop and the workers opened closed:
        event loops, the centre's connections, the store's service and the sign-in sessions."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        with self._opened_lock:
            opened, self._opened = list(self._opened.values()), {}
            loops, self._loops = self._loops, []
        for loop in loops:
            loop.close()
        for stack in opened:
            stack.close()
        if self.reconnect is None:
            self.main_access.close()
        self.sessions.close()
        log.info("web.closed", connections=len(opened), loops=len(loops))

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.policy.timezone)

    @property
    def ledger(self) -> Any:
        """The 通話記録管理簿 the ledger page shows (entries(), verify()): the store's, or at the
        centre the centre's own chain."""
        return self.access.ledger if isinstance(self.access, CentreService) else self.store.ledger


CONSOLE = web.AppKey("console", Console)
ON_LOOP = "callrec_on_loop"
"""A handler marked so (`on_loop`) runs on the event loop at the centre too: it uses the sign-in
sessions (whose SQLite connection is the loop's) or streams, and sends its centre work to the
worker threads itself (`Console.run`)."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def on_loop(handler: Handler) -> Handler:
    setattr(handler, ON_LOOP, True)
    return handler


def console_of(request: web.Request) -> Console:
    return request.app[CONSOLE]


def actor_of(request: web.Request) -> Actor:
    actor: Actor = request["actor"]
    return actor


def lang_of(request: web.Request) -> str:
    lang = request.cookies.get(LANG_COOKIE, "ja")
    return lang if lang in LANGUAGES else "ja"


def render(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    console = console_of(request)
    lang = lang_of(request)
    session: Session | None = request.get("session")
    actor: Actor | None = request.get("actor")
    page = console.templates.get_template(template).render(
        t=lambda key: translate(key, lang), lang=lang, csrf=session.csrf if session else "",
        me=actor, title=translate(template.split(".")[0], lang), organisation=console.policy.organisation,
        on_demand_lines=console.policy.on_demand is not None,
        harassment=console.policy.harassment if console.centre is None else None,
        centre_mode=console.centre is not None,
        here=request.path_qs,
        **values)
    return web.Response(text=page, content_type="text/html", status=status)


def set_cookie(response: web.StreamResponse, console: Console, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, httponly=True, secure=console.secure, samesite="Strict",
                        path="/")
