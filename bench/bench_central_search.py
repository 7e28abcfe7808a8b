"""Central search over 10,000,000 rows from 10 sites against the local search on 1,000,000.

The issue's figure: searching every site's calls at the centre (PostgreSQL) must take no longer
than one appliance's search of its own index (SQLite, `bench/bench_search.py`'s 1,000,000 rows).
Each of the ten sites gets the same kind of data as that local index (four years of a city hall,
685 calls a day in office hours, 150,000 outside numbers with frequent callers, a third
outbound, one in twenty withheld): site 0's rows are the local index's very rows, the others are
drawn with their own seeds and DIDs, the outside callers shared (a citizen calls more than one
office).  Each site erases under its own retention (1 to 3 years kept: the tombstones are cleared
as erasure clears them) and a few rows are held (kept past their retention).

The centre is a real PostgreSQL started here (initdb/pg_ctl in a folder under /tmp, unix socket
only, stopped and removed at the end), migrated by `storage.central_schema.migrate`, and filled
by COPY (the calls table's secondary indexes dropped during the load and rebuilt as the
migrations define them, then VACUUM ANALYZE, as a centre in service would have).

Timed, for each kind of search a request form asks (a 30-minute window around the form's time;
a number with it; the whole form; a number in the erased years; a number over all time; one
day as a period), with a different target per run (kept calls of the last two years): the local
`search.find` on the local index, and `central_search.CentralSearch.find` over all sites and with
the target's site as the filter, each asked for the console's first page (`PAGE` candidates read
whole, the rest counted: "found" is every candidate and erased recording of the answer).  Wall time per search as the console pays it (the centre's
connection held open, as a console holds one; the local side opens its file each time, as `find`
does), median and p95, and CPU per search (the client's process time, plus for the centre its
server's: the backend and the parallel workers it started, from /proc), a figure the other
load on a shared machine disturbs far less than the wall time.  Local and central runs alternate,
so that load falls on both alike.

    python bench/bench_central_search.py [--rows 10000000] [--sites 10] [--runs 25] [--keep DIR]

`--rows` is the centre's total; the local index has rows / sites (one site's share).  `--keep DIR`
keeps the database and the local index in DIR and reuses them when present (a big load is made
once).
"""
from __future__ import annotations

import argparse
import os
import pwd
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from bench.bench_search import DAYS, START, TOKYO, _calls, build
from storage.central_link import Centre
from storage.central_link import connect as connect_centre
from storage.central_schema import migrate
from storage.central_search import CentralResult, CentralSearch
from storage.central_sync import CENTRAL_COLUMNS
from storage.index import CallIndex, connect, iso
from storage.search import CallQuery, SearchResult, find

SITE_NAMES = ("higashi", "ote", "honcho", "kita", "minami", "nishi", "shimin", "fukushi", "suido", "shobo",
              "kyoiku", "zeimu")
KEEP_YEARS = (2, 3, 2, 1, 2, 3, 2, 2, 1, 3, 2, 2)
"""Each site's retention; site 0 keeps two years, as bench_search.py's index does."""
HELD_SHARE = 0.002
COPY_COLUMNS = ("site", "version", *CENTRAL_COLUMNS)
SERVER_SETTINGS = {"shared_buffers": "512MB", "max_wal_size": "4GB", "maintenance_work_mem": "256MB",
                   "fsync": "off", "max_connections": "20"}
"""fsync off: the load is the bench's own and nothing is kept; searches read, so it changes no figure."""
BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
TICK = os.sysconf("SC_CLK_TCK")
PAGE = 50
"""The candidates a search shows (the console's page)."""
NOW = START + (DAYS + 1) * 86400.0
"""The day after the last call: the ranking's `now`, the same for every search."""


class BenchError(Exception):
    """A tool missing or failing: the bench stops with what went wrong."""


# ---- the centre's server ----------------------------------------------------------------------
def _tool(name: str) -> str:
    found = shutil.which(name) or next((str(d / name) for d in BIN_DIRS if (d / name).exists()), None)
    if found is None:
        raise BenchError(f"{name} is missing: install Debian's `postgresql`")
    return found


class Server:
    """A PostgreSQL in `folder` (made with initdb when new), on a unix socket there only."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.data = folder / "pgdata"
        self.dsn = f"host={folder} port=5432 user=callrec dbname=postgres"
        self._as = None if os.geteuid() != 0 else pwd.getpwnam("postgres")
        """As root, the server runs as Debian's `postgres` account: PostgreSQL refuses root."""
        if self._as is not None:
            os.chown(folder, self._as.pw_uid, self._as.pw_gid)
        if not self.data.exists():
            self._run([_tool("initdb"), "-D", str(self.data), "-A", "trust", "-U", "callrec", "-E", "UTF8",
                  "--locale=C.UTF-8", "--no-sync"])

    def start(self) -> None:
        options = f"-c listen_addresses='' -k {self.folder} " + " ".join(
            f"-c {name}={value}" for name, value in SERVER_SETTINGS.items())
        self._run([_tool("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.folder / "pg.log"), "-w",
              "-t", "120", "start"])

    @property
    def postmaster(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run([_tool("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "120", "stop"])

    def _run(self, argv: list[str]) -> None:
        if self._as is not None:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv)} failed: {done.stderr or done.stdout}")


# ---- the centre's rows --------------------------------------------------------------------------
def site_rows(site: int, rows: int) -> Iterator[tuple[object, ...]]:
    """One site's rows as bench_search.py makes the local index's (site 0: the same rows), in
    bench_search's COLUMNS order, with the site's own DIDs."""
    for row in _calls(rows, random.Random(2026 + site)):
        if site:
            local = f"{row[7][:4]}{28 + site}{row[7][6:]}"
            outbound = row[6] == "outbound"
            row = (*row[:7], local, row[8], local if outbound else row[8], row[8] if outbound else local,
                   *row[11:])
        yield row


def copy_lines(site: int, rows: int) -> Iterator[str]:
    """COPY text lines of the centre's calls table for one site: kept, held or erased."""
    name = SITE_NAMES[site]
    cutoff = START + (DAYS - KEEP_YEARS[site] * 365) * 86400
    holds = random.Random(7000 + site)
    for n, (call_id, sip, started, answered, ended, duration, direction, local, remote, caller, callee, withheld,
            state, complete, at, size, sha) in enumerate(site_rows(site, rows), 1):
        held = holds.random() < HELD_SHARE
        hold_reason = held_since = erased_at = erased_reason = None
        if held:
            hold_reason, held_since = f"request {name}-{n % 997:03d}", iso(at + 7 * 86400, TOKYO)
        elif at < cutoff:  # type: ignore[operator]
            erased_at = iso(at + KEEP_YEARS[site] * 365 * 86400 + 300, TOKYO)  # type: ignore[operator]
            erased_reason, sip, local, remote, caller, callee, size = "retention", "", None, None, None, None, 0
        values = {
            "site": name, "version": 2 * n, "id": call_id, "sip_call_id": sip, "started_at": started,
            "answered_at": answered, "ended_at": ended, "duration": duration, "direction": direction,
            "local_number": local, "remote_number": remote, "caller": caller, "callee": callee,
            "caller_withheld": "t" if withheld else "f", "codecs": '["PCMU"]', "audio_format": "pcmu",
            "audio_frames": int(duration * 8000), "sha256": sha, "streams": "[]", "dtmf": "[]",  # type: ignore[call-overload]
            "undecoded": "[]", "late_samples": 0, "end_reason": "bye", "complete": "t" if complete else "f",
            "state": state, "recorded_at": at, "size_bytes": size, "held": "t" if held else "f",
            "hold_reason": hold_reason, "held_since": held_since, "erased_at": erased_at,
            "erased_reason": erased_reason, "leg_call_ids": "[]", "gaps": "[]", "seal_mac": f"{n:064x}",
        }
        yield "\t".join("\\N" if (v := values.get(c)) is None else str(v) for c in COPY_COLUMNS) + "\n"


def load_centre(dsn: str, sites: int, per_site: int) -> None:
    """Migrate, then COPY every site's rows with the calls table's secondary indexes dropped,
    and rebuild them as the migrations made them."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
        indexes = conn.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'calls' "
                               "AND indexname <> 'calls_pkey' ORDER BY indexname").fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        for site in range(sites):
            t0 = time.perf_counter()
            with conn.transaction():
                conn.execute("INSERT INTO sites (site, instance, last_seq) VALUES (%s, %s, %s)",
                             (SITE_NAMES[site], f"bench-{site}", 2 * per_site))
                with conn.cursor() as cur, cur.copy(f"COPY calls ({', '.join(COPY_COLUMNS)}) FROM STDIN") as copy:
                    chunk: list[str] = []
                    for line in copy_lines(site, per_site):
                        chunk.append(line)
                        if len(chunk) == 20_000:
                            copy.write("".join(chunk))
                            chunk.clear()
                    copy.write("".join(chunk))
            print(f"  site {SITE_NAMES[site]}: {per_site:,} rows in {time.perf_counter() - t0:.0f} s", flush=True)
        t0 = time.perf_counter()
        for _, definition in indexes:
            conn.execute(definition)
        conn.execute("VACUUM ANALYZE calls")
        print(f"  indexes rebuilt and vacuumed in {time.perf_counter() - t0:.0f} s", flush=True)


# ---- the searches -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Target:
    """A kept call a form may describe, and a time in the erased years."""

    site: str
    at: float
    remote: str
    local: str
    direction: str
    erased_at: float

    def queries(self) -> dict[str, CallQuery]:
        written = f"+81 {self.remote[1:2]}-{self.remote[2:6]}-{self.remote[6:]}"
        around = self.at + 7 * 60
        day = around - (around + 9 * 3600) % 86400
        return {
            "30-min window (form's time)": CallQuery(around=around),
            "number + 30-min window": CallQuery(around=around, remote_number=written),
            "whole form (+ length, DID, direction)":
                CallQuery(around=around, duration_seconds=180, remote_number=written, local_number=self.local[-5:],
                          direction=self.direction),
            "number + window, erased years": CallQuery(around=self.erased_at, remote_number=written),
            "number alone, all time": CallQuery(remote_number=written),
            "one day (a period from/to)": CallQuery(start=day, end=day + 86400),
        }


KINDS = tuple(Target("", 0.0, "0312345678", "0963280000", "inbound", 0.0).queries())


def local_targets(path: Path, count: int, seed: int) -> list[Target]:
    rng = random.Random(seed)
    with closing(connect(path)) as db:
        last = db.execute("SELECT max(recorded_at) FROM calls").fetchone()[0]
        rows = db.execute("SELECT recorded_at, remote_number, local_number, direction FROM calls "
                          "WHERE erased_at IS NULL AND remote_number IS NOT NULL AND recorded_at >= ?",
                          (last - 2 * 365 * 86400,)).fetchall()
    return [Target("", r[0], r[1], r[2], r[3], _erased_year(r[0])) for r in rng.sample(rows, count)]


def central_targets(conn: psycopg.Connection[Any], count: int, seed: int) -> list[Target]:
    conn.execute("SELECT setseed(%s)", (seed / 1000,))
    rows = conn.execute("SELECT site, recorded_at, remote_number, local_number, direction FROM calls "
                        "TABLESAMPLE BERNOULLI (1) WHERE erased_at IS NULL AND remote_number IS NOT NULL "
                        "AND recorded_at >= %s ORDER BY random() LIMIT %s",
                        (START + (DAYS - 2 * 365) * 86400, count)).fetchall()
    if len(rows) < count:
        rows = conn.execute("SELECT site, recorded_at, remote_number, local_number, direction FROM calls "
                            "WHERE erased_at IS NULL AND remote_number IS NOT NULL AND recorded_at >= %s "
                            "ORDER BY random() LIMIT %s", (START + (DAYS - 2 * 365) * 86400, count)).fetchall()
    return [Target(r[0], r[1], r[2], r[3], r[4], _erased_year(r[1])) for r in rows]


def _erased_year(at: float) -> float:
    """The same time of day in the first year, which every site has erased (none keeps 4 years)."""
    return START + (at - START) % (365 * 86400)


@dataclass
class Samples:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    found: list[int] = field(default_factory=list)

    def line(self) -> str:
        wall = sorted(self.wall)
        p95 = wall[min(len(wall) - 1, round(0.95 * (len(wall) - 1)))]
        return (f"{statistics.median(wall) * 1000:6.1f} {p95 * 1000:7.1f} {statistics.mean(self.cpu) * 1000:5.1f} "
                f"{statistics.median(self.found):5.0f}")


def _server_cpu(pids: tuple[int, int]) -> float:
    """CPU seconds the server spent for our connection: its backend's own (utime + stime), and
    what the postmaster's reaped children used (the parallel workers a big scan starts)."""
    backend, postmaster = (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split() for pid in pids)
    return (int(backend[11]) + int(backend[12]) + int(postmaster[13]) + int(postmaster[14])) / TICK


def _count(result: SearchResult | CentralResult) -> int:
    answer = result.result if isinstance(result, CentralResult) else result
    return answer.total + answer.erased_count


def measure(work: Callable[[], SearchResult | CentralResult], samples: Samples,
            server: tuple[int, int] | None) -> None:
    cpu0, server0 = time.process_time(), _server_cpu(server) if server else 0.0
    t0 = time.perf_counter()
    found = work()
    samples.wall.append(time.perf_counter() - t0)
    samples.cpu.append(time.process_time() - cpu0 + (_server_cpu(server) - server0 if server else 0.0))
    samples.found.append(_count(found))


def run(index: CallIndex, server: Server, runs: int) -> tuple[dict[tuple[str, str], Samples], ...]:
    """Every kind of search, `runs` times each (after one untimed warm-up), local and central
    alternating, twice: first with the centre's pages as the load left them (the local file,
    463 MB, is in memory from the start; the centre's 5.8 GB are not), then again, warm; the
    samples of each pass by (kind, side)."""
    local = local_targets(index.path, runs + 1, 1)
    sides = (f"local {_rows(index.path):,}", "centre, all sites", "centre, one site")
    passes: tuple[dict[tuple[str, str], Samples], ...] = ({}, {})
    with closing(Centre(connect_centre(server.dsn, timeout=600))) as centre:
        search = CentralSearch(centre, TOKYO)
        targets = central_targets(centre.conn, runs + 1, 2)
        pids = (centre.conn.info.backend_pid, server.postmaster)
        for table in passes:
            for kind in KINDS:
                for n, (mine, theirs) in enumerate(zip(local, targets, strict=True)):
                    ours, q = mine.queries()[kind], theirs.queries()[kind]
                    works = (
                        (sides[0], partial(find, index, ours, tz=TOKYO, now=NOW, limit=PAGE), None),
                        (sides[1], partial(search.find, q, now=NOW, limit=PAGE), pids),
                        (sides[2], partial(search.find, q, sites=[theirs.site], now=NOW, limit=PAGE), pids),
                    )
                    for side, work, pid in works:
                        if n:
                            measure(work, table.setdefault((kind, side), Samples()), pid)
                        else:
                            work()
    return passes


def report(table: dict[tuple[str, str], Samples]) -> None:
    """One line a kind of search, the sides side by side."""
    sides = list(dict.fromkeys(side for _, side in table))
    print(f"{'':40}" + "".join(f" | {side:^26}" for side in sides))
    print(f"{'search (ms; cpu: mean, client + server)':40}" + " | median     p95   cpu found" * len(sides))
    for kind in dict.fromkeys(kind for kind, _ in table):
        print(f"{kind:40}" + "".join(f" | {table[kind, side].line()}" for side in sides))


def _rows(path: Path) -> int:
    with closing(connect(path)) as db:
        return int(db.execute("SELECT count(*) FROM calls").fetchone()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="the centre's rows, all sites together")
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--runs", type=int, default=25, help="searches of each kind (different targets)")
    parser.add_argument("--keep", type=Path, help="folder for the database and local index, reused if present")
    args = parser.parse_args()
    if not 1 <= args.sites <= len(SITE_NAMES):
        parser.error(f"--sites: 1 to {len(SITE_NAMES)}")
    per_site = args.rows // args.sites
    folder = args.keep or Path(tempfile.mkdtemp(prefix="cbench-"))
    folder.mkdir(parents=True, exist_ok=True)
    server: Server | None = None
    try:
        server = Server(folder)
        server.start()
        print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} cores", flush=True)
        index_path = folder / "local.sqlite3"
        if not index_path.exists():
            t0 = time.perf_counter()
            build(index_path, per_site)
            print(f"local index: {per_site:,} rows in {time.perf_counter() - t0:.0f} s", flush=True)
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            loaded = conn.execute("SELECT to_regclass('calls') IS NOT NULL").fetchone()[0]
            if loaded:
                migrate(conn)  # a kept centre made by an older version of this bench
        if not loaded:
            t0 = time.perf_counter()
            load_centre(server.dsn, args.sites, per_site)
            print(f"centre: {args.sites} sites x {per_site:,} rows in {time.perf_counter() - t0:.0f} s", flush=True)
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            total, kept, size = conn.execute("SELECT count(*), count(*) FILTER (WHERE erased_at IS NULL), "
                                             "pg_total_relation_size('calls') FROM calls").fetchone()
        print(f"centre: {total:,} rows ({kept:,} kept), calls table with indexes {size / 2**20:,.0f} MiB; "
              f"local index {index_path.stat().st_size / 2**20:,.0f} MiB", flush=True)
        index = CallIndex(index_path)
        try:
            first, warm = run(index, server, args.runs)
            print("first pass (the centre's pages as the load left them):")
            report(first)
            print("second pass (warm):")
            report(warm)
        finally:
            index.close()
        print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if server is not None:
            server.stop()
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
