"""Lines recorded only when staff ask (品川区 第2条(2): 「自動もしくは手動で通話内容を録音記録する」).

A call on an on-demand line is followed as every call is, but its audio stays in the recorder's
memory, the first and the last minutes of it, and reaches the disk only if somebody asks while the
call is going on: the staff side presses the start code on the extension (an RFC 4733 event), or a
person allowed to presses 録音開始 beside the live call in the console.  Then the call is recorded
from its start as if it had been automatic; the stop code ends the recording.  A call nobody asked
for leaves nothing: no audio, no row, no number.

The codes are one pair for the whole organisation, so staff learn them once; the bounds say how
much of a long call memory keeps before anyone asked (the middle of a longer call is dropped and
the row says where).  Pure: the schema, the rule the decider attaches to a call, and the words
`callrec policy check` prints.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, model_validator

from .strict import Strict

if TYPE_CHECKING:
    from .schema import Policy

__all__ = ["OnDemand", "OnDemandLine", "OnDemandRule", "describe_on_demand"]

CODE_PATTERN = r"^[0-9*#A-D]{1,8}$"
"""RFC 4733 digits (0-9, *, #, A-D), as the keypad sends them: at most eight."""


class OnDemandLine(Strict):
    """One line (a DID or an extension) whose calls are recorded only when asked for."""

    number: Annotated[str, Field(min_length=1, max_length=32, pattern=r"^\+?[0-9()\- .]+$")]
    label: Annotated[str, Field(max_length=64)] = ""
    """What the console shows beside a live call instead of any number (e.g. 区民相談窓口)."""


class OnDemand(Strict):
    """The `on_demand:` section: the lines, the codes and how much memory keeps."""

    clause: Annotated[str, Field(min_length=1, max_length=200)]
    lines: Annotated[list[OnDemandLine], Field(min_length=1)]
    start_code: Annotated[str, Field(pattern=CODE_PATTERN)]
    stop_code: Annotated[str, Field(pattern=CODE_PATTERN)]
    keep_first_minutes: Annotated[float, Field(ge=0, le=60)] = 5.0
    """The beginning of the call kept in memory until somebody asks (how it began)."""
    keep_last_minutes: Annotated[float, Field(ge=0, le=60)] = 15.0
    """The latest part kept in memory; what lies between the two is dropped, and the row says so."""

    @model_validator(mode="after")
    def _distinct(self) -> OnDemand:
        """The recorder matches a code on the last digits pressed, so a code that ends the other
        would do both at once."""
        if self.start_code.endswith(self.stop_code) or self.stop_code.endswith(self.start_code):
            raise ValueError(f"start_code {self.start_code!r} and stop_code {self.stop_code!r} must differ and "
                             "neither may end with the other")
        numbers = ["".join(ch for ch in line.number if ch.isdigit() or ch == "+") for line in self.lines]
        if len(set(numbers)) != len(numbers):
            raise ValueError("a line is listed twice")
        return self


@dataclass(frozen=True, slots=True)
class OnDemandRule:
    """What the recorder needs to know about one call on an on-demand line: the line's label
    (never its number) and the section's codes and bounds, fixed when the call began."""

    label: str
    start_code: str
    stop_code: str
    keep_first_seconds: float
    keep_last_seconds: float

    @classmethod
    def of(cls, section: OnDemand, line: OnDemandLine, index: int) -> OnDemandRule:
        return cls(label=line.label or f"#{index + 1}", start_code=section.start_code,
                   stop_code=section.stop_code, keep_first_seconds=section.keep_first_minutes * 60,
                   keep_last_seconds=section.keep_last_minutes * 60)


def describe_on_demand(policy: Policy, lang: str = "ja") -> list[str]:
    """The on-demand rule in plain words for `callrec policy check` (no line numbers: the section
    manager checks the count against the file)."""
    section = policy.on_demand
    if section is None:
        return []
    first, last = f"{section.keep_first_minutes:g}", f"{section.keep_last_minutes:g}"
    count = len(section.lines)
    if lang == "ja":
        return [(f"{count}回線は求めがあったときだけ録音します（開始コード {section.start_code}、停止コード "
                f"{section.stop_code}、または管理画面の録音開始ボタン）。求めがあれば通話の始めから録音し、"
                f"求めがなかった通話は何も残しません。求めるまでは最初の{first}分と直近の{last}分だけをメモリに保持し、"
                f"その間の部分は録音に含まれません（欠落として記録します）。 [{section.clause}]")]
    return [(f"{count} line(s) are recorded only when asked for (start code {section.start_code}, stop code "
            f"{section.stop_code}, or the console's start button). Once asked, the call is recorded from its "
            f"start; a call never asked for leaves nothing. Until then memory keeps only the first {first} and the "
            f"last {last} minutes; the middle is missing from the recording, and its row says so. [{section.clause}]")]
