"""`callrec report monthly --month YYYY-MM [--pdf] [--output FILE]` and `callrec warnings list|clear`.

The monthly harassment report (issue 18 item 5): counts per line and department, CSV to standard
output (or a file), or PDF in Japanese to a file; counts only. The warned numbers (item 4): the
numbers that hear the warning announcement instead of the notice, and the manager's clear of one,
ledgered. Both sign the person in as the other access commands do (--user NAME).
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from access.errors import AccessError
from access.monthly import report_csv, report_pdf
from access.reporting import monthly_report
from access.service import AccessService
from policy.access import Action
from policy.schema import Policy
from storage.warnings import WarningList

from .cmd_access import signed_in
from .context import open_store, settings

__all__ = ["add_parsers"]


def _with_service(args: argparse.Namespace, command: Callable[[AccessService, Policy], int]) -> int:
    config, policy = settings(args)
    with open_store(config, policy) as store, AccessService(store, policy) as service:
        return command(service, policy)


def cmd_report_monthly(args: argparse.Namespace) -> int:
    """CSV to standard output unless --output names a file; PDF always to a file (never overwritten)."""
    output: Path | None = args.output or (Path(f"harassment-report-{args.month}.pdf") if args.pdf else None)
    if output is not None and output.exists():
        raise AccessError(f"{output} exists; callrec never overwrites a file")

    def run(service: AccessService, policy: Policy) -> int:
        report = monthly_report(service, policy, signed_in(service, args), args.month)
        data = report_pdf(report) if args.pdf else report_csv(report)
        if output is None:
            sys.stdout.buffer.write(data)
            return 0
        with output.open("xb") as out:
            out.write(data)
        print(f"{output}: カスタマーハラスメント月次集計 {args.month}")
        return 0
    return _with_service(args, run)


def _warnings(policy: Policy, service: AccessService) -> WarningList:
    rule = policy.harassment.warning if policy.harassment is not None else None
    if rule is None:
        raise AccessError("the policy names no warning (harassment.warning), so no number hears one")
    return WarningList(service.store.index.path, rule, policy.numbering.country_code)


def cmd_warnings_list(args: argparse.Namespace) -> int:
    """The numbers that hear the warning now, for the manager (who alone may clear one)."""
    def run(service: AccessService, policy: Policy) -> int:
        service.authorise(signed_in(service, args), Action.MANAGE_MARKS)
        with _warnings(policy, service) as warnings:
            for found in warnings.numbers(service.store.now().timestamp()):
                last = datetime.fromtimestamp(found.last_marked_ts, service.store.tz).isoformat(timespec="seconds")
                print(f"{found.number}\t{found.calls} calls\tlast marked {last}")
        return 0
    return _with_service(args, run)


def cmd_warnings_clear(args: argparse.Namespace) -> int:
    def run(service: AccessService, policy: Policy) -> int:
        grant = service.authorise(signed_in(service, args), Action.MANAGE_MARKS)
        with _warnings(policy, service) as warnings:
            cleared = warnings.clear(service.store, args.number, by=grant.actor, reason=args.reason,
                                     role=grant.ledger_details())
        print(f"cleared: {cleared} marks no longer count towards the warning; the number hears the notice again")
        return 0
    return _with_service(args, run)


def add_parsers(sub: argparse._SubParsersAction, common: Callable[..., None]) -> None:  # type: ignore[type-arg]
    def command(group: argparse._SubParsersAction, name: str, text: str,  # type: ignore[type-arg]
                func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = group.add_parser(name, help=text)
        common(p, policy=True)
        p.add_argument("--user", help="who acts (the password is asked for)")
        p.set_defaults(func=func)
        return p

    report = sub.add_parser("report", help="reports (counts only)").add_subparsers(dest="report_command",
                                                                                  required=True)
    p = command(report, "monthly", "harassment marks per line and department for a month (CSV, or --pdf)",
                cmd_report_monthly)
    p.add_argument("--month", required=True, help="YYYY-MM, in the site's time zone")
    p.add_argument("--pdf", action="store_true", help="PDF in Japanese instead of CSV")
    p.add_argument("--output", type=Path, help="file to write (default: CSV to standard output, "
                                               "PDF to harassment-report-YYYY-MM.pdf)")
    warnings = sub.add_parser("warnings", help="numbers that hear the warning announcement").add_subparsers(
        dest="warnings_command", required=True)
    command(warnings, "list", "the numbers marked often enough to hear the warning", cmd_warnings_list)
    p = command(warnings, "clear", "let a number hear the ordinary notice again (ledgered)", cmd_warnings_clear)
    p.add_argument("number")
    p.add_argument("--reason", required=True)
