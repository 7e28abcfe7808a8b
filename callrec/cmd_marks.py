"""`callrec calls mark / unmark / marks / release-evidence`: harassment marks from the command
line (storage/marks.py), each through the access rules where the policy has them: marking needs
`mark`, withdrawing a mark and releasing an evidence hold need `manage_marks` (the manager),
reading marks needs `search`.  Every change is ledgered with who, in which role, and why."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import datetime

from policy.access import Action
from storage.marks import Mark, MarkBook

from .cmd_access import acting
from .context import open_store, settings

__all__ = ["add_parsers"]


def cmd_mark(args: argparse.Namespace) -> int:
    config, policy = settings(args)
    with open_store(config, policy) as store:
        who, role = acting(args, policy, store, Action.MARK)
        with MarkBook(store, policy.harassment) as book:
            mark = book.add(args.id, args.category, marked_by=who, via="cli", note=args.note or "", role=role)
    until = datetime.fromtimestamp(mark.hold_until or 0, store.tz).date()
    print(f"{mark.id}: {args.id} marked {mark.category}; kept as evidence until {until} (inclusive of the day before)")
    return 0


def cmd_unmark(args: argparse.Namespace) -> int:
    config, policy = settings(args)
    with open_store(config, policy) as store:
        who, role = acting(args, policy, store, Action.MANAGE_MARKS)
        with MarkBook(store, policy.harassment) as book:
            mark = book.withdraw(args.mark, by=who, reason=args.reason, role=role)
            held = store.index.get(mark.call_id)
    still = held is not None and held.evidence_until is not None
    print(f"{mark.id}: withdrawn; {mark.call_id} " + ("is still kept as evidence by another mark" if still
                                                      else "is no longer kept as evidence"))
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    config, policy = settings(args)
    with open_store(config, policy) as store:
        who, role = acting(args, policy, store, Action.MANAGE_MARKS)
        with MarkBook(store, policy.harassment) as book:
            released = book.release_hold(args.id, by=who, reason=args.reason, role=role)
    print(f"{args.id}: evidence hold released ({len(released)} mark(s) kept, counted)")
    return 0


def cmd_marks(args: argparse.Namespace) -> int:
    config, policy = settings(args)
    with open_store(config, policy, read_only=True) as store:
        acting(args, policy, store, Action.SEARCH)
        with MarkBook(store, policy.harassment) as book:
            marks = book.of_call(args.id) if args.id else book.between(0, float("inf"), withdrawn=True)
        tz = store.tz
    if args.json:
        json.dump([m.as_dict() for m in marks], sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0
    labels = {c.id: c.label for c in policy.harassment.categories} if policy.harassment else {}
    for mark in marks:
        print(_line(mark, labels.get(mark.category, mark.category), lambda ts: datetime.fromtimestamp(ts, tz)))
    return 0


def _line(mark: Mark, label: str, when: Callable[[float], datetime]) -> str:
    if mark.withdrawn_at:
        state = f"withdrawn {mark.withdrawn_at} by {mark.withdrawn_by}: {mark.withdrawn_reason}"
    elif mark.released_at:
        state = f"hold released {mark.released_at} by {mark.released_by}: {mark.released_reason}"
    else:
        state = f"kept as evidence until {when(mark.hold_until or 0).date()}"
    note = f"  「{mark.note}」" if mark.note else ""
    return f"{mark.id}  {mark.call_id}  {mark.marked_at}  {label}  {mark.via}:{mark.marked_by}  {state}{note}"


def add_parsers(calls: argparse._SubParsersAction,  # type: ignore[type-arg]
                common: Callable[..., None]) -> None:
    def command(name: str, text: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = calls.add_parser(name, help=text)
        common(p, policy=True)
        p.add_argument("--user", help="who acts, where the policy has access rules")
        p.set_defaults(func=func)
        return p

    p = command("mark", "mark a call as harassment (カスハラ) and keep it as evidence", cmd_mark)
    p.add_argument("id", help="the call's id")
    p.add_argument("--category", required=True, help="a category id of the policy's harassment: section")
    p.add_argument("--note", help="what happened, for the record")
    p = command("unmark", "withdraw a wrong or late mark (the manager; its evidence hold goes)", cmd_unmark)
    p.add_argument("mark", help="the mark's id (callrec calls marks)")
    p.add_argument("--reason", required=True)
    p = command("release-evidence", "end a call's evidence hold (the manager); its marks stay", cmd_release)
    p.add_argument("id", help="the call's id")
    p.add_argument("--reason", required=True)
    p = command("marks", "harassment marks: of one call, or all", cmd_marks)
    p.add_argument("id", nargs="?", help="the call's id (default: every mark)")
    p.add_argument("--json", action="store_true")
