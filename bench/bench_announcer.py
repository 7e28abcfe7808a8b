"""200 simultaneous announcements: RTP pacing of every stream and CPU per announcement.

The announcer runs alone (`callrec announcer`) in one network namespace; SIPp plays the PBX in
another and places N calls (the REFER scenario of the tests, default announcement, 6.9 s); tcpdump
on the PBX's side records the wire. Pacing is measured per RTP stream (SSRC) from the capture
timestamps: the 95th percentile of the inter-packet gap must be within 20 ms ± 2 ms. CPU is the
announcer process's user + system time over the run, divided by the number of calls.

Needs root, iproute2, sip-tester, tcpdump and tshark. Run:
    python bench/bench_announcer.py --calls 200
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from tests.announcer.lab import ANNOUNCER_IP, PBX_MEDIA_PORT, Announcer, Capture, build, config_text, sipp  # noqa: E402
from tests.interop import tshark_fields  # noqa: E402
from tests.sipp.netns import Lab  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rate", type=int, default=100, help="calls per second SIPp places")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Lab() as lab:
        folder = Path(tmp)
        net = build(lab)
        announcer = Announcer(net, folder, config_text(rtp_ports="[20000, 21999]", max_calls=args.calls + 10,
                                                       refer_timeout=4),
                              "version: 1\n")
        pid = announcer.proc.pid  # `ip netns exec` execs the announcer: same pid
        capture = Capture(net, folder / "bench.pcap", immediate=False)
        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
        try:
            sipp(net, folder, "refer", extra=("-m", str(args.calls), "-l", str(args.calls), "-r", str(args.rate)))
        finally:
            cpu1, wall1 = cpu_seconds(pid), time.monotonic()
            capture.stop()
            announcer.stop()
        print(capture.summary.strip())
        rows = tshark_fields(folder / "bench.pcap", ["frame.time_epoch", "rtp.ssrc"],
                             f"rtp && ip.src == {ANNOUNCER_IP}", ("-d", f"udp.port=={PBX_MEDIA_PORT},rtp"))
    times: dict[str, list[float]] = defaultdict(list)
    for when, ssrc in rows:
        times[ssrc].append(float(when))
    p95, p5, worst = [], [], []
    for stamps in times.values():
        gaps = np.diff(np.array(stamps)) * 1000
        p95.append(float(np.percentile(gaps, 95)))
        p5.append(float(np.percentile(gaps, 5)))
        worst.append(float(gaps.max()))
    every = np.concatenate([np.diff(np.array(s)) * 1000 for s in times.values()])
    print("all gaps, percentiles 1/5/50/95/99: " + " / ".join(f"{np.percentile(every, q):.2f}" for q in (1, 5, 50, 95, 99)))
    ok = all(18 <= hi <= 22 for hi in p95)
    print(f"calls: {args.calls} (SIPp at {args.rate}/s), streams seen: {len(times)}, RTP packets: {len(rows)}")
    print(f"inter-packet gap p95 per stream: median {np.median(p95):.2f} ms, worst {max(p95):.2f} ms; "
          f"p5 worst {min(p5):.2f} ms; largest single gap {max(worst):.2f} ms")
    print(f"p95 of every stream within 20 ms ± 2 ms: {'yes' if ok else 'NO'}")
    print(f"announcer CPU: {cpu1 - cpu0:.2f} s over {wall1 - wall0:.1f} s wall = "
          f"{(cpu1 - cpu0) / args.calls * 1000:.1f} ms per announcement")
    return 0 if ok and len(times) == args.calls else 1


if __name__ == "__main__":
    sys.exit(main())
