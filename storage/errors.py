"""What storage refuses, on callrec's one error base.

Callers catch `StorageError` for "the store could not do it, and says why";
the CLI prints the message and exits without a traceback.
"""
from __future__ import annotations

from wire.errors import CallrecError

__all__ = ["StorageError"]


class StorageError(CallrecError):
    """The data folder, a recording, the key or the ledger cannot be used as asked."""
