"""The wire (tshark's reading of the witness capture) against the
recordings (read only through tests.interop.recording, as the store hands
them out).

A complete recording holds, byte for byte and in order, every G.711 payload
each party sent until the BYE, in that party's channel, at the time it
arrived; nothing else but silence.  A cut recording (crash, shutdown) holds
a prefix of that: the payloads up to the cut, less what the daemon may lose.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import soundfile

from tests.interop import recording, recording_bytes
from tests.sipp.evidence import (
    RATE, SILENCE, Placement, Rtp, Stream, WireCall, place, rtp_packets, runs_of, sip_messages, streams_by_call,
    unexplained, wire_calls,
)

# Where a run of RTP is written against when it arrived (both clocks are
# the kernel's receive timestamp of the same frame on the SPAN port).
PLACEMENT_TOLERANCE = 0.06
LENGTH_TOLERANCE = 0.25


@dataclass(slots=True)
class Wire:
    """Calls and their RTP streams as tshark sees them in the witness capture."""

    calls: dict[str, WireCall]
    streams: dict[str, list[Stream]]
    stray: list[Rtp]

    @classmethod
    def read(cls, path: Path) -> Wire:
        calls = wire_calls(sip_messages(path))
        streams, stray = streams_by_call(rtp_packets(path), calls)
        return cls(calls, streams, stray)

    def answered(self, callee: str | None = None) -> dict[str, WireCall]:
        return {cid: c for cid, c in self.calls.items()
                if c.answer is not None and (callee is None or c.callee == callee)}

    def started_between(self, start: float, end: float) -> set[str]:
        return {cid for cid, c in self.answered().items() if start <= c.invite < end}


def channel_of(stream: Stream, row: dict) -> int:
    """Channel 0 is the local party: the callee of an inbound call."""
    local_is_callee = row["direction"] == "inbound"
    return 0 if stream.sent_by_callee == local_is_callee else 1


def playable_frames(data_dir: Path, row: dict) -> int:
    """Frames libsndfile reads from the recording's bytes (it decodes, so
    it checks what a player would see)."""
    return soundfile.info(io.BytesIO(recording_bytes(data_dir, row))).frames


@dataclass(slots=True)
class ChannelCheck:
    """One channel of one recording against its streams on the wire."""

    channel: int
    placed: list[Placement]
    problems: list[str]


def _prefix(channel: bytes, stream: Stream, silence: frozenset[int]) -> tuple[Placement, int]:
    """The longest run of the stream's first packets found in order in the
    channel (binary search: a prefix of a placeable list is placeable)."""
    audio = stream.audio
    best = place(channel, Stream(stream.call_id, stream.sent_by_callee, []), silence)
    good, top = 0, len(audio)
    while good < top:
        mid = (good + top + 1) // 2
        trial = place(channel, Stream(stream.call_id, stream.sent_by_callee, audio[:mid]), silence)
        if trial.problem:
            top = mid - 1
        else:
            good, best = mid, trial
    return best, good


def check_recording(data_dir: Path, row: dict, call: WireCall, streams: list[Stream],
                    cut: float | None = None, max_lost: float = 0.0) -> list[ChannelCheck]:
    """Each channel against the payloads sent until the BYE (complete
    recording, cut None) or until `cut`, of which the last `max_lost`
    seconds may be missing (a recording cut by a crash or a shutdown)."""
    wav = recording(data_dir, row)
    codec = row["audio_format"]
    header = (wav.encoding, wav.channels, wav.rate, wav.bits)
    if header != (codec, 2, RATE, 8):
        return [ChannelCheck(0, [], [f"the WAV is {header}, not {codec} stereo 8 kHz G.711"])]
    silence = SILENCE[codec]
    end = call.bye if cut is None else cut
    assert end is not None, f"{call.call_id} has no BYE on the wire"
    checks = []
    for ch in (0, 1):
        data = wav.channel(ch)
        mine = [Stream(s.call_id, s.sent_by_callee, [p for p in s.packets if p.time <= end])
                for s in streams if channel_of(s, row) == ch]
        check = ChannelCheck(ch, [], [])
        if not mine:
            check.problems.append(f"channel {ch}: no stream on the wire belongs to it")
        following: list[bytes] = []
        for stream, whole in zip(mine, [s for s in streams if channel_of(s, row) == ch]):
            placement, kept = _prefix(data, stream, silence)
            check.placed.append(placement)
            audio = stream.audio
            if kept < len(whole.audio):
                # The next packet, even one that came after the cut: audio is
                # committed by time, so the file may end inside its payload.
                following.append(whole.audio[kept].payload)
            needed = [p for p in audio if p.time <= end - max_lost]
            if kept < len(needed):
                full = place(data, Stream(stream.call_id, stream.sent_by_callee, needed), silence)
                check.problems.append(f"channel {ch}: {full.problem} (the recording must hold everything "
                                      f"that arrived until {max_lost:.1f} s before the "
                                      f"{'BYE' if cut is None else 'cut'})")
        noise = runs_of(unexplained(data, check.placed, silence))
        while cut is not None and noise and any(data[noise[-1][0]:] in payload for payload in following):
            # Audio is committed by time, not by packet: a cut file may end
            # inside the payload of the packet after the last whole one.  Its
            # quiet samples read as silence and split it into several
            # unexplained runs, so runs are dropped while the whole tail from
            # the run's start is still part of that payload.
            noise.pop()
        if noise:
            where = ", ".join(f"{a / RATE:.3f}-{b / RATE:.3f} s" for a, b in noise[:5])
            check.problems.append(f"channel {ch}: {sum(b - a for a, b in noise)} samples that are neither "
                                  f"silence nor the payloads found, at {where}")
        checks.append(check)
    spans = [(first.time - start / RATE, start, first, c.channel) for c in checks for pl in c.placed
             for start, _, first in pl.spans]
    if not spans:
        checks[0].problems.append("no audio of the call is in the recording")
        return checks
    origin = min(s[0] for s in spans)
    assert call.answer is not None
    if not call.invite - PLACEMENT_TOLERANCE <= origin <= call.answer + PLACEMENT_TOLERANCE:
        checks[0].problems.append(f"the recording starts {origin - call.invite:.3f} s after the INVITE, "
                                  f"outside the {call.answer - call.invite:.3f} s before the answer")
    for _, start, first, ch in spans:
        if abs((first.time - origin) - start / RATE) > PLACEMENT_TOLERANCE:
            checks[ch].problems.append(f"channel {ch}: the run from seq {first.seq} arrived "
                                       f"{first.time - origin:.3f} s in but is written at {start / RATE:.3f} s")
    if cut is None and abs(wav.frames / RATE - (end - origin)) > LENGTH_TOLERANCE:
        checks[0].problems.append(f"{wav.frames} frames ({wav.frames / RATE:.3f} s) but the call ran "
                                  f"{end - origin:.3f} s from the first sample to the BYE")
    return checks


def problems(checks: list[ChannelCheck]) -> list[str]:
    return [p for c in checks for p in c.problems]


def flows_on_wire(streams: list[Stream], row: dict, channel: int, until: float) -> tuple[set[str], int]:
    """The flows ("src:port>dst:port") and the number of packets of one
    channel's streams until a moment, as the index reports them."""
    mine = [s for s in streams if channel_of(s, row) == channel]
    flows = {f"{s.packets[0].src}:{s.packets[0].sport}>{s.packets[0].dst}:{s.packets[0].dport}" for s in mine}
    return flows, sum(1 for s in mine for p in s.packets if p.time <= until)
