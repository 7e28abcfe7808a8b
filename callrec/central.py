"""The daemon's sync to the centre: the sender (storage/central_link.py) in a thread of its own,
batch after batch while there is a backlog, every `interval_seconds` otherwise, backing off after
a failure; its health for `callrec status`, and the journal told once when the lag passes the
configured threshold and once when it is back under.

Recording never waits for it: the outbox is written with each change in the index, so the
centre being away only lengthens the queue.
"""
from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from access.errors import AccessError
from access.site_desk import answer_hold_order
from access.site_identity import load_site
from storage.central_sync import OrderAnswer, PendingOrder, SyncHealth
from storage.index import connect
from storage.layout import INDEX_FILE
from storage.outbox import enable
from storage.store import Store
from wire.errors import CallrecError

from .config import Central

if TYPE_CHECKING:
    from storage.central_link import Sender

__all__ = ["CentralSync", "enable_outbox"]

log = structlog.get_logger("callrec.central")

BURST_SECONDS = 1.0
"""Batches sent back to back at most this long before the loop looks at the clock and the stop
signal again: catch-up runs at full speed, a stop waits at most this."""


def enable_outbox(store: Store) -> None:
    """Queue every change from now on (and every row not yet sent once), for a writer whose config
    names a centre: the recorder, a replay, a hold or an erasure from the command line."""
    db = connect(store.data_dir / INDEX_FILE)
    try:
        _, queued = enable(db, time.time())
    finally:
        db.close()
    if queued:
        log.info("central.outbox_enabled", rows=queued)


class CentralSync:
    """One site's sender, driven from the daemon's event loop."""

    def __init__(self, config: Central, store: Store) -> None:
        self.config = config
        self._store = store
        self.health = SyncHealth(warn_after=config.lag_warning_seconds)
        self._sender: Sender | None = None
        self._thread_store: Store | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="central")
        self._logged_failure = False

    async def run(self, stopping: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not stopping.is_set():
                delay = await loop.run_in_executor(self._thread, self.cycle, time.time())
                try:
                    await asyncio.wait_for(stopping.wait(), delay)
                except TimeoutError:
                    pass
        finally:
            await loop.run_in_executor(self._thread, self.close)
            self._thread.shutdown(wait=True)

    def cycle(self, now: float) -> float:
        """Send what is queued (for up to BURST_SECONDS); returns the pause before the next cycle."""
        import psycopg  # here: every `callrec` command imports this module

        delay = self.config.interval_seconds
        try:
            sender = self._open()
            until = time.monotonic() + BURST_SECONDS
            while not sender.step().empty:
                if time.monotonic() > until:
                    delay = 0.0
                    break
            backlog, oldest = sender.pending()
            self.health.sent(now, backlog, oldest)
            if self._logged_failure:
                log.warning("central.sync_resumed", site=self.config.site, backlog=backlog)
            self._logged_failure = False
        except (psycopg.Error, sqlite3.Error, OSError, CallrecError) as exc:
            delay = self._failed(now, exc)
        self._journal(now)
        return delay

    def _open(self) -> Sender:
        if self._sender is None:
            from storage.central_link import Sender  # psycopg only where a centre is configured

            ledgers = {"ledger": self._store.ledger, "seals": self._store.seals}
            self._sender = Sender(self._store.index.path, ledgers, self.config.dsn, self.config.site,
                                  self.config.batch_rows, self.config.timeout_seconds, self._answerer())
        return self._sender

    def _answerer(self) -> Callable[[PendingOrder], OrderAnswer] | None:
        """The site's desk answering the centre's hold orders (from the sender's thread, over a
        connection of its own); None, and orders stay pending, while the folder is not enrolled:
        without the centre's key no order can be verified."""
        try:
            identity = load_site(self._store.data_dir)
        except AccessError as exc:
            log.info("central.hold_orders_off", site=self.config.site, reason=str(exc))
            return None
        if identity.name != self.config.site:
            log.error("central.hold_orders_off", site=self.config.site,
                      reason=f"the folder is enrolled as site {identity.name}, the config names {self.config.site}")
            return None

        def answer(order: PendingOrder) -> OrderAnswer:
            if self._thread_store is None:
                self._thread_store = self._store.for_thread()
            return answer_hold_order(self._thread_store, order)

        return answer

    def _failed(self, now: float, exc: Exception) -> float:
        backlog, oldest = (0, None)
        if self._sender is not None:
            self._sender.disconnect()
            try:
                backlog, oldest = self._sender.pending()
            except sqlite3.Error:
                pass
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        delay = self.health.failed(now, reason, backlog, oldest)
        if not self._logged_failure:
            (log.error if isinstance(exc, CallrecError) else log.warning)(
                "central.sync_failed", site=self.config.site, reason=reason, backlog=backlog)
            self._logged_failure = True
        return delay

    def _journal(self, now: float) -> None:
        change = self.health.warning(now)
        if change == "lagging":
            log.warning("central.lagging", site=self.config.site, lag_seconds=round(self.health.lag(now)),
                        backlog=self.health.backlog, threshold_seconds=self.config.lag_warning_seconds)
        elif change == "caught_up":
            log.info("central.caught_up", site=self.config.site)

    def close(self) -> None:
        """Close the sender's connections (from the thread that used them)."""
        if self._sender is not None:
            self._sender.close()
            self._sender = None
        if self._thread_store is not None:
            self._thread_store.index.close()
            self._thread_store = None

    def status(self, now: float) -> dict[str, Any]:
        values = self.health.as_dict(now)
        for name in ("last_sync", "failing_since"):
            if values[name] is not None:
                values[name] = datetime.fromtimestamp(values[name], UTC).astimezone(self._store.tz).isoformat(
                    timespec="seconds")
        return {"site": self.config.site, **values}
