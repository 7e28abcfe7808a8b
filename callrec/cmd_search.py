"""`callrec calls find`: the call a request form describes (熊本市 様式1, 山形市 別記様式,
さいたま 様式1), ranked with the reasons it matched and followed by the erased recordings of its
window, so that the answer (熊本市 様式2: does the data exist?) can be given honestly; and the
plain filters of `calls list`, through the same query (storage/search.py).

Times on a form are local: without an offset they are read in the policy's time zone."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from zoneinfo import ZoneInfo

from policy.decide import Direction
from policy.schema import Policy
from storage.index import CallIndex, CallRow
from storage.search import (
    DEFAULT_WINDOW_SECONDS,
    CallQuery,
    Candidate,
    QueryError,
    SearchResult,
    find,
    parse_span,
    parse_time,
    select,
    shown_remote,
)

from .cmd_access import may_search
from .context import open_index, settings

DIRECTIONS = tuple(d.value for d in Direction if d is not Direction.UNKNOWN)
SHOWN = 20
"""Candidates printed unless --limit says otherwise: a day's window can hold hundreds.  Only
these are read whole; the rest are counted (ほかN件), and --page shows the next ones."""

def span(text: str) -> float:
    """--duration, --window, --tolerance: a length, or argparse's usage error."""
    try:
        return parse_span(text)
    except QueryError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _query(args: argparse.Namespace, policy: Policy) -> CallQuery:
    tz = ZoneInfo(policy.timezone)
    at = getattr(args, "at", None)
    if getattr(args, "window", None) and not at:
        raise QueryError("--window is the span either side of --at; a period from/to is its own window")
    return CallQuery(
        around=parse_time(at, tz, "--at") if at else None,
        window_seconds=getattr(args, "window", None) or DEFAULT_WINDOW_SECONDS,
        start=parse_time(args.start, tz, "--from") if args.start else None,
        end=parse_time(args.end, tz, "--to") if args.end else None,
        duration_seconds=getattr(args, "duration", None),
        duration_tolerance=getattr(args, "tolerance", None),
        remote_number=args.number, local_number=args.local, direction=args.direction,
        country_code=policy.numbering.country_code, extension=args.extension,
    )


def listed(index: CallIndex, args: argparse.Namespace, policy: Policy) -> list[CallRow]:
    """The rows `calls list` shows: all (or all kept) without a filter, else those that meet it."""
    if not any((args.start, args.end, args.number, args.local, args.direction, args.extension)):
        return list(index.rows() if args.all else index.kept())
    return select(index, _query(args, policy), erased=args.all)


def print_rows(rows: list[CallRow]) -> None:
    """`calls list` as a table: the extension apart from the city-side number, and a withheld
    caller as 非通知 (a number the policy keeps for one is never printed here)."""
    print(f"{'ID':27} {'STARTED':29} {'DUR':>8} {'DIR':9} {'LOCAL':14} {'EXT':6} {'REMOTE':16} DONE")
    for row in rows:
        duration = f"{row.duration:.1f}" if row.duration is not None else "-"
        print(f"{row.id:27} {row.started_at:29} {duration:>8} {row.direction:9} "
              f"{row.local_number or '-':14} {row.extension or '-':6} {shown_remote(row):16} "
              f"{'yes' if row.complete else 'no'}")


def page(args: argparse.Namespace) -> tuple[int | None, int]:
    """--limit and --page as the search's `limit` and `start`."""
    if args.limit < 0:
        raise QueryError("--limit counts candidates: 0 (all) or more")
    if args.page < 1:
        raise QueryError("--page counts from 1")
    if args.limit == 0 and args.page > 1:
        raise QueryError("--limit 0 shows every candidate on one page: leave out --page")
    return (args.limit or None), (args.page - 1) * args.limit


def cmd_calls_find(args: argparse.Namespace) -> int:
    config, policy = settings(args)
    limit, start = page(args)
    query = _query(args, policy)
    may_search(args)
    index = open_index(config)
    try:
        result = find(index, query, tz=ZoneInfo(policy.timezone), limit=limit, start=start)
    finally:
        index.close()
    if args.json:
        json.dump(result.as_dict(), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        _print(result, args.page)
    return 0


def _print(result: SearchResult, page_number: int) -> None:
    print(f"Search: {result.description}")
    print(result.answer)
    for n, candidate in enumerate(result.candidates, result.start + 1):
        print()
        _print_candidate(n, candidate)
    print_more(result, page_number)
    if result.erased:
        print("\nErased in that window:")
        for tomb in result.erased:
            print(f"  {tomb.id}: {tomb.sentence}")
    print_erased_more(result, page_number)
    for note in result.notes:
        print(f"\n{note}")


def print_erased_more(result: SearchResult, page_number: int) -> None:
    """Which erased recordings were listed and how to list the next ones: a page lists its share
    of them (a day of ten sites can hold thousands), the answer counts them all."""
    if result.erased_shown:
        print(f"  {result.erased_shown}")
    if result.erased_more:
        print(f"  --page {page_number + 1} lists the next {min(result.erased_more, len(result.erased))}; "
              "--limit 0 lists them all")


def print_more(result: SearchResult, page_number: int) -> None:
    """Which candidates were printed and how to see the next ones (ほかN件)."""
    if result.shown:
        print(f"\n{result.shown}")
    if result.more:
        print(f"--page {page_number + 1} shows the next {min(result.more, len(result.candidates))}; "
              "--limit 0 shows them all")


def _print_candidate(n: int, candidate: Candidate) -> None:
    row = candidate.row
    duration = f"{row.duration:.1f} s" if row.duration is not None else "-"
    state = "IN PROGRESS" if candidate.in_progress else row.state
    print(f"{n:3}. {row.id}  score {candidate.score}  {state}{'  HELD' if row.held else ''}")
    print(f"     {row.answered_at or row.started_at}  {duration}  {row.direction}  "
          f"city-side {row.local_number or '-'}  extension {row.extension or '-'}  outside {shown_remote(row)}")
    for reason in candidate.reasons:
        print(f"     - {reason}")


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="start", metavar="TIME",
                   help="recorded from this date and time (policy's time zone unless it has an offset)")
    p.add_argument("--to", dest="end", metavar="TIME", help="recorded until this date and time")
    p.add_argument("--number", metavar="N", help="the outside party's number, in any written form")
    p.add_argument("--local", metavar="N", help="the city-side number: DID or extension")
    p.add_argument("--extension", metavar="N", help="the extension that placed or took the call")
    p.add_argument("--direction", choices=DIRECTIONS)


def add_parsers(calls: argparse._SubParsersAction, common: Callable[..., None],  # type: ignore[type-arg]
                listing: argparse.ArgumentParser) -> None:
    """`calls find`, and the filters of `calls list` (the parser cli.py made)."""
    _filters(listing)
    p = calls.add_parser("find", help="find the call a request form describes (time, length, numbers)")
    p.add_argument("--user", help="who asks, where the policy has access rules")
    p.add_argument("--at", metavar="TIME", help='about when, e.g. "2026-11-20 10:30" (policy\'s time zone)')
    p.add_argument("--window", type=span, metavar="SPAN",
                   help="how far either side of --at (default 30m)")
    p.add_argument("--duration", type=span, metavar="SPAN", help="about how long, e.g. 3m or 2:55")
    p.add_argument("--tolerance", type=span, metavar="SPAN",
                   help="how far off --duration still counts as about it (default a quarter, at least 1m)")
    _filters(p)
    p.add_argument("--limit", type=int, default=SHOWN, help=f"candidates to print (default {SHOWN}; 0: all)")
    p.add_argument("--page", type=int, default=1, help="which --limit candidates: 2 the next ones (default 1)")
    p.add_argument("--json", action="store_true")
    common(p, policy=True)
    p.set_defaults(func=cmd_calls_find)
