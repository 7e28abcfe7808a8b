"""On-demand lines end to end: the daemon (`callrec run`'s own Daemon, in this process) fed a live
stream of frames paced in real time, and the console (`callrec web`, its own process) beside it,
as 品川区's policy runs them.  Three calls on the 区民相談窓口 line at once: one a handler starts
with 録音開始 in the console, one the staff side starts with the start code, one nobody asks for.
Only the capture is stood in for (a pipe instead of the kernel's ring; tests/test_daemon.py runs
the capture itself, as root)."""
from __future__ import annotations

import asyncio
import os
import re
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest

from callrec.config import Config
from callrec.daemon import Daemon
from recorder.batch import FrameBatch
from tests.call_frames import T0
from tests.console_site import ConsoleSite, csrf_of
from tests.interop import REPO, calls, recording
from tests.on_demand_frames import call
from tests.test_web_http import person

POLICY = REPO / "policies" / "shinagawa.yaml"
LINE = "0337770001"
"""区民相談窓口 in policies/shinagawa.yaml."""
BY_CONSOLE, BY_CODE, NEVER = "0355501111", "0355502222", "0355503333"
PEOPLE = {"kanri": "manager", "tanto": "handler"}


class FeedSource:
    """A PacketSource (callrec.daemon) whose frames a test pushes: readable through a pipe, as the
    kernel's ring is through its socket."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        self._frames: deque[tuple[float, int, bytes]] = deque()

    def push(self, frames: list[tuple[float, bytes]]) -> None:
        self._frames.extend((ts, 1, frame) for ts, frame in frames)
        os.write(self._write, b"x")

    def fileno(self) -> int:
        return self._read

    def read_batches(self, max_blocks: int) -> list[FrameBatch]:
        try:
            os.read(self._read, 4096)
        except BlockingIOError:
            pass
        frames = list(self._frames)
        self._frames.clear()
        return [FrameBatch.from_frames(frames)] if frames else []

    def stats(self) -> dict[str, int]:
        return {"kernel_drops": 0}

    def close(self) -> None:
        os.close(self._read)
        os.close(self._write)


async def play(source: FeedSource, frames: list[tuple[float, bytes]], base: float) -> None:
    """The frames at their own pace, their capture times moved to now."""
    pending = sorted(frames, key=lambda f: f[0])
    while pending:
        now = time.time()
        due = [(ts - T0 + base, frame) for ts, frame in pending if ts - T0 + base <= now]
        pending = pending[len(due):]
        if due:
            source.push(due)
        await asyncio.sleep(0.02)


@pytest.fixture()
def site(tmp_path: Path) -> Iterator[ConsoleSite]:
    running = ConsoleSite(tmp_path, "shinagawa", PEOPLE)
    try:
        yield running
    finally:
        running.stop()


async def test_the_button_and_the_code_record_from_the_start_and_the_rest_leaves_nothing(
        site: ConsoleSite, capfd: pytest.CaptureFixture[str]) -> None:
    source = FeedSource()
    config = Config(data_dir=site.data, policy=POLICY, interfaces=["feed"], sweep_interval_seconds=3600)
    daemon = Daemon(config, open_source=lambda name, config: source)
    running = asyncio.create_task(daemon.run())
    while not (site.data / "control.sock").exists():
        assert not running.done(), running
        await asyncio.sleep(0.05)
    traffic = (call(9, call_id="console@x", caller=BY_CONSOLE, callee=LINE, seed=1)
               + call(7, keyed={4.0: "*71"}, call_id="code@x", caller=BY_CODE, callee=LINE, start=T0 + 0.5,
                      tport=20002, pport=40002, seed=11)
               + call(6, keyed={2.0: "#70"}, call_id="never@x", caller=NEVER, callee=LINE, start=T0 + 1.0,
                      tport=20004, pport=40004, seed=21))
    player = asyncio.create_task(play(source, traffic, time.time()))
    try:
        http = await person(site, "tanto")
        async with http:
            while True:
                page = await (await http.get("/live")).text()
                ids = re.findall(r'action="/live/([0-9a-f]{8}-[0-9]+)/start"', page)
                if len(ids) == 3:
                    break
                await asyncio.sleep(0.2)
            assert page.count("区民相談窓口") == 3
            for number in (BY_CONSOLE, BY_CODE, NEVER, LINE):
                assert number not in page, "the console shows no number of a call not recorded"
            await asyncio.sleep(2.0)
            pressed = await http.post(f"/live/{ids[0]}/start", data={"csrf": csrf_of(page)})
            assert pressed.status == 200 and "録音中" in await pressed.text()
        await player
        await asyncio.sleep(2.5)
    finally:
        daemon.stop()
        await running
    assert running.result() == 0

    rows = {row["sip_call_id"]: row for row in calls(site.data)}
    assert set(rows) == {site.call["sip_call_id"], "console@x", "code@x"}, "the call nobody asked for has no row"
    by_console, by_code = rows["console@x"], rows["code@x"]
    assert by_console["started_by"] == "console:tanto" and by_code["started_by"] == "dtmf"
    for row, seconds in ((by_console, 9), (by_code, 7)):
        assert row["remote_number"] in (BY_CONSOLE, BY_CODE) and row["complete"] and row["gaps"] == []
        assert row["answered_at"] < row["start_requested_at"] < row["ended_at"]
        wav = recording(site.data, row)
        assert wav.frames >= seconds * 8000, "recorded from the answer, not from the request"
    [entry] = [e for e in site.ledger() if e["event"] == "recording_started"]
    assert (entry["actor"], entry["details"]["call"]) == ("tanto", by_console["id"])

    logged = capfd.readouterr()
    files = [p for p in site.data.rglob("*") if p.is_file() and not p.name.endswith(".sock")]
    for needle in (NEVER, "never@x"):
        assert needle not in logged.out + logged.err + site.logtext()
        for path in files:
            assert needle.encode() not in path.read_bytes(), f"{path} holds {needle}"
