"""The one base of every error callrec raises on purpose.

As h11 does, an error says whose fault it is: `RemoteInputError` is input
from outside (a packet, a capture file, a peer's message, a file someone
gave us) that cannot be used, so the caller counts or refuses it and goes
on; `LocalProtocolError` is our own code asking for something the protocol
does not allow (an illegal state change), which is a bug.  Each package has
its own subclass, so a caller can catch "anything storage refused" without
a hand-kept tuple, and the CLI catches `CallrecError` alone.
"""
from __future__ import annotations

__all__ = ["CallrecError", "LocalProtocolError", "RemoteInputError", "WireFormatError"]


class CallrecError(Exception):
    """Something callrec refused or could not do; the message says what, for a person."""


class RemoteInputError(CallrecError):
    """Input from outside callrec is not usable; nothing of ours is broken."""


class LocalProtocolError(CallrecError):
    """Our own code asked for a move its protocol does not allow."""


class WireFormatError(RemoteInputError):
    """Bytes that are not the format they claim to be (SIP, SDP, a capture file)."""
