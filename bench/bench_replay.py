"""Replay benchmark: RTP packets per second and memory per active call.

Generates N simultaneous G.711 calls (bench/gen_calls.py), replays them
through the full recorder (decoding, de-duplication, SIP, RTP streams,
interleaving, encrypted recording files, sealing, index) in this process, fed
a batch of the file at a time as `callrec replay` feeds it (the batched media
path; `--per-frame` for the per-frame one), with the cyclic garbage
collector tuned as `callrec replay` tunes it (`--default-gc` leaves Python's
defaults), and reports the median of several runs, so a busy machine shifts
the figures less.  tshark's `-q -z rtp,streams` on the same file is timed in
the same runs (one after each replay) as a yardstick, and the ratio of the
medians is printed.
"""
from __future__ import annotations

import argparse
import gc
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog  # noqa: E402

from bench.gen_calls import write_pcap  # noqa: E402
from callrec.context import tune_gc  # noqa: E402
from policy.decide import PolicyDecider  # noqa: E402
from policy.schema import Policy  # noqa: E402
from recorder.capture_file import BATCH_CHUNK_SIZE, CaptureFile  # noqa: E402
from recorder.engine import Recorder  # noqa: E402
from storage.index import CallIndex  # noqa: E402
from storage.keys import KEY_SIZE, MasterKey  # noqa: E402
from storage.ledger import default_anchor_dir  # noqa: E402
from storage.recordings import RecordingStore  # noqa: E402


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def replay_once(capture: Path, batched: bool, chunk: int = BATCH_CHUNK_SIZE) -> tuple[float, int, int, int, float]:
    """(seconds, rtp packets, peak RSS growth KiB, recordings, CPU seconds)
    for one replay."""
    data = Path(tempfile.mkdtemp(prefix="callrec-bench-"))
    try:
        index = CallIndex(data / "index.sqlite3")
        store = RecordingStore(data, index, ZoneInfo("Asia/Tokyo"), MasterKey(secrets.token_bytes(KEY_SIZE)))
        recorder = Recorder(PolicyDecider(Policy()), store)
        gc.collect()
        base = rss_kib()
        peak = base
        start, cpu = time.perf_counter(), time.process_time()
        if batched:
            for n, batch in enumerate(CaptureFile(capture).frame_batches(chunk)):
                recorder.feed_batch(batch)
                if n & 0x7 == 0:
                    peak = max(peak, rss_kib())
        else:
            for n, frames in enumerate(CaptureFile(capture).batches()):
                recorder.feed_frames(frames)
                if n & 0x3F == 0:
                    peak = max(peak, rss_kib())
        recorder.finish()
        store.close()
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        index.close()
        return elapsed, recorder.stats["rtp_packets"], peak - base, recorder.stats["recordings"], cpu
    finally:
        shutil.rmtree(data)
        shutil.rmtree(default_anchor_dir(data), ignore_errors=True)


def tshark_once(tshark: str, capture: Path) -> tuple[float, float]:
    """(seconds, CPU seconds) of tshark's RTP stream analysis of the capture."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([tshark, "-r", str(capture), "-q", "-z", "rtp,streams"], check=True, capture_output=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return elapsed, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--capture", type=Path, help="replay this file instead of generating one")
    parser.add_argument("--per-frame", action="store_true", help="the per-frame media path (no batches)")
    parser.add_argument("--batch-mib", type=float, default=BATCH_CHUNK_SIZE / (1 << 20),
                        help="MiB of the file per batch (the batched path)")
    parser.add_argument("--default-gc", action="store_true",
                        help="leave the cyclic collector as Python sets it (callrec replay tunes it: tune_gc)")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    if not args.default_gc:
        tune_gc()
    work = Path(tempfile.mkdtemp(prefix="callrec-bench-in-"))
    try:
        capture = args.capture
        if capture is None:
            capture = work / "calls.pcap"
            with capture.open("wb") as out:
                write_pcap(out, args.calls, args.seconds)
        tshark = shutil.which("tshark")
        load = os.getloadavg()[0]
        runs, yardstick = [], []
        for _ in range(args.runs):
            runs.append(replay_once(capture, not args.per_frame, int(args.batch_mib * (1 << 20))))
            if tshark:
                yardstick.append(tshark_once(tshark, capture))
        seconds = statistics.median(r[0] for r in runs)
        cpu = statistics.median(r[4] for r in runs)
        packets = runs[0][1]
        growth = max(r[2] for r in runs)
        path = "per-frame" if args.per_frame else "batched"
        print(f"capture: {capture.stat().st_size / 1e6:.0f} MB, {packets} RTP packets, {runs[0][3]} recordings")
        print(f"callrec replay ({path}): {packets / seconds:,.0f} RTP packets/s (median of {args.runs}, one core); "
              f"{packets / cpu:,.0f} per CPU second")
        print(f"peak RSS growth: {growth / 1024:.1f} MiB, {growth / max(args.calls, 1):.1f} KiB per active call")
        if yardstick:
            took = statistics.median(y[0] for y in yardstick)
            took_cpu = statistics.median(y[1] for y in yardstick)
            print(f"tshark -q -z rtp,streams: {packets / took:,.0f} RTP packets/s (median of {args.runs}); "
                  f"{packets / took_cpu:,.0f} per CPU second")
            print(f"callrec / tshark: {took / seconds:.2f}x (wall clock), {took_cpu / cpu:.2f}x (CPU time)")
        print(f"peak RSS of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
        print(f"load average (1 min) before and after: {load:.1f}, {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} CPUs: compare CPU time when the machine is shared")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
