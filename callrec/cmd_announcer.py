"""`callrec announcer --config FILE [--policy FILE] [--data-dir DIR]`: the announcer alone, in
the foreground (for operators, and for the tests that run it inside a network namespace).
SIGTERM or SIGINT hand every call in progress over at once, then exit 0."""
from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import structlog

from announcer.audio import AudioError, load_announcement, load_warning
from announcer.config import load_announcer_config
from announcer.service import AnnouncerService
from policy.loader import PolicyError, load_policy
from policy.schema import Policy
from storage.layout import INDEX_FILE, ensure_private_dir

from . import logs
from .config import DEFAULT_DATA_DIR

log = structlog.get_logger("callrec.announcer")


async def _serve(service: AnnouncerService) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    await stop.wait()
    await service.stop()


def cmd_announcer(args: argparse.Namespace) -> int:
    logs.configure(args.log_level)
    try:
        config, policy_path, data_dir = load_announcer_config(args.config)
        policy_path = args.policy or policy_path
        policy = load_policy(policy_path) if policy_path is not None else Policy()
        base = policy_path.parent if policy_path is not None else None
        audio = load_announcement(policy.announcement, base)
        warning = load_warning(policy, base)
    except (PolicyError, AudioError) as exc:
        print(f"callrec announcer: {exc}", file=sys.stderr)
        return 2
    data = args.data_dir or data_dir or DEFAULT_DATA_DIR
    ensure_private_dir(data)
    try:
        asyncio.run(_serve(AnnouncerService(config, policy, audio, data / INDEX_FILE, warning)))
    except OSError as exc:
        log.error("announcer.failed", reason=str(exc))
        return 1
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("announcer", help="run the 録音告知 SIP user agent alone (foreground)")
    p.add_argument("--config", type=Path, required=True,
                   help="config.yaml with an announcer: section, or a file that is the section alone")
    p.add_argument("--policy", type=Path, help="policy file (YAML); default: the config's")
    p.add_argument("--data-dir", type=Path, help="data folder whose index gets the proof of notice")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_announcer)
