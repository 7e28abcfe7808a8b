"""What the warning costs the announcer at each INVITE: `WarningList.warned` on an index whose
warning window holds many marked calls (default 2,000 marked calls from 500 numbers).

The calls rows are written directly (this times the lookup, not the recorder); the marks go
through `MarkBook.add` as the console and the keypad make them. Medians of many lookups.

    python bench/bench_warning.py [--marks 2000] [--numbers 500] [--lookups 200]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from policy.loader import parse_policy
from storage.index import connect
from storage.marks import MarkBook
from storage.store import Store
from storage.warnings import WarningList

TOKYO = ZoneInfo("Asia/Tokyo")
POLICY = """\
harassment:
  clause: bench
  mark_prefix: "*9"
  categories:
    - {id: threat, label: 脅迫, clause: bench, digit: "1", keep: {years: 5}}
  warning: {after_marks: 2, within_days: 90, announcement: warning.wav, clause: bench}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--marks", type=int, default=2000)
    parser.add_argument("--numbers", type=int, default=500)
    parser.add_argument("--lookups", type=int, default=200)
    args = parser.parse_args()
    section = parse_policy(POLICY).harassment
    assert section is not None and section.warning is not None
    with tempfile.TemporaryDirectory(prefix="bench-warning-") as folder, \
            Store.open(Path(folder) / "data", TOKYO, create_key=True) as store:
        db = connect(store.index.path)
        now = time.time()
        for n in range(args.marks):
            db.execute("INSERT INTO calls (id, sip_call_id, started_at, direction, remote_number, state, recorded_at) "
                       "VALUES (?, ?, ?, 'inbound', ?, 'sealed', ?)",
                       (f"c{n}", f"c{n}", "2026-11-01T00:00:00+09:00", f"03{n % args.numbers:08d}", now - 86400))
        db.commit()
        db.close()
        with MarkBook(store, section) as book:
            for n in range(args.marks):
                book.add(f"c{n}", "threat", marked_by="bench", via="cli")
        with WarningList(store.index.path, section.warning, "81") as warnings:
            times = []
            for n in range(args.lookups):
                start = time.perf_counter()
                warnings.warned(f"03{n % (2 * args.numbers):08d}", now)
                times.append(time.perf_counter() - start)
    print(f"warned(): median {statistics.median(times) * 1000:.2f} ms over {args.lookups} INVITEs "
          f"({args.marks} marked calls from {args.numbers} numbers in the window)")


if __name__ == "__main__":
    main()
