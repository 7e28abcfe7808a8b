"""What every handler of the console works with: the open store, the access service, the
sessions, the templates, and the few helpers that read them from a request."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web

from access.centre_service import CentreService
from access.rules import Actor
from access.service import AccessService
from policy.schema import Policy
from storage.store import Store

from .centre import CentreView
from .config import WebConfig
from .i18n import LANGUAGES, translate
from .sessions import Session, SessionStore

__all__ = ["CONSOLE", "COOKIE", "LANG_COOKIE", "LOGIN_COOKIE", "Console", "actor_of", "console_of", "lang_of",
           "render", "set_cookie"]

COOKIE = "callrec_session"
LOGIN_COOKIE = "callrec_login"
LANG_COOKIE = "callrec_lang"


@dataclass
class Console:
    """What every handler works with: the open store, the access service and the sessions."""

    config: WebConfig
    policy: Policy
    store: Store
    access: AccessService | CentreService
    """The store's AccessService, or at the centre the centre's CentreService (people, requests
    and copies of every site, audio fetched from the owning site)."""
    sessions: SessionStore
    status_socket: Path
    templates: jinja2.Environment
    secure: bool
    centre: CentreView | None = None
    """Set: the console shows the centre's calls of every site (web.centre), not this store's."""
    reconnect: Callable[[], CentreService] | None = None
    """At the centre: the centre's service opened again, after its connection was lost."""

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.policy.timezone)

    @property
    def ledger(self) -> Any:
        """The 通話記録管理簿 the ledger page shows (entries(), verify()): the store's, or at the
        centre the centre's own chain."""
        return self.access.ledger if isinstance(self.access, CentreService) else self.store.ledger


CONSOLE = web.AppKey("console", Console)


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
