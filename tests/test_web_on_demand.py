"""The console's 録音開始 for on-demand lines (品川区 第2条(2)) through plain HTTP, against a
stand-in daemon (its status socket and its control socket, as `callrec run` serves them): who sees
the button, who may press it, what reaches the daemon, and what the ledger says."""
from __future__ import annotations

import json
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.console_site import ConsoleSite, csrf_of
from tests.test_web_http import person

PEOPLE = {"kanri": "manager", "tanto": "handler", "audit": "auditor"}
CALL = "0a1b2c3d-7"


class Socket(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """One of the daemon's sockets: reads one line (the control socket's request; the status socket
    gets none and answers at once), answers with `reply(request)`."""

    daemon_threads = True

    def __init__(self, path: Path, reply: Any, reads: bool) -> None:
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Answer(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                request = json.loads(self.rfile.readline()) if reads else None
                if request is not None:
                    outer.requests.append(request)
                self.wfile.write(json.dumps(reply(request), ensure_ascii=False).encode() + b"\n")

        super().__init__(str(path), Answer)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        Path(str(self.server_address)).unlink(missing_ok=True)


class StandIn:
    """What `callrec run` would report while a call on an on-demand line waits, and would do when
    asked to record it."""

    def __init__(self, site: ConsoleSite) -> None:
        self.recording = False
        self.call = {"call": CALL, "line": "区民相談窓口", "answered": time.time() - 65, "recording": False,
                     "started_by": None, "start_requested_at": None, "record_id": None}
        self.status = Socket(site.data / "status.sock", lambda _: {"healthy": True, "on_demand": [self.call]},
                             reads=False)
        self.control = Socket(site.data / "control.sock", self._start, reads=True)
        self.record_id = site.call["id"]

    def _start(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("call") != CALL:
            return {"ok": False, "outcome": "unknown_call"}
        self.call.update(recording=True, started_by=f"console:{request['by']}", record_id=self.record_id)
        return {"ok": True, "outcome": "started", "record_id": self.record_id, "line": "区民相談窓口"}

    def stop(self) -> None:
        self.status.stop()
        self.control.stop()


@pytest.fixture()
def site(tmp_path: Path) -> Iterator[ConsoleSite]:
    running = ConsoleSite(tmp_path, "shinagawa", PEOPLE)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture()
def daemon(site: ConsoleSite) -> Iterator[StandIn]:
    stand_in = StandIn(site)
    try:
        yield stand_in
    finally:
        stand_in.stop()


async def test_a_handler_starts_the_recording_and_the_ledger_names_them(site: ConsoleSite, daemon: StandIn) -> None:
    http = await person(site, "tanto")
    async with http:
        page = await (await http.get("/live")).text()
        assert '<a href="/live">手動録音</a>' in page, "the menu offers the page where the policy has on-demand lines"
        assert "区民相談窓口" in page and "0:01:0" in page and "録音開始" in page
        assert f'action="/live/{CALL}/start"' in page
        tokenless = await http.post(f"/live/{CALL}/start", data={})
        assert tokenless.status == 403 and daemon.control.requests == []
        forged = await http.post(f"/live/{CALL}/start", data={"csrf": "forged"})
        assert forged.status == 403 and daemon.control.requests == []
        pressed = await http.post(f"/live/{CALL}/start", data={"csrf": csrf_of(page)}, allow_redirects=False)
        assert pressed.status == 303 and pressed.headers["Location"] == "/live"
        assert daemon.control.requests == [{"action": "start", "call": CALL, "by": "tanto"}]
        after = await (await http.get("/live")).text()
        assert "録音中" in after and f'href="/calls/{daemon.record_id}"' in after and "録音開始" not in after
    [entry] = [e for e in site.ledger() if e["event"] == "recording_started"]
    assert entry["actor"] == "tanto" and entry["details"]["role"] == "handler"
    assert entry["details"]["call"] == daemon.record_id and entry["details"]["line"] == "区民相談窓口"


async def test_an_auditor_sees_the_call_but_no_button_and_a_forged_press_is_refused(site: ConsoleSite,
                                                                                    daemon: StandIn) -> None:
    http = await person(site, "audit")
    async with http:
        page = await (await http.get("/live")).text()
        assert "区民相談窓口" in page and "録音開始" not in page
        refused = await http.post(f"/live/{CALL}/start", data={"csrf": csrf_of(page)})
        assert refused.status == 403 and "start_recording" in await refused.text()
    assert daemon.control.requests == [], "a refused press never reaches the daemon"
    assert any(e["event"] == "refused_action" and e["actor"] == "audit" and e["details"]["action"] == "start_recording"
               for e in site.ledger())
    assert all(e["event"] != "recording_started" for e in site.ledger())


async def test_a_malformed_id_a_gone_call_and_a_silent_daemon(site: ConsoleSite, daemon: StandIn) -> None:
    async with aiohttp.ClientSession(site.base) as anonymous:
        response = await anonymous.get("/live", allow_redirects=False)
        assert response.status == 303 and response.headers["Location"] == "/login"
        response = await anonymous.post(f"/live/{CALL}/start", data={}, allow_redirects=False)
        assert response.status == 401 and daemon.control.requests == []
    http = await person(site, "kanri")
    async with http:
        token = csrf_of(await (await http.get("/live")).text())
        for bad in ("..%2F..%2Fetc", "0a1b2c3d-7;rm", "x" * 300):
            response = await http.post(f"/live/{bad}/start", data={"csrf": token})
            assert response.status == 404, bad
        assert daemon.control.requests == []
        gone = await http.post("/live/0a1b2c3d-8/start", data={"csrf": token})
        assert gone.status == 409 and "unknown_call" in await gone.text()
        daemon.stop()
        silent = await http.post(f"/live/{CALL}/start", data={"csrf": token})
        assert silent.status == 503
        page = await (await http.get("/live")).text()
        assert "録音装置の応答がありません" in page
    assert all(e["event"] != "recording_started" for e in site.ledger())
