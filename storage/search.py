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
"""
from __future__ import annotations

import enum
import re
import time
import unicodedata
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from policy.decide import Direction, normalise_number

from .errors import StorageError
from .index import MASKED, CallIndex, CallRow, call_row, connect

__all__ = ["CallQuery", "Candidate", "DEFAULT_WINDOW_SECONDS", "QueryError", "SearchResult", "Statement", "Tombstone", "find", "normalise", "parse_span", "parse_time", "rank", "select", "shown_remote", "statement"]

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

    @property
    def remote(self) -> str | None:
        return normalise(self.remote_number, self.country_code)

    @property
    def local(self) -> str | None:
        return normalise(self.local_number, self.country_code)

    @property
    def staff(self) -> str | None:
        """The extension asked for, digits as written (an extension has no other form)."""
        return normalise(self.extension, self.country_code)

    @property
    def period(self) -> tuple[float | None, float | None]:
        """The recording times (epoch) searched, either end open."""
        if self.around is not None:
            return self.around - self.window_seconds, self.around + self.window_seconds
        return self.start, self.end

    @property
    def timed(self) -> bool:
        return self.period != (None, None)

    @property
    def tolerance(self) -> float:
        if self.duration_tolerance is not None:
            return self.duration_tolerance
        return max(MIN_TOLERANCE_SECONDS, TOLERANCE_SHARE * (self.duration_seconds or 0.0))

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
    erased: tuple[Tombstone, ...]
    others: int
    """Kept recordings in the window whose numbers or direction rule them out."""
    answer: str
    notes: tuple[str, ...]

    @property
    def found(self) -> bool:
        return bool(self.candidates)

    def as_dict(self) -> dict[str, Any]:
        return {"query": self.description, "answer": self.answer, "found": self.found,
                "candidates": [c.as_dict() for c in self.candidates],
                "erased": [t.as_dict() for t in self.erased], "others_in_window": self.others,
                "notes": list(self.notes)}


@dataclass(frozen=True, slots=True)
class _Mark:
    """One fact of the form checked against a row: points earned of the weight, in words."""

    earned: float
    weight: float
    reason: str


def statement(query: CallQuery) -> Statement:
    """The rows worth scoring.  With a time, the window on `recorded_at` alone (an index range;
    the rest is judged in Python).  Without one, the rows whose number ends as the one asked
    (or is its end): a scan, but one that a dialling prefix or a missing area code cannot fool.
    An announcer's leg is never a call of its own: it is found through its conversation."""
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
    where = f" WHERE {' AND '.join(clauses)}"
    return Statement(f"SELECT * FROM calls{where} ORDER BY recorded_at, id", tuple(params))


def rank(query: CallQuery, rows: Iterable[CallRow], *, tz: tzinfo, now: float) -> SearchResult:
    """Candidates closest first, the erased recordings of the window, and the answer in words."""
    candidates: list[Candidate] = []
    erased: list[Tombstone] = []
    others = 0
    for row in rows:
        if row.erased_at:
            if query.timed and row.recorded_at is not None:
                erased.append(_tombstone(row, tz))
            continue
        marks = _marks(query, row, tz, now)
        if marks is None:
            others += 1
            continue
        candidates.append(_candidate(query, row, marks))
    candidates.sort(key=lambda c: (-c.score, abs(c.offset or 0.0), c.row.recorded_at or 0.0, c.row.id))
    return SearchResult(query=query, description=query.describe(tz), candidates=tuple(candidates),
                        erased=tuple(erased), others=others, answer=_answer(query, candidates, erased, others),
                        notes=_notes(query, erased))


def find(index: CallIndex, query: CallQuery, *, tz: tzinfo, now: float | None = None) -> SearchResult:
    """Search the index file for the call a form describes."""
    if not query.timed and query.remote is None and query.local is None and query.staff is None:
        raise QueryError("a search needs a time or a number: the duration or the direction alone "
                         "would match recordings of every day")
    return rank(query, _rows(index, statement(query)), tz=tz, now=time.time() if now is None else now)


def select(index: CallIndex, query: CallQuery, *, erased: bool = False) -> list[CallRow]:
    """Rows that meet the query's period, numbers and direction exactly (no ranking, no
    unconfirmed rows), in the order recorded: the plain filters of a listing."""
    return [row for row in _rows(index, statement(query))
            if (erased or not row.erased_at) and _meets(query, row)]


def _rows(index: CallIndex, query: Statement) -> list[CallRow]:
    """Run on a connection of its own, as every reader of the shared file does; rows decoded by
    the index's own decoder, so JSON and flag columns read the same as everywhere else."""
    with closing(connect(index.path)) as db:
        return [call_row(r) for r in db.execute(query.sql, query.params)]


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


def _marks(query: CallQuery, row: CallRow, tz: tzinfo, now: float) -> list[_Mark] | None:
    """Each fact of the form checked against the row; None when one rules it out."""
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
        marks.append(_time_mark(query, row.recorded_at, tz))
    if row.state == "recording":
        marks.append(_Mark(0.0, 0.0, "in progress: still being recorded"))
    if query.duration_seconds is not None:
        marks.append(_duration_mark(query, row, now))
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


def _time_mark(query: CallQuery, at: float, tz: tzinfo) -> _Mark:
    if query.around is None:
        return _Mark(0.0, 0.0, f"time {_clock(at, tz, True)}, {_period_words(query.start, query.end, tz)}")
    offset = at - query.around
    weight = WEIGHTS["time"]
    same_day = _day(at, tz) == _day(query.around, tz)
    when = _clock(at, tz, not same_day)
    asked = _clock(query.around, tz, not same_day)
    if abs(offset) < 60:
        words = f"within a minute of {asked}"
    else:
        words = f"{round(abs(offset) / 60)} min {'after' if offset > 0 else 'before'} {asked}"
    return _Mark(weight * max(0.0, 1 - abs(offset) / query.window_seconds), weight, f"time {when}, {words}")


def _duration_mark(query: CallQuery, row: CallRow, now: float) -> _Mark:
    """Closeness falls linearly to nothing at twice the tolerance: a length far off the one
    remembered lowers a call but does not hide it (people misjudge how long a hard call was)."""
    weight = WEIGHTS["duration"]
    wanted = query.duration_seconds or 0.0
    if row.state == "recording":
        so_far = max(0.0, now - (row.recorded_at or now))
        return _Mark(weight / 2, weight, f"duration {_span(so_far)} so far, about {_span(wanted)} asked")
    if row.duration is None:
        return _Mark(weight / 2, weight, "duration not known: cannot be checked")
    gap = abs(row.duration - wanted)
    closeness = max(0.0, 1 - gap / (2 * query.tolerance)) if query.tolerance else float(gap == 0)
    verdict = " for" if gap <= query.tolerance else ", not"
    return _Mark(weight * closeness, weight, f"duration {_span(row.duration)}{verdict} about {_span(wanted)}")


def _candidate(query: CallQuery, row: CallRow, marks: list[_Mark]) -> Candidate:
    possible = sum(m.weight for m in marks)
    score = round(100 * sum(m.earned for m in marks) / possible) if possible else 100
    offset = row.recorded_at - query.around if query.around is not None and row.recorded_at is not None else None
    return Candidate(row=row, score=score, reasons=tuple(m.reason for m in marks), offset=offset)


def _tombstone(row: CallRow, tz: tzinfo) -> Tombstone:
    assert row.erased_at is not None and row.recorded_at is not None
    length = f", {_span(row.duration)}" if row.duration is not None else ""
    why = ERASURE_WORDS.get(row.erased_reason or "", row.erased_reason or "no reason recorded")
    sentence = (f"a recording in that window (time {_clock(row.recorded_at, tz, True)}{length}) was erased on "
                f"{row.erased_at[:10]} ({why})")
    return Tombstone(id=row.id, recorded_at=row.recorded_at, duration=row.duration, erased_at=row.erased_at,
                     erased_reason=row.erased_reason, sentence=sentence)


def _answer(query: CallQuery, candidates: list[Candidate], erased: list[Tombstone], others: int) -> str:
    """The plain sentence a 様式2 answer (data exists: yes / no) is written from."""
    gone = f"{_count(len(erased), 'recording')} made in that window {'was' if len(erased) == 1 else 'were'} erased"
    if candidates:
        text = f"{_count(len(candidates), 'recording')} may be this call, the closest first."
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


def _notes(query: CallQuery, erased: list[Tombstone]) -> tuple[str, ...]:
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
