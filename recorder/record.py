"""What the recorder hands to storage, and nothing else of the recorder.

Storage imports this module and the wire formats only.  It never sees the
recorder's live `Call` (mutable, owned by the call tracker, changed by every
SIP message): it gets a frozen `CallSnapshot` taken when the recording starts
and another when it ends, and writes through the `RecordingSink` and
`RecordingHandle` protocols the engine calls.  So a store can be tested, run
and read (by the access layer and the console) without the capture stack,
and the engine can be tested against a small in-memory sink.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from policy.decide import Direction

__all__ = [
    "CallResult",
    "CallSnapshot",
    "DtmfMark",
    "Gap",
    "MarkSink",
    "RecordingHandle",
    "RecordingSink",
    "StreamReport",
]


@dataclass(frozen=True, slots=True)
class CallSnapshot:
    """The metadata of one recorded call at one moment.

    `serial` is the recorder's number for the call while it lives, so a sink
    can tell its calls apart; it means nothing once the call has ended."""

    serial: int
    sip_call_id: str
    invite_ts: float
    answer_ts: float | None
    end_ts: float | None
    direction: Direction
    local_number: str | None
    remote_number: str | None
    caller: str | None
    callee: str | None
    caller_withheld: bool
    codecs: tuple[str, ...]
    end_reason: str
    complete: bool
    extension: str | None = None
    """The extension that placed or took the call (山形市 第9条1(4)), apart from the city-side
    number (a DID or the representative number) in `local_number`."""
    withheld_number: str | None = None
    """A withheld caller's number the carrier still sent (P-Asserted-Identity), kept only where
    the policy says keep_masked: never shown in a list or a search, only disclosed by an approved
    request.  `remote_number` is None for such a call, as for any withheld caller."""
    leg_call_ids: tuple[str, ...] = ()
    """The Call-IDs of the other legs a B2BUA PBX made for this call (to the extension, to the
    trunk, to each phone of a ring group), linked into this one row."""
    referred_by: str | None = None
    replaces: str | None = None
    """The INVITE's Referred-By, and the Call-ID its Replaces names: what ties a transferred
    call to the dialog it was transferred from (and so to that dialog's proof of notice)."""
    started_by: str | None = None
    """Who or what started an on-demand recording: "dtmf" (the start code on the extension) or
    "console:<account>"; None for a call recorded automatically."""
    start_requested_at: float | None = None
    """When that request was made (capture time)."""


@dataclass(frozen=True, slots=True)
class StreamReport:
    """What the index keeps about the media of one channel."""

    channel: int
    flows: tuple[str, ...]
    stats: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class DtmfMark:
    """One RFC 4733 digit as it stands when the call ends: `position` is in
    samples from the recording's origin; `ended` tells whether its end packet
    was seen (a digit without one was cut off by loss or by the hang-up)."""

    channel: int
    digit: str
    position: int
    duration_ms: int
    ended: bool


@dataclass(frozen=True, slots=True)
class Gap:
    """A stretch of the call that its recording does not hold, in seconds from the origin.

    reason "memory_bound": an on-demand call asked for late; memory had kept only its first and
    last minutes, and the middle was dropped before anybody asked.  reason "stopped": between a
    stop code and the next start, or the end of the call.  A gap inside the recording is filled
    with silence so that every offset (digits, gaps) stays the time since the origin; a gap at the
    end is simply where the audio stops."""

    offset: float
    seconds: float
    reason: str


@dataclass(frozen=True, slots=True)
class CallResult:
    """Everything known about a finished recording."""

    call: CallSnapshot
    origin: float
    frames: int
    encoding: str | None
    streams: tuple[StreamReport, ...]
    dtmf: tuple[DtmfMark, ...]
    undecoded: tuple[str, ...]
    late_samples: int
    gaps: tuple[Gap, ...] = ()


class RecordingHandle(Protocol):
    """One recording being written, in the order the engine calls it."""

    def append(self, data: bytes) -> None: ...
    def convert_to_l16(self) -> None: ...
    def side_packet(self, channel: int, arrival: float, rtp: bytes, flow: tuple[str, int, str, int]) -> None: ...
    def checkpoint(self) -> None: ...
    def close(self, result: CallResult) -> None: ...


class RecordingSink(Protocol):
    """Where recordings go: `begin` when a call to record is answered,
    `open_audio` when its first audio arrives (in that audio's encoding,
    at 8000 samples per second or 16000 for a wideband call),
    `finish_without_audio` for an answered call that never had any."""

    def begin(self, call: CallSnapshot, origin: float) -> None: ...
    def open_audio(self, call: CallSnapshot, origin: float, encoding: str, rate: int = 8000) -> RecordingHandle: ...
    def finish_without_audio(self, result: CallResult) -> None: ...


class MarkSink(Protocol):
    """Where a harassment mark keyed on the staff side's extension goes (storage/marks.py):
    `call` as the recorder knows it (its recording is open: the mark comes before the close),
    `category` a category id of the policy's harassment section, `at` the capture time of the
    code's last digit.  Called while the call goes on, so the alert is live."""

    def mark(self, call: CallSnapshot, category: str, at: float) -> None: ...
