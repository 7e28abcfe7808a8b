"""`callrec centre user|request|copies ...`, `callrec centre site-address`, `callrec centre ledger
...`: the people, requests and copies of "Records in use" at the centre of several sites.

The same commands as on one appliance (callrec/cmd_access.py, the same functions), run against the
centre's access service (callrec/centre_access.py) instead of a data folder: `--dsn` names the
centre's PostgreSQL, `--centre-dir` its folder, `--policy` the organisation's access rules.  Calls
are named SITE/ID.  Fulfilling a request fetches each call from its site (`site-address` says
where each site's fetch server listens).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from access.centre_book import CENTRE, SITE_CHECKS
from access.centre_service import CENTRE_LABEL, CentreService
from access.errors import AccessError

from . import cmd_access
from .centre_access import POLICY_ENV, centre_service
from .config import DSN_ENV

__all__ = ["add_parsers"]


@contextmanager
def _open(args: argparse.Namespace) -> Iterator[CentreService]:
    with centre_service(args.dsn, args.policy, args.centre_dir) as service:
        yield service


def _common(default_dir: Path) -> object:
    def common(p: argparse.ArgumentParser, policy: bool = False) -> None:
        p.add_argument("--dsn", help=f"the centre's PostgreSQL (default: ${DSN_ENV})")
        p.add_argument("--centre-dir", type=Path, default=default_dir,
                       help="the centre's folder (default $CALLREC_CENTRE_DIR or ./callrec-centre)")
        p.add_argument("--policy", type=Path, help=f"the organisation's policy with access: (default ${POLICY_ENV})")
        p.set_defaults(open_service=_open)
    return common


def cmd_site_address(args: argparse.Namespace) -> int:
    from .cmd_sites import split_address

    with _open(args) as service:
        if args.address is None:
            for site, (host, port) in service.site_addresses().items():
                print(f"{site:24} {host}:{port}")
            return 0
        if args.site is None:
            raise AccessError("name the site: callrec centre site-address SITE HOST:PORT")
        by = cmd_access.signed_in(service, args) if args.user else None
        host, port = split_address(args.address)
        service.set_site_address(by, args.site, host, port)
        print(f"site {args.site}: fetched from {host}:{port}")
    return 0


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    """The centre's chain by its MAC; each site's synced chain as far as the centre can check it
    without the site's key, said in words (the MACs are verified at the site)."""
    with _open(args) as service:
        by = cmd_access.signed_in(service, args) if args.user else None
        problems, sites = service.verify_book(by)
        head = service.ledger.head()
    for problem in problems:
        print(f"centre ledger: {problem}")
    if problems:
        print(f"centre ledger: NOT OK: {len(problems)} problem(s)", file=sys.stderr)
    else:
        print(f"centre ledger: ok, {head[0] if head else 0} entries, the chain and its head verify")
    for site in sites:
        for problem in site.problems:
            print(f"site {site.site}: {problem}")
        if site.ok:
            print(f"site {site.site}: ok, {site.entries} entries as synced ({'; '.join(SITE_CHECKS)})")
        else:
            print(f"site {site.site}: NOT OK: {len(site.problems)} problem(s)", file=sys.stderr)
    if sites:
        print("the sites' MACs are verified at each site (`callrec ledger verify` there): the centre does not "
              "hold their keys")
    return 1 if problems or any(not site.ok for site in sites) else 0


def cmd_ledger_list(args: argparse.Namespace) -> int:
    """The one 通話記録管理簿: the centre's entries and every site's, newest first, a page at a time."""
    with _open(args) as service:
        by = cmd_access.signed_in(service, args) if args.user else None
        book = service.book(by)
        page = book.page(book.filters(site=args.site, event=args.event), args.page, args.page_size)
    if args.json:
        print(json.dumps({"page": page.page, "pages": page.pages, "total": page.total, "entries": [
            {"site": e.site, "seq": e.seq, "at": e.at.isoformat(), "event": e.event, "actor": e.actor,
             "reason": e.reason, "approved_by": e.approved_by, "details": e.details} for e in page.entries]},
            ensure_ascii=False, indent=1))
        return 0
    for e in page.entries:
        print(f"{e.at:%Y-%m-%d %H:%M:%S}  {e.site or CENTRE_LABEL:12} {e.seq:>7}  {e.event:28} {e.actor:16} "
              f"{e.reason or ''}")
    print(f"page {page.page} of {page.pages} ({page.total} entries)", file=sys.stderr)
    return 0


def add_parsers(centre_sub: argparse._SubParsersAction, default_dir: Path) -> None:  # type: ignore[type-arg]
    common = _common(default_dir)
    cmd_access.add_parsers(centre_sub, common)  # centre user|request|copies ..., run at the centre

    p = centre_sub.add_parser("site-address", help="where a site's fetch server listens (none: list them)")
    common(p)
    p.add_argument("site", nargs="?")
    p.add_argument("address", nargs="?", help="HOST:PORT of the site's fetch server (callrec site serve)")
    p.add_argument("--user", help="who acts (a person who manages users); default: the administrator's shell")
    p.set_defaults(func=cmd_site_address)

    ledger = centre_sub.add_parser("ledger", help="the one 通話記録管理簿: the centre's and every site's")
    ledger = ledger.add_subparsers(dest="centre_ledger_command", required=True)
    p = ledger.add_parser("list", help="the centre's and every site's entries, newest first, a page at a time")
    common(p)
    p.add_argument("--site", help=f"one site's entries ({CENTRE}: the centre's own)")
    p.add_argument("--event", help="one event (e.g. copy_made)")
    p.add_argument("--page", type=int, default=1)
    p.add_argument("--page-size", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.add_argument("--user", help="who acts (a person who may read the ledger); default: the administrator's shell")
    p.set_defaults(func=cmd_ledger_list)
    p = ledger.add_parser("verify", help="check the centre's chain and each site's synced chain (exit 1 naming "
                                         "each problem)")
    common(p)
    p.add_argument("--user", help="who acts (a person who may read the ledger); default: the administrator's shell")
    p.set_defaults(func=cmd_ledger_verify)
    p = ledger.add_parser("book", help="the one 通話記録管理簿 with a 拠点 column: CSV or PDF (by the file's suffix)")
    common(p)
    p.add_argument("--user", help="who acts (the password is asked for)")
    p.add_argument("-o", "--output", type=Path, required=True, help="new .csv or .pdf file")
    p.set_defaults(func=cmd_access.cmd_ledger_book)
