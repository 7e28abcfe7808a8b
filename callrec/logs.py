"""structlog set-up: journald entries under systemd, key=value lines on a
terminal or a plain stderr otherwise.  Event names are stable (dotted,
e.g. recording.sealed) so operators can search for them."""
from __future__ import annotations

import logging
import sys
from datetime import datetime
from typing import Any

import structlog

from .journal import JournalLoggerFactory, under_journald


def _pass_dict(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    return event


def _timestamp(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Local time in ISO 8601 with its offset (2026-11-20T10:30:00.123456+09:00), as the
    index writes its times, so that a log line and a row compare without guessing the zone."""
    event["timestamp"] = datetime.now().astimezone().isoformat(timespec="microseconds")
    return event


def configure(level: str = "info", *, journal: bool | None = None) -> None:
    use_journal = under_journald() if journal is None else journal
    processors: list[Any] = [structlog.processors.add_log_level]
    if use_journal:
        processors.append(_pass_dict)
        factory: Any = JournalLoggerFactory()
    else:
        processors.append(_timestamp)
        if sys.stderr.isatty():
            processors.append(structlog.dev.ConsoleRenderer(colors=True))
        else:
            processors.append(structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"]))
        factory = structlog.PrintLoggerFactory(file=sys.stderr)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
