"""The central search bench at a smoke size, so it cannot rot: it starts its own PostgreSQL, fills
it and a local index, runs every kind of search on both, and leaves nothing behind.  Nothing is
timed here (the figures are the bench's, in the README)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.bench_central_search import KINDS

ROOT = Path(__file__).resolve().parents[1]


def test_the_bench_runs_at_a_small_size_and_removes_its_server() -> None:
    before = set(Path("/tmp").glob("cbench-*"))
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_central_search.py"), "--rows", "20000",
                           "--runs", "3"], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("centre: 20,000 rows") for line in lines), done.stdout
    for kind in KINDS:
        sides = [line for line in lines if line.startswith(kind)]
        assert len(sides) == 3, (kind, done.stdout)
    assert set(Path("/tmp").glob("cbench-*")) <= before
