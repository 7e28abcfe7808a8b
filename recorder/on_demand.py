"""On-demand lines: a gate between the engine and the RecordingSink (品川区 第2条(2)).

The engine treats a call on an on-demand line as any call to record (answer, origin, streams,
interleaving, commits); what it hands to the sink for such a call stops here.  Its audio stays in
memory, bounded: the first `keep_first_seconds` and the last `keep_last_seconds` of frames, the
middle dropped as it passes.  Nothing reaches the sink, so nothing reaches a disk, an index or a
log line, until somebody asks: the staff side (channel 0) keys the policy's start code (RFC 4733
events the streams already parse, read at every checkpoint and again at the end of the call), or
the daemon passes on the console's 録音開始 (`start`).  Then the sink sees the call as if it had
been automatic: `begin` with the original snapshot plus who asked and when, `open_audio` at the
origin, the kept beginning, silence for the dropped middle (so every offset still is the time
since the origin), the kept end, and from there on the live audio.  The stop code ends the
recording (a later start resumes it, the stopped stretch silent); the row lists every stretch it
lacks as a `Gap`.  A call nobody asked for is forgotten at its end, and its memory freed.

Memory per held call: stereo frames of 2 bytes (G.711; 4 after a law switch) for the kept spans,
16 kB per second: 19 MB for the default 5 + 15 minutes, plus the packets of an undecodable codec
over the same spans.  Calls not on an on-demand line pass straight through: their handle is the
sink's own, so the per-packet path does not change.

Sans-I/O: the capture times come in with the digits and the requests; nothing here reads a clock.
"""
from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from policy.on_demand import OnDemandRule
from wire import g711

from .record import CallResult, CallSnapshot, Gap, RecordingHandle, RecordingSink

__all__ = ["Keypad", "LiveCall", "OnDemandGate", "StartOutcome"]

RATE = 8000
CODE_DIGIT_GAP_SECONDS = 5.0
"""Digits of one code follow each other within this; a digit pressed later starts a new code, so
digits keyed minutes apart for something else never add up to a code."""
MAX_CODE_DIGITS = 8
SILENCE_CHUNK_FRAMES = RATE * 30
"""A dropped middle is written as silence this many frames at a time (480 kB of G.711)."""
MAX_HELD_SIDE_PACKETS = 200_000
"""Packets of an undecodable codec kept per held call, beyond the time bounds: a flood aimed at a
held call's port cannot take the daemon's memory."""

Side = tuple[int, float, bytes, tuple[str, int, str, int]]


class Digit(Protocol):
    """A digit as the stream reports it while the call goes on (DtmfEvent) and at its end (DtmfMark)."""

    @property
    def digit(self) -> str: ...
    @property
    def position(self) -> int: ...


View = Callable[[int], tuple[OnDemandRule | None, Sequence[Digit]]]
"""The engine's answer for a call serial: its on-demand rule (from the classification it started
with) and the digits its staff side has pressed so far."""


class StartOutcome(enum.StrEnum):
    STARTED = "started"
    RESUMED = "resumed"
    ALREADY = "already_recording"
    UNKNOWN = "unknown_call"


class _State(enum.Enum):
    HELD = "held"
    RECORDING = "recording"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class LiveCall:
    """An on-demand call under way, as the console may see it: its line's label and its times,
    never a number (a held call's numbers stay in memory)."""

    serial: int
    label: str
    answered: float
    recording: bool
    started_by: str | None
    start_requested_at: float | None


@dataclass(slots=True)
class Keypad:
    """What one side of a call has keyed, read on as its stream reports more digits: the codes of
    the on-demand start and stop and of a harassment mark are the last few digits it spells."""

    seen: int = 0
    typed: list[tuple[str, int]] = field(default_factory=list)

    def keyed(self, digits: Sequence[Digit]) -> Iterator[tuple[str, Digit]]:
        """After each digit not yet read: what the digits typed so far spell, and that digit.  A
        digit keyed long after the one before it, or an event that is no digit, starts afresh."""
        typed = self.typed
        for digit in digits[self.seen:]:
            self.seen += 1
            if len(digit.digit) != 1:
                typed.clear()
                continue
            if typed and digit.position - typed[-1][1] > CODE_DIGIT_GAP_SECONDS * RATE:
                typed.clear()
            typed.append((digit.digit, digit.position))
            del typed[:-MAX_CODE_DIGITS]
            yield "".join(d for d, _ in typed), digit

    def clear(self) -> None:
        """A code was acted on: its digits begin no other."""
        self.typed.clear()


@dataclass(slots=True, eq=False)
class _Call:
    call: CallSnapshot
    origin: float
    rule: OnDemandRule
    state: _State = _State.HELD
    handle: _Handle | None = None
    keypad: Keypad = field(default_factory=Keypad)
    gaps: list[Gap] = field(default_factory=list)


def _silence(encoding: str, frames: int) -> bytes:
    fill = b"\0\0\0\0" if encoding == "L16" else bytes((g711.SILENCE_BYTE[encoding],)) * 2
    return fill * frames


class _Handle:
    """The RecordingHandle the engine writes an on-demand call through: memory while the call is
    held, the sink's handle while it records, nothing while it is stopped."""

    def __init__(self, gate: OnDemandGate, entry: _Call, encoding: str, rate: int) -> None:
        self._gate = gate
        self.rate = rate
        self._entry = entry
        self.encoding = encoding
        self._width = 4 if encoding == "L16" else 2
        self.real: RecordingHandle | None = None
        self.written = 0
        """Frames the sink's handle holds, silence included."""
        self._stopped = 0
        """Frames dropped since the stop code."""
        self._head = bytearray()
        self._head_limit = int(entry.rule.keep_first_seconds * rate)
        self._tail: deque[bytes] = deque()
        self._tail_bytes = 0
        self._tail_limit = int(entry.rule.keep_last_seconds * rate)
        self._dropped = 0
        """Frames between the head and the tail that memory let go."""
        self._side_head: list[Side] = []
        self._side_tail: deque[Side] = deque()

    # ---- RecordingHandle ----------------------------------------------------------------
    def append(self, data: bytes) -> None:
        state = self._entry.state
        if state is _State.RECORDING:
            self.real.append(data)  # type: ignore[union-attr]
            self.written += len(data) // self._width
        elif state is _State.STOPPED:
            self._stopped += len(data) // self._width
        else:
            self._hold(data)

    def convert_to_l16(self) -> None:
        if self.real is not None:
            self.real.convert_to_l16()
        if self.encoding != "L16":
            self._head = bytearray(g711.decode(self.encoding, self._head))
            if self._tail:
                self._tail = deque((g711.decode(self.encoding, b"".join(self._tail)),))
            self._tail_bytes *= 2
            self.encoding, self._width = "L16", 4

    def side_packet(self, channel: int, arrival: float, rtp: bytes, flow: tuple[str, int, str, int]) -> None:
        state = self._entry.state
        if state is _State.RECORDING:
            self.real.side_packet(channel, arrival, rtp, flow)  # type: ignore[union-attr]
        elif state is _State.HELD:
            packet = (channel, arrival, rtp, flow)
            if arrival - self._entry.origin < self._entry.rule.keep_first_seconds:
                if len(self._side_head) < MAX_HELD_SIDE_PACKETS:
                    self._side_head.append(packet)
                return
            tail = self._side_tail
            tail.append(packet)
            horizon = arrival - self._entry.rule.keep_last_seconds
            while tail and (tail[0][1] < horizon or len(tail) > MAX_HELD_SIDE_PACKETS):
                tail.popleft()

    def checkpoint(self) -> None:
        self._gate.poll(self._entry)
        if self.real is not None:
            self.real.checkpoint()

    def close(self, result: CallResult) -> None:
        self._gate.closing(self._entry, result)
        if self.real is None:
            self._forget()
            return
        entry = self._entry
        if entry.state is _State.STOPPED and self._stopped:
            entry.gaps.append(Gap(self.written / self.rate, self._stopped / self.rate, "stopped"))
        self.real.close(self._gate.result_of(entry, result))

    # ---- the gate's side ----------------------------------------------------------------
    def _hold(self, data: bytes) -> None:
        width = self._width
        room = self._head_limit - len(self._head) // width
        if room > 0:
            taken = min(room, len(data) // width) * width
            self._head += data[:taken]
            data = data[taken:]
        if not data:
            return
        tail = self._tail
        tail.append(data)
        self._tail_bytes += len(data)
        excess = self._tail_bytes - self._tail_limit * width
        while excess > 0:
            first = tail[0]
            cut = min(len(first), excess)
            if cut == len(first):
                tail.popleft()
            else:
                tail[0] = first[cut:]
            self._tail_bytes -= cut
            self._dropped += cut // width
            excess -= cut

    def release(self, real: RecordingHandle) -> None:
        """The call is asked for: what memory kept goes to the sink's handle, the dropped middle
        as silence, and the live audio follows."""
        self.real = real
        head_frames = len(self._head) // self._width
        if self._head:
            real.append(bytes(self._head))
        if self._dropped:
            self._entry.gaps.append(Gap(head_frames / self.rate, self._dropped / self.rate, "memory_bound"))
            self._write_silence(self._dropped)
        for chunk in self._tail:
            real.append(chunk)
        self.written = head_frames + self._dropped + self._tail_bytes // self._width
        for packet in (*self._side_head, *self._side_tail):
            real.side_packet(*packet)
        self._forget()

    def stop(self) -> None:
        self._stopped = 0

    def resume(self) -> None:
        """A start after a stop: the stopped stretch becomes silence and a gap."""
        if self.real is not None and self._stopped:
            self._entry.gaps.append(Gap(self.written / self.rate, self._stopped / self.rate, "stopped"))
            self._write_silence(self._stopped)
            self.written += self._stopped
        self._stopped = 0

    def _write_silence(self, frames: int) -> None:
        assert self.real is not None
        width = self._width
        full = _silence(self.encoding, min(frames, SILENCE_CHUNK_FRAMES))
        while frames > 0:
            count = min(frames, SILENCE_CHUNK_FRAMES)
            self.real.append(full if count * width == len(full) else full[:count * width])
            frames -= count

    def _forget(self) -> None:
        self._head = bytearray()
        self._tail.clear()
        self._tail_bytes = 0
        self._side_head = []
        self._side_tail.clear()


class OnDemandGate:
    """A RecordingSink in front of the real one; see the module docstring."""

    def __init__(self, sink: RecordingSink, view: View) -> None:
        self._sink = sink
        self._view = view
        self._calls: dict[int, _Call] = {}
        self.stats = {"on_demand_calls": 0, "on_demand_recorded": 0, "on_demand_discarded": 0}
        """Calls on on-demand lines the engine handed here, those asked for, those forgotten unasked
        (the engine's "recordings" counts all of the first)."""

    # ---- RecordingSink ------------------------------------------------------------------
    def begin(self, call: CallSnapshot, origin: float) -> None:
        rule, _ = self._view(call.serial)
        if rule is None:
            self._sink.begin(call, origin)
        else:
            self._calls[call.serial] = _Call(call, origin, rule)
            self.stats["on_demand_calls"] += 1

    def open_audio(self, call: CallSnapshot, origin: float, encoding: str, rate: int = 8000) -> RecordingHandle:
        entry = self._calls.get(call.serial)
        if entry is None:
            return self._sink.open_audio(call, origin, encoding, rate)
        handle = entry.handle = _Handle(self, entry, encoding, rate)
        if entry.state is not _State.HELD:
            handle.real = self._sink.open_audio(entry.call, origin, encoding, rate)
        return handle

    def finish_without_audio(self, result: CallResult) -> None:
        entry = self._calls.get(result.call.serial)
        if entry is None:
            self._sink.finish_without_audio(result)
            return
        self.closing(entry, result)
        if entry.state is not _State.HELD:
            self._sink.finish_without_audio(self.result_of(entry, result))

    # ---- requests -----------------------------------------------------------------------
    def start(self, serial: int, by: str, at: float) -> StartOutcome:
        """Record this call from its start (or resume it after a stop); `by` is what the row
        will say started it ("dtmf", "console:<account>"), `at` the capture time of the request."""
        entry = self._calls.get(serial)
        if entry is None:
            return StartOutcome.UNKNOWN
        if entry.state is _State.RECORDING:
            return StartOutcome.ALREADY
        handle = entry.handle
        if entry.state is _State.STOPPED:
            if handle is not None:
                handle.resume()
            entry.state = _State.RECORDING
            return StartOutcome.RESUMED
        entry.call = replace(entry.call, started_by=by, start_requested_at=at)
        self.stats["on_demand_recorded"] += 1
        self._sink.begin(entry.call, entry.origin)
        entry.state = _State.RECORDING
        if handle is not None:
            handle.release(self._sink.open_audio(entry.call, entry.origin, handle.encoding, handle.rate))
        return StartOutcome.STARTED

    def stop(self, serial: int) -> bool:
        """End the recording of this call here (the stop code); False if it was not recording."""
        entry = self._calls.get(serial)
        if entry is None or entry.state is not _State.RECORDING:
            return False
        entry.state = _State.STOPPED
        if entry.handle is not None:
            entry.handle.stop()
        return True

    def live(self) -> list[LiveCall]:
        """The on-demand calls under way, oldest first."""
        return [LiveCall(serial, entry.rule.label, entry.call.answer_ts or entry.origin,
                         entry.state is _State.RECORDING, entry.call.started_by, entry.call.start_requested_at)
                for serial, entry in sorted(self._calls.items())]

    def is_held(self, serial: int) -> bool:
        """Whether this call is on an on-demand line and nobody has asked for it yet."""
        entry = self._calls.get(serial)
        return entry is not None and entry.state is _State.HELD

    def held_call_ids(self) -> set[str]:
        """SIP Call-IDs of calls nobody has asked for yet: kept out of health reports and logs."""
        return {entry.call.sip_call_id for entry in self._calls.values() if entry.state is _State.HELD}

    # ---- digits -------------------------------------------------------------------------
    def poll(self, entry: _Call) -> None:
        """The staff side's digits since the last look (at every checkpoint)."""
        _, digits = self._view(entry.call.serial)
        self._digits(entry, digits)

    def closing(self, entry: _Call, result: CallResult) -> None:
        """The call ended: digits keyed after the last checkpoint still count, then it is forgotten."""
        self._digits(entry, [mark for mark in result.dtmf if mark.channel == 0])
        del self._calls[entry.call.serial]
        if entry.state is _State.HELD:
            self.stats["on_demand_discarded"] += 1

    def _digits(self, entry: _Call, digits: Sequence[Digit]) -> None:
        rule = entry.rule
        for keyed, digit in entry.keypad.keyed(digits):
            if keyed.endswith(rule.start_code):
                entry.keypad.clear()
                self.start(entry.call.serial, "dtmf", entry.origin + digit.position / RATE)
            elif keyed.endswith(rule.stop_code):
                entry.keypad.clear()
                self.stop(entry.call.serial)

    def result_of(self, entry: _Call, result: CallResult) -> CallResult:
        """The engine's result with who asked for the recording and what it lacks."""
        call = replace(result.call, started_by=entry.call.started_by,
                       start_requested_at=entry.call.start_requested_at)
        return replace(result, call=call, gaps=tuple(entry.gaps))
