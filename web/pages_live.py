"""The live calls on on-demand lines (品川区 第2条(2)) and their 録音開始 button.

The list comes from the daemon's status (each call's line label, when it was answered, whether
it records: never a number, which a call nobody asked for must not leave anywhere).  The button
is shown to people whose role may start_recording; pressing it is checked again by the access
rules, passed to the daemon over its control socket, and ledgered with who pressed it.
"""
from __future__ import annotations

import re
import time

import structlog
from aiohttp import web

from access.requests import AccessEvent
from policy.access import Action

from .context import actor_of, console_of, render
from .daemon_control import CALL_ID_PATTERN, ask_daemon, control_path
from .daemon_status import daemon_status

__all__ = ["add_routes"]

log = structlog.get_logger("callrec.web")

_CALL_ID = re.compile(CALL_ID_PATTERN)
STARTED = ("started", "resumed")


def _elapsed(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _calls(status: dict[str, object] | None, now: float) -> list[dict[str, object]]:
    """The status document's on-demand calls, each checked (a daemon of another version may send
    other fields; anything malformed is left out rather than shown wrong)."""
    listed = status.get("on_demand") if status is not None else None
    calls = []
    for entry in listed if isinstance(listed, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("call"), str):
            continue
        answered = entry.get("answered")
        if not isinstance(answered, (int, float)) or not _CALL_ID.fullmatch(entry["call"]):
            continue
        calls.append({"call": entry["call"], "line": str(entry.get("line", "")), "answered": answered,
                      "elapsed": _elapsed(now - answered), "recording": entry.get("recording") is True,
                      "started_by": entry.get("started_by"), "record_id": entry.get("record_id")})
    return calls


async def live(request: web.Request) -> web.StreamResponse:
    console = console_of(request)
    status = await daemon_status(console.status_socket)
    return render(request, "live.html", daemon=status is not None, calls=_calls(status, time.time()),
                  may_start=console.access.may(actor_of(request), Action.START_RECORDING))


async def start(request: web.Request) -> web.StreamResponse:
    """録音開始: the rules first (a refusal is ledgered by the access layer), then the daemon; the
    ledger entry names who pressed it, the recording it started and the line."""
    console = console_of(request)
    grant = console.access.authorise(actor_of(request), Action.START_RECORDING)
    call = request.match_info["call"]
    if not _CALL_ID.fullmatch(call):
        raise web.HTTPNotFound()
    answer = await ask_daemon(control_path(console.status_socket), {"action": "start", "call": call,
                                                                    "by": grant.actor})
    if answer is None:
        return render(request, "error.html", status=503, heading="daemon_down", message="")
    outcome = str(answer.get("outcome"))
    if answer.get("ok") is not True:
        return render(request, "error.html", status=409, heading="call_gone", message=outcome)
    if outcome in STARTED:
        record_id = answer.get("record_id")
        console.store.ledger.append(AccessEvent.RECORDING_STARTED, grant.actor, console.store.now(),
                                    **grant.ledger_details(), call=record_id if isinstance(record_id, str) else None,
                                    line=str(answer.get("line") or ""), outcome=outcome)
        log.info("web.recording_started", account=grant.actor, call_id=record_id, outcome=outcome)
    raise web.HTTPSeeOther("/live")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/live", live)
    router.add_post("/live/{call}/start", start)
