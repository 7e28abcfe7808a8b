"""How fast `callrec calls find` answers a request form on a 1,000,000-row index.

The index holds four years of a city hall's calls (685 a day, in office hours 08:30-17:15, so a
window holds as many calls as it would at the busiest time of a real day): 150,000 outside
numbers, the frequent callers far more often than the rest, one call in twenty withheld, a
third outbound, 400 city-side DIDs; the first two years are tombstones, cleared of numbers as
erasure leaves them.  Timed (median of several runs, connection and decoding included): the
form's number with a 30-minute window, the window alone, a complete form (time, length, both
numbers, direction), an erased window, a number over all time (a scan), and a day listed with
`calls list --from/--to`.  Also the one-off cost of building the new index on an older file.

    python bench/bench_search.py [--rows 1000000] [--index FILE (kept, and reused if present)]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from storage.index import CallIndex, connect, iso  # noqa: E402
from storage.search import CallQuery, SearchResult, find, select  # noqa: E402

TOKYO = ZoneInfo("Asia/Tokyo")
START = 1_700_000_000.0 - (1_700_000_000.0 + 9 * 3600) % 86400
"""A midnight in Tokyo."""
DAYS = 4 * 365
OPEN, HOURS = 8.5 * 3600, 8.75 * 3600
CALLERS, DIDS = 150_000, 400
RUNS = 9
COLUMNS = ("id", "sip_call_id", "started_at", "answered_at", "ended_at", "duration", "direction", "local_number",
           "remote_number", "caller", "callee", "caller_withheld", "state", "complete", "recorded_at", "size_bytes",
           "sha256")


def _calls(rows: int, rng: random.Random) -> Iterator[tuple[object, ...]]:
    """Rows as the recorder writes them, in the order it writes them."""
    per_day = rows / DAYS
    made = 0
    for day in range(DAYS):
        count = round(per_day * (day + 1)) - made
        for at in sorted(START + day * 86400 + OPEN + rng.random() * HOURS for _ in range(count)):
            made += 1
            yield _call(made, at, rng)


def _call(n: int, at: float, rng: random.Random) -> tuple[object, ...]:
    caller = f"0{int(CALLERS * rng.random() ** 3) + 300_000_000:09d}"
    local = f"0963{n % DIDS + 280_000:06d}"
    outbound = rng.random() < 0.33
    withheld = not outbound and rng.random() < 0.05
    remote = None if withheld else ("0" + caller if outbound and rng.random() < 0.1 else caller)
    duration = round(min(7200.0, rng.lognormvariate(5.0, 0.8)), 3)
    return (f"{n:08x}", f"{n}@pbx", iso(at - 4, TOKYO), iso(at, TOKYO), iso(at + duration, TOKYO), duration,
            "outbound" if outbound else "inbound", local, remote, local if outbound else remote,
            remote if outbound else local, int(withheld), "sealed", 1, at, int(duration * 16_000), f"{n:064x}")


def build(path: Path, rows: int) -> None:
    CallIndex(path).close()
    rng = random.Random(2026)
    sql = f"INSERT INTO calls ({', '.join(COLUMNS)}) VALUES ({', '.join('?' for _ in COLUMNS)})"
    with closing(connect(path)) as db:
        batch: list[tuple[object, ...]] = []
        for row in _calls(rows, rng):
            batch.append(row)
            if len(batch) == 50_000:
                _insert(db, sql, batch)
        _insert(db, sql, batch)
        db.execute("UPDATE calls SET erased_at = '2025-01-01T00:00:00.000+09:00', erased_reason = 'retention', "
                   "sip_call_id = '', local_number = NULL, remote_number = NULL, caller = NULL, callee = NULL, "
                   "size_bytes = 0 WHERE recorded_at < ?", (START + DAYS / 2 * 86400,))
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _insert(db, sql: str, batch: list[tuple[object, ...]]) -> None:  # type: ignore[no-untyped-def]
    db.execute("BEGIN")
    db.executemany(sql, batch)
    db.execute("COMMIT")
    batch.clear()


def timed(label: str, work: Callable[[], str]) -> None:
    first_start = time.perf_counter()
    found = work()
    first = time.perf_counter() - first_start
    runs = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        work()
        runs.append(time.perf_counter() - t0)
    print(f"{label:58} median {statistics.median(runs) * 1000:8.1f} ms  (first {first * 1000:7.1f} ms, "
          f"{found})")


def rebuild_cost(path: Path) -> None:
    """What the first open of an index made before calls_recorded existed costs."""
    with closing(connect(path)) as db:
        db.execute("DROP INDEX IF EXISTS calls_recorded")
        db.execute("VACUUM")
    before = path.stat().st_size
    t0 = time.perf_counter()
    CallIndex(path).close()
    built = time.perf_counter() - t0
    with closing(connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    print(f"building calls_recorded on open of an older index: {built:.2f} s, "
          f"+{(path.stat().st_size - before) / 2**20:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--index", type=Path, help="index file to keep (reused when it exists)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.index or Path(tmp) / "index.sqlite3"
        if not path.exists():
            t0 = time.perf_counter()
            build(path, args.rows)
            print(f"built {args.rows:,} rows in {time.perf_counter() - t0:.0f} s")
        index = CallIndex(path)
        print(f"index {path.stat().st_size / 2**20:.0f} MiB")
        run(index)
        index.close()
        rebuild_cost(path)


def run(index: CallIndex) -> None:
    with closing(connect(index.path)) as db:
        total, kept = db.execute("SELECT count(*), count(erased_at IS NULL OR NULL) FROM calls").fetchone()
        last = db.execute("SELECT max(recorded_at) FROM calls").fetchone()[0]
        target = db.execute("SELECT * FROM calls WHERE erased_at IS NULL AND remote_number IS NOT NULL "
                            "AND recorded_at >= ? ORDER BY recorded_at LIMIT 1", (last - 30 * 86400,)).fetchone()
        erased_at = db.execute("SELECT recorded_at FROM calls WHERE erased_at IS NOT NULL "
                               "ORDER BY recorded_at LIMIT 1 OFFSET ?", ((total - kept) // 2,)).fetchone()[0]
    print(f"{total:,} rows, {kept:,} kept, {total - kept:,} tombstones")
    number = target["remote_number"]
    written = f"+81 {number[1:2]}-{number[2:6]}-{number[6:]}"
    around = target["recorded_at"] + 7 * 60
    day = around - (around + 9 * 3600) % 86400
    queries = (
        ("number + 30-min window", CallQuery(around=around, remote_number=written)),
        ("30-min window alone", CallQuery(around=around)),
        ("whole form: time, length, both numbers, direction",
         CallQuery(around=around, duration_seconds=180, remote_number=written,
                   local_number=target["local_number"][-5:], direction=target["direction"])),
        ("number + 30-min window in the erased years", CallQuery(around=erased_at, remote_number=written)),
        ("number alone, over all time (a scan)", CallQuery(remote_number=written)),
    )
    for label, query in queries:
        timed(f"find: {label}", lambda q=query: _found(find(index, q, tz=TOKYO)))  # type: ignore[misc]
    timed("calls list --from/--to (one day)",
          lambda: f"{len(select(index, CallQuery(start=day, end=day + 86400)))} rows")


def _found(result: SearchResult) -> str:
    return f"{len(result.candidates)} candidates, {len(result.erased)} erased"


if __name__ == "__main__":
    main()
