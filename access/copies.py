"""The copy register's rules: a copy's number and the day by which it must be disposed of.

Sans-I/O: dates in, dates out.  A copy is tracked from the day it is made until its disposal is
recorded (品川区 第7条3–4, 山形市 第9条4, 松本市 第10条); its deadline comes from the policy:
さいたま 第4条6(2) keeps 出力データ until the end of the fiscal year (年度, April to March) after
the one it was made in; 品川区 第7条4 until its purpose is met (no date, but still tracked and
listed); or a number of days.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from policy.access import CopyRules

__all__ = ["CopyRecord", "copy_deadline", "copy_number", "fiscal_year", "overdue"]


def fiscal_year(day: date) -> int:
    """The Japanese fiscal year (年度) a day belongs to: 2026-03-31 is in 2025, 2026-04-01 in 2026."""
    return day.year if day.month >= 4 else day.year - 1


def copy_deadline(rules: CopyRules, made: date) -> date | None:
    """The last day the copy may be kept; None when it is kept until its purpose is met."""
    if rules.keep == "end_of_next_fiscal_year":
        return date(fiscal_year(made) + 2, 3, 31)
    if rules.keep == "until_purpose_met":
        return None
    return made + timedelta(days=int(rules.keep))


def copy_number(year: int, serial: int) -> str:
    """C2026-0001: the year it was made and its place in that year's register."""
    return f"C{year}-{serial:04d}"


@dataclass(frozen=True, slots=True)
class CopyRecord:
    """One row of the copy register."""

    number: str
    request: str
    call_id: str
    sha256: str
    package: str
    holder: str
    made_by: str
    made_at: str
    deadline: str | None
    disposed_at: str | None = None
    disposed_how: str | None = None
    disposed_by: str | None = None
    witness: str | None = None

    @property
    def disposed(self) -> bool:
        return self.disposed_at is not None


def overdue(copies: list[CopyRecord], today: date) -> list[CopyRecord]:
    """Copies past their deadline and not disposed of: a health warning until they are."""
    return [c for c in copies if not c.disposed and c.deadline is not None and date.fromisoformat(c.deadline) < today]
