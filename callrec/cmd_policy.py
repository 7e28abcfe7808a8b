"""`callrec policy notice FILE [--format md|html] [-o OUT]`: the public notice of the recording
(設置の公表), written from the policy file alone so that what a city publishes is what its device
does."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from policy.loader import load_policy
from policy.notice import FORMATS, render_notice

__all__ = ["add_parsers", "cmd_policy_notice"]


def cmd_policy_notice(args: argparse.Namespace) -> int:
    """Print the notice, or write it to a file (UTF-8) for the website or the counter."""
    text = render_notice(load_policy(args.file), args.format, str(args.file))
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text, encoding="utf-8")
    return 0


def add_parsers(policy_group: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """The `policy` subcommands beside `check`."""
    p = policy_group.add_parser("notice", help="write the public notice of the recording (Japanese)")
    p.add_argument("file", type=Path)
    p.add_argument("--format", choices=FORMATS, default="md", help="md (default) or a small HTML page")
    p.add_argument("-o", "--output", type=Path, help="write to this file instead of standard output")
    p.set_defaults(func=cmd_policy_notice)
