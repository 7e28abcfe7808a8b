"""What the recorder raises, on callrec's one error base."""
from __future__ import annotations

from wire.errors import CallrecError

__all__ = ["RecorderError"]


class RecorderError(CallrecError):
    """The recorder cannot do what it was asked (capture, place audio)."""
