"""What became of a call the announcer handled, as its proof of notice says.

The values are the words the notices table stores (storage.notices keeps
them as plain text, so storage needs nothing of the announcer's).
"""
from __future__ import annotations

from enum import StrEnum

__all__ = ["HandOverResult", "NoticeOutcome"]


class NoticeOutcome(StrEnum):
    ANNOUNCED = "announced"
    CALLER_HUNG_UP = "caller_hung_up"
    NO_NOTICE_LINE = "no_notice_line"
    EXCLUDED = "excluded"
    NOT_INBOUND = "not_inbound"
    DISABLED = "disabled"
    INTERRUPTED = "interrupted"  # the announcer was stopped during the announcement


class HandOverResult(StrEnum):
    REFER = "refer"
    REDIRECT_302 = "redirect_302"
    FALLBACK_OPERATOR = "fallback_operator"
    FAILED = "failed"
    NONE = "none"  # the caller hung up before a hand-over was due
