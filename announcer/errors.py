"""What the announcer raises, on callrec's one error base.

Each error says whose fault it is, as wire.errors explains: a PBX's unusable challenge or SDP
offer is `RemoteInputError` (that call or registration is refused, the announcer goes on), and a
state move the transition tables do not allow is `LocalProtocolError`, a bug of ours. The errors
that belong to one module (AudioError, DigestError, NegotiationError) stay defined there, beside
what raises them, on `AnnouncerError`.
"""
from __future__ import annotations

from wire.errors import CallrecError, LocalProtocolError

__all__ = ["AnnouncerError", "IllegalTransition"]


class AnnouncerError(CallrecError):
    """The announcer refused something or could not do it; the message says what."""


class IllegalTransition(AnnouncerError, LocalProtocolError):
    """A call or transaction was asked to make a move its transition table does not draw.

    Raised instead of moving, so the bug shows where it happens rather than as a call stuck in a
    state nothing leaves."""
