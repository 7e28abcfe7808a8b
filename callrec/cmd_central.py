"""`callrec central ...`: the centre's schema (init, migrate, status, erasure), its search across
every site (search), and, at a site,
the sync run by hand (sync) or stopped for good (detach).  The daemon runs the sync itself when
its config has a `central:` section."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from storage.central_schema import applied, migrate, migrations
from storage.index import connect as connect_index
from storage.layout import INDEX_FILE
from storage.outbox import disable
from wire.errors import CallrecError

from . import logs
from .central import CentralSync
from .cmd_search import SHOWN, _filters, _print_candidate, _query, page, print_erased_more, print_more, span
from .config import DSN_ENV, Central
from .context import open_store, settings

if TYPE_CHECKING:
    from storage.central_link import Centre
    from storage.central_search import CentralResult

__all__ = ["add_parser", "central_line"]

class CentralCommandError(CallrecError):
    """A `callrec central` command cannot run as asked; says why."""


def central_line(status: dict[str, Any]) -> str:
    """`callrec status`'s line for the sync: last sync, backlog, lag, and the failure if any."""
    line = (f"  central {status['site']}: last sync {status['last_sync'] or 'never'}, backlog {status['backlog']}, "
            f"lag {status['lag_seconds']:.0f} s")
    if status.get("lagging"):
        line += " (LAGGING)"
    if status.get("error"):
        line += f"; failing since {status['failing_since']}: {status['error']}"
    return line


def _dsn(args: argparse.Namespace) -> str:
    if args.dsn:
        return str(args.dsn)
    if os.environ.get(DSN_ENV):
        return os.environ[DSN_ENV]
    config, _ = settings(args)
    if config.central is None:
        raise CentralCommandError(f"no centre named: give --dsn, set {DSN_ENV}, or a config with a central: section")
    return config.central.dsn


def _centre(args: argparse.Namespace) -> Centre:
    import psycopg  # only the commands that talk to a centre load it

    from storage.central_link import Centre, connect

    try:
        return Centre(connect(_dsn(args)))
    except psycopg.Error as exc:
        raise CentralCommandError(f"cannot reach the centre: {str(exc).strip()}") from None


def cmd_init(args: argparse.Namespace) -> int:
    centre = _centre(args)
    try:
        if applied(centre.conn):
            print("callrec central: the centre already has a schema; use `callrec central migrate`", file=sys.stderr)
            return 2
        done = migrate(centre.conn)
    finally:
        centre.close()
    print(f"centre created at schema version {done[-1]}")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    centre = _centre(args)
    try:
        before = max(applied(centre.conn), default=0)
        done = migrate(centre.conn, args.to)
    finally:
        centre.close()
    print(f"schema version {before} -> {done[-1]} ({len(done)} applied)" if done else
          f"schema version {before}: up to date")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    centre = _centre(args)
    try:
        version = max(applied(centre.conn), default=0)
        sites = centre.sites() if version else []
    finally:
        centre.close()
    newest = len(migrations())
    if args.json:
        json.dump({"schema_version": version, "newest": newest, "sites": sites}, sys.stdout, ensure_ascii=False,
                  indent=2)
        print()
    else:
        print(f"schema version {version} (this callrec ships {newest})")
        for site in sites:
            print(f"  {site['site']}: {site['calls']} calls ({site['erased']} erased), last sync "
                  f"{site['last_sync'] or 'never'}, backlog {site['backlog']}, ledger heads "
                  + ", ".join(f"{k} {v}" for k, v in sorted(site["ledger_heads"].items())))
    return 0 if version == newest else 1


def cmd_erasure(args: argparse.Namespace) -> int:
    centre = _centre(args)
    try:
        found = centre.erasure(args.site, args.id)
    finally:
        centre.close()
    if found is None:
        print(f"callrec central: {args.site} {args.id}: no erasure known at the centre", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(found, ensure_ascii=False))
    else:
        policy = f" (policy sha256 {found['policy_sha256'][:16]})" if found["policy_sha256"] else ""
        print(f"{args.site} {args.id}: erased on {found['erased_at']} under {found['rule']}{policy}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """`callrec calls find` over every site's calls at the centre (or the --site ones)."""
    from storage.central_search import CentralSearch

    _, policy = settings(args)
    limit, start = page(args)
    query = _query(args, policy)
    centre = _centre(args)
    try:
        result = CentralSearch(centre, ZoneInfo(policy.timezone)).find(query, sites=args.site or None, limit=limit,
                                                                       start=start)
    finally:
        centre.close()
    if args.json:
        json.dump(result.as_dict(), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        _print_central(result, args.page)
    return 0


def _print_central(found: CentralResult, page_number: int) -> None:
    result = found.result
    print(f"Search: {result.description}, " + (f"sites {', '.join(found.sites)}" if found.sites else "every site"))
    print(result.answer)
    for n, candidate in enumerate(result.candidates, result.start + 1):
        print(f"\n     site {getattr(candidate.row, 'site', '-')}")
        _print_candidate(n, candidate)
    print_more(result, page_number)
    if found.erased:
        print("\nErased in that window:")
        for site, tomb in found.erased:
            print(f"  {site} {tomb.id}: {tomb.sentence}")
    print_erased_more(result, page_number)
    for note in result.notes:
        print(f"\n{note}")


def cmd_site_login(args: argparse.Namespace) -> int:
    """A site's own login to the centre: prints what to put in the site's ~/.pgpass and config."""
    from storage.central_link import site_login
    from storage.central_sync import SyncRefused

    centre = _centre(args)
    try:
        login = site_login(centre.conn, args.site, args.rotate)
        info = (centre.conn.info.host, centre.conn.info.port, centre.conn.info.dbname)
    except SyncRefused as exc:
        raise CentralCommandError(str(exc)) from None
    finally:
        centre.close()
    print(f"site {args.site}: login {login.role} {'created' if login.created else 'given a new password'}; it "
          "reads and writes only its own site's rows")
    host, port, dbname = info
    print(f"config central.dsn: host={host} port={port} dbname={dbname} user={login.role}")
    print(f"~/.pgpass line (mode 0600, for the account the daemon runs as): "
          f"{host}:{port}:{dbname}:{login.role}:{login.password}")
    return 0


def _site_config(args: argparse.Namespace) -> Central:
    config, _ = settings(args)
    if config.central is None:
        raise CentralCommandError("this command needs a config with a central: section (dsn, site)")
    return config.central


def cmd_sync(args: argparse.Namespace) -> int:
    """Send the site's outbox: until it is empty (--once), or until SIGTERM like the daemon."""
    config, policy = settings(args)
    central = _site_config(args)
    logs.configure(config.log_level)
    with open_store(config, policy) as store:
        sync = CentralSync(central, store)
        if not args.once:
            asyncio.run(_follow(sync))
            return 0
        while True:
            sync.cycle(time.time())
            health = sync.health
            if health.error is not None:
                print(f"callrec central: sync failed: {health.error} (backlog {health.backlog})", file=sys.stderr)
                sync.close()
                return 1
            if health.backlog == 0:
                sync.close()
                print(f"{central.site}: in sync")
                return 0


async def _follow(sync: CentralSync) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await sync.run(stop)


def cmd_detach(args: argparse.Namespace) -> int:
    config, _ = settings(args)
    db = connect_index(config.data_dir / INDEX_FILE)
    try:
        dropped = disable(db)
    finally:
        db.close()
    print(f"outbox off; {dropped} unsent changes dropped (joining a centre again sends every row once)")
    return 0


def add_parser(sub: argparse._SubParsersAction, common: Any) -> None:  # type: ignore[type-arg]
    central = sub.add_parser("central", help="the central PostgreSQL of several sites").add_subparsers(
        dest="central_command", required=True)

    def centre_side(name: str, help_text: str) -> argparse.ArgumentParser:
        p = central.add_parser(name, help=help_text)
        p.add_argument("--dsn", help=f"the centre's PostgreSQL (default: ${DSN_ENV}, else the config's central.dsn)")
        p.add_argument("--config", type=Path, help="daemon config file (YAML) with a central: section")
        return p

    p = centre_side("init", "create the centre's schema in an empty database")
    p.set_defaults(func=cmd_init)
    p = centre_side("migrate", "bring the centre's schema up to this version's (or --to N)")
    p.add_argument("--to", type=int, help="stop at this schema version")
    p.set_defaults(func=cmd_migrate)
    p = centre_side("status", "schema version and each site's last sync, backlog and rows (exit 1: migrate)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    p = centre_side("erasure", "when and under which rule a site erased a call")
    p.add_argument("site")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_erasure)
    p = centre_side("search", "find the call a request form describes, across every site (as `calls find`)")
    p.add_argument("--policy", type=Path, help="policy file (YAML) for the time zone and numbering; default: "
                   "the config's")
    p.add_argument("--site", action="append", metavar="SITE", help="only this site's calls (repeatable)")
    p.add_argument("--at", metavar="TIME", help='about when, e.g. "2026-11-20 10:30" (policy\'s time zone)')
    p.add_argument("--window", type=span, metavar="SPAN", help="how far either side of --at (default 30m)")
    p.add_argument("--duration", type=span, metavar="SPAN", help="about how long, e.g. 3m or 2:55")
    p.add_argument("--tolerance", type=span, metavar="SPAN",
                   help="how far off --duration still counts as about it (default a quarter, at least 1m)")
    _filters(p)
    p.add_argument("--limit", type=int, default=SHOWN, help=f"candidates to print (default {SHOWN}; 0: all)")
    p.add_argument("--page", type=int, default=1, help="which --limit candidates: 2 the next ones (default 1)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)

    p = centre_side("site-login", "make a site's own PostgreSQL login (its own rows only); prints its password")
    p.add_argument("site")
    p.add_argument("--rotate", action="store_true", help="the login exists: give it a new password")
    p.set_defaults(func=cmd_site_login)

    p = central.add_parser("sync", help="at a site: send the outbox to the centre (the daemon does this itself)")
    common(p, policy=True)
    p.add_argument("--once", action="store_true", help="until the outbox is empty, then exit (1: the centre failed)")
    p.set_defaults(func=cmd_sync)
    p = central.add_parser("detach", help="at a site: stop queueing for a centre and drop what is queued")
    common(p)
    p.set_defaults(func=cmd_detach)
