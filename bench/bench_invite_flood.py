"""INVITE flood benchmark: how many INVITEs a second the recorder takes with
10,000 and with 100,000 dialogs open.

A SIP scanner on the trunk sends INVITEs (each with an SDP offer, as a real
call's) that nobody answers, 7,500 a second by their capture timestamps, as
in the issue.  For each size the policy's `recording.max_open_dialogs` is set
to it; the recorder is filled to the bound, then a further run of INVITEs is
timed, each of which must make room by forgetting the oldest dialog.  The
time per INVITE must not grow with the number of open dialogs (eviction and
timers are O(1) per INVITE); the figures are medians of several runs, one
core, frames handed over a batch at a time as the capture readers do, with
the garbage collector set as `callrec run` and `callrec replay` set it.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from callrec.context import tune_gc  # noqa: E402
from policy.decide import PolicyDecider  # noqa: E402
from policy.schema import Policy  # noqa: E402
from recorder.engine import Recorder  # noqa: E402
from recorder.record import CallResult, CallSnapshot, RecordingHandle  # noqa: E402

SCANNER, PBX, STRAY = bytes([203, 0, 113, 9]), bytes([192, 0, 2, 10]), bytes([198, 51, 100, 20])
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
RATE = 7500.0
BATCH = 256
STRAY_EVERY = int(RATE / 50)
"""One stray RTP packet (50 a second) for so many INVITEs."""
T0 = 1_764_000_000.0


class NoSink:
    """Nothing is answered, so nothing reaches storage; a call that did would be a bug here."""

    def begin(self, call: CallSnapshot, origin: float) -> None:
        raise AssertionError("a flood INVITE was recorded")

    def open_audio(self, call: CallSnapshot, origin: float, encoding: str, rate: int = 8000) -> RecordingHandle:
        raise AssertionError("a flood INVITE was recorded")

    def finish_without_audio(self, result: CallResult) -> None:
        raise AssertionError("a flood INVITE was recorded")


def invite_frame(n: int) -> tuple[float, int, bytes]:
    """The n-th scanner INVITE as (capture time, link type, Ethernet frame)."""
    sdp = (f"v=0\r\no=- {n} 1 IN IP4 203.0.113.9\r\ns=-\r\nc=IN IP4 203.0.113.9\r\nt=0 0\r\n"
           f"m=audio {10000 + 2 * (n % 25000)} RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n"
           f"a=rtpmap:8 PCMA/8000\r\n").encode()
    head = (f"INVITE sip:{100 + n % 900}@192.0.2.10 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 203.0.113.9:5070;branch=z9hG4bK-{n}\r\n"
            f"From: \"scanner\" <sip:100@203.0.113.9>;tag=s{n}\r\n"
            f"To: <sip:{100 + n % 900}@192.0.2.10>\r\n"
            f"Call-ID: flood-{n}@203.0.113.9\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:100@203.0.113.9:5070>\r\nMax-Forwards: 70\r\n"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n").encode()
    payload = head + sdp
    udp = struct.pack("!HHHH", 5070, 5060, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n & 0xFFFF, 0x4000, 64, 17, 0, SCANNER, PBX)
    return T0 + n / RATE, 1, MAC_B + MAC_A + b"\x08\x00" + ip + udp


def stray_rtp_frame(n: int) -> tuple[float, int, bytes]:
    """The n-th packet of an RTP stream that no call explains (its INVITE never reached the
    mirror): each waits two seconds as an orphan in case an SDP explains it."""
    rtp = struct.pack("!BBHII", 0x80, 0, n & 0xFFFF, 160 * n, 0x5EED) + bytes(160)
    udp = struct.pack("!HHHH", 30000, 30002, 8 + len(rtp), 0) + rtp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n & 0xFFFF, 0x4000, 64, 17, 0, STRAY, PBX)
    return T0 + n * STRAY_EVERY / RATE, 1, MAC_B + MAC_A + b"\x08\x00" + ip + udp


def frames_for(first: int, count: int, stray: bool) -> list[tuple[float, int, bytes]]:
    frames = []
    for n in range(first, first + count):
        frames.append(invite_frame(n))
        if stray and n % STRAY_EVERY == 0:
            frames.append(stray_rtp_frame(n // STRAY_EVERY))
    return frames


def make_recorder(open_dialogs: int) -> Recorder:
    return Recorder(PolicyDecider(Policy.model_validate({"recording": {"max_open_dialogs": open_dialogs}})), NoSink())


def feed(recorder: Recorder, first: int, count: int, stray: bool) -> float:
    """Seconds the recorder spent on INVITEs first..first+count (building them is not timed)."""
    spent = 0.0
    for start in range(first, first + count, BATCH):
        frames = frames_for(start, min(BATCH, first + count - start), stray)
        began = time.perf_counter()
        recorder.feed_frames(frames)
        spent += time.perf_counter() - began
    return spent


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def one_run(open_dialogs: int, measured: int, stray: bool) -> tuple[float, float, float, int]:
    """(fill rate, rate at the bound, KiB per open dialog, evictions) for one recorder.  The
    memory figure is the process's growth, so only a run on a fresh heap (the first) shows it."""
    gc.collect()
    base = rss_kib()
    recorder = make_recorder(open_dialogs)
    fill = feed(recorder, 0, open_dialogs, stray)
    per_dialog = (rss_kib() - base) / open_dialogs
    at_bound = feed(recorder, open_dialogs, measured, stray)
    evicted = recorder.counters().get("calls_evicted", 0)
    return open_dialogs / fill, measured / at_bound, per_dialog, evicted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--open", type=int, nargs="+", default=[10_000, 100_000],
                        help="numbers of open dialogs to measure at (each becomes max_open_dialogs)")
    parser.add_argument("--invites", type=int, default=20_000, help="INVITEs timed at the bound")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stray-rtp", action="store_true",
                        help="run an RTP stream no call explains through the flood (50 packets/s)")
    args = parser.parse_args()
    tune_gc()
    for open_dialogs in args.open:
        runs = [one_run(open_dialogs, args.invites, args.stray_rtp) for _ in range(args.runs)]
        fill = statistics.median(r[0] for r in runs)
        at_bound = statistics.median(r[1] for r in runs)
        print(f"{open_dialogs:>9,} open dialogs: filling {fill:,.0f} INVITEs/s, at the bound "
              f"{at_bound:,.0f} INVITEs/s ({runs[0][3]:,} evicted; median of {args.runs}), "
              f"{runs[0][2]:.1f} KiB per open dialog")


if __name__ == "__main__":
    main()
