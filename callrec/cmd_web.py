"""`callrec web [--config FILE] [--centre DSN]`: the console, in the foreground (systemd runs it as
callrec-web); with a centre, over every site's calls there."""
from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

from access.centre_service import CentreService
from web.config import CentreLink, WebConfig
from web.server import serve

from . import logs
from .context import open_store, settings

__all__ = ["add_parser"]


def cmd_web(args: argparse.Namespace) -> int:
    config, policy = settings(args)
    logs.configure(config.log_level)
    web_config = config.web or WebConfig()
    if args.listen:
        web_config = web_config.model_copy(update={"listen": args.listen})
    if args.port:
        web_config = web_config.model_copy(update={"port": args.port})
    if args.plain_http:
        web_config = web_config.model_copy(update={"plain_http": True})
    if args.centre:
        web_config = web_config.model_copy(update={"centre": CentreLink(dsn=args.centre)})
    centre = web_config.centre
    with ExitStack() as stack:
        reconnect: Callable[[], AbstractContextManager[CentreService]] | None = None
        if centre is not None:
            from .centre_access import centre_service  # psycopg and the CA only where a centre is named

            folder = args.centre_dir or centre.folder or Path(os.environ.get("CALLREC_CENTRE_DIR", "callrec-centre"))
            dsn = centre.dsn

            def open_centre() -> AbstractContextManager[CentreService]:
                return centre_service(dsn, policy, folder)
            reconnect = open_centre
        # At the centre no recorder makes the data folder: the console makes its own on first
        # start, for its sign-in sessions.
        store = stack.enter_context(open_store(config, policy, create_key=centre is not None))
        asyncio.run(serve(web_config, policy, store, config.status_path, reconnect))
    return 0


def add_parser(sub: argparse._SubParsersAction, common: Callable[..., None]) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("web", help="the console: browser screens over records in use (HTTPS; foreground)")
    common(p, policy=True)
    p.add_argument("--listen", help="address to listen on (default: the config's web.listen, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8443)")
    p.add_argument("--plain-http", action="store_true", help="plain HTTP, loopback only (tests, SSH tunnels)")
    p.add_argument("--centre", metavar="DSN",
                   help="show the centre's calls of every site (its PostgreSQL; default: the config's web.centre)")
    p.add_argument("--centre-dir", type=Path, help="with --centre: the centre's folder (CA, grant and ledger keys; "
                   "default: web.centre.folder, $CALLREC_CENTRE_DIR or ./callrec-centre)")
    p.set_defaults(func=cmd_web)
