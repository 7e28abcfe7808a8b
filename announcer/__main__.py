"""`python -m announcer --config FILE [--policy FILE] [--data-dir DIR]`: the announcer alone, in
the foreground (for operators, and for the tests that run it inside a network namespace).
SIGTERM or SIGINT hand every call in progress over at once, then exit 0."""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

import structlog

from callrec.config import DEFAULT_DATA_DIR
from callrec.logs import configure
from policy.loader import PolicyError, load_policy
from policy.schema import Policy

from .audio import AudioError
from .config import load_announcer_config
from .service import AnnouncerService

log = structlog.get_logger("callrec.announcer")


async def _run(service: AnnouncerService) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    await stop.wait()
    await service.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m announcer", description="callrec's 録音告知 SIP user agent")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--policy", type=Path)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    args = parser.parse_args(argv)
    os.umask(0o077)
    configure(args.log_level)
    try:
        config, policy_path, data_dir = load_announcer_config(args.config)
        policy_path = args.policy or policy_path
        policy = load_policy(policy_path) if policy_path is not None else Policy()
        audio = policy.announcement.load_audio(policy_path.parent if policy_path is not None else None)
    except (PolicyError, AudioError) as exc:
        print(f"announcer: {exc}", file=sys.stderr)
        return 2
    data = args.data_dir or data_dir or DEFAULT_DATA_DIR
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        asyncio.run(_run(AnnouncerService(config, policy, audio, data / "index.sqlite3")))
    except OSError as exc:
        log.error("announcer.failed", reason=str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
