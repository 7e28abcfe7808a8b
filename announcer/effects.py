"""What the sans-I/O UA core asks its adapters to do, besides sending SIP (transaction.Send)."""
from __future__ import annotations

from dataclasses import dataclass

from .media import Stream
from .outcomes import HandOverResult, NoticeOutcome

CallKey = tuple[str, str]  # (Call-ID, the PBX's tag)


@dataclass(frozen=True, slots=True)
class StartPlayback:
    key: CallKey
    port: int
    stream: Stream
    audio: bytes


@dataclass(frozen=True, slots=True)
class RetargetPlayback:
    """A re-INVITE moved the stream or changed its law; playback goes on where it was."""

    key: CallKey
    stream: Stream
    audio: bytes


@dataclass(frozen=True, slots=True)
class StopPlayback:
    key: CallKey


@dataclass(frozen=True, slots=True)
class ReleasePort:
    port: int


@dataclass(frozen=True, slots=True)
class CallEnded:
    """A call has left the announcer: what the notice log keeps. Times are on the core's clock
    (the adapter's monotonic `now`); the adapter turns them into wall-clock time."""

    sip_call_id: str
    received_at: float
    outcome: NoticeOutcome
    hand_over: HandOverResult
    announced_from: float | None
    announced_to: float | None
    calling_number: str | None
    called_number: str | None
    destination: str | None
    reason: str


CoreEffect = StartPlayback | RetargetPlayback | StopPlayback | ReleasePort | CallEnded
