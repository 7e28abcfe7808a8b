"""The organisation's rules for the 録音告知 (recording notice) on inbound calls.

Matsumoto §3(3): inbound external calls hear that they are recorded, outbound ones do not.
Shinagawa 第5条: notice may be withheld on a line for a listed reason (safety, threats, expected
litigation, other unavoidable reason), and whether notice was given is kept. Excluded lines
(Policy.excluded_lines, matsumoto §3(2)) get neither recording nor notice: they are handed over
at once, and no number of theirs is kept anywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, model_validator

from .strict import Strict

__all__ = ["Announcement", "NoticeDecision", "NoticeLine", "NoticeReason", "Outcome", "decide_notice"]

if TYPE_CHECKING:
    from .decide import PolicyDecider

NUMBER_PATTERN = r"^\+?[0-9()\- .]+$"


class NoticeReason(StrEnum):
    """Shinagawa 第5条's grounds for not giving notice."""

    SAFETY = "safety"
    THREAT = "threat"
    LITIGATION = "litigation"
    OTHER = "other"


class NoticeLine(Strict):
    """One DID: whether its callers hear the notice, and where its calls go afterwards."""

    number: Annotated[str, Field(min_length=1, max_length=32, pattern=NUMBER_PATTERN)]
    announce: bool = True
    reason: NoticeReason | None = None
    note: Annotated[str, Field(max_length=200)] = ""
    destination: Annotated[str | None, Field(pattern=r"^\+?[0-9*#]{1,32}$")] = None

    @model_validator(mode="after")
    def _reason_given(self) -> NoticeLine:
        if not self.announce and self.reason is None:
            raise ValueError("a line without notice needs a reason (safety, threat, litigation or other)")
        return self


class Announcement(Strict):
    """The notice itself.  `audio` is only a path (relative to the policy file; none means the
    shipped default): the announcer reads and checks the file, so loading a policy reads no
    audio."""

    enabled: bool = True
    audio: Path | None = None
    max_seconds: Annotated[float, Field(gt=0, le=60)] = 30.0
    lines: list[NoticeLine] = []



class Outcome(StrEnum):
    ANNOUNCE = "announce"
    EXCLUDED = "excluded"
    NO_NOTICE_LINE = "no_notice_line"
    NOT_INBOUND = "not_inbound"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class NoticeDecision:
    """What to do with one call the PBX sent to the announcer."""

    outcome: Outcome
    destination: str | None
    reason: str = ""

    @property
    def announce(self) -> bool:
        return self.outcome is Outcome.ANNOUNCE

    @property
    def excluded(self) -> bool:
        return self.outcome is Outcome.EXCLUDED


def decide_notice(decider: PolicyDecider, calling: str | None, called: str | None,
                  other_numbers: tuple[str | None, ...] = ()) -> NoticeDecision:
    """Excluded lines first (nothing else may even look at their numbers), then direction
    (a caller that is one of our extensions is an outbound or internal call: no notice), then the
    organisation's switch, then the line's own rule."""
    # decide.py imports the schema, which imports this module: import at call time.
    from .decide import normalise_number

    policy = decider.policy
    rules = policy.announcement
    cc = policy.numbering.country_code
    called_n = normalise_number(called, cc)
    line = next((ln for ln in rules.lines if normalise_number(ln.number, cc) == called_n), None)
    destination = (line.destination if line is not None and line.destination else None) or called
    if decider.exclusion((calling, called, *other_numbers)) is not None:
        return NoticeDecision(Outcome.EXCLUDED, destination)
    if decider.is_extension(normalise_number(calling, cc)):
        return NoticeDecision(Outcome.NOT_INBOUND, destination, "caller is an extension")
    if not rules.enabled:
        return NoticeDecision(Outcome.DISABLED, destination, "announcement disabled by policy")
    if line is not None and not line.announce:
        return NoticeDecision(Outcome.NO_NOTICE_LINE, destination, str(line.reason))
    return NoticeDecision(Outcome.ANNOUNCE, destination)
