"""How fast the console answers: many people signed in at once, and a search over a big index.

(a) 50 signed-in sessions (sign-ins of a few accounts: the manager and requesters of the 熊本市
    example policy) ask for the status screen, then the search screen with a filled form,
    N requests each, all at once, from aiohttp clients in this one process, against `callrec
    web --plain-http` on loopback serving a data folder with one recorded call.  Reported:
    requests per second over the whole burst, and the p50/p95 latency of one page.
(b) The same data folder with the 1,000,000-row index that bench/bench_search.py builds (its
    own builder, written into the folder's index beside the accounts): one signed-in person
    times a typical `/calls?at=...&number=...` (the form's time and the other party's number,
    the default 30-minute window), median of several, against the same `find` called in this
    process; then (a)'s burst again over that index (fewer requests each: the status screen
    reads every call of the last 30 days there, ~20,000 rows, which takes most of a second).

A sign-in is timed up to its 303 to /status (argon2id verification on the server).

Every answer is checked (200, not the sign-in page, the expected call in the search result),
so an error page is never timed as a page.  Loopback only; every loop is bounded.

    python bench/bench_console.py [--sessions 50] [--requests 20] [--big-requests 2] [--rows 1000000]
                                  [--runs 15]
"""
from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402

from bench.bench_search import TOKYO, build  # noqa: E402
from storage.index import CallIndex, connect  # noqa: E402
from storage.search import CallQuery, find  # noqa: E402
from tests.console_site import PASSWORD, ConsoleSite, free_port  # noqa: E402
from tests.interop import REPO  # noqa: E402

PEOPLE = {"kanri": "manager", "sato1": "requester", "sato2": "requester", "sato3": "requester",
          "sato4": "requester"}
Check = Callable[[str], bool]


class Console:
    """`callrec web` on a data folder that already has its calls and accounts."""

    def __init__(self, data: Path, policy: Path, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self.log = log.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "callrec", "web", "--data-dir", str(data), "--policy",
                                      str(policy), "--port", str(self.port), "--plain-http"], cwd=REPO,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while "web.ready" not in log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"callrec web did not start: {log.read_text(errors='replace')}")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


async def sign_in(base: str, name: str) -> aiohttp.ClientSession:
    http = aiohttp.ClientSession(base, cookie_jar=aiohttp.CookieJar(unsafe=True))
    page = await (await http.get("/login")).text()
    token = re.search(r'name="login_token" value="([^"]+)"', page)
    assert token, page
    async with http.post("/login", data={"login_token": token.group(1), "name": name,
                                         "password": PASSWORD.format(name)}, allow_redirects=False) as answer:
        if answer.status != 303 or answer.headers.get("Location") != "/status":
            await http.close()
            raise SystemExit(f"{name} could not sign in: {answer.status} {await answer.text()}")
    return http


async def fetch(http: aiohttp.ClientSession, path: str, check: Check) -> float:
    t0 = time.perf_counter()
    async with http.get(path, allow_redirects=False) as answer:
        body = await answer.text()
    took = time.perf_counter() - t0
    if answer.status != 200 or not check(body):
        raise SystemExit(f"GET {path}: {answer.status}, not the page expected:\n{body[:600]}")
    return took


async def burst(sessions: list[aiohttp.ClientSession], path: str, check: Check, per_session: int) -> str:
    """Every session asks for `path` `per_session` times, one after another, all sessions at once."""
    async def one(http: aiohttp.ClientSession) -> list[float]:
        return [await fetch(http, path, check) for _ in range(per_session)]

    t0 = time.perf_counter()
    latencies = [t for times in await asyncio.gather(*(one(h) for h in sessions)) for t in times]
    wall = time.perf_counter() - t0
    latencies.sort()
    p95 = latencies[min(len(latencies) - 1, round(0.95 * len(latencies)) - 1)]
    return (f"{len(latencies)} requests in {wall:5.1f} s = {len(latencies) / wall:6.1f} req/s, "
            f"p50 {statistics.median(latencies) * 1000:6.1f} ms, p95 {p95 * 1000:6.1f} ms")


async def many_people(base: str, count: int, per_session: int, search: str, call_id: str, label: str) -> None:
    names = list(PEOPLE)
    t0 = time.perf_counter()
    sessions = list(await asyncio.gather(*(sign_in(base, names[i % len(names)]) for i in range(count))))
    print(f"[{label}] {count} sign-ins ({len(names)} accounts) at once: {time.perf_counter() - t0:.1f} s")
    try:
        pages: tuple[tuple[str, str, Check], ...] = (
            ("status", "/status", lambda body: 'id="health"' in body),
            ("search", search, lambda body: call_id in body and 'id="results"' in body),
        )
        for name, path, check in pages:
            await fetch(sessions[0], path, check)
            print(f"[{label}] {name:6} x {count} sessions x {per_session}: "
                  f"{await burst(sessions, path, check, per_session)}")
    finally:
        await asyncio.gather(*(h.close() for h in sessions))


async def one_person(base: str, path: str, call_id: str, runs: int, label: str) -> list[float]:
    http = await sign_in(base, "kanri")
    try:
        first = await fetch(http, path, lambda body: call_id in body)
        times = [await fetch(http, path, lambda body: call_id in body) for _ in range(runs)]
    finally:
        await http.close()
    print(f"[{label}] GET {path}: median {statistics.median(times) * 1000:.1f} ms over {runs} "
          f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}, first {first * 1000:.1f} ms)")
    return times


def target(index: Path) -> tuple[str, str, str, float]:
    """A kept call of the index's last month with an outside number, as bench_search picks it:
    its id, the form's time (7 minutes off) and the number as a person types it."""
    with closing(connect(index)) as db:
        last = db.execute("SELECT max(recorded_at) FROM calls WHERE length(id) = 8").fetchone()[0]
        row = db.execute("SELECT * FROM calls WHERE erased_at IS NULL AND remote_number IS NOT NULL "
                         "AND recorded_at >= ? AND length(id) = 8 ORDER BY recorded_at LIMIT 1",
                         (last - 30 * 86400,)).fetchone()
    number = row["remote_number"]
    around = row["recorded_at"] + 7 * 60
    at = datetime.fromtimestamp(around, TOKYO).strftime("%Y-%m-%d %H:%M")
    return row["id"], at, f"{number[:2]}-{number[2:6]}-{number[6:]}", around


def in_process(index_path: Path, around: float, number: str, call_id: str, runs: int, label: str) -> None:
    """The same search without the console: what HTTP, the session and the template add."""
    index = CallIndex(index_path)
    try:
        query = CallQuery(around=around, remote_number=number, country_code="81")
        times = []
        for _ in range(runs + 1):
            t0 = time.perf_counter()
            result = find(index, query, tz=TOKYO)
            times.append(time.perf_counter() - t0)
        assert any(c.row.id == call_id for c in result.candidates)
    finally:
        index.close()
    print(f"[{label}] the same find() in this process: median {statistics.median(times[1:]) * 1000:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20, help="requests per session per page")
    parser.add_argument("--big-requests", type=int, default=2,
                        help="requests per session per page over the big index (its status page is slow)")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15, help="timed runs of the 1M-row search")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        site = ConsoleSite(Path(tmp), "kumamoto", PEOPLE)
        print(f"data folder: 1 recorded call, {len(PEOPLE)} accounts ({time.perf_counter() - t0:.0f} s to make)")
        call_id = site.call["id"]
        search = "/calls?at=2025-11-25+01:00&window=2h&number=03-1234-5678"
        try:
            asyncio.run(many_people(site.base, args.sessions, args.requests, search, call_id, "1 call"))
        finally:
            site.stop()

        index = site.data / "index.sqlite3"
        t0 = time.perf_counter()
        build(index, args.rows)
        with closing(connect(index)) as db:
            total = db.execute("SELECT count(*) FROM calls").fetchone()[0]
        print(f"built {args.rows:,} rows into the folder's index in {time.perf_counter() - t0:.0f} s "
              f"({total:,} calls, {index.stat().st_size / 2**20:.0f} MiB)")
        big_id, at, number, around = target(index)
        console = Console(site.data, site.policy, Path(tmp) / "web-1m.log")
        try:
            path = f"/calls?at={at.replace(' ', '+')}&number={number}"
            label = f"{total:,} rows"
            asyncio.run(one_person(console.base, path, big_id, args.runs, label))
            in_process(index, around, number, big_id, args.runs, label)
            asyncio.run(many_people(console.base, args.sessions, args.big_requests, path, big_id, label))
        finally:
            console.stop()


if __name__ == "__main__":
    main()
