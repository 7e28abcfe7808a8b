"""The base of every settings model read from a file an administrator writes.

Unknown keys are refused (a misspelt key must not silently fall back to a
default that records less or keeps longer than meant) and a loaded model
cannot change under the code that reads it.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Strict"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
