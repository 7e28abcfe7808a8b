"""callrec against calls made by real tools: SIPp callers and callees in
network namespaces, captured by tcpdump (tests/sipp/), replayed with the
`callrec` command and checked against tshark's reading of the same capture.

Needs root (CI runs as root); without it the tests fail, they never skip.
"""
from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.sipp.captures import CALLER, DTMF_PLAN, EXCLUDED, EXTENSION, HOLD_PLAN, PLANS, Capture, Captures
from tests.sipp.evidence import (
    EVENT_DIGITS, RATE, SILENCE, Placement, Replay, Rtp, Stream, WireCall, place, replay, rtp_packets, runs_of,
    sip_messages, streams_by_call, unexplained, wire_calls,
)
from tests.sipp.netns import need
from tests.interop import epoch, recording, recording_bytes

pytestmark = pytest.mark.root

NAMES = [plan.name for plan in PLANS]
TRUNK = ", ".join(f"{plan.uac_address}/32" for plan in PLANS if ":" not in plan.uac_address)

# Calls from the SIPp callers' IPv4 addresses come from the carrier trunk;
# the IPv6 caller is not listed, so its call's direction comes from the
# numbering plan (a 10-digit caller calling extension 201).
POLICY = f"""\
version: 1
organisation: SIPp interop tests
timezone: Asia/Tokyo
numbering:
  country_code: "81"
  extension_pattern: '^[1-9][0-9]{{2}}$'
network:
  trunk: [{TRUNK}]
recording:
  preroll_seconds: 2
excluded_lines:
  - number: "{EXCLUDED}"
    label: consultation line
"""

# How far apart the wire's and the recording's clocks may be: the index
# keeps milliseconds; audio placement may differ from arrival by jitter.
INDEX_TOLERANCE = 0.002
PLACEMENT_TOLERANCE = 0.06
LENGTH_TOLERANCE = 0.25


@dataclass(slots=True)
class Recorded:
    """One capture: what tshark sees in it and what callrec made of it."""

    capture: Capture
    calls: dict[str, WireCall]
    streams: dict[str, list[Stream]]
    stray: list[Rtp]
    replay: Replay

    @property
    def answered(self) -> dict[str, WireCall]:
        return {cid: c for cid, c in self.calls.items() if c.answer is not None}

    def row(self, call_id: str) -> dict:
        rows = [r for r in self.replay.rows if r["sip_call_id"] == call_id]
        assert len(rows) == 1, f"{self.capture.name}: call {call_id} has {len(rows)} rows"
        return rows[0]


class Recordings:
    """Each capture replayed once per module, on first use."""

    def __init__(self, captures: Captures, policy: Path, root: Path) -> None:
        self._captures = captures
        self._policy = policy
        self._root = root
        self._done: dict[str, Recorded] = {}

    def __getitem__(self, name: str) -> Recorded:
        if name not in self._done:
            capture = self._captures[name]
            calls = wire_calls(sip_messages(capture.path))
            streams, stray = streams_by_call(rtp_packets(capture.path), calls)
            result = replay(capture.path, self._root / name, self._policy)
            self._done[name] = Recorded(capture, calls, streams, stray, result)
        return self._done[name]


@pytest.fixture(scope="module")
def recordings(sipp_captures: Captures, tmp_path_factory: pytest.TempPathFactory) -> Recordings:
    root = tmp_path_factory.mktemp("sipp-replays")
    policy = root / "policy.yaml"
    policy.write_text(POLICY, encoding="utf-8")
    return Recordings(sipp_captures, policy, root)


def _channel_of(stream: Stream, row: dict) -> int:
    """Channel 0 is the local party: the callee of an inbound call."""
    local_is_callee = row["direction"] == "inbound"
    return 0 if stream.sent_by_callee == local_is_callee else 1


def _placements(rec: Recorded, call: WireCall, row: dict) -> tuple[list[bytes], list[list[Placement]]]:
    wav = recording(rec.replay.data_dir, row)
    channels = [wav.channel(0), wav.channel(1)]
    silence = SILENCE[rec.capture.plan.codec]
    placed: list[list[Placement]] = [[], []]
    assert call.bye is not None
    for stream in rec.streams.get(call.call_id, []):
        during = [p for p in stream.packets if p.time <= call.bye]
        sent = Stream(stream.call_id, stream.sent_by_callee, during)
        ch = _channel_of(stream, row)
        placed[ch].append(place(channels[ch], sent, silence))
    return channels, placed


def _origin(placed: list[list[Placement]]) -> float:
    """The wall-clock time of the recording's first sample, as the audio
    itself shows: where the first run was written against when it arrived."""
    starts = [(first.time - start / RATE) for ch in placed for pl in ch for start, _, first in pl.spans]
    assert starts, "no audio run was found in the recording"
    return min(starts)


def _audio_problems(rec: Recorded, call: WireCall, row: dict, codec: str) -> list[str]:
    problems: list[str] = []
    wav = recording(rec.replay.data_dir, row)
    if (wav.encoding, wav.channels, wav.rate, wav.bits) != (codec, 2, RATE, 8):
        return [f"the WAV is {wav.encoding}, {wav.channels} channels, {wav.rate} Hz, {wav.bits} bits; "
                f"not {codec} stereo"]
    channels, placed = _placements(rec, call, row)
    for ch in (0, 1):
        problems += [f"channel {ch}: {pl.problem}" for pl in placed[ch] if pl.problem]
        if not placed[ch]:
            problems.append(f"channel {ch}: no stream on the wire belongs to it")
        noise = runs_of(unexplained(channels[ch], placed[ch], SILENCE[codec]))
        if noise:
            where = ", ".join(f"{a / RATE:.3f}-{b / RATE:.3f} s" for a, b in noise[:5])
            problems.append(f"channel {ch}: {sum(b - a for a, b in noise)} samples that are neither silence "
                            f"nor a stream's payload, at {where}")
    if problems:
        return problems
    origin = _origin(placed)
    assert call.answer is not None
    if not call.invite - PLACEMENT_TOLERANCE <= origin <= call.answer + PLACEMENT_TOLERANCE:
        problems.append(f"the recording starts {origin - call.invite:.3f} s after the INVITE, outside the "
                        f"{call.answer - call.invite:.3f} s before the answer")
    for ch in (0, 1):
        for pl in placed[ch]:
            for start, _, first in pl.spans:
                if abs((first.time - origin) - start / RATE) > PLACEMENT_TOLERANCE:
                    problems.append(f"channel {ch}: the run from seq {first.seq} arrived "
                                    f"{first.time - origin:.3f} s in but is written at {start / RATE:.3f} s")
    assert call.bye is not None
    length, expected = wav.frames / RATE, call.bye - origin
    if abs(length - expected) > LENGTH_TOLERANCE:
        problems.append(f"{wav.frames} frames ({length:.3f} s) but the call ran {expected:.3f} s from the "
                        f"first sample to the BYE")
    return problems


# ---- the captures are what the tests think they are ------------------------
@pytest.mark.parametrize("name", NAMES)
def test_capture_holds_the_planned_calls(recordings: Recordings, name: str) -> None:
    rec = recordings[name]
    plan = rec.capture.plan
    assert len(rec.answered) == plan.answered_calls, f"{name}: SIPp calls on the wire: {list(rec.calls)}"
    assert not rec.stray, f"{name}: RTP that no SDP explains: {rec.stray[:3]}"
    for call_id, call in rec.answered.items():
        assert call.bye is not None, f"{name}: {call_id} has no BYE"
        assert len(rec.streams.get(call_id, [])) >= 2, f"{name}: {call_id} lacks media in one direction"


def test_vlan_capture_is_tagged(recordings: Recordings) -> None:
    tags = {"vlan": "vlan.id == 100 && !ieee8021ad", "qinq": "ieee8021ad.id == 200 && vlan.id == 100"}
    for name, expect in tags.items():
        path = recordings[name].capture.path
        total = subprocess.run([need("tshark"), "-r", str(path)], capture_output=True, text=True,
                               timeout=60).stdout
        tagged = subprocess.run([need("tshark"), "-r", str(path), "-Y", expect], capture_output=True, text=True,
                                timeout=60).stdout
        assert total and len(tagged.splitlines()) == len(total.splitlines()), f"{name}: not every frame is {expect}"


def test_ipv6_capture_has_ipv6_sdp(recordings: Recordings) -> None:
    rec = recordings["ipv6"]
    endpoints = {addr for call in rec.calls.values() for addr, _ in call.caller_media | call.callee_media}
    assert endpoints and all(addr.startswith("2001:db8:") for addr in endpoints), endpoints


# ---- every call, once, with the right facts --------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_every_answered_call_is_indexed_once(recordings: Recordings, name: str) -> None:
    rec = recordings[name]
    plan = rec.capture.plan
    expected = {cid for cid, call in rec.answered.items() if call.callee != EXCLUDED}
    indexed = [row["sip_call_id"] for row in rec.replay.rows]
    assert sorted(indexed) == sorted(expected), f"{name}: rows {indexed}, answered on the wire {sorted(expected)}"
    for call_id in expected:
        call, row = rec.calls[call_id], rec.row(call_id)
        assert call.answer is not None and call.bye is not None
        facts = {k: row[k] for k in ("direction", "local_number", "remote_number", "caller", "callee", "complete",
                                     "end_reason", "audio_format")}
        assert facts == {"direction": "inbound", "local_number": EXTENSION, "remote_number": CALLER,
                         "caller": CALLER, "callee": EXTENSION, "complete": True, "end_reason": "bye_remote",
                         "audio_format": plan.codec}, f"{name}: {call_id}"
        assert plan.codec in row["codecs"]
        assert abs(epoch(row["started_at"]) - call.invite) <= INDEX_TOLERANCE, (row["started_at"], call.invite)
        assert abs(epoch(row["answered_at"]) - call.answer) <= INDEX_TOLERANCE, (row["answered_at"], call.answer)
        assert abs(epoch(row["ended_at"]) - call.bye) <= INDEX_TOLERANCE, (row["ended_at"], call.bye)
        assert abs(row["duration"] - (call.bye - call.answer)) <= INDEX_TOLERANCE, row["duration"]
        assert abs(row["duration"] - plan.call_seconds) < 0.5, (row["duration"], plan.call_seconds)
        assert hashlib.sha256(recording_bytes(rec.replay.data_dir, row)).hexdigest() == row["sha256"]


# ---- the audio is what was on the wire -------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_each_channel_holds_its_streams_payloads_byte_for_byte(recordings: Recordings, name: str) -> None:
    rec = recordings[name]
    codec = rec.capture.plan.codec
    problems: list[str] = []
    for row in rec.replay.rows:
        call = rec.calls[row["sip_call_id"]]
        found = _audio_problems(rec, call, row, codec)
        if found:
            problems += [f"{name} call {call.call_id} ({row['audio_path']}):", *found]
    assert not problems, "\n".join(problems)


def _seq_accounting(packets: list[Rtp]) -> tuple[int, int]:
    """(lost, duplicates) of one SSRC as tshark's sequence numbers show them:
    numbers missing between the first and the last, and repeats."""
    extended, last, cycles, seen = [], None, 0, set()
    for p in packets:
        if last is not None and p.seq < last and last - p.seq > 0x8000:
            cycles += 0x10000
        last = p.seq
        extended.append(cycles + p.seq)
    duplicates = 0
    for n in extended:
        if n in seen:
            duplicates += 1
        seen.add(n)
    return (max(seen) - min(seen) + 1) - len(seen), duplicates


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@pytest.mark.parametrize("name", NAMES)
def test_stream_reports_match_the_wire(recordings: Recordings, name: str) -> None:
    rec = recordings[name]
    for row in rec.replay.rows:
        call = rec.calls[row["sip_call_id"]]
        assert call.bye is not None
        reports = {s["channel"]: s for s in row["streams"]}
        assert sorted(reports) == [0, 1] and reports[0]["party"] == "local" and reports[1]["party"] == "remote"
        for ch in (0, 1):
            mine = [s for s in rec.streams[call.call_id] if _channel_of(s, row) == ch]
            packets = [p for s in mine for p in s.packets if p.time <= call.bye]
            by_ssrc: dict[int, list[Rtp]] = {}
            for p in packets:
                by_ssrc.setdefault(p.ssrc, []).append(p)
            lost = sum(_seq_accounting(ps)[0] for ps in by_ssrc.values())
            duplicates = sum(_seq_accounting(ps)[1] for ps in by_ssrc.values())
            flows = {f"{_endpoint(p.src, p.sport)}>{_endpoint(p.dst, p.dport)}" for p in (s.packets[0] for s in mine)}
            report = reports[ch]
            got = {"packets": report["packets"], "ssrcs": sorted(report["ssrcs"]), "flows": set(report["flows"]),
                   "lost": report["lost"], "duplicates": report["duplicates"]}
            want = {"packets": len(packets), "ssrcs": sorted(by_ssrc), "flows": flows, "lost": lost,
                    "duplicates": duplicates}
            assert got == want, f"{name} call {call.call_id} channel {ch}"


# ---- hold and resume --------------------------------------------------------
def test_hold_leaves_the_held_party_silent_and_keeps_recording(recordings: Recordings) -> None:
    rec = recordings["hold"]
    (call,) = rec.answered.values()
    assert [d for _, d in call.reinvites.values()] == ["sendonly", "sendrecv"], call.reinvites
    (hold_at, _), (resume_at, _) = call.reinvites.values()
    row = rec.row(call.call_id)
    channels, placed = _placements(rec, call, row)
    assert not [pl.problem for ch in placed for pl in ch if pl.problem]
    origin = _origin(placed)
    silence = SILENCE["PCMU"]
    # The held party's RTP timestamps run on across the hold, so its audio
    # after the resume may be placed up to the placement tolerance early.
    held = channels[0][round((hold_at - origin) * RATE):round((resume_at - origin - PLACEMENT_TOLERANCE) * RATE)]
    assert len(held) > 2.5 * RATE
    loud = [i for i, b in enumerate(held) if b not in silence]
    assert not loud, f"the held extension's channel has {len(loud)} non-silent samples while on hold"
    moh = channels[1][round((hold_at - origin + 0.2) * RATE):round((hold_at - origin + HOLD_PLAN["moh"]) * RATE)]
    assert sum(b not in silence for b in moh) > 0.9 * len(moh), "the holder's music on hold is missing"
    assert abs(recording(rec.replay.data_dir, row).frames / RATE - (call.bye - origin)) \
        <= LENGTH_TOLERANCE


# ---- DTMF ------------------------------------------------------------------
def test_rfc2833_digits_are_events_not_audio(recordings: Recordings) -> None:
    rec = recordings["dtmf"]
    (call,) = rec.answered.values()
    events = [p for s in rec.streams[call.call_id] for p in s.packets if p.event is not None]
    on_wire: dict[tuple[int, int], Rtp] = {}
    for p in events:
        on_wire.setdefault((p.ssrc, p.timestamp), p)
    wire_digits = [EVENT_DIGITS[p.event] for p in sorted(on_wire.values(), key=lambda p: p.time)]
    assert wire_digits == list(DTMF_PLAN["digits"])
    row = rec.row(call.call_id)
    assert [(d["digit"], d["channel"]) for d in row["dtmf"]] == [(d, 1) for d in wire_digits], row["dtmf"]
    channels, placed = _placements(rec, call, row)
    origin = _origin(placed)
    silence = SILENCE["PCMA"]
    for entry, first in zip(row["dtmf"], sorted(on_wire.values(), key=lambda p: p.time)):
        assert abs(entry["offset"] - (first.time - origin)) < PLACEMENT_TOLERANCE, (entry, first.time - origin)
        window = channels[1][round((first.time - origin) * RATE):round((first.time - origin + 0.2) * RATE)]
        assert window and all(b in silence for b in window), f"digit {entry['digit']} left sound in the audio"


# ---- excluded line ----------------------------------------------------------
def test_excluded_line_leaves_no_trace(recordings: Recordings) -> None:
    rec = recordings["excluded"]
    excluded = [c for c in rec.answered.values() if c.callee == EXCLUDED]
    normal = [c for c in rec.answered.values() if c.callee == EXTENSION]
    assert len(excluded) == 1 and len(normal) == 1
    assert [r["sip_call_id"] for r in rec.replay.rows] == [normal[0].call_id]
    needle = EXCLUDED.encode()
    files = [p for p in rec.replay.data_dir.rglob("*") if p.is_file()]
    stored = [p for p in files if p.relative_to(rec.replay.data_dir).parts[0] == "recordings"]
    assert [p.relative_to(rec.replay.data_dir).as_posix() for p in stored] == [rec.replay.rows[0]["audio_path"]]
    side = [p for p in stored if not p.name.endswith(".wav.vault")]
    assert not side, f"files other than the one recording: {side}"
    for path in files:
        assert needle not in path.name.encode(), path
        blob = path.read_bytes()
        assert needle not in blob and EXCLUDED.encode("utf-16-le") not in blob, f"{path} holds {EXCLUDED}"
    assert EXCLUDED not in rec.replay.output, "the excluded number was printed"
