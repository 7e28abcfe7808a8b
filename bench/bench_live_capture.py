"""Live capture benchmark: packets per second read without kernel drops.

Two network namespaces joined by a veth pair; tcpreplay in one plays a
capture of N simultaneous G.711 calls (bench/gen_calls.py: 100 RTP packets
per second per call, plus SIP) onto the link, evenly paced at the calls' own
packet rate (tcpreplay's --pps: its timestamp-following mode cannot keep up
beyond some 40,000 packets per second here) or as fast as it can
(--topspeed).  This process captures on the other end with
recorder.live_capture and either only counts the frames (the capture path
alone) or feeds them to the full recorder, as bench_replay does.  Reported per
run: packets sent, frames read, kernel drops, and the CPU the capturing
process used per frame.

Needs root.  Namespaces are named lcb-<pid>-tx/rx and removed at the end.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import re
import secrets
import select
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import structlog  # noqa: E402

from bench.gen_calls import write_pcap  # noqa: E402
from recorder.live_capture import LiveCapture  # noqa: E402
from wire.pcap import Frame  # noqa: E402

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=15)


@contextmanager
def inside(ns: str) -> Iterator[None]:
    """Sockets made in the body belong to namespace ``ns``."""
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{ns}") as there:
        if _libc.setns(there.fileno(), _CLONE_NEWNET):
            raise OSError(ctypes.get_errno(), "setns")
        try:
            yield
        finally:
            _libc.setns(home.fileno(), _CLONE_NEWNET)


@contextmanager
def link() -> Iterator[tuple[str, str]]:
    tx, rx = f"lcb-{os.getpid()}-tx", f"lcb-{os.getpid()}-rx"
    made = []
    try:
        for ns in (tx, rx):
            ip("netns", "add", ns)
            made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", tx, "link", "add", "lcbtx", "type", "veth", "peer", "name", "lcbrx", "netns", rx)
        ip("-n", tx, "link", "set", "lcbtx", "up")
        ip("-n", rx, "link", "set", "lcbrx", "up")
        yield tx, rx
    finally:
        for ns in made:
            ip("netns", "del", ns)


def recorder_sink(data: Path) -> tuple[Callable[[list[Frame]], None], Callable[[], None]]:
    """The full recorder, built as bench_replay builds it."""
    from policy.decide import PolicyDecider
    from policy.schema import Policy
    from recorder.engine import Recorder
    from storage.index import CallIndex
    from storage.keys import KEY_SIZE, MasterKey
    from storage.recordings import RecordingStore

    index = CallIndex(data / "index.sqlite3")
    store = RecordingStore(data, index, ZoneInfo("Asia/Tokyo"), MasterKey(secrets.token_bytes(KEY_SIZE)))
    recorder = Recorder(PolicyDecider(Policy()), store)

    def finish() -> None:
        recorder.finish()
        index.close()

    return recorder.feed_frames, finish


def run(tx: str, rx: str, pcap: Path, *, pps: int | None, pipeline: str, ring_mib: int, block_kib: int,
        work: Path) -> dict[str, float]:
    feed: Callable[[list[Frame]], None] | None = None
    finish: Callable[[], None] | None = None
    if pipeline == "recorder":
        data = Path(tempfile.mkdtemp(prefix="data-", dir=work))
        feed, finish = recorder_sink(data)
    with inside(rx):
        cap = LiveCapture("lcbrx", ring_bytes=ring_mib << 20, block_bytes=block_kib << 10)
    with cap:
        pace = ["--topspeed"] if pps is None else ["--pps", str(pps)]
        sender = subprocess.Popen(["ip", "netns", "exec", tx, "tcpreplay", "-i", "lcbtx", "-K", *pace, str(pcap)],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        poller = select.poll()
        poller.register(cap.fileno(), select.POLLIN)
        frames = 0
        cpu0 = time.process_time()
        idle_since = None
        while True:
            if poller.poll(100):
                batch = cap.read_blocks(64)
                frames += len(batch)
                if feed is not None:
                    feed(batch)
                idle_since = None
            elif sender.poll() is not None:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > 0.5:
                    break
        cpu = time.process_time() - cpu0
        out = sender.communicate()[0]
        stats = cap.stats()
    if finish is not None:
        finish()
    match = re.search(r"Actual: (\d+) packets .* sent in ([\d.]+) seconds", out)
    if sender.returncode != 0 or match is None:
        raise RuntimeError(f"tcpreplay failed ({sender.returncode}): {out}")
    sent, seconds = int(match.group(1)), float(match.group(2))
    return {"sent": sent, "pps": sent / seconds, "frames": frames, "drops": stats["kernel_drops"],
            "cpu_us": cpu / max(frames, 1) * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", default="250,500,1000,1500,2000",
                        help="comma-separated numbers of simultaneous calls, one run each")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the calls")
    parser.add_argument("--topspeed", action="store_true", help="also replay the largest capture as fast as possible")
    parser.add_argument("--pipeline", choices=("capture", "recorder"), default="capture")
    parser.add_argument("--ring-mib", type=int, default=64)
    parser.add_argument("--block-kib", type=int, default=1024)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: packet sockets and network namespaces")
    if shutil.which("tcpreplay") is None:
        sys.exit("needs tcpreplay (apt-get install tcpreplay)")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    counts = [int(c) for c in args.calls.split(",")]
    work = Path(tempfile.mkdtemp(prefix="callrec-bench-live-"))
    try:
        with link() as (tx, rx):
            print(f"pipeline: {args.pipeline}, ring {args.ring_mib} MiB in {args.block_kib} KiB blocks")
            print(f"{'calls':>6} {'pace':>9} {'sent':>9} {'pkt/s':>9} {'read':>9} {'drops':>7} {'CPU/frame':>10}")
            runs = [(n, False) for n in counts] + ([(max(counts), True)] if args.topspeed else [])
            best = 0.0
            sizes: dict[int, int] = {}
            for calls, topspeed in runs:
                pcap = work / f"calls-{calls}.pcap"
                if calls not in sizes:
                    with pcap.open("wb") as out:
                        sizes[calls] = write_pcap(out, calls, args.seconds)
                pps = None if topspeed else round(sizes[calls] / args.seconds)
                r = run(tx, rx, pcap, pps=pps, pipeline=args.pipeline, ring_mib=args.ring_mib,
                        block_kib=args.block_kib, work=work)
                if r["drops"] == 0 and r["frames"] == r["sent"]:
                    best = max(best, r["pps"])
                print(f"{calls:>6} {'topspeed' if topspeed else 'real':>9} {r['sent']:>9,.0f} {r['pps']:>9,.0f} "
                      f"{r['frames']:>9,.0f} {r['drops']:>7,.0f} {r['cpu_us']:>8.2f}us", flush=True)
            print(f"highest rate read without a kernel drop: {best:,.0f} packets/s")
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
