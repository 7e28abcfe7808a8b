"""What is on the wire (tshark's reading of a capture) and what callrec
made of it (its index rows and the raw bytes of its WAV files).

tshark is the reference: a recording is right when each party's channel
holds, byte for byte, the payloads tshark dissects from that party's RTP.
"""
from __future__ import annotations

import json
import os
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tests.interop import HEURISTIC_RTP, RtpRow, run_cli, tshark_fields

RATE = 8000
CLI_SECONDS = 300
SILENCE = {"PCMU": frozenset((0xFF, 0x7F)), "PCMA": frozenset((0xD5, 0x55))}
AUDIO_PT = {0: "PCMU", 8: "PCMA"}
EVENT_DIGITS = "0123456789*#ABCD"


def _tshark(path: Path, display_filter: str, fields: list[str]) -> list[list[str]]:
    return tshark_fields(path, fields, display_filter, (*HEURISTIC_RTP, "-E", "aggregator=|", "-E", "occurrence=a"))


# ---- RTP -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Rtp(RtpRow):
    event: int | None
    end: bool

    @property
    def flow(self) -> tuple[str, int, str, int, int]:
        return self.src, self.sport, self.dst, self.dport, self.ssrc


def rtp_packets(path: Path) -> list[Rtp]:
    """Every RTP packet tshark finds, in capture order (not the copies
    quoted inside ICMP errors)."""
    rows = _tshark(path, "rtp && !icmp && !icmpv6", [
        "frame.time_epoch", "ip.src", "ipv6.src", "udp.srcport", "ip.dst", "ipv6.dst", "udp.dstport",
        "rtp.ssrc", "rtp.seq", "rtp.timestamp", "rtp.p_type", "rtp.payload", "rtpevent.event_id",
        "rtpevent.end_of_event"])
    out = []
    for t, s4, s6, sp, d4, d6, dp, ssrc, seq, ts, pt, payload, event, end in rows:
        out.append(Rtp(float(t), s4 or s6, int(sp), d4 or d6, int(dp), int(ssrc, 16), int(seq), int(ts), int(pt),
                       bytes.fromhex(payload.replace(":", "")), int(event) if event else None,
                       end in ("1", "True")))
    return out


# ---- SIP -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Sip:
    time: float
    src: str
    call_id: str
    method: str
    status: int | None
    cseq: int
    cseq_method: str
    from_user: str
    to_user: str
    sdp_address: str
    sdp_port: int | None
    sdp_attrs: tuple[str, ...]


def sip_messages(path: Path) -> list[Sip]:
    rows = _tshark(path, "sip", [
        "frame.time_epoch", "ip.src", "ipv6.src", "sip.Call-ID", "sip.Method", "sip.Status-Code",
        "sip.CSeq.seq", "sip.CSeq.method", "sip.from.user", "sip.to.user", "sdp.connection_info.address",
        "sdp.media.port", "sdp.media_attr"])
    out = []
    for t, s4, s6, call_id, method, status, seq, cseq, from_user, to_user, address, port, attrs in rows:
        out.append(Sip(float(t), s4 or s6, call_id, method, int(status) if status else None, int(seq), cseq,
                       from_user, to_user, address, int(port) if port else None,
                       tuple(a for a in attrs.split("|") if a)))
    return out


@dataclass(slots=True)
class WireCall:
    """One call as the signalling on the wire shows it."""

    call_id: str
    caller: str = ""
    callee: str = ""
    caller_address: str = ""
    callee_address: str = ""
    invite: float = 0.0
    answer: float | None = None
    bye: float | None = None
    caller_media: set[tuple[str, int]] = field(default_factory=set)
    callee_media: set[tuple[str, int]] = field(default_factory=set)
    reinvites: dict[int, tuple[float, str]] = field(default_factory=dict)


def wire_calls(messages: list[Sip]) -> dict[str, WireCall]:
    calls: dict[str, WireCall] = {}
    for m in messages:
        call = calls.get(m.call_id)
        if call is None:
            if m.method != "INVITE":
                continue
            call = calls[m.call_id] = WireCall(m.call_id, m.from_user, m.to_user, m.src, "", m.time)
        if m.method == "INVITE" and call.answer is not None and m.cseq not in call.reinvites:
            direction = next((a for a in m.sdp_attrs if a in ("sendonly", "recvonly", "inactive", "sendrecv")), "")
            call.reinvites[m.cseq] = (m.time, direction)
        if m.method == "BYE" and call.bye is None:
            call.bye = m.time
        if m.status == 200 and m.cseq_method == "INVITE" and call.answer is None:
            call.answer = m.time
            call.callee_address = m.src
        if m.sdp_port is not None:
            endpoint = (m.sdp_address, m.sdp_port)
            (call.caller_media if m.src == call.caller_address else call.callee_media).add(endpoint)
    return calls


@dataclass(slots=True)
class Stream:
    """One RTP stream (5-tuple and SSRC) of a call, and who sent it."""

    call_id: str
    sent_by_callee: bool
    packets: list[Rtp]

    @property
    def audio(self) -> list[Rtp]:
        return [p for p in self.packets if p.pt in AUDIO_PT]

    def describe(self) -> str:
        p = self.packets[0]
        who = "callee" if self.sent_by_callee else "caller"
        return f"{who} stream {p.src}:{p.sport} > {p.dst}:{p.dport} SSRC {p.ssrc:#010x} ({len(self.packets)} packets)"


def streams_by_call(packets: list[Rtp], calls: dict[str, WireCall]) -> tuple[dict[str, list[Stream]], list[Rtp]]:
    """Streams grouped by the call whose SDP names their destination; and
    the packets no SDP explains."""
    owner: dict[tuple[str, int], tuple[str, bool]] = {}
    for call in calls.values():
        for endpoint in call.caller_media:
            owner[endpoint] = (call.call_id, True)
        for endpoint in call.callee_media:
            owner[endpoint] = (call.call_id, False)
    grouped: dict[tuple[str, int, str, int, int], Stream] = {}
    stray = []
    for p in packets:
        hit = owner.get((p.dst, p.dport))
        if hit is None:
            stray.append(p)
            continue
        stream = grouped.get(p.flow)
        if stream is None:
            stream = grouped[p.flow] = Stream(hit[0], hit[1], [])
        stream.packets.append(p)
    out: dict[str, list[Stream]] = defaultdict(list)
    for stream in grouped.values():
        out[stream.call_id].append(stream)
    return dict(out), stray


def segments(packets: list[Rtp]) -> list[list[Rtp]]:
    """Runs of audio packets that play back to back: each one's timestamp is
    the previous one's plus its length.  A recording holds each run as one
    contiguous stretch; between runs it may hold silence."""
    runs: list[list[Rtp]] = []
    for p in packets:
        if runs:
            prev = runs[-1][-1]
            if (prev.timestamp + len(prev.payload)) & 0xFFFFFFFF == p.timestamp and (prev.seq + 1) & 0xFFFF == p.seq:
                runs[-1].append(p)
                continue
        runs.append([p])
    return runs


# ---- what callrec wrote ----------------------------------------------------
@dataclass(frozen=True, slots=True)
class Replay:
    data_dir: Path
    rows: list[dict]
    output: str  # everything the commands printed


def run_callrec(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, timeout=CLI_SECONDS)


def replay(capture: Path, data_dir: Path, policy: Path) -> Replay:
    first = run_callrec("replay", capture, "--data-dir", data_dir, "--policy", policy)
    listed = run_callrec("calls", "list", "--json", "--data-dir", data_dir)
    rows = json.loads(listed.stdout)
    return Replay(data_dir, rows, first.stdout + first.stderr + listed.stdout + listed.stderr)


# ---- the comparison --------------------------------------------------------
@dataclass(slots=True)
class Placement:
    """Where the runs of one stream were found in its channel."""

    stream: Stream
    spans: list[tuple[int, int, Rtp]]  # start, end (samples), first packet of the run
    problem: str = ""


def _what_is_at(channel: bytes, at: int, length: int, packets: list[Rtp], silence: frozenset[int]) -> str:
    got = channel[at:at + length]
    if not got:
        return "nothing (the channel has ended)"
    if all(b in silence for b in got):
        quiet = at
        while quiet < len(channel) and channel[quiet] in silence:
            quiet += 1
        return f"{quiet - at} samples of silence"
    for p in packets:
        if p.payload and got == p.payload[:len(got)]:
            return f"the payload of seq {p.seq} (t={p.time:.3f})"
    probe = next((got[i:i + 8] for i in range(0, len(got) - 7) if any(b not in silence for b in got[i:i + 8])), b"")
    hit = next((p for p in packets if probe and probe in p.payload), None)
    if hit is not None:
        return f"part of the payload of seq {hit.seq}, misaligned"
    return f"other bytes ({got[:8].hex()}...)"


def place(channel: bytes, stream: Stream, silence: frozenset[int]) -> Placement:
    """Find each run of the stream, in order, as a contiguous stretch of the
    channel; explain the first one that is not there."""
    placement = Placement(stream, [])
    pos = 0
    for run in segments(stream.audio):
        blob = b"".join(p.payload for p in run)
        at = channel.find(blob, pos)
        if at >= 0:
            placement.spans.append((at, at + len(blob), run[0]))
            pos = at + len(blob)
            continue
        # The longest prefix of the run that is in the channel, in order.
        good, top = 0, len(run) - 1
        while good < top:
            mid = (good + top + 1) // 2
            if channel.find(b"".join(p.payload for p in run[:mid]), pos) >= 0:
                good = mid
            else:
                top = mid - 1
        bad = run[good]
        if good == 0:
            placement.problem = (f"{stream.describe()}: the payload of seq {bad.seq} (t={bad.time:.3f}, "
                                 f"{len(bad.payload)} bytes) is nowhere in the channel after sample {pos}")
            return placement
        prefix = b"".join(p.payload for p in run[:good])
        cursor = channel.find(prefix, pos) + len(prefix)
        placement.problem = (
            f"{stream.describe()}: of a run of {len(run)} packets from seq {run[0].seq}, only the first {good} "
            f"are in the channel in order (from sample {cursor - len(prefix)}); at sample {cursor} "
            f"({cursor / RATE:.3f} s) the channel holds "
            f"{_what_is_at(channel, cursor, len(bad.payload), stream.audio, silence)} where tshark shows "
            f"seq {bad.seq} (t={bad.time:.3f}, {len(bad.payload)} bytes)")
        return placement
    return placement


def unexplained(channel: bytes, placements: list[Placement], silence: frozenset[int]) -> list[int]:
    """Sample offsets outside every located run that are not silence."""
    covered = bytearray(len(channel))
    for placement in placements:
        for start, end, _ in placement.spans:
            covered[start:end] = b"\1" * (end - start)
    return [i for i, b in enumerate(channel) if not covered[i] and b not in silence]


def runs_of(offsets: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for i in offsets:
        if out and out[-1][1] == i:
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out
