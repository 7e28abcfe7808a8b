"""The daemon's side of the console's control socket (web.daemon_control): the live on-demand
calls it reports in its status, and the one request it takes, to record one of them.

Narrow on purpose: one action, one call named by this run's id and the call's serial, the
account that asked (checked and ledgered by the console) kept on the row as `console:<account>`.
The socket is created 0600 and a peer whose uid is neither the daemon's nor root's is refused
before its request is read.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import os
import re
import secrets
import socket
import struct
from pathlib import Path
from typing import Any

import structlog

from recorder.engine import Recorder
from recorder.on_demand import StartOutcome
from storage.recordings import RecordingStore
from web.daemon_control import MAX_CONTROL_BYTES

__all__ = ["Control", "serve_control"]

log = structlog.get_logger("callrec.control")

ACCOUNT = re.compile(r"^[^\x00-\x1f\x7f:]{1,64}$")
DONE = (StartOutcome.STARTED, StartOutcome.RESUMED, StartOutcome.ALREADY)


class Control:
    """What the console may see of the on-demand calls under way, and its one request."""

    def __init__(self, recorder: Recorder, store: RecordingStore) -> None:
        self.recorder = recorder
        self.store = store
        self.run_id = secrets.token_hex(4)

    def live(self) -> list[dict[str, Any]]:
        """For the status document: each on-demand call's id, line label and times; its recording's
        id once recording.  Never a number: the status socket is readable by the callrec group."""
        return [{"call": f"{self.run_id}-{call.serial}", "line": call.label, "answered": call.answered,
                 "recording": call.recording, "started_by": call.started_by,
                 "start_requested_at": call.start_requested_at,
                 "record_id": self.store.record_id(call.serial) if call.recording else None}
                for call in self.recorder.on_demand.live()]

    async def answer(self, request: object) -> dict[str, Any]:
        if not isinstance(request, dict) or request.get("action") != "start":
            return {"ok": False, "outcome": "bad_request"}
        by, call = request.get("by"), request.get("call")
        if not isinstance(by, str) or not ACCOUNT.fullmatch(by) or not isinstance(call, str):
            return {"ok": False, "outcome": "bad_request"}
        run_id, _, serial = call.partition("-")
        if run_id != self.run_id or not serial.isdigit() or len(serial) > 12:
            return {"ok": False, "outcome": str(StartOutcome.UNKNOWN)}
        number = int(serial)
        label = next((c.label for c in self.recorder.on_demand.live() if c.serial == number), None)
        outcome = self.recorder.on_demand.start(number, f"console:{by}", self.recorder.now)
        if inspect.isawaitable(outcome):  # several capture workers: the owner answers (callrec.workers)
            outcome = await outcome
        record_id = self.store.record_id(number)
        log.info("on_demand.requested", outcome=str(outcome), by=by, call_id=record_id)
        return {"ok": outcome in DONE, "outcome": str(outcome), "record_id": record_id, "line": label}


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


async def serve_control(path: Path, control: Control) -> asyncio.AbstractServer:
    """The control socket, private to the daemon's user."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if _peer_uid(writer) not in (os.getuid(), 0):
                log.warning("control.refused", reason="peer is another user")
                return
            try:
                line = await asyncio.wait_for(reader.readline(), 5.0)
                request = json.loads(line[:MAX_CONTROL_BYTES]) if len(line) <= MAX_CONTROL_BYTES else None
            except (TimeoutError, ValueError):
                request = None
            writer.write(json.dumps(await control.answer(request), ensure_ascii=False).encode() + b"\n")
            await writer.drain()
        except OSError:
            return
        finally:
            writer.close()

    old_umask = os.umask(0o177)
    try:
        return await asyncio.start_unix_server(handle, path=str(path), limit=MAX_CONTROL_BYTES * 2)
    finally:
        os.umask(old_umask)
