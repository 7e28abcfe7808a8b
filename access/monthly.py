"""The monthly harassment report (issue 18 item 5): counts per line and per department.

Sans-I/O: facts in (each call's moment, line, department and the categories it was marked
with; each hold and each evidence export with its moment and the call's line and department),
counts out, then CSV and PDF. The month is a calendar month in the site's time zone (JST), so a
call at 23:59 on the 30th of November counts in November and one a minute later in December,
whatever the server's clock zone.

Counts only: a fact carries no number and no name, so the report cannot show one. Calls and
marked calls count by when the call began (a call marked days later still counts in its own
month); holds and evidence exports by when they were placed or made.
"""
from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from .errors import AccessError
from .forms import japanese_date, table_pdf

__all__ = ["CallFact", "Counts", "EventFact", "EventKind", "MonthlyReport", "count_month", "month_bounds",
           "report_csv", "report_pdf", "report_rows"]

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def month_bounds(month: str, timezone: str) -> tuple[float, float]:
    """The first and the first-after instants (epoch seconds) of `YYYY-MM` in the site's zone."""
    found = _MONTH.fullmatch(month.strip())
    if found is None:
        raise AccessError(f"month {month!r} is not YYYY-MM (e.g. 2026-11)")
    year, number = int(found.group(1)), int(found.group(2))
    zone = ZoneInfo(timezone)
    start = datetime(year, number, 1, tzinfo=zone)
    end = datetime(year + number // 12, number % 12 + 1, 1, tzinfo=zone)
    return start.timestamp(), end.timestamp()


class EventKind(StrEnum):
    HOLD = "hold"        # an evidence or legal hold placed on a call
    EXPORT = "export"    # a copy made for an evidence request (証拠提出)


@dataclass(frozen=True, slots=True)
class CallFact:
    """One recorded call as the report sees it: when, on which line of which department, and the
    categories of its marks still standing (withdrawn marks are not facts)."""

    at: float
    line: str
    department: str
    categories: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EventFact:
    at: float
    kind: EventKind
    line: str
    department: str


@dataclass
class Counts:
    calls: int = 0
    marked_calls: int = 0
    marks: Counter[str] = field(default_factory=Counter)  # marked calls per category
    holds: int = 0
    exports: int = 0

    def add_call(self, fact: CallFact) -> None:
        self.calls += 1
        categories = set(fact.categories)
        if categories:
            self.marked_calls += 1
            self.marks.update(categories)

    def add_event(self, fact: EventFact) -> None:
        if fact.kind is EventKind.HOLD:
            self.holds += 1
        else:
            self.exports += 1


@dataclass(frozen=True)
class MonthlyReport:
    month: str
    organisation: str
    categories: tuple[tuple[str, str], ...]  # (key, label) in the policy's order
    lines: tuple[tuple[str, str, Counts], ...]  # (line, its department, counts)
    departments: tuple[tuple[str, Counts], ...]
    total: Counts


def count_month(month: str, timezone: str, calls: Iterable[CallFact], events: Iterable[EventFact],
                categories: Sequence[tuple[str, str]], organisation: str = "") -> MonthlyReport:
    """Counts of the facts that fall in the month, per line, per department and in all; lines and
    departments in their name's order, a category a call was marked with that the policy no
    longer lists kept after the listed ones."""
    start, end = month_bounds(month, timezone)
    lines: dict[tuple[str, str], Counts] = {}
    departments: dict[str, Counts] = {}
    total = Counts()
    for fact in calls:
        if start <= fact.at < end:
            for counts in (lines.setdefault((fact.line, fact.department), Counts()),
                           departments.setdefault(fact.department, Counts()), total):
                counts.add_call(fact)
    for event in events:
        if start <= event.at < end:
            for counts in (lines.setdefault((event.line, event.department), Counts()),
                           departments.setdefault(event.department, Counts()), total):
                counts.add_event(event)
    listed = tuple(categories)
    keys = {key for key, _ in listed}
    extra = tuple((key, key) for key in sorted(set(total.marks) - keys))
    return MonthlyReport(month, organisation, listed + extra,
                         tuple((line, dept, c) for (line, dept), c in sorted(lines.items())),
                         tuple(sorted(departments.items())), total)


def _head(report: MonthlyReport) -> tuple[str, ...]:
    return ("区分", "名称", "所属", "通話数", "マークされた通話", *(label for _, label in report.categories),
            "保全", "証拠提出")


def _numbers(report: MonthlyReport, counts: Counts) -> tuple[str, ...]:
    return (str(counts.calls), str(counts.marked_calls), *(str(counts.marks.get(key, 0)) for key, _ in
                                                          report.categories),
            str(counts.holds), str(counts.exports))


def report_rows(report: MonthlyReport) -> list[tuple[str, ...]]:
    """The report as one table: a row per line (回線), per department (課), and the total (合計)."""
    rows = [_head(report)]
    rows += [("回線", line, dept, *_numbers(report, c)) for line, dept, c in report.lines]
    rows += [("課", dept, "", *_numbers(report, c)) for dept, c in report.departments]
    rows.append(("合計", "", "", *_numbers(report, report.total)))
    return rows


def report_csv(report: MonthlyReport) -> bytes:
    """UTF-8 with a BOM, so Excel opens the Japanese as Japanese (as the 管理簿's CSV)."""
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow((f"カスタマーハラスメント月次集計 {report.month}",))
    writer.writerows(report_rows(report))
    return out.getvalue().encode("utf-8-sig")


def report_pdf(report: MonthlyReport) -> bytes:
    """The report on landscape A4 in IPAex Mincho, as the 管理簿 is printed."""
    year, month = (int(part) for part in report.month.split("-"))
    first = japanese_date(datetime(year, month, 1).date(), western=True)
    era = first[:first.index("月") + 1]
    note = ("回線・課ごとの件数のみを記載し、電話番号・氏名は記載しない。通話数とマークされた通話は通話の"
            "開始日時、保全と証拠提出はその実施日時により計上する。区分別の件数は、その区分のマークが"
            "ある通話の数（撤回されたマークを除く）。")
    return table_pdf(f"カスタマーハラスメント月次集計（{era}分）", report.organisation, note, report_rows(report))
