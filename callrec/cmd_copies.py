"""`callrec copies`: the numbered copies (複製データ) handed to requesters.

`verify` needs no master key and no data folder, so the recipient of a copy, or an auditor years
later, can check it on any machine where callrec is installed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from access.errors import PackageError
from access.package import PackageReport, verify_package

__all__ = ["add_parser", "cmd_copies_verify"]


def cmd_copies_verify(args: argparse.Namespace) -> int:
    """Exit 0 when the package is the copy as made, 1 naming each problem, 2 for a bad fingerprint."""
    try:
        report = verify_package(args.package, args.fingerprint)
    except PackageError as exc:
        print(f"callrec: {exc}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(report.as_json(), sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        _print_report(report, fingerprint_given=args.fingerprint is not None)
    return 0 if report.ok else 1


def _print_report(report: PackageReport, *, fingerprint_given: bool) -> None:
    name = report.path
    for problem in report.problems:
        print(f"{name}: {problem}")
    if not report.ok:
        print(f"{name}: NOT OK: {len(report.problems)} problem(s)")
        return
    print(f"{name}: ok: copy {report.copy_number}, {len(report.files)} files as listed in manifest.json, "
          f"signature good")
    if fingerprint_given:
        print(f"signed by key {report.fingerprint}, the fingerprint given")
    else:
        print(f"signed by key {report.fingerprint}: compare it with the fingerprint on the form the copy came "
              "with (or give --fingerprint)")


def add_parser(copies: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """`copies verify`, in the `copies` group of the register's commands (cmd_access)."""
    p = copies.add_parser("verify", help="check a copy package offline: its files, manifest and signature "
                                         "(exit 1 naming each problem)")
    p.add_argument("package", type=Path, metavar="PACKAGE", help="the copy's ZIP file")
    p.add_argument("--fingerprint", metavar="FP",
                   help="the signing key's fingerprint from the form; any other signer is a problem")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_copies_verify)
