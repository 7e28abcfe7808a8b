"""The recording daemon's health, asked over its status socket as `callrec status` asks it."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

__all__ = ["daemon_status"]

MAX_STATUS_BYTES = 1 << 20


async def daemon_status(path: Path, timeout: float = 2.0) -> dict[str, Any] | None:
    """The daemon's status document, or None when no daemon answers (the page says so)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout)
    except (OSError, TimeoutError):
        return None
    try:
        data = await asyncio.wait_for(reader.read(MAX_STATUS_BYTES), timeout)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    try:
        status = json.loads(data)
    except ValueError:
        return None
    return status if isinstance(status, dict) else None
