"""The console's link to the centre (web.centre in config.yaml): a connection to its
PostgreSQL, opened on first use and again after the centre went away, and the central search
(storage/central_search.py) over it.

A page that needs the centre while it cannot be reached says so (`CentreUnavailable`, a 503)
within `timeout_seconds`; nothing is kept from before, so no page shows stale rows as current.
The pages run in the console's worker threads (web/context.py), each with a connection of its
own here: one page waiting on a slow statement holds no other page's connection.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import psycopg
import structlog

from storage.central_link import Centre, connect
from storage.central_search import CentralSearch
from wire.errors import CallrecError

from .config import CentreLink

__all__ = ["CentreUnavailable", "CentreView"]

log = structlog.get_logger("callrec.web")

T = TypeVar("T")


class CentreUnavailable(CallrecError):
    """The centre's database cannot be reached now; says why."""


class CentreView:
    """What the console reads from the centre, through one connection per worker thread."""

    def __init__(self, link: CentreLink, tz: ZoneInfo) -> None:
        self.link = link
        self.tz = tz
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open_now: set[CentralSearch] = set()

    def close(self) -> None:
        """Every thread's connection (at shutdown)."""
        with self._lock:
            opened, self._open_now = self._open_now, set()
        for search in opened:
            search.centre.close()
        self._local = threading.local()

    def _drop(self) -> None:
        """This thread's connection, after the centre dropped it."""
        search: CentralSearch | None = getattr(self._local, "search", None)
        self._local.search = None
        if search is not None:
            with self._lock:
                self._open_now.discard(search)
            search.centre.close()

    def read(self, step: Callable[[CentralSearch], T]) -> T:
        """`step` on the centre.  A connection the centre dropped (a restart) is opened again
        once; a centre that cannot be reached is a `CentreUnavailable`."""
        reused = getattr(self._local, "search", None) is not None
        try:
            return step(self._open())
        except psycopg.OperationalError as exc:
            self._drop()
            if not reused:
                raise self._unavailable(exc) from None
        try:
            return step(self._open())
        except psycopg.OperationalError as exc:
            self._drop()
            raise self._unavailable(exc) from None

    @staticmethod
    def _unavailable(exc: psycopg.Error) -> CentreUnavailable:
        log.warning("web.centre_unavailable", error=str(exc).strip())
        return CentreUnavailable(f"the centre cannot be reached: {str(exc).strip()}")

    def _open(self) -> CentralSearch:
        search: CentralSearch | None = getattr(self._local, "search", None)
        if search is None or search.centre.conn.closed:
            conn = connect(self.link.dsn, self.link.timeout_seconds, "callrec web")
            search = self._local.search = CentralSearch(Centre(conn), self.tz)
            with self._lock:
                self._open_now.add(search)
        return search

    def erasure(self, site: str, call_id: str) -> dict[str, Any] | None:
        return self.read(lambda search: search.centre.erasure(site, call_id))
