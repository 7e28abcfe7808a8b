"""Harassment marks keyed on the staff side's extension, found while the call goes on.

Staff who are taking an abusive call press the policy's mark prefix and a category's digit
(policy/harassment.py).  The digits are the RFC 4733 events the streams already parse; this
watch sits in front of the on-demand gate and reads the staff side's (channel 0) digits at
every checkpoint (about once a second: the mark is live, so the console's alert comes while
the call is still going on) and once more when the call ends (digits keyed after the last
checkpoint; and a replayed capture, whose checkpoints come as fast as the file is read).  A
code found hands a mark to the `MarkSink` (storage: the marks table, the evidence hold, the
`harassment.marked` log entry): the call as the recorder knows it, the category, and the
capture time of the code's last digit.

A mark on an on-demand line's call that nobody has asked to record yet asks for it first (as
the start code would, `started_by="dtmf"`): a call worth marking is a call worth keeping.

Digits are matched as the on-demand gate matches its codes: the last digits pressed, each
within CODE_DIGIT_GAP_SECONDS of the one before.  The same code pressed twice in a call marks
it twice only if the category differs; a repeated code is one mark.

Without a harassment section (or without a MarkSink) the watch hands the inner sink's handles
out unwrapped, so the per-packet path does not change.  Sans-I/O: times come with the digits.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from policy.harassment import MarkRule

from .on_demand import Digit, Keypad, OnDemandGate
from .record import CallResult, CallSnapshot, MarkSink, RecordingHandle

__all__ = ["MarkWatch"]

RATE = 8000
Digits = Callable[[int], Sequence[Digit]]
"""The engine's answer for a call serial: the digits its staff side has pressed so far."""


@dataclass(slots=True, eq=False)
class _Watched:
    call: CallSnapshot
    origin: float
    keypad: Keypad = field(default_factory=Keypad)
    marked: set[str] = field(default_factory=set)


class _Handle:
    """The inner handle, with the digits looked at on every checkpoint and at the close."""

    __slots__ = ("_entry", "_inner", "_watch", "append", "convert_to_l16", "side_packet")

    def __init__(self, watch: MarkWatch, entry: _Watched, inner: RecordingHandle) -> None:
        self._watch, self._entry, self._inner = watch, entry, inner
        # The per-packet calls go straight to the inner handle.
        self.append = inner.append
        self.convert_to_l16 = inner.convert_to_l16
        self.side_packet = inner.side_packet

    def __getattr__(self, name: str) -> object:
        """Anything else the handle offers (a later addition to the protocol) is the inner one's."""
        return getattr(self._inner, name)

    def checkpoint(self) -> None:
        self._watch.poll(self._entry)
        self._inner.checkpoint()

    def close(self, result: CallResult) -> None:
        self._watch.closing(self._entry, result)
        self._inner.close(result)


class MarkWatch:
    """A RecordingSink in front of the on-demand gate; see the module docstring."""

    def __init__(self, inner: OnDemandGate, rule: MarkRule | None, digits: Digits,
                 marks: MarkSink | None) -> None:
        self._inner = inner
        self._digits_of = digits
        self._marks = marks
        self._calls: dict[int, _Watched] = {}
        self.rule = rule
        """The policy's codes; a reloaded policy sets its own (calls under way are matched with
        it from then on, their digits so far kept)."""
        self.stats = {"harassment_marks": 0}

    # ---- RecordingSink ------------------------------------------------------------------
    def begin(self, call: CallSnapshot, origin: float) -> None:
        if self.rule is not None and self._marks is not None:
            self._calls[call.serial] = _Watched(call, origin)
        self._inner.begin(call, origin)

    def open_audio(self, call: CallSnapshot, origin: float, encoding: str, rate: int = 8000) -> RecordingHandle:
        handle = self._inner.open_audio(call, origin, encoding, rate)
        entry = self._calls.get(call.serial)
        return handle if entry is None else _Handle(self, entry, handle)

    def finish_without_audio(self, result: CallResult) -> None:
        self._calls.pop(result.call.serial, None)
        self._inner.finish_without_audio(result)

    # ---- digits -------------------------------------------------------------------------
    def poll(self, entry: _Watched) -> None:
        self._match(entry, self._digits_of(entry.call.serial))

    def closing(self, entry: _Watched, result: CallResult) -> None:
        """The call ended: digits keyed after the last checkpoint still count (its row is still
        open: the mark lands on it before it is sealed)."""
        entry.call = result.call
        self._match(entry, [d for d in result.dtmf if d.channel == 0])
        self._calls.pop(entry.call.serial, None)

    def _match(self, entry: _Watched, digits: Sequence[Digit]) -> None:
        rule = self.rule
        if rule is None or self._marks is None:
            return
        for keyed, digit in entry.keypad.keyed(digits):
            category = rule.match(keyed)
            if category is None:
                continue
            entry.keypad.clear()
            if category in entry.marked:
                continue
            entry.marked.add(category)
            at = entry.origin + digit.position / RATE
            serial = entry.call.serial
            if self._inner.is_held(serial):
                self._inner.start(serial, "dtmf", at)
            self.stats["harassment_marks"] += 1
            self._marks.mark(entry.call, category, at)
