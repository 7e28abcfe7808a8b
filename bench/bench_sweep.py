"""Sweep time and index size for 1,000,000 recordings (several years of a
city hall), and whether a sweep stalls recording.

The index is filled with a million sealed rows spread over four years (about
685 calls a day); the last day before the cutoff gets real vault files so the
sweep shreds what a daily sweep would.  Measured: the index's size, a sweep
with nothing due (what the daemon does every minute), a sweep that erases a
day of recordings, and the longest time the recorder's own index writes
waited while that sweep ran in its worker thread.

    python bench/bench_sweep.py [--rows 1000000]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callrec import logs  # noqa: E402
from policy.retention import Period, Retention  # noqa: E402
from storage.audiofile import AudioWriter  # noqa: E402
from storage.layout import ensure_private_dir  # noqa: E402
from storage.retention import expiry_cutoff  # noqa: E402
from storage.store import Store  # noqa: E402
from storage.sweep import sweep  # noqa: E402

TOKYO = ZoneInfo("Asia/Tokyo")
START = 1_700_000_000.0
YEARS = 4
RULES = Retention(keep=Period(days=90), capacity=400 * 2**40)


def fill(store: Store, rows: int, now: float) -> list[str]:
    """A million rows in a few transactions; returns the ids due at `now`'s
    sweep that were recorded on the last day before the cutoff."""
    span = YEARS * 365 * 86400.0
    step = span / rows
    cutoff = expiry_cutoff(RULES.keep, now, TOKYO)
    assert cutoff is not None
    db = store.index._db
    batch = []
    due = []
    for n in range(rows):
        at = START + n * step
        record_id = f"{time.strftime('%Y%m%dT%H%M%S', time.gmtime(at))}-{n:08x}"
        if cutoff - 86400 <= at < cutoff:
            due.append(record_id)
        batch.append((record_id, f"{n}@pbx", f"{at}", "inbound", "0312345678", "0901234567", at,
                      16_000, "sealed", f"sha{n:061d}"))
        if len(batch) == 50_000:
            _insert(db, batch)
            batch.clear()
    _insert(db, batch)
    return due


def _insert(db, batch) -> None:  # type: ignore[no-untyped-def]
    db.execute("BEGIN")
    db.executemany("INSERT INTO calls (id, sip_call_id, started_at, direction, local_number, remote_number, "
                   "recorded_at, size_bytes, state, sha256) VALUES (?,?,?,?,?,?,?,?,?,?)", batch)
    db.execute("COMMIT")


def give_files(store: Store, ids: list[str]) -> None:
    """Real (small) vaults for the recordings a day's sweep erases."""
    folder = store.data_dir / "recordings" / "bench"
    ensure_private_dir(folder)
    for record_id in ids:
        path = folder / f"{record_id}.wav.vault"
        writer = AudioWriter(path, store.master, record_id, "PCMU")
        writer.append(bytes(16_000))
        writer.close()
        store.index.update(record_id, audio_path=path.relative_to(store.data_dir).as_posix(),
                           size_bytes=path.stat().st_size)


def recorder_writes(store: Store, stop: threading.Event, waits: list[float]) -> None:
    """What the recorder does to the index while calls come and go."""
    index = store.for_thread().index
    n = 0
    while not stop.is_set():
        n += 1
        t0 = time.perf_counter()
        index.insert(id=f"live-{n}", sip_call_id=f"live{n}", started_at="now", direction="inbound",
                     recorded_at=time.time(), state="recording")
        index.update(f"live-{n}", state="sealed", size_bytes=1000)
        waits.append(time.perf_counter() - t0)
        time.sleep(0.02)
    index.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    logs.configure("warning")
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(Path(tmp) / "data", TOKYO, create_key=True)
        now = START + YEARS * 365 * 86400.0 * 0.5
        t0 = time.perf_counter()
        due = fill(store, args.rows, now)
        fill_s = time.perf_counter() - t0
        store.index._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = (store.data_dir / "index.sqlite3").stat().st_size
        print(f"rows: {args.rows:,}; filled in {fill_s:.1f} s; index {size / 2**20:.0f} MiB "
              f"({size / args.rows:.0f} bytes a row)")

        expired_before = len(store.index.expired(expiry_cutoff(RULES.keep, now, TOKYO) - 86400))
        store.index._db.execute("UPDATE calls SET erased_at = 'bench' WHERE recorded_at < ?",
                                (expiry_cutoff(RULES.keep, now, TOKYO) - 86400,))
        print(f"older rows marked erased as earlier sweeps would have: {expired_before:,}")

        idle = []
        for _ in range(5):
            t0 = time.perf_counter()
            result = sweep(store, RULES, now - 86400 * 2, "bench")
            idle.append(time.perf_counter() - t0)
            assert not result.erased
        print(f"sweep with nothing due (every minute in the daemon): median {statistics.median(idle) * 1000:.1f} ms")

        give_files(store, due)
        waits: list[float] = []
        stop = threading.Event()
        writer = threading.Thread(target=recorder_writes, args=(store, stop, waits))
        writer.start()
        time.sleep(0.5)
        t0 = time.perf_counter()
        result = sweep(store, RULES, now, "bench")
        daily = time.perf_counter() - t0
        time.sleep(0.5)
        stop.set()
        writer.join()
        assert len(result.erased) == len(due), (len(result.erased), len(due))
        print(f"daily sweep erasing {len(due)} recordings (files shredded, rows cleared, one ledger entry): "
              f"{daily:.2f} s ({daily / max(1, len(due)) * 1000:.2f} ms each)")
        waits.sort()
        print(f"recorder index writes during that sweep: {len(waits)}, median {statistics.median(waits) * 1000:.2f} ms,"
              f" max {waits[-1] * 1000:.1f} ms")
        store.close()


if __name__ == "__main__":
    main()
