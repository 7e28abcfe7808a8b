"""Finding a call from what a request form says (U4: 熊本市 様式1, 山形市 別記様式, さいたま 様式1).

A form gives approximate facts: "from 03-1234-5678, around 10:30 on 20 November, about three
minutes".  What it states exactly narrows the rows: the time window (the indexed filter, on
`recorded_at`), the numbers and the direction.  What it states roughly only ranks them: how far
the call is from the time given and how close its length is to the one remembered, so a call
that lasted twelve minutes where the form says three is still shown, lower, with the reason.
A row that cannot be checked (withheld number, unknown direction) stays a candidate and says so.

Erased recordings keep no numbers (`index.ERASED_CLEAR`), so they are answered by time alone,
and the answer says so: 熊本市 様式2 asks whether the data exists, and "no such recording" must
only be said when nothing kept matches and nothing in the window was erased.

`statement()` and `rank()` are pure (the query, the rows, `now` and the zone in; SQL text or a
result out); `find()` and `select()` run them on the index file.

A window can hold hundreds of calls (a day of ten sites at the centre: thousands), and nobody
reads past the first screen: ranking reads only the few columns it judges (`RANKED`, as plain
tuples), and a whole row is read only for the candidates shown (`limit`, `start`: the best N and
"N more", ほかN件).  Where the form gives a number, extension or direction, the window's rows
that one of them rules out are counted in SQL instead of read (`excluded`): the SQL is written
from the same rules and constants as `_marks`, and can only be false where `_marks` rules the
row out (tests/test_search_pages.py checks it on generated rows, on SQLite and PostgreSQL).
"""
from __future__ import annotations

import enum
import heapq
import re
import sqlite3
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from policy.decide import Direction, normalise_number

from .errors import StorageError
from .index import MASKED, CallIndex, CallRow, call_row, connect

__all__ = ["DEFAULT_WINDOW_SECONDS", "RANKED", "CallQuery", "Candidate", "Erased", "Facts", "Nearest", "QueryError", "SearchResult", "Statement", "Tombstone", "erased_page", "excluded", "find", "nearest", "needs_criteria", "normalise", "parse_span", "parse_time", "rank", "rank_page", "select", "shown_remote", "statement", "time_only", "with_erased"]

DEFAULT_WINDOW_SECONDS = 30 * 60.0
"""How far either side of the time on the form a call may have started: forms say 頃 (about)."""
MIN_TOLERANCE_SECONDS = 60.0
TOLERANCE_SHARE = 0.25
"""A remembered length is "about" it within a quarter of itself, and never closer than a minute."""
OUTSIDE_DIGITS = 6
"""The fewest digits two outside numbers must share at their end to be the same line written
with and without an area code, a dialling prefix (0 for an outside line, 184/186) or +81."""
CITY_DIGITS = 3
"""The fewest for city-side numbers: an extension is the end of its DID at many sites."""

WEIGHTS = {"time": 30.0, "duration": 20.0, "outside": 60.0, "city": 30.0, "direction": 10.0}
"""What each fact of the form is worth in the score.  Numbers are written down exactly, times and
lengths remembered: the right number twenty minutes off and four times as long still ranks
above a withheld call at the right moment and length."""
PARTIAL_SHARE = 0.75
UNKNOWN_SHARE = 0.25

ERASURE_WORDS = {
    "retention": "retention rule: past its retention period",
    "capacity": "capacity rule: the oldest made room",
    "wipe": "decommissioning: every recording wiped",
}
"""The sweep's and the wipe's `erased_reason`, in words."""


ERASED_NOTE = ("Erased recordings keep no numbers or parties: they are matched by time only. The ledger's "
               "erasure entry of that date names the rule.")
UNTIMED_NOTE = ("Erased recordings keep no numbers, so a search without a time cannot tell whether one of them "
                "was this call.")


class QueryError(StorageError):
    """A search that cannot be asked as given (a period that ends before it starts, no criteria)."""


class NumberMatch(enum.Enum):
    SAME = "same"
    PARTIAL = "partial"
    UNKNOWN = "unknown"
    OTHER = "other"


def normalise(number: str | None, country_code: str) -> str | None:
    """A number from a form in the form the index holds (the recorder's `normalise_number`).

    Forms are filled in by hand: full-width digits and hyphens (０３－１２３４) are folded to
    ASCII first, and the "(0)" of the international style (+81 (0)3 ...) is dropped."""
    if number is None or not number.strip():
        return None
    text = unicodedata.normalize("NFKC", number).strip()
    if text.startswith("+"):
        text = text.replace("(0)", "")
    return normalise_number(text, country_code)


@dataclass(frozen=True, slots=True)
class CallQuery:
    """What a request form says about a call.  Times are epoch seconds; either `around` (with
    `window_seconds` either side) or a period `start`..`end` (either end may be open)."""

    around: float | None = None
    window_seconds: float = DEFAULT_WINDOW_SECONDS
    start: float | None = None
    end: float | None = None
    duration_seconds: float | None = None
    duration_tolerance: float | None = None
    remote_number: str | None = None
    local_number: str | None = None
    direction: str | None = None
    country_code: str = "81"
    extension: str | None = None
    """The extension that placed or took the call (山形市 第9条1(4)), as staff know it."""
    remote: str | None = field(init=False, repr=False, compare=False)
    """The outside number asked, in the index's form (`normalise`)."""
    local: str | None = field(init=False, repr=False, compare=False)
    staff: str | None = field(init=False, repr=False, compare=False)
    """The extension asked for, digits as written (an extension has no other form)."""
    timed: bool = field(init=False, repr=False, compare=False)
    tolerance: float = field(init=False, repr=False, compare=False)
    """How far off the length asked still counts as about it."""

    def __post_init__(self) -> None:
        if self.around is not None and (self.start is not None or self.end is not None):
            raise QueryError("give a time with its window, or a period from/to, not both")
        if self.window_seconds <= 0:
            raise QueryError("the window must be longer than zero")
        if self.start is not None and self.end is not None and self.end < self.start:
            raise QueryError("the period ends before it starts")
        if self.duration_seconds is not None and self.duration_seconds <= 0:
            raise QueryError("the duration must be longer than zero")
        if self.duration_tolerance is not None and self.duration_tolerance < 0:
            raise QueryError("the duration's tolerance cannot be negative")
        if self.direction is not None and self.direction not in {d.value for d in Direction}:
            raise QueryError(f"no such direction {self.direction!r}: inbound, outbound or internal")
        # What ranking asks of the query for every row, worked out once (a window may hold thousands).
        derived = {
            "remote": normalise(self.remote_number, self.country_code),
            "local": normalise(self.local_number, self.country_code),
            "staff": normalise(self.extension, self.country_code),
            "timed": self.period != (None, None),
            "tolerance": self.duration_tolerance if self.duration_tolerance is not None else
            max(MIN_TOLERANCE_SECONDS, TOLERANCE_SHARE * (self.duration_seconds or 0.0)),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @property
    def period(self) -> tuple[float | None, float | None]:
        """The recording times (epoch) searched, either end open."""
        if self.around is not None:
            return self.around - self.window_seconds, self.around + self.window_seconds
        return self.start, self.end

    def describe(self, tz: tzinfo) -> str:
        """The query in words, as the answer repeats it."""
        parts = [self._when(tz)]
        if self.duration_seconds is not None:
            parts.append(f"about {_span(self.duration_seconds)} long (±{_amount(self.tolerance)})")
        if self.remote:
            parts.append(f"outside number {self.remote}")
        if self.local:
            parts.append(f"city-side number {self.local}")
        if self.staff:
            parts.append(f"extension {self.staff}")
        if self.direction:
            parts.append(self.direction)
        return ", ".join(parts)

    def _when(self, tz: tzinfo) -> str:
        if self.around is not None:
            return f"around {_clock(self.around, tz, True)} (±{_amount(self.window_seconds)})"
        return _period_words(self.start, self.end, tz)


RANKED = ("id", "recorded_at", "duration", "direction", "local_number", "remote_number", "caller_withheld", "state",
          "extension", "erased_at", "erased_reason")
"""The columns ranking reads (`Facts`, in this order): a candidate's score and reasons, and an
erased recording's tombstone, come from these alone."""
FETCH_CHUNK = 500
"""Whole rows read by id this many at a time (SQLite's limit on a statement's parameters)."""


class Facts(NamedTuple):
    """What ranking reads of a row (the `RANKED` columns, then the centre's site): the cursor's
    tuple itself, so thousands of calls are scored without building a CallRow for each."""

    id: str
    recorded_at: float | None
    duration: float | None
    direction: str
    local_number: str | None
    remote_number: str | None
    caller_withheld: bool
    state: str
    extension: str | None
    erased_at: str | None
    erased_reason: str | None
    site: str = ""


Ranked = Facts | CallRow
"""A row as ranking reads it: its facts, or the whole row (the plain path, and `select`'s)."""


@dataclass(frozen=True, slots=True)
class Statement:
    """One parameterised SELECT (qmark style), plain enough for PostgreSQL too."""

    sql: str
    params: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A kept recording that may be the call, with why."""

    row: CallRow
    score: int
    reasons: tuple[str, ...]
    offset: float | None
    """Seconds from the time on the form (negative: before it); none without one."""

    @property
    def in_progress(self) -> bool:
        return self.row.state == "recording"

    def as_dict(self) -> dict[str, Any]:
        row = self.row
        return {"id": row.id, "score": self.score, "reasons": list(self.reasons), "in_progress": self.in_progress,
                "started_at": row.started_at, "answered_at": row.answered_at, "duration": row.duration,
                "direction": row.direction, "local_number": row.local_number, "remote_number": row.remote_number,
                "caller_withheld": row.caller_withheld, "held": row.held, "state": row.state,
                "extension": row.extension, "withheld_number": MASKED if row.withheld_number else None}


@dataclass(frozen=True, slots=True)
class Tombstone:
    """An erased recording made in the window: it may have been the call, nobody can tell."""

    id: str
    recorded_at: float
    duration: float | None
    erased_at: str
    erased_reason: str | None
    sentence: str

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "recorded_at": self.recorded_at, "duration": self.duration,
                "erased_at": self.erased_at, "erased_reason": self.erased_reason, "sentence": self.sentence}


@dataclass(frozen=True, slots=True)
class SearchResult:
    query: CallQuery
    description: str
    candidates: tuple[Candidate, ...]
    """The candidates shown: from `start` on, the best first, as many as asked (all by default)."""
    erased: tuple[Tombstone, ...]
    """The erased recordings shown: all of the window's, or with a page of candidates
    (`erased_total` set) the page's share of them in the order recorded (from `start`, as many
    as the page holds: a day of ten sites can hold thousands)."""
    others: int
    """Kept recordings in the window whose numbers or direction rule them out."""
    answer: str
    notes: tuple[str, ...]
    total: int
    """Every candidate, shown or not."""
    start: int = 0
    """How many better candidates come before the ones shown (a later page)."""
    erased_total: int | None = None
    """Every erased recording of the window, shown or not; None: `erased` holds them all."""

    @property
    def found(self) -> bool:
        return self.total > 0

    @property
    def erased_count(self) -> int:
        """Every erased recording of the window (the answer counts them all)."""
        return len(self.erased) if self.erased_total is None else self.erased_total

    @property
    def erased_more(self) -> int:
        """Erased recordings after the ones shown: the next pages list them."""
        return 0 if self.erased_total is None else max(0, self.erased_total - self.start - len(self.erased))

    @property
    def erased_shown(self) -> str:
        """Which erased recordings are listed, in words; empty when the answer lists them all."""
        if len(self.erased) == self.erased_count:
            return ""
        text = (f"Erased shown: {self.start + 1}-{self.start + len(self.erased)} of {self.erased_count}"
                if self.erased else f"No erased recordings from number {self.start + 1} on "
                                    f"(there are {self.erased_count})")
        return text + (f"; {self.erased_more} more (ほか{self.erased_more}件)." if self.erased_more else ".")

    @property
    def more(self) -> int:
        """Candidates after the ones shown: ほかN件."""
        return max(0, self.total - self.start - len(self.candidates))

    @property
    def shown(self) -> str:
        """Which candidates are shown and how many more there are, in words; empty when the
        answer shows them all."""
        if len(self.candidates) == self.total:
            return ""
        text = (f"Shown: candidates {self.start + 1}-{self.start + len(self.candidates)} of {self.total}"
                if self.candidates else f"No candidates from number {self.start + 1} on (there are {self.total})")
        return text + (f"; {self.more} more (ほか{self.more}件)." if self.more > 0 else ".")

    def as_dict(self) -> dict[str, Any]:
        return {"query": self.description, "answer": self.answer, "found": self.found,
                "candidates": [c.as_dict() for c in self.candidates], "candidates_total": self.total,
                "start": self.start, "more": self.more, "shown": self.shown,
                "erased": [t.as_dict() for t in self.erased], "erased_total": self.erased_count,
                "erased_more": self.erased_more, "erased_shown": self.erased_shown, "others_in_window": self.others,
                "notes": list(self.notes)}


class _Mark(NamedTuple):
    """One fact of the form checked against a row: points earned of the weight, in words (empty
    while only scoring: the words are written for the candidates shown)."""

    earned: float
    weight: float
    reason: str


def statement(query: CallQuery, columns: Sequence[str] = RANKED, *, prune: bool = True,
              erased: bool = True) -> Statement:
    """The rows worth scoring, their `columns`.  With a time, the window on `recorded_at` (an
    index range), less the kept rows a number, extension or direction of the form rules out
    (`prune`: they are `excluded`'s count); the rest is judged in Python.  Without one, the rows
    whose number ends as the one asked (or is its end): a scan, but one that a dialling prefix or
    a missing area code cannot fool.  An announcer's leg is never a call of its own: it is found
    through its conversation.  Without `erased`, the kept rows only (a page reads the erased
    ones apart: `erased_page`)."""
    clauses, params = _where(query)
    if not erased:
        clauses.append("erased_at IS NULL")
    kept = _kept(query) if prune and query.timed else None
    if kept is not None:
        clauses.append(f"(erased_at IS NOT NULL OR ({kept.sql}) IS NOT FALSE)")
        params += kept.params
    where = f" WHERE {' AND '.join(clauses)}"
    return Statement(f"SELECT {', '.join(columns)} FROM calls{where} ORDER BY recorded_at, id", tuple(params))


def excluded(query: CallQuery) -> Statement | None:
    """The count of the window's kept rows that `statement` leaves out (its `prune`): each is a
    row `rank` would count among the others.  None: it leaves none out."""
    kept = _kept(query) if query.timed else None
    if kept is None:
        return None
    clauses, params = _where(query)
    clauses += ["erased_at IS NULL", f"({kept.sql}) IS FALSE"]
    return Statement(f"SELECT count(*) FROM calls WHERE {' AND '.join(clauses)}", (*params, *kept.params))


class Nearest(NamedTuple):
    """What a page of a `time_only` form reads, in three statements (four with a form's time)."""

    page: Statement
    """The page's kept calls, the best first.  With a form's time: the calls at or after it, the
    nearest first, as many as the page and those before it (`before` holds the other side)."""
    count: Statement
    """How many kept calls the window holds: every one is a candidate."""
    erased: Statement
    """The page's share of the window's erased recordings (`erased_page`)."""
    erased_count: Statement
    """How many erased recordings the window holds."""
    before: Statement | None = None
    """With a form's time: the kept calls before it, the nearest first, as many as `page` reads."""

    def merge(self, query: CallQuery, page: Iterable[Facts], before: Iterable[Facts], start: int,
              limit: int) -> list[Facts]:
        """The page from the calls read on each side of the form's time: by distance, then the
        earlier, then the id, as `rank` orders them.  Each side is read in that order already (a
        distance grows with the time after the form's time and shrinks before it: the epochs
        are of one magnitude, so `recorded_at - around` is exact and never ties two times), and
        calls of one time are all on one side, so a stable sort keeps the order the database
        read them in among equals (the centre's site)."""
        if self.before is None or query.around is None:
            return list(page)
        around = query.around
        both = sorted([*page, *before], key=lambda f: (abs((f.recorded_at or 0.0) - around), f.recorded_at, f.id))
        return both[start:start + limit]


def time_only(query: CallQuery) -> bool:
    """A form with a time and nothing else to check.  Then no call of the window is ruled out,
    and a score depends on the time alone (`_time_mark`: it falls with the distance from the
    form's time; with a period and no time, every score is 100), so the best candidates are the
    nearest calls, then the earlier, then the lower id: the order `rank` sorts them in.  The
    database can pick a page of them, and the window need not be read."""
    return (query.timed and query.remote is None and query.local is None and query.staff is None
            and query.direction is None and query.duration_seconds is None)


def nearest(query: CallQuery, start: int, limit: int, columns: Sequence[str] = RANKED,
            ties: Sequence[str] = ("recorded_at", "id")) -> Nearest:
    """The statements of a `time_only` form's page (`start`, `limit`).  `ties` orders calls at
    the same distance as `rank` does (earlier, then the id by code point; the centre adds the
    site, in the order it reads equal rows).  With a form's time the page is read from both
    sides of it, each an index walk of `start + limit` calls from the form's time on (the
    nearest `start + limit` are among them), where ordering the window by distance would sort
    every call in it; `Nearest.merge` puts the two together."""
    clauses, params = _where(query)
    where = " AND ".join(clauses)
    kept = f"SELECT {', '.join(columns)} FROM calls WHERE {where} AND erased_at IS NULL"
    count = Statement(f"SELECT count(*) FROM calls WHERE {where} AND erased_at IS NULL", tuple(params))
    erased = erased_page(query, start, limit, columns)
    if query.around is None:
        return Nearest(page=Statement(f"{kept} ORDER BY {', '.join(ties)} LIMIT ? OFFSET ?",
                                      (*params, limit, start)), count=count, erased=erased.page,
                       erased_count=erased.total)
    first, *rest = ties
    side = (*params, query.around, start + limit)
    return Nearest(page=Statement(f"{kept} AND {first} >= ? ORDER BY {', '.join(ties)} LIMIT ?", side),
                   count=count, erased=erased.page, erased_count=erased.total,
                   before=Statement(f"{kept} AND {first} < ? ORDER BY {', '.join((f'{first} DESC', *rest))} LIMIT ?",
                                    side))


class Erased(NamedTuple):
    """A page's share of a window's erased recordings, and how many the window holds."""

    page: Statement
    total: Statement


def erased_page(query: CallQuery, start: int, limit: int, columns: Sequence[str] = RANKED) -> Erased:
    """The window's erased recordings from `start`, `limit` of them, in the order `statement`
    reads them (recorded, then id), and their count: an answer lists them page by page, as it
    shows its candidates, where listing them all would decode every one (the erased years of
    ten sites: hundreds a half hour, thousands a day).  They keep no numbers, so nothing of the
    form but its time selects them."""
    clauses, params = _where(query)
    where = f"{' AND '.join(clauses)} AND erased_at IS NOT NULL"
    return Erased(page=Statement(f"SELECT {', '.join(columns)} FROM calls WHERE {where} ORDER BY recorded_at, id "
                                 "LIMIT ? OFFSET ?", (*params, limit, start)),
                  total=Statement(f"SELECT count(*) FROM calls WHERE {where}", tuple(params)))


def _kept(query: CallQuery) -> Statement | None:
    """The form's number, extension and direction as one SQL condition, from the same rules and
    constants as `_marks`: each part is FALSE only for a row whose check there returns None (it
    rules the row out), TRUE or NULL where the check may pass, and there Python decides.  A
    number "matches" when the stored one is missing, the same, one of the asked number's ends of
    at least `digits` digits, or ends with it (the asked one having that many): a superset of
    `_number_match`'s SAME, PARTIAL and UNKNOWN (it does not check that the longer is all
    digits, and SQLite's LIKE ignores case), never less."""
    parts: list[str] = []
    params: list[Any] = []
    for column, wanted, digits in (("remote_number", query.remote, OUTSIDE_DIGITS),
                                   ("local_number", query.local, CITY_DIGITS)):
        if wanted is None:
            continue
        match, values = _number_kept(column, wanted, digits)
        if column == "local_number":  # the city-side number asked may be the extension (`_marks`)
            match, values = f"(extension IS NOT NULL AND extension = ?) OR {match}", [wanted, *values]
        parts.append(f"({match})")
        params += values
    if query.staff is not None:
        parts.append("(extension IS NULL OR extension = ?)")
        params.append(query.staff)
    if query.direction is not None:
        parts.append("direction IN (?, ?)")
        params += [query.direction, Direction.UNKNOWN.value]
    return Statement(" AND ".join(parts), tuple(params)) if parts else None


def _number_kept(column: str, wanted: str, digits: int) -> tuple[str, list[Any]]:
    """`_number_match` not OTHER, as SQL (see `_kept`)."""
    ends = [wanted] + ([wanted[-n:] for n in range(digits, len(wanted))] if wanted.isdigit() else [])
    match = f"{column} IS NULL OR {column} = '' OR {column} IN ({', '.join('?' * len(ends))})"
    if wanted.isdigit() and len(wanted) >= digits:
        return f"{match} OR {column} LIKE ?", [*ends, f"%{wanted}"]
    return match, ends


def _where(query: CallQuery) -> tuple[list[str], list[Any]]:
    """The window, or without one the number asked; never an announcer's leg."""
    clauses: list[str] = []
    params: list[Any] = []
    low, high = query.period
    if low is not None:
        clauses.append("recorded_at >= ?")
        params.append(low)
    if high is not None:
        clauses.append("recorded_at <= ?")
        params.append(high)
    if not query.timed:
        for column, wanted in (("remote_number", query.remote), ("local_number", query.local),
                               ("extension", query.staff)):
            if wanted is None:
                continue
            if column == "extension":
                clauses.append("extension = ?")
                params.append(wanted)
            elif wanted.isdigit():
                extra = " OR extension = ?" if column == "local_number" else ""
                clauses.append(f"({column} LIKE ? OR ? LIKE ('%' || {column}){extra})")
                params += [f"%{wanted}", wanted] + ([wanted] if extra else [])
            else:
                clauses.append(f"{column} = ?")
                params.append(wanted)
            break
    clauses.append("leg IS NULL")
    return clauses, params


Whole = Callable[[Sequence[Any]], Sequence[CallRow]]
"""The whole rows of the candidates shown, from the rows ranked (in their order)."""


def rank(query: CallQuery, rows: Iterable[Ranked], *, tz: tzinfo, now: float, excluded: int = 0,
         limit: int | None = None, start: int = 0, whole: Whole = list) -> SearchResult:
    """Candidates closest first (`limit` of them from `start`; all by default), the erased
    recordings of the window, and the answer in words.  `rows` are whole rows, or their `Facts`
    with `whole` to read the shown ones whole; `excluded` counts the others `statement` pruned.
    A row is scored without words; the reasons are written for the candidates shown."""
    if limit is not None and limit < 0 or start < 0:
        raise QueryError("a page of candidates starts at 0 or later and holds 0 or more")
    scored: list[tuple[tuple[int, float, float, str], Ranked, int, float | None]] = []
    erased: list[Tombstone] = []
    others = excluded
    for row in rows:
        if row.erased_at:
            if query.timed and row.recorded_at is not None:
                erased.append(_tombstone(row, tz))
            continue
        marks = _marks(query, row, tz, now, words=False)
        if marks is None:
            others += 1
            continue
        score = _score(marks)
        offset = row.recorded_at - query.around if query.around is not None and row.recorded_at is not None else None
        scored.append(((-score, abs(offset or 0.0), row.recorded_at or 0.0, row.id), row, score, offset))
    first = _order(scored, None if limit is None else start + limit)[start:]
    candidates = [Candidate(row=full, score=score, reasons=tuple(m.reason for m in _marks(query, row, tz, now) or ()),
                            offset=offset)
                  for (_, row, score, offset), full in zip(first, whole([s[1] for s in first]), strict=True)]
    return SearchResult(query=query, description=query.describe(tz), candidates=tuple(candidates),
                        erased=tuple(erased), others=others, answer=_answer(query, len(scored), len(erased), others),
                        notes=_notes(query, len(erased)), total=len(scored), start=start)


def rank_page(query: CallQuery, page: Iterable[Ranked], erased: Iterable[Ranked], *, total: int, start: int,
              tz: tzinfo, now: float, whole: Whole = list, erased_total: int | None = None) -> SearchResult:
    """`rank` of a `time_only` form from its page alone (`nearest`): the page's calls are the
    candidates from `start`, `total` of them in all, with the window's erased recordings (the
    page's share of them with `erased_total`, `with_erased`)."""
    result = replace(rank(query, page, tz=tz, now=now, whole=whole), total=total, start=start, others=0)
    return with_erased(result, erased, erased_total, tz=tz)


def with_erased(result: SearchResult, erased: Iterable[Ranked], total: int | None, *, tz: tzinfo) -> SearchResult:
    """`result` (of the kept rows) with the window's erased recordings: `erased` are all of them,
    or with `total` the page's share of `total` (`erased_page`); the answer counts them all."""
    query = result.query
    tombstones = tuple(_tombstone(row, tz) for row in erased
                       if row.erased_at and query.timed and row.recorded_at is not None)
    count = len(tombstones) if total is None else total
    return replace(result, erased=tombstones, erased_total=total,
                   answer=_answer(query, result.total, count, result.others), notes=_notes(query, count))


def _order(scored: list[Any], best: int | None) -> list[Any]:
    """The `best` first by their sort key (all when None), ties in the order read: `nsmallest`
    is `sorted(...)[:best]` without sorting the rest."""
    if best is None or best >= len(scored):
        return sorted(scored, key=_key)
    return heapq.nsmallest(best, scored, key=_key)


def _key(item: tuple[Any, ...]) -> Any:
    return item[0]


def needs_criteria(query: CallQuery) -> None:
    """A time or a number: the duration or the direction alone would match every day's calls."""
    if not query.timed and query.remote is None and query.local is None and query.staff is None:
        raise QueryError("a search needs a time or a number: the duration or the direction alone "
                         "would match recordings of every day")


def find(index: CallIndex, query: CallQuery, *, tz: tzinfo, now: float | None = None, limit: int | None = None,
         start: int = 0) -> SearchResult:
    """Search the index file for the call a form describes: the best `limit` candidates from
    `start` (all by default), read whole, and as many of the window's erased recordings from
    `start` (`erased_page`); the rest only counted.  One read transaction: the rows
    read whole are the rows ranked, whatever the recorder writes meanwhile."""
    needs_criteria(query)
    with closing(connect(index.path)) as db:
        db.row_factory = None
        db.execute("BEGIN")
        at = time.time() if now is None else now
        if limit is not None and time_only(query):
            page = nearest(query, start, limit)
            after = [Facts._make((*r, "")) for r in db.execute(*_args(page.page))]
            before = [Facts._make((*r, "")) for r in db.execute(*_args(page.before))] if page.before else []
            return rank_page(query, page.merge(query, after, before, start, limit),
                             [Facts._make((*r, "")) for r in db.execute(*_args(page.erased))],
                             total=db.execute(*_args(page.count)).fetchone()[0], start=start, tz=tz, now=at,
                             whole=lambda shown: _whole(db, shown),
                             erased_total=db.execute(*_args(page.erased_count)).fetchone()[0])
        paged = limit is not None and query.timed
        facts = [Facts._make((*r, "")) for r in db.execute(*_args(statement(query, erased=not paged)))]
        pruned = excluded(query)
        count = db.execute(*_args(pruned)).fetchone()[0] if pruned is not None else 0
        result = rank(query, facts, tz=tz, now=at, excluded=count, limit=limit, start=start,
                      whole=lambda shown: _whole(db, shown))
        if not paged or limit is None:
            return result
        gone = erased_page(query, start, limit)
        return with_erased(result, [Facts._make((*r, "")) for r in db.execute(*_args(gone.page))],
                           db.execute(*_args(gone.total)).fetchone()[0], tz=tz)


def select(index: CallIndex, query: CallQuery, *, erased: bool = False) -> list[CallRow]:
    """Rows that meet the query's period, numbers and direction exactly (no ranking, no
    unconfirmed rows), in the order recorded: the plain filters of a listing."""
    return [row for row in _rows(index, statement(query, ("*",), prune=False))
            if (erased or not row.erased_at) and _meets(query, row)]


def _args(query: Statement) -> tuple[str, tuple[Any, ...]]:
    return query.sql, query.params


def _rows(index: CallIndex, query: Statement) -> list[CallRow]:
    """Run on a connection of its own, as every reader of the shared file does; rows decoded by
    the index's own decoder, so JSON and flag columns read the same as everywhere else."""
    with closing(connect(index.path)) as db:
        return [call_row(r) for r in db.execute(query.sql, query.params)]


def _whole(db: sqlite3.Connection, shown: Sequence[Facts]) -> list[CallRow]:
    """The shown candidates' whole rows, in their order, on the connection that ranked them."""
    cur = db.cursor()
    cur.row_factory = sqlite3.Row
    rows: dict[str, CallRow] = {}
    ids = [f.id for f in shown]
    for at in range(0, len(ids), FETCH_CHUNK):
        chunk = ids[at:at + FETCH_CHUNK]
        rows.update((r["id"], call_row(r)) for r in cur.execute(
            f"SELECT * FROM calls WHERE id IN ({', '.join('?' * len(chunk))})", chunk))
    return [rows[i] for i in ids]


def _meets(query: CallQuery, row: CallRow) -> bool:
    """The city-side number asked may be the call's DID or its extension."""
    if query.remote is not None and not _matches(query.remote, row.remote_number, OUTSIDE_DIGITS):
        return False
    if (query.local is not None and row.extension != query.local
            and not _matches(query.local, row.local_number, CITY_DIGITS)):
        return False
    if query.staff is not None and row.extension != query.staff:
        return False
    return query.direction is None or row.direction == query.direction


def _matches(wanted: str, stored: str | None, digits: int) -> bool:
    return _number_match(wanted, stored, digits) in (NumberMatch.SAME, NumberMatch.PARTIAL)


def _number_match(wanted: str, stored: str | None, digits: int) -> NumberMatch:
    if not stored:
        return NumberMatch.UNKNOWN
    if stored == wanted:
        return NumberMatch.SAME
    return NumberMatch.PARTIAL if _shared_tail(wanted, stored) >= digits else NumberMatch.OTHER


def _shared_tail(a: str, b: str) -> int:
    """How many digits the shorter number has when it is the end of the longer one, else 0."""
    shorter, longer = sorted((a, b), key=len)
    if shorter.isdigit() and longer.isdigit() and longer.endswith(shorter):
        return len(shorter)
    return 0


def _marks(query: CallQuery, row: Ranked, tz: tzinfo, now: float, *, words: bool = True) -> list[_Mark] | None:
    """Each fact of the form checked against the row; None when one rules it out.  Without
    `words` the time and length marks are only scored (their words are dates and clocks)."""
    checks: list[_Mark | None] = []
    if query.remote is not None:
        checks.append(_number_mark("outside", query.remote, row.remote_number, OUTSIDE_DIGITS, row.caller_withheld))
    if query.local is not None:
        checks.append(_number_mark("city", query.local, row.local_number, CITY_DIGITS, False)
                      if row.extension != query.local else _Mark(WEIGHTS["city"], WEIGHTS["city"],
                                                                  "city-side number matches the extension"))
    if query.staff is not None:
        checks.append(_extension_mark(query.staff, row.extension))
    if query.direction is not None:
        checks.append(_direction_mark(query.direction, row.direction))
    confirmed = [check for check in checks if check is not None]
    if len(confirmed) < len(checks):
        return None
    marks = []
    if query.timed and row.recorded_at is not None:
        marks.append(_time_mark(query, row.recorded_at, tz, words))
    if row.state == "recording":
        marks.append(_Mark(0.0, 0.0, "in progress: still being recorded"))
    if query.duration_seconds is not None:
        marks.append(_duration_mark(query, row, now, words))
    return marks + confirmed


def _number_mark(side: str, wanted: str, stored: str | None, digits: int, withheld: bool) -> _Mark | None:
    """None: another number."""
    label = "outside number" if side == "outside" else "city-side number"
    weight = WEIGHTS[side]
    match = _number_match(wanted, stored, digits)
    note = " (the caller withheld it: 非通知)" if withheld else ""
    if match is NumberMatch.SAME:
        return _Mark(weight, weight, f"{label} matches{note}")
    if match is NumberMatch.PARTIAL:
        return _Mark(weight * PARTIAL_SHARE, weight,
                     f"{label} {stored} matches {wanted} in its last {_shared_tail(wanted, stored or '')} digits")
    if match is NumberMatch.UNKNOWN:
        why = "withheld (非通知)" if withheld else "not recorded"
        return _Mark(weight * UNKNOWN_SHARE, weight, f"{label} {why}: cannot be checked")
    return None


def _extension_mark(wanted: str, actual: str | None) -> _Mark | None:
    """None: another extension.  A row without one (a single leg with only the DID) cannot be
    checked, and stays a candidate that says so."""
    weight = WEIGHTS["city"]
    if actual == wanted:
        return _Mark(weight, weight, f"extension {actual} as asked")
    if actual is None:
        return _Mark(weight * UNKNOWN_SHARE, weight, "extension not recorded: cannot be checked")
    return None


def shown_remote(row: CallRow) -> str:
    """The outside party as a list shows it: a withheld caller is 非通知, and a number the
    policy keeps for such a caller is only said to be kept (an approved request discloses it)."""
    if row.remote_number:
        return row.remote_number
    if row.withheld_number:
        return "非通知 (withheld; number kept, masked)"
    if row.caller_withheld and row.direction != Direction.OUTBOUND:
        return "非通知 (withheld)"
    return "-"


def _direction_mark(wanted: str, actual: str) -> _Mark | None:
    """None: the other way."""
    weight = WEIGHTS["direction"]
    if actual == wanted:
        return _Mark(weight, weight, f"{actual} as asked")
    if actual == Direction.UNKNOWN:
        return _Mark(weight / 2, weight, "direction not known: cannot be checked")
    return None


def _time_mark(query: CallQuery, at: float, tz: tzinfo, words: bool) -> _Mark:
    if query.around is None:
        return _Mark(0.0, 0.0, f"time {_clock(at, tz, True)}, {_period_words(query.start, query.end, tz)}"
                     if words else "")
    offset = at - query.around
    weight = WEIGHTS["time"]
    earned = weight * max(0.0, 1 - abs(offset) / query.window_seconds)
    if not words:
        return _Mark(earned, weight, "")
    same_day = _day(at, tz) == _day(query.around, tz)
    when = _clock(at, tz, not same_day)
    asked = _clock(query.around, tz, not same_day)
    if abs(offset) < 60:
        said = f"within a minute of {asked}"
    else:
        said = f"{round(abs(offset) / 60)} min {'after' if offset > 0 else 'before'} {asked}"
    return _Mark(earned, weight, f"time {when}, {said}")


def _duration_mark(query: CallQuery, row: Ranked, now: float, words: bool) -> _Mark:
    """Closeness falls linearly to nothing at twice the tolerance: a length far off the one
    remembered lowers a call but does not hide it (people misjudge how long a hard call was)."""
    weight = WEIGHTS["duration"]
    wanted = query.duration_seconds or 0.0
    if row.state == "recording":
        so_far = max(0.0, now - (row.recorded_at or now))
        return _Mark(weight / 2, weight, f"duration {_span(so_far)} so far, about {_span(wanted)} asked" if words else "")
    if row.duration is None:
        return _Mark(weight / 2, weight, "duration not known: cannot be checked")
    gap = abs(row.duration - wanted)
    closeness = max(0.0, 1 - gap / (2 * query.tolerance)) if query.tolerance else float(gap == 0)
    if not words:
        return _Mark(weight * closeness, weight, "")
    verdict = " for" if gap <= query.tolerance else ", not"
    return _Mark(weight * closeness, weight, f"duration {_span(row.duration)}{verdict} about {_span(wanted)}")


def _score(marks: list[_Mark]) -> int:
    possible = sum(m.weight for m in marks)
    return round(100 * sum(m.earned for m in marks) / possible) if possible else 100


def _tombstone(row: Ranked, tz: tzinfo) -> Tombstone:
    assert row.erased_at is not None and row.recorded_at is not None
    length = f", {_span(row.duration)}" if row.duration is not None else ""
    why = ERASURE_WORDS.get(row.erased_reason or "", row.erased_reason or "no reason recorded")
    sentence = (f"a recording in that window (time {_clock(row.recorded_at, tz, True)}{length}) was erased on "
                f"{row.erased_at[:10]} ({why})")
    return Tombstone(id=row.id, recorded_at=row.recorded_at, duration=row.duration, erased_at=row.erased_at,
                     erased_reason=row.erased_reason, sentence=sentence)


def _answer(query: CallQuery, candidates: int, erased: int, others: int) -> str:
    """The plain sentence a 様式2 answer (data exists: yes / no) is written from (`erased`: how
    many recordings of the window were erased)."""
    gone = f"{_count(erased, 'recording')} made in that window {'was' if erased == 1 else 'were'} erased"
    if candidates:
        text = f"{_count(candidates, 'recording')} may be this call, the closest first."
        return text + (f" {gone[0].upper()}{gone[1:]}." if erased else "")
    if erased:
        return (f"No kept recording matches. {gone}, and keep no numbers: whether one of them was this call "
                "cannot be told.")
    never = " (Unanswered calls and calls of lines the policy excludes are never recorded.)"
    if not query.timed:
        return "No such recording: no kept recording has that number." + never
    text = "No such recording: nothing recorded in that window matches, and nothing in it was erased."
    if others:
        verb = "is" if others == 1 else "are"
        text += f" {_count(others, 'other recording')} in it {verb} of other numbers or directions."
    return text + never


def _notes(query: CallQuery, erased: int) -> tuple[str, ...]:
    if not query.timed:
        return (UNTIMED_NOTE,)
    return (ERASED_NOTE,) if erased else ()


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _span(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour."""
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


def _amount(seconds: float) -> str:
    """A window or a tolerance in words: 30 min, 90 s, 2 h."""
    whole = round(seconds)
    if whole and whole % 3600 == 0:
        return f"{whole // 3600} h"
    if whole and whole % 60 == 0:
        return f"{whole // 60} min"
    return f"{whole} s"


def _day(ts: float, tz: tzinfo) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d")


def _clock(ts: float, tz: tzinfo, with_date: bool) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M" if with_date else "%H:%M")


def _period_words(start: float | None, end: float | None, tz: tzinfo) -> str:
    if start is not None and end is not None:
        return f"within {_clock(start, tz, True)} – {_clock(end, tz, True)}"
    if start is not None:
        return f"from {_clock(start, tz, True)} on"
    if end is not None:
        return f"until {_clock(end, tz, True)}"
    return "at any time"


# ---- what people write on forms ----------------------------------------------------
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_SPAN = re.compile(r"(?:(\d+(?:\.\d+)?)([dhms]))+")
_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_CLOCK = re.compile(r"(?:(\d+):)?(\d+):(\d{2})")


def parse_span(text: str) -> float:
    """A length as people write it: 3 (minutes, as forms count: 約3分), 3m, 90s, 1h30m, 2:55."""
    value = text.strip().lower()
    try:
        if re.fullmatch(r"\d+(?:\.\d+)?", value):
            seconds = float(value) * 60
        elif clock := _CLOCK.fullmatch(value):
            hours, minutes, secs = clock.groups()
            seconds = int(hours or 0) * 3600 + int(minutes) * 60 + int(secs)
        elif _SPAN.fullmatch(value):
            seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value))
        else:
            raise ValueError(value)
    except ValueError:
        raise QueryError(f"{text!r} is not a length: write 3 or 3m (minutes), 2:55, 90s or 1h30m") from None
    if seconds <= 0:
        raise QueryError(f"{text!r}: a length must be longer than zero")
    return seconds


def parse_time(text: str, tz: ZoneInfo, flag: str) -> float:
    """A date and time as a form gives it (2026-11-20 10:30, 2026/11/20 10:30, or ISO 8601 with
    an offset); without an offset it is the policy's local time."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("/", "-"))
    except ValueError:
        raise QueryError(f"{flag} {text!r} is not a date and time: write e.g. \"2026-11-20 10:30\" "
                         "(the policy's time zone) or 2026-11-20T10:30+09:00") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=tz)).timestamp()
