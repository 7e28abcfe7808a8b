"""How fast the archive stage moves recordings to the second medium.

Recordings of one minute each (stereo G.711, 960,000 bytes of audio) are made
in a data folder; each sweep moves up to 200 of them to an archive folder
(copied, fsynced, read back from the medium with the page cache dropped and
authenticated against the seal, renamed, the row fsynced, the device copy
shredded).  Measured: the time per recording moved, per sweep, as a median of
the sweeps; and a sweep with nothing due, as the daemon runs every minute.

    python bench/bench_archive.py [--recordings 600] [--medium DIR]

Without --medium the archive is a folder beside the data (one filesystem);
give a folder on another mounted filesystem to measure a real second medium.
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

from callrec import logs
from policy.retention import Archive, Period, Retention
from storage.archive import MAX_MOVES, init_medium
from storage.audiofile import AudioWriter, wav_digest
from storage.layout import ensure_private_dir
from storage.store import Store
from storage.sweep import sweep

TOKYO = ZoneInfo("Asia/Tokyo")
START = 1_700_000_000.0
RULES = Retention(keep=Period(months=6), free_space_floor=2**20, archive=Archive(keep=Period(months=6),
                                                                                  free_space_floor=2**20))
MINUTE = bytes(range(256)) * (960_000 // 256) + bytes(960_000 % 256)


def record(store: Store, count: int) -> None:
    folder = store.data_dir / "recordings" / "2023" / "11" / "15"
    ensure_private_dir(folder)
    for n in range(count):
        record_id = f"20231115T000000-{n:08x}"
        path = folder / f"{record_id}.wav.vault"
        writer = AudioWriter(path, store.master, record_id, "PCMU")
        writer.append(MINUTE)
        writer.close()
        _, digest = wav_digest(path, store.master, record_id)
        store.index.insert(id=record_id, sip_call_id=f"{n}@bench", started_at="2023-11-15T00:00:00+09:00",
                           direction="inbound", recorded_at=START + n, state="sealed", sha256=digest,
                           audio_path=path.relative_to(store.data_dir).as_posix(), audio_format="PCMU",
                           audio_frames=len(MINUTE) // 2, size_bytes=path.stat().st_size)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recordings", type=int, default=600)
    parser.add_argument("--medium", type=Path, help="an empty folder on another mounted filesystem")
    args = parser.parse_args()
    logs.configure("warning")
    with tempfile.TemporaryDirectory() as tmp:
        medium = args.medium or Path(tmp) / "medium"
        medium.mkdir(mode=0o700, exist_ok=True)
        store = Store.open(Path(tmp) / "data", TOKYO, create_key=True, archive_dir=medium)
        init_medium(store, "bench", require_own_filesystem=args.medium is not None)
        record(store, args.recordings)
        later = START + 200 * 86400.0
        per_recording = []
        while True:
            t0 = time.perf_counter()
            moved = sweep(store, RULES, later, "bench").archive.moved
            if not moved:
                break
            per_recording.append((time.perf_counter() - t0) / len(moved))
        idle = []
        for _ in range(5):
            t0 = time.perf_counter()
            sweep(store, RULES, later, "bench")
            idle.append(time.perf_counter() - t0)
        size = store.index.archived_totals()[0][2]
        print(f"{args.recordings} one-minute recordings ({size / args.recordings / 1e6:.2f} MB each), "
              f"{len(per_recording)} sweeps of up to {MAX_MOVES}")
        median = statistics.median(per_recording)
        print(f"move: median {median * 1000:.1f} ms a recording ({size / args.recordings / median / 1e6:.0f} MB/s)")
        print(f"sweep with nothing due: median {statistics.median(idle) * 1000:.1f} ms")
        store.close()


if __name__ == "__main__":
    main()
