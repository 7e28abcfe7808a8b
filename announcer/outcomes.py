"""What became of a call the announcer handled, as its proof of notice says.

The values are the words the notices table stores (storage.notices keeps
them as plain text, so storage needs nothing of the announcer's).
"""
from __future__ import annotations

from enum import StrEnum

__all__ = ["AnnouncementKind", "HandOverResult", "NoticeOutcome"]


class NoticeOutcome(StrEnum):
    ANNOUNCED = "announced"
    CALLER_HUNG_UP = "caller_hung_up"
    NO_NOTICE_LINE = "no_notice_line"
    EXCLUDED = "excluded"
    NOT_INBOUND = "not_inbound"
    DISABLED = "disabled"
    INTERRUPTED = "interrupted"  # the announcer was stopped during the announcement
    IN_PROGRESS = "in_progress"  # the call is still with the announcer (or was when it stopped)


class HandOverResult(StrEnum):
    REFER = "refer"
    REDIRECT_302 = "redirect_302"
    # the PBX did not carry out the 302: it never acknowledged it, or sent the call back
    REDIRECT_FAILED = "redirect_failed"
    FALLBACK_OPERATOR = "fallback_operator"
    FAILED = "failed"
    NONE = "none"  # the caller hung up before a hand-over was due


class AnnouncementKind(StrEnum):
    """Which announcement a call was played: the ordinary 録音告知, or the warning the policy names
    for a number marked as harassment often enough (issue 18, "the caller next time")."""

    NOTICE = "notice"
    WARNING = "warning"
