"""Starting and stopping the console: the open store, the templates, TLS, and aiohttp's runner.

The console is its own process (`callrec web`, its own systemd unit): it opens the data folder
with the same key credential as the daemon but its own index connections, so the capture loop
never waits on a page; it stops gracefully on SIGTERM (aiohttp finishes the requests in flight).
"""
from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import jinja2
import structlog
from aiohttp import web

from access.centre_service import CentreService
from access.service import AccessService
from policy.schema import Policy
from storage.layout import INDEX_FILE
from storage.store import Store

from .app import make_app
from .centre import CentreView
from .config import WebConfig
from .context import Console
from .sessions import SessionStore
from .tls import server_context

__all__ = ["open_console", "serve"]

log = structlog.get_logger("callrec.web")


def open_console(config: WebConfig, policy: Policy, store: Store, status_socket: Path, secure: bool,
                 reconnect: Callable[[], AbstractContextManager[CentreService]] | None = None) -> Console:
    """`reconnect` opens the centre's service (callrec/centre_access.py) when the console is at
    the centre, now and after the centre went away; else the store's own service is used."""
    templates = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                                   autoescape=True, undefined=jinja2.StrictUndefined)
    templates.filters["mib"] = lambda size: f"{size / 2**20:,.0f}"
    templates.filters["when"] = lambda ts: (datetime.fromtimestamp(ts, ZoneInfo(policy.timezone))
                                            .strftime("%Y-%m-%d %H:%M:%S") if ts else "-")
    sessions = SessionStore(store.data_dir / INDEX_FILE, config.session_idle_minutes * 60,
                            config.session_max_hours * 3600)
    centre = CentreView(config.centre, ZoneInfo(policy.timezone)) if config.centre is not None else None
    if reconnect is None:
        return Console(config, policy, store, AccessService(store, policy), sessions, status_socket, templates, secure,
                       centre)
    opened = ExitStack()
    service = opened.enter_context(reconnect())
    console = Console(config, policy, store, service, sessions, status_socket, templates, secure, centre, reconnect)
    console.adopt(opened, service)
    return console


async def serve(config: WebConfig, policy: Policy, store: Store, status_socket: Path,
                reconnect: Callable[[], AbstractContextManager[CentreService]] | None = None) -> None:
    """Serve until SIGTERM or SIGINT; HTTPS unless plain HTTP on loopback was asked for."""
    context = server_context(config, store.data_dir / "web")
    console = open_console(config, policy, store, status_socket, secure=context is not None, reconnect=reconnect)
    runner = web.AppRunner(make_app(console), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.listen, config.port, ssl_context=context)
    await site.start()
    log.info("web.ready", listen=config.listen, port=config.port, tls=context is not None,
             centre=console.centre is not None)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        console.close()
        if console.centre is not None:
            console.centre.close()
        log.info("web.stopped")
