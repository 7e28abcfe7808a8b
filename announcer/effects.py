"""What the sans-I/O UA core asks its adapters to do, besides sending SIP (transaction.Send)."""
from __future__ import annotations

from dataclasses import dataclass

from .media import Stream
from .outcomes import AnnouncementKind, HandOverResult, NoticeOutcome

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
class NoticeState:
    """What the notice log keeps of one call. Times are on the core's clock (the adapter's
    monotonic `now`); the adapter turns them into wall-clock time. refer_target and referred_by
    are the hand-over as sent (Refer-To or the 302's Contact, and the Referred-By token), so the
    recorder can tie the call the hand-over leads to back to this notice; link_seconds is the
    policy's window for that call to begin after handed_over_at. announcement says which one
    the call was given (the warning instead of the notice for a marked number) and
    announcement_sha256 the file it was made from, once playing began."""

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
    key: CallKey = ("", "")
    refer_target: str | None = None
    referred_by: str | None = None
    handed_over_at: float | None = None
    link_seconds: float | None = None
    announcement: AnnouncementKind | None = None
    announcement_sha256: str | None = None


@dataclass(frozen=True, slots=True)
class NoticeChanged(NoticeState):
    """The notice so far. The adapter writes it before it sends the SIP of the same step, so
    whatever the PBX (and the recorder on the mirror) sees of a call has its notice on disk."""


@dataclass(frozen=True, slots=True)
class CallEnded(NoticeState):
    """A call has left the announcer: its notice is final."""


@dataclass(frozen=True, slots=True)
class RedirectFailed:
    """A call the announcer redirected (302) was not taken by the PBX, after its notice was
    final: the 302 went unacknowledged, or the PBX sent the same call back."""

    key: CallKey
    sip_call_id: str
    reason: str


CoreEffect = (StartPlayback | RetargetPlayback | StopPlayback | ReleasePort | NoticeChanged | CallEnded
              | RedirectFailed)
