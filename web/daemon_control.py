"""Asking the recording daemon to record a live call on an on-demand line (品川区 第2条(2)).

The call's audio is in the daemon's memory, so only the daemon can record it.  The console asks
over a control socket beside the status socket: one JSON line, `{"action": "start", "call": ID,
"by": ACCOUNT}`, answered by one JSON line, `{"ok": ..., "outcome": ..., "record_id": ...,
"line": ...}`.  The socket is the daemon user's alone (mode 0600; the console runs as that user,
see systemd/callrec-web.service) and the daemon also checks the peer's uid.  The console decides
whether the person may (the access rules) and ledgers what they did; the daemon carries it out.
"""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

__all__ = ["CALL_ID_PATTERN", "CONTROL_SOCKET", "MAX_CONTROL_BYTES", "ask_daemon", "control_path"]

CONTROL_SOCKET = "control.sock"
MAX_CONTROL_BYTES = 4096
CALL_ID_PATTERN = r"^[0-9a-f]{8}-[0-9]{1,12}$"
"""A live call as the daemon names it in its status: its run's random id and the call's serial,
so a page left open across a restart can never name another call."""


def control_path(status_socket: Path) -> Path:
    """The control socket: in the status socket's folder (the data folder, or /run/callrec)."""
    return status_socket.with_name(CONTROL_SOCKET)


async def ask_daemon(path: Path, request: dict[str, Any], timeout: float = 5.0) -> dict[str, Any] | None:
    """The daemon's answer to one request, or None when no daemon answers (the page says so)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout)
    except (OSError, TimeoutError):
        return None
    try:
        writer.write(json.dumps(request, ensure_ascii=False).encode() + b"\n")
        await asyncio.wait_for(writer.drain(), timeout)
        line = await asyncio.wait_for(reader.readline(), timeout)
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        writer.close()
    try:
        answer = json.loads(line[:MAX_CONTROL_BYTES])
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None
