"""How fast a site's outbox reaches the centre, and which PostgreSQL driver to use.

1. Drivers: the centre's upsert (the same statement the sync uses) of N rows, by psycopg 3's
   executemany (pipelined) and by asyncpg's executemany, into a fresh database each run;
   median rows per second.  asyncpg is only for this comparison (`pip install asyncpg`).
2. Catch-up after a day's outage: 2,000 calls an hour for 24 hours (48,000 calls, each a new
   row and its seal: 96,000 outbox entries) queued while the centre is away, then sent by the
   sender (storage/central_link.py) at several batch sizes; rows per second and the time to
   catch up.  A durable PostgreSQL (fsync on) started in a temporary folder, as the tests do.

    python bench/bench_central_sync.py [--calls 48000] [--driver-rows 20000] [--batches 100,500,2000]
"""
from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from psycopg.types.json import Jsonb

from storage.central_link import UPSERT, Sender, connect
from storage.central_schema import migrate
from storage.central_sync import CENTRAL_COLUMNS, JSON_COLUMNS
from storage.keys import create_key_file
from storage.store import Store
from tests.central_pg import PostgresServer
from tests.central_sites import make_rows
from tests.test_central_core import _row

RUNS = 3


def _rows(count: int) -> list[dict[str, Any]]:
    base = _row("x")
    rows = []
    for n in range(count):
        row = {**{c: base[c] for c in CENTRAL_COLUMNS}, "id": f"d-{n:07d}", "remote_number": f"03{n:08d}",
               "codecs": ["PCMU"], "streams": [], "dtmf": [], "undecoded": [], "leg_call_ids": [], "gaps": [],
               "caller_withheld": False, "complete": True, "held": False, "version": n + 1}
        rows.append(row)
    return rows


def _fresh(server: PostgresServer, name: str) -> str:
    dsn = server.create_database(name)
    with connect(dsn) as conn:
        migrate(conn)
        conn.execute("INSERT INTO sites (site, instance) VALUES ('bench', 'b')")
    return dsn


def psycopg_rate(server: PostgresServer, rows: list[dict[str, Any]], run: int) -> float:
    dsn = _fresh(server, f"pg{run}")
    params = [{"site": "bench", **{k: Jsonb(v) if k in JSON_COLUMNS else v for k, v in r.items()}} for r in rows]
    with connect(dsn) as conn:
        started = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(UPSERT, params)
        return len(rows) / (time.perf_counter() - started)


def asyncpg_rate(server: PostgresServer, rows: list[dict[str, Any]], run: int) -> float:
    import json

    import asyncpg  # only this comparison needs it

    dsn = _fresh(server, f"ap{run}")
    cols = ("site", "version", *CENTRAL_COLUMNS)
    names = {c: i + 1 for i, c in enumerate(cols)}
    sql = UPSERT
    for c in sorted(cols, key=len, reverse=True):
        sql = sql.replace(f"%({c})s", f"${names[c]}")
    sql = sql.replace("::timestamptz", "::text::timestamptz")
    for c in JSON_COLUMNS:
        sql = sql.replace(f"${names[c]},", f"${names[c]}::text::jsonb,", 1)
    args = [tuple("bench" if c == "site" else (json.dumps(r[c]) if c in JSON_COLUMNS else r[c]) for c in cols)
            for r in rows]

    async def go() -> float:
        settings = dict(part.split("=", 1) for part in dsn.split())
        conn = await asyncpg.connect(host=settings["host"], port=int(settings["port"]), user=settings["user"],
                                     database=settings["dbname"])
        try:
            started = time.perf_counter()
            async with conn.transaction():
                await conn.executemany(sql, args)
            return len(rows) / (time.perf_counter() - started)
        finally:
            await conn.close()

    return asyncio.run(go())


def catch_up(server: PostgresServer, calls: int, batch_rows: int, folder: Path, run: str) -> tuple[float, float]:
    """(rows per second, seconds) to send a site's backlog of `calls` calls."""
    dsn = _fresh(server, f"cu{run}")
    with connect(dsn) as conn:
        conn.execute("DELETE FROM sites")
    data = folder / f"site-{run}"
    data.mkdir()
    create_key_file(data.parent / f"{data.name}.key")
    with Store.open(data, ZoneInfo("Asia/Tokyo"), data.parent / f"{data.name}.key"):
        pass
    make_rows(data, calls, start=1_780_000_000.0)
    with Store.open(data, ZoneInfo("Asia/Tokyo"), data.parent / f"{data.name}.key") as store:
        sender = Sender(store.index.path, {"ledger": store.ledger, "seals": store.seals}, dsn, "bench", batch_rows)
        try:
            started = time.perf_counter()
            while not sender.step().empty:
                pass
            seconds = time.perf_counter() - started
        finally:
            sender.close()
    with connect(dsn) as conn:
        sent = conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    assert sent == calls, (sent, calls)
    return calls / seconds, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=48_000)
    parser.add_argument("--driver-rows", type=int, default=20_000)
    parser.add_argument("--batches", default="100,500,2000")
    args = parser.parse_args()
    server = PostgresServer(prefix="central-bench-", durable=True)
    folder = Path(tempfile.mkdtemp(prefix="central-bench-sites-"))
    try:
        server.start()
        rows = _rows(args.driver_rows)
        for name, rate in (("psycopg 3", psycopg_rate), ("asyncpg", asyncpg_rate)):
            rates = [rate(server, rows, run) for run in range(RUNS)]
            print(f"driver {name}: upsert {args.driver_rows} rows, median {statistics.median(rates):,.0f} rows/s "
                  f"({', '.join(f'{r:,.0f}' for r in rates)})")
        for batch in (int(b) for b in args.batches.split(",")):
            rate, seconds = catch_up(server, args.calls, batch, folder, f"{batch}")
            print(f"catch-up of {args.calls} calls ({2 * args.calls} outbox entries), batch {batch}: "
                  f"{rate:,.0f} rows/s, {seconds:.1f} s")
    finally:
        server.remove()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
