"""The organisation's rules for the 録音告知 (recording notice) on inbound calls.

Matsumoto §3(3): inbound external calls hear that they are recorded, outbound ones do not.
Shinagawa 第5条: notice may be withheld for a listed reason (safety, threats, expected litigation,
other unavoidable reason), on a line or for a caller (an outside number, or every number that
starts with a prefix), and whether notice was given, and why not, is kept. Excluded lines
(Policy.excluded_lines, matsumoto §3(2)) get neither recording nor notice: they are handed over
at once, and no number of theirs is kept anywhere.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, model_validator

from .strict import Strict

__all__ = [
    "CALLER_REASON_PREFIX", "MAX_HANDOVER_SECONDS", "Announcement", "NoticeCaller", "NoticeDecision", "NoticeLine",
    "NoticeReason", "Outcome", "decide_notice", "exemption_summary",
]

if TYPE_CHECKING:
    from .decide import PolicyDecider
    from .schema import Policy

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


MIN_PREFIX_DIGITS = 3
MAX_HANDOVER_SECONDS = 120.0
"""The largest handover_seconds a policy may set: the recorder's search for a notice reaches this
far back from a call's INVITE."""


class NoticeCaller(Strict):
    """An outside caller who does not hear the notice (品川区 第5条): one number, or every number
    that starts with a prefix, each with its reason.  The reason is required because 第5条 allows
    no exception without one; the note says which case it is, for the section manager only."""

    number: Annotated[str | None, Field(min_length=1, max_length=32, pattern=NUMBER_PATTERN)] = None
    prefix: Annotated[str | None, Field(min_length=1, max_length=32, pattern=NUMBER_PATTERN)] = None
    reason: NoticeReason
    note: Annotated[str, Field(max_length=200)] = ""

    @model_validator(mode="after")
    def _one_of_number_or_prefix(self) -> NoticeCaller:
        if (self.number is None) == (self.prefix is None):
            raise ValueError("give either number (one caller) or prefix (every number that starts with it)")
        if self.prefix is not None and sum(ch.isdigit() for ch in self.prefix) < MIN_PREFIX_DIGITS:
            raise ValueError(f"a prefix of fewer than {MIN_PREFIX_DIGITS} digits would exempt nearly every caller")
        return self


class Announcement(Strict):
    """The notice itself.  `audio` is only a path (relative to the policy file; none means the
    shipped default): the announcer reads and checks the file, so loading a policy reads no
    audio."""

    enabled: bool = True
    audio: Path | None = None
    max_seconds: Annotated[float, Field(gt=0, le=60)] = 30.0
    lines: list[NoticeLine] = []
    callers: list[NoticeCaller] = []
    handover_seconds: Annotated[float, Field(gt=0, le=MAX_HANDOVER_SECONDS)] = 15.0
    """How long after the announcer hands a call over (REFER or 302) the call it leads to may
    begin: the new INVITE comes once the PBX has routed the hand-over, and the recorder links that
    call to this notice only within this window after the hand-over, which itself comes when the
    announcement (of whatever length) has been played."""


class Outcome(StrEnum):
    ANNOUNCE = "announce"
    EXCLUDED = "excluded"
    NO_NOTICE_LINE = "no_notice_line"
    NOT_INBOUND = "not_inbound"
    DISABLED = "disabled"


CALLER_REASON_PREFIX = "caller:"
"""How a caller's exception is told from a line's in the notice row: `caller:threat` against
`threat`, in the one reason column the notices table has."""


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


def _exempt_caller(rules: Announcement, calling: str | None, country_code: str) -> NoticeCaller | None:
    """The first exception that names this caller: its number, or a prefix its number starts
    with, both compared in the national form (+81 90... is 090...).  A withheld number matches
    nothing."""
    from .decide import normalise_number

    number = normalise_number(calling, country_code)
    if not number:
        return None
    for caller in rules.callers:
        if caller.number is not None and normalise_number(caller.number, country_code) == number:
            return caller
        prefix = normalise_number(caller.prefix, country_code)
        if prefix and number.startswith(prefix):
            return caller
    return None


def exemption_summary(policy: Policy) -> dict[str, object]:
    """The policy's 第5条 exceptions as counts, for the `policy_changed` ledger entry: how many
    callers (numbers and prefixes) and lines go unannounced, and for which reasons.  Never the
    numbers, not even hashed: a phone number's hash is found by trying every number, and the
    policy's own sha256 in the same entry already pins the exact list."""
    rules = policy.announcement
    silent_lines = [line for line in rules.lines if not line.announce]
    reasons = Counter(str(entry.reason) for entry in (*rules.callers, *silent_lines))
    return {
        "caller_numbers": sum(1 for caller in rules.callers if caller.number is not None),
        "caller_prefixes": sum(1 for caller in rules.callers if caller.prefix is not None),
        "lines": len(silent_lines),
        "reasons": dict(sorted(reasons.items())),
    }


def decide_notice(decider: PolicyDecider, calling: str | None, called: str | None,
                  other_numbers: tuple[str | None, ...] = ()) -> NoticeDecision:
    """Excluded lines first (nothing else may even look at their numbers), then direction
    (a caller that is one of our extensions is an outbound or internal call: no notice), then the
    organisation's switch, then the caller's exception (about this person, so it is the more
    specific reason when the line is silent too), then the line's own rule."""
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
    caller = _exempt_caller(rules, calling, cc)
    if caller is not None:
        return NoticeDecision(Outcome.NO_NOTICE_LINE, destination, f"{CALLER_REASON_PREFIX}{caller.reason}")
    if line is not None and not line.announce:
        return NoticeDecision(Outcome.NO_NOTICE_LINE, destination, str(line.reason))
    return NoticeDecision(Outcome.ANNOUNCE, destination)
