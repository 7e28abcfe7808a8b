"""Live capture benchmark: packets per second read without kernel drops.

Two network namespaces joined by a veth pair; tcpreplay in one plays a
capture of N simultaneous G.711 calls (bench/gen_calls.py: 100 RTP packets
per second per call, plus SIP) onto the link, evenly paced at the calls' own
packet rate (tcpreplay's --pps: its timestamp-following mode cannot keep up
beyond some 40,000 packets per second here; a hundred packets per 1 ms
interval, ``--pps-multi``, see PPS_MULTI) or as fast as it can (--topspeed).  This process captures on the other end with
recorder.live_capture and either only counts the frames (the capture path
alone) or feeds them to the full recorder, as bench_replay does.  Reported per
run: packets sent, frames read, kernel drops, and the CPU the capturing
process used per frame.

With ``--daemon-workers 1,2`` the capturing side is the real daemon
(`callrec run`, policy built in, every feature on: encryption, index, seals)
with ``capture_workers`` set to each value in turn; the kernel's counters are
read from `callrec status` (per worker), and the memory of the daemon and its
workers is sampled while the calls are under way: the growth over idle per
active call, early and late in the calls (it must not grow with their length).

Needs root.  Namespaces are named lcb-<pid>-tx/rx and removed at the end.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import resource
import secrets
import select
import shutil
import socket
import statistics
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
def link(prefix: str = "lcb") -> Iterator[tuple[str, str]]:
    tx, rx = f"{prefix}-{os.getpid()}-tx", f"{prefix}-{os.getpid()}-rx"
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
        pace = ["--topspeed"] if pps is None else _paced(pps)
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


REPO = Path(__file__).resolve().parents[1]
PPS_MULTI = 100
"""Packets tcpreplay sends per pacing interval (with its nanosleep timer).  Paced one packet at a time
(its default timer polls the clock) it used 0.8 to 1 core of this 2-core VM at any rate, 100,000 packets
per second included: 8-10 us of CPU a packet against 3 us paced a hundred at a time (a 1 ms burst;
RTP comes every 20 ms), so the receiver got the rest of one core at most."""


_SENDER = {"pps_multi": PPS_MULTI}


def _paced(pps: int) -> list[str]:
    multi = _SENDER["pps_multi"]
    return ["--pps", str(pps), "-T", "nano", f"--pps-multi={multi}"] if multi > 1 else ["--pps", str(pps)]


def _status(path: Path) -> dict:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        sock.connect(str(path))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return json.loads(data)


def _rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        # Anonymous memory only: the kernel's capture rings are mapped pages of a fixed size, not per call.
        total += next(int(line.split()[1]) for line in text.splitlines() if line.startswith("RssAnon:"))
    return total


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _kernel(status: dict) -> tuple[int, int, list[tuple[int, int]]]:
    workers = status.get("capture_workers") or []
    per = [(w["kernel_packets"], w["kernel_drops"]) for w in workers]
    return sum(p for p, _ in per), status["kernel_drops"], per


def _children_cpu() -> float:
    """CPU seconds of this process's children that have ended (the sender, once waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def daemon_runs(tx: str, rx: str, work: Path, counts: list[int], seconds: float, workers: int,
                sizes: dict[int, int], repeat: int = 1, nice: int = 0) -> float:
    """The daemon with ``workers`` capture workers, fed each rate in turn
    (upward, ``repeat`` times each; the search stops at the first rate whose
    median run dropped): the highest paced rate without a kernel drop.  Per
    run, besides the drops: the sender's achieved rate and its CPU (user and
    system time of tcpreplay, which also pays the veth's delivery into the
    receiving namespace), and the receiver's CPU per packet kept, per
    process and in all (its inverse: packets per CPU second, the headroom a
    core gives)."""
    folder = work / f"daemon-{workers}"
    folder.mkdir()
    status_path = folder / "status.sock"
    config = folder / "config.yaml"
    config.write_text(f"data_dir: {folder / 'data'}\ninterfaces: [lcbrx]\nstatus_socket: {status_path}\n"
                      f"capture_workers: {workers}\nlog_level: warning\nsweep_interval_seconds: 3600\n")
    log = (folder / "daemon.log").open("wb")
    proc = subprocess.Popen(["ip", "netns", "exec", rx, "nice", "-n", str(nice), sys.executable, "-m", "callrec",
                             "run", "--config", str(config)], cwd=REPO, stdout=log, stderr=log)
    best = 0.0
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _status(status_path)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the daemon did not start: {(folder / 'daemon.log').read_text()}") from None
                time.sleep(0.2)
        print(f"daemon, capture_workers: {workers}, nice {nice}")
        print(f"{'calls':>6} {'sent':>9} {'pkt/s':>9} {'captured':>9} {'drops':>7} {'per worker (pkts/drops)':>26} "
              f"{'peak calls':>10} {'KiB/call early':>14} {'late':>6} {'CPU us/pkt per process':>24} "
              f"{'receiver us/pkt':>15} {'sender CPU':>10}")
        summary = []
        for calls in (c for c in counts for _ in range(repeat)):
            pcap = work / f"calls-{calls}.pcap"
            time.sleep(3)
            before = _status(status_path)
            pids = [proc.pid] + [w["pid"] for w in before.get("capture_workers", []) if w["pid"]]
            idle = _rss_kib(pids)
            cpu0 = [_cpu_seconds(pid) for pid in pids]
            load0 = _load()
            pps = round(sizes[calls] / seconds)
            sender_cpu0 = _children_cpu()
            sender = subprocess.Popen(["ip", "netns", "exec", tx, "tcpreplay", "-i", "lcbtx", "-K", *_paced(pps),
                                       str(pcap)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            samples = []
            while sender.poll() is None:
                time.sleep(0.5)
                try:
                    samples.append((_status(status_path)["active_calls"], [_rss_kib([pid]) for pid in pids]))
                except TimeoutError:  # a daemon busy with the capture answers late: no sample
                    continue
            out = sender.communicate()[0]
            sender_cpu = _children_cpu() - sender_cpu0
            parts = " + ".join(f"{_rss_kib([pid]) // 1024} MiB" for pid in pids)
            time.sleep(3)
            cpu = [_cpu_seconds(pid) - c for pid, c in zip(pids, cpu0, strict=True)]
            after = _status(status_path)
            match = re.search(r"Actual: (\d+) packets .* sent in ([\d.]+) seconds", out)
            if sender.returncode != 0 or match is None:
                raise RuntimeError(f"tcpreplay failed ({sender.returncode}): {out}")
            sent, took = int(match.group(1)), float(match.group(2))
            p0, d0, per0 = _kernel(before)
            p1, d1, per1 = _kernel(after)
            per = " ".join(f"{b[0] - a[0]}/{b[1] - a[1]}" for a, b in zip(per0, per1, strict=True)) or "-"
            peak = max((a for a, _ in samples), default=0)
            plateau = [rss for a, rss in samples if peak and a >= 0.95 * peak]
            early = (sum(plateau[0]) - idle) / peak if plateau else 0.0
            late = (sum(plateau[-1]) - idle) / peak if plateau else 0.0
            growth = " ".join(f"{(b - a) / peak:+.1f}" for a, b in zip(plateau[0], plateau[-1], strict=True)) \
                if plateau else "-"
            drops = d1 - d0
            captured = f"{p1 - p0:,}" if per0 else "-"
            # CPU per packet: the daemon's over every packet captured and not dropped (it writes
            # every call), each worker's over the packets its own sockets took and kept.
            taken = [sent - drops] + [(b[0] - a[0]) - (b[1] - a[1]) for a, b in zip(per0, per1, strict=True)]
            per_cpu = " ".join(f"{c / max(n, 1) * 1e6:.1f}" for c, n in zip(cpu, taken, strict=False))
            receiver = sum(cpu) / max(sent - drops, 1) * 1e6
            summary.append((calls, sent / took, drops, receiver, sender_cpu / took, _load()))
            print(f"{calls:>6} {sent:>9,} {sent / took:>9,.0f} {captured:>9} {drops:>7,} {per:>26} {peak:>10} "
                  f"{early:>14.1f} {late:>6.1f} {per_cpu:>24} {receiver:>15.2f} {sender_cpu / took:>9.0%}   (anonymous memory at the end: {parts};"
                  f" KiB/call from early to late, per process: {growth}; load average before/after:"
                  f" {load0} / {_load()}; anonymous MiB idle {idle / 1024:.0f}, late"
                  f" {sum(plateau[-1]) / 1024 if plateau else 0:.0f})", flush=True)
            runs = [r for r in summary if r[0] == calls]
            if len(runs) == repeat and statistics.median(r[2] for r in runs) > 0:
                break  # the search goes no higher
        for calls in dict.fromkeys(r[0] for r in summary):
            runs = [r for r in summary if r[0] == calls]
            rate, drops, receiver, busy = (statistics.median(r[i] for r in runs) for i in (1, 2, 3, 4))
            if drops == 0:
                best = max(best, rate)
            print(f"median of {len(runs)}, {workers} worker(s), {calls} calls: sender {rate:,.0f} pkt/s at {busy:.0%} "
                  f"of a core, kernel drops {drops:,.0f}, receiver {receiver:.2f} us of CPU per packet "
                  f"({1e6 / receiver:,.0f} packets per CPU second), load average {runs[-1][5]}")
        print(f"highest rate without a kernel drop, {workers} worker(s): {best:,.0f} packets/s")
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", default="250,500,1000,1500,2000",
                        help="comma-separated numbers of simultaneous calls, one run each")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the calls")
    parser.add_argument("--topspeed", action="store_true", help="also replay the largest capture as fast as possible")
    parser.add_argument("--pipeline", choices=("capture", "recorder"), default="capture")
    parser.add_argument("--ring-mib", type=int, default=64)
    parser.add_argument("--block-kib", type=int, default=1024)
    parser.add_argument("--netns-prefix", default="lcb", help="names of the two network namespaces: PREFIX-PID-tx/rx")
    parser.add_argument("--pps-multi", type=int, default=PPS_MULTI,
                        help="packets the sender sends per pacing interval (1: tcpreplay's default pacing)")
    parser.add_argument("--nice", type=int, default=0,
                        help="the daemon's (and its workers') niceness: -10 keeps other work on a shared machine "
                             "from starving it, as on an appliance that records and does little else")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each rate with --daemon-workers (medians)")
    parser.add_argument("--daemon-workers", default="",
                        help="comma-separated capture_workers values: run the daemon itself with each")
    args = parser.parse_args()
    _SENDER["pps_multi"] = args.pps_multi
    if os.geteuid() != 0:
        sys.exit("needs root: packet sockets and network namespaces")
    if shutil.which("tcpreplay") is None:
        sys.exit("needs tcpreplay (apt-get install tcpreplay)")
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(40))
    counts = [int(c) for c in args.calls.split(",")]
    work = Path(tempfile.mkdtemp(prefix="callrec-bench-live-"))
    try:
        with link(args.netns_prefix) as (tx, rx):
            if args.daemon_workers:
                sizes = {}
                for calls in counts:
                    with (work / f"calls-{calls}.pcap").open("wb") as out:
                        sizes[calls] = write_pcap(out, calls, args.seconds)
                for workers in (int(w) for w in args.daemon_workers.split(",")):
                    daemon_runs(tx, rx, work, counts, args.seconds, workers, sizes, args.repeat, args.nice)
                return
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
