"""The central search bench at a smoke size, so it cannot rot: it starts its own PostgreSQL, fills
it and a local index, runs every kind of search on both, and leaves nothing behind; and the plan
the bench's figures depend on.  Nothing is timed here (the figures are the bench's, in the README)."""
from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.bench_central_search import KINDS, load_centre
from storage.central_search import central_statement
from storage.search import CallQuery
from tests.central_pg import PostgresServer

ROOT = Path(__file__).resolve().parents[1]


def test_the_bench_runs_at_a_small_size_and_removes_its_server() -> None:
    before = set(Path("/tmp").glob("cbench-*"))
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_central_search.py"), "--rows", "20000",
                           "--runs", "3"], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("centre: 20,000 rows") for line in lines), done.stdout
    for kind in KINDS:
        first, warm = (line for line in lines if line.startswith(kind))  # a pass as loaded, then warm
        assert first.count(" | ") == 3 and warm.count(" | ") == 3, (kind, done.stdout)
    assert set(Path("/tmp").glob("cbench-*")) <= before


@pytest.fixture
def centre() -> Iterator[str]:
    server = PostgresServer(prefix="cbench-pg-")
    try:
        server.start()
        yield server.dsn
    finally:
        server.remove()


def test_the_planner_counts_a_numbers_calls_from_statistics(centre: str) -> None:
    """A number over all time is planned from the statistics of the reversed number (migration
    search_statistics), not from the 0.5 % of the table PostgreSQL assumes without them, which on
    a large centre made it start parallel workers and JIT for a handful of rows."""
    load_centre(centre, sites=10, per_site=2_000)
    with psycopg.connect(centre, autocommit=True) as conn:
        number = conn.execute("SELECT remote_number FROM calls WHERE remote_number IS NOT NULL "
                              "GROUP BY remote_number ORDER BY count(*), remote_number LIMIT 1").fetchone()[0]
        st = central_statement(CallQuery(remote_number=number))
        plan = conn.execute("EXPLAIN (FORMAT JSON) " + st.sql, st.params).fetchone()[0][0]["Plan"]
    scans = list(_nodes(plan, "calls_remote_tail"))
    assert scans and all(node["Plan Rows"] < 20 for node in scans), plan


def _nodes(plan: dict[str, Any], index: str) -> Iterator[dict[str, Any]]:
    if plan.get("Index Name") == index:
        yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child, index)
