"""How long recordings are kept and who may listen: the policy's `retention`
and `listening` sections, and their meaning in plain words.

Each organisation's guideline states its rule differently (REQUIREMENTS §3):
a capacity ring (品川区 第6条, 山形市 第8条), N days (熊本市 第4条2), N calendar
months (松本市 第7条5), the end of the month after the month of recording
(さいたま 第4条6(1)), the end of a fiscal year (年度, April–March: さいたま 第4条6(2)
keeps output data to the end of the next one), and a minimum period the ring must
not cut short (羽島市).
The section is written for a section manager, so it reads like the rule:

    retention:
      keep: {days: 90}          # or {months: 3} | {until_end_of_month_after: 1}
                                # | {until_end_of_fiscal_year_after: 0} | until_overwritten
      minimum: {months: 3}      # optional: capacity never erases earlier
      if_minimum_at_risk: stop_recording   # or overwrite
      warn_days_before: 30
      capacity: 200 GiB         # optional: the device's capacity
      free_space_floor: 1 GiB
      archive:                  # optional: after `keep`, moved to a second medium (大阪市水道局)
        keep: {months: 6}       # counted from the day after the period on this device ends
        free_space_floor: 1 GiB # left free on the second medium
    listening:
      reason_required: true

Periods are counted as Japanese law counts them (民法 第140条, 第143条), on the
calendar of the policy's time zone: the day of recording is not counted, a
period of days ends at the end of its last day, and a period of months ends on
the day before the day of the last month that corresponds to the first counted
day, or on that month's last day when it has no such day.  A period counted
from the 1st therefore ends at the end of a month.  The calendar arithmetic
lives here, next to the rule it belongs to; mapping days to instants in a time
zone is the planner's job (storage/retention.py).
"""
from __future__ import annotations

import calendar
import re
from datetime import date, timedelta
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from .strict import Strict

__all__ = ["ONE_DAY", "Archive", "Listening", "Period", "Retention", "describe", "describe_keeping"]

if TYPE_CHECKING:
    from .schema import Policy

ONE_DAY = timedelta(days=1)

_KINDS = "{days: N}, {months: N}, {until_end_of_month_after: N} or {until_end_of_fiscal_year_after: N}"

_UNITS = {
    "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "PB": 10**15,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40, "PIB": 2**50,
}
_SPELLING = {"KIB": "KiB", "MIB": "MiB", "GIB": "GiB", "TIB": "TiB", "PIB": "PiB",
             "KB": "kB", "MB": "MB", "GB": "GB", "TB": "TB", "PB": "PB"}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]+)\s*$")
MIN_SIZE = 2**20
MAX_SIZE = 2**60


def parse_size(value: object) -> int:
    """Bytes from "200 GiB", "500 GB", "1.5 TiB" or a plain integer of bytes.

    GB/TB are decimal as disk vendors print them, GiB/TiB binary as `df -h`
    shows them; both are accepted because a section manager copies whichever
    the device's data sheet says.  Tiny values are refused because they are
    nearly always a forgotten unit.
    """
    if isinstance(value, bool):
        raise ValueError("give a size with a unit, e.g. '200 GiB'")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str):
        match = _SIZE.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a size; write a number and a unit, e.g. '200 GiB' or '500 GB'")
        number, unit = match.groups()
        factor = _UNITS.get(unit.upper())
        if factor is None:
            raise ValueError(f"unknown unit {unit!r} in {value!r}; use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB")
        whole, _, fraction = number.partition(".")
        size = int(whole) * factor + (int(fraction or 0) * factor) // 10 ** len(fraction)
    else:
        raise ValueError("give a size with a unit, e.g. '200 GiB'")
    if size < MIN_SIZE:
        raise ValueError(f"{value!r} is less than 1 MiB; did you forget the unit (e.g. '200 GiB')?")
    if size > MAX_SIZE:
        raise ValueError(f"{value!r} is larger than any storage device")
    return size


def format_size(size: int) -> str:
    """The largest unit that shows `size` exactly with at most two decimals."""
    for unit in ("PIB", "PB", "TIB", "TB", "GIB", "GB", "MIB", "MB", "KIB", "KB"):
        factor = _UNITS[unit]
        if size >= factor and (size * 100) % factor == 0:
            text = f"{size / factor:.2f}".rstrip("0").rstrip(".")
            return f"{text} {_SPELLING[unit]}"
    return f"{size} B"


ByteSize = Annotated[int, BeforeValidator(parse_size)]


def _add_months(year: int, month: int, months: int) -> tuple[int, int]:
    index = year * 12 + (month - 1) + months
    return index // 12, index % 12 + 1


def _month_end(year: int, month: int) -> date:
    return date(year, month, calendar.monthrange(year, month)[1])


FISCAL_YEAR_FIRST_MONTH = 4
"""Japanese public bodies count 年度 from 1 April to 31 March (地方自治法 第208条)."""


def _fiscal_year(day: date) -> int:
    """The 年度 a day belongs to, named by the calendar year it starts in."""
    return day.year if day.month >= FISCAL_YEAR_FIRST_MONTH else day.year - 1


def _fiscal_year_end(fiscal_year: int) -> date:
    return date(fiscal_year + 1, FISCAL_YEAR_FIRST_MONTH, 1) - ONE_DAY


class Period(Strict):
    """One way of stating a period; exactly one key is given."""

    days: Annotated[int, Field(ge=1, le=36600)] | None = None
    months: Annotated[int, Field(ge=1, le=1200)] | None = None
    until_end_of_month_after: Annotated[int, Field(ge=0, le=1200)] | None = None
    until_end_of_fiscal_year_after: Annotated[int, Field(ge=0, le=100)] | None = None
    """0: to 31 March of the 年度 of recording; 1: of the next one (さいたま 第4条6(2))."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Period:
        given = [v for v in (self.days, self.months, self.until_end_of_month_after,
                             self.until_end_of_fiscal_year_after) if v is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {_KINDS}")
        return self

    def last_day(self, recorded_on: date) -> date:
        """The last calendar day a recording made on `recorded_on` is kept.

        Days and months start on the day after the recording (民法 第140条
        初日不算入).  Months follow the calendar (第143条): the period ends the
        day before the corresponding day of the last month, or on that month's
        last day when it has none: one month for a recording of 30 Jan counts
        from 31 Jan and ends on February's last day; for one of 31 Jan it counts
        from 1 Feb and ends on February's last day too, at the end of a month.
        """
        if self.days is not None:
            return recorded_on + timedelta(days=self.days)
        if self.months is not None:
            start = recorded_on + ONE_DAY
            year, month = _add_months(start.year, start.month, self.months)
            end_of_month = _month_end(year, month)
            if start.day <= end_of_month.day:
                return date(year, month, start.day) - ONE_DAY
            return end_of_month
        if self.until_end_of_fiscal_year_after is not None:
            return _fiscal_year_end(_fiscal_year(recorded_on) + self.until_end_of_fiscal_year_after)
        assert self.until_end_of_month_after is not None
        year, month = _add_months(recorded_on.year, recorded_on.month, self.until_end_of_month_after)
        return _month_end(year, month)

    def last_recorded_on(self, kept_until: date) -> date:
        """The latest recording day whose period ends on or before `kept_until`.

        `last_day` never decreases as the recording day grows, so this inverse
        turns "is this recording expired?" into one comparison of recording
        times, which the store can ask its index for a million rows at once.
        """
        if self.days is not None:
            return kept_until - timedelta(days=self.days)
        if self.months is not None:
            guess = kept_until - timedelta(days=int(self.months * 30.436875))
            while self.last_day(guess) > kept_until:
                guess -= ONE_DAY
            while self.last_day(guess + ONE_DAY) <= kept_until:
                guess += ONE_DAY
            return guess
        if self.until_end_of_fiscal_year_after is not None:
            # The last fiscal year ending on or before kept_until; its recordings are those of
            # the fiscal year n before it, the last of which is recorded on that year's 31 March.
            ended = _fiscal_year(kept_until + ONE_DAY) - 1
            return _fiscal_year_end(ended - self.until_end_of_fiscal_year_after)
        assert self.until_end_of_month_after is not None
        year, month = kept_until.year, kept_until.month
        if kept_until != _month_end(year, month):
            year, month = _add_months(year, month, -1)
        year, month = _add_months(year, month, -self.until_end_of_month_after)
        return _month_end(year, month)

    def words(self, lang: str) -> str:
        """The period as it appears in the plain-words rule."""
        if lang == "ja":
            if self.days is not None:
                return f"録音日の翌日から起算して{self.days}日"
            if self.months is not None:
                return f"録音日の翌日から起算して{self.months}か月"
            if self.until_end_of_fiscal_year_after is not None:
                n = self.until_end_of_fiscal_year_after
                year = {0: "録音日の属する年度", 1: "録音日の属する年度の翌年度"}.get(n, f"録音日の属する年度の{n}年度後の年度")
                return f"{year}の末日(3月31日)"
            n = self.until_end_of_month_after
            month = {0: "録音日の属する月", 1: "録音日の属する月の翌月"}.get(n or 0, f"録音日の属する月の{n}か月後の月")
            return f"{month}の末日"
        if self.days is not None:
            return f"{self.days} days" if self.days != 1 else "1 day"
        if self.months is not None:
            return f"{self.months} calendar months" if self.months != 1 else "1 calendar month"
        if self.until_end_of_fiscal_year_after is not None:
            n = self.until_end_of_fiscal_year_after
            year = {0: "the fiscal year of recording", 1: "the fiscal year after the fiscal year of recording"}.get(
                n, f"the {_ordinal(n)} fiscal year after the fiscal year of recording")
            return f"the end of {year} (31 March)"
        n = self.until_end_of_month_after
        month = {0: "the month of recording", 1: "the month after the month of recording"}.get(
            n or 0, f"the {_ordinal(n or 0)} month after the month of recording")
        return f"the end of {month}"

    @property
    def counted(self) -> bool:
        """Whether the period is counted in days or months (so 民法 applies)."""
        return self.days is not None or self.months is not None

    @property
    def fiscal(self) -> bool:
        """Whether the period ends with a fiscal year (so the reader must know when 年度 ends)."""
        return self.until_end_of_fiscal_year_after is not None


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _keep(value: object) -> object:
    """`until_overwritten` (the capacity ring) is stored as no period at all."""
    if value == "until_overwritten":
        return None
    if isinstance(value, (dict, Period)):
        return value
    raise ValueError(f"keep must be until_overwritten or one of {_KINDS}")


def _minimum(value: object) -> object:
    if isinstance(value, (dict, Period)):
        return value
    raise ValueError(f"minimum must be one of {_KINDS}")


class Archive(Strict):
    """The archive stage: when the period kept on this device ends, recordings are moved, still
    encrypted and sealed, to a second medium (another mounted filesystem, the daemon's
    `archive_dir`), kept there for a period of their own and then erased.  松本市 別紙2 row 4
    (大阪市水道局): 6か月保存経過後に別記憶媒体で6か月.

    The second period is counted like the first, from the day after the device period's last
    day (民法 第140条), so when a recording leaves the archive never depends on when a sweep
    happened to move it: `{months: 6}` after `keep: {months: 6}` ends twelve calendar months
    after the day of recording, whatever the medium went through meanwhile.
    """

    keep: Period
    free_space_floor: ByteSize = 2**30
    """Space the moves leave free on the second medium; below it recordings stay on the device."""

    def last_day(self, device_last_day: date) -> date:
        """The last day kept on the archive, for a recording whose device period ends on `device_last_day`."""
        return self.keep.last_day(device_last_day)


# Four years from a leap year hold every arrangement of month lengths a rule can meet.
_CHECK_FROM = date(2028, 1, 1)
_CHECK_DAYS = 4 * 366


class Retention(Strict):
    """The policy's retention rule; see the module docstring for the YAML."""

    keep: Annotated[Period | None, BeforeValidator(_keep)] = None
    minimum: Annotated[Period | None, BeforeValidator(_minimum)] = None
    if_minimum_at_risk: Literal["stop_recording", "overwrite"] | None = None
    warn_days_before: Annotated[int, Field(ge=1, le=365)] = 30
    capacity: ByteSize | None = None
    free_space_floor: ByteSize = 2**30
    archive: Archive | None = None

    @field_validator("capacity", mode="before")
    @classmethod
    def _no_null_capacity(cls, value: object) -> object:
        if value is None:
            raise ValueError("leave capacity out to have no capacity limit; it cannot be empty")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Retention:
        if self.archive is not None and self.keep is None:
            raise ValueError("an archive stage moves recordings when the period kept on this device ends: give keep "
                             "as a period ({months: 6}), not until_overwritten")
        if self.minimum is None and self.if_minimum_at_risk is not None:
            raise ValueError("if_minimum_at_risk is set but there is no minimum period")
        if self.minimum is not None and self.if_minimum_at_risk is None:
            raise ValueError("with a minimum period, say what to do when capacity would cut it short: "
                             "if_minimum_at_risk: stop_recording or overwrite")
        if self.minimum is not None and self.keep is not None:
            for offset in range(_CHECK_DAYS):
                day = _CHECK_FROM + timedelta(days=offset)
                if self.minimum.last_day(day) > self.keep.last_day(day):
                    raise ValueError(
                        f"the minimum period ({self.minimum.words('en')}) is longer than the period kept "
                        f"({self.keep.words('en')}), e.g. for a recording made on {day.isoformat()}")
        return self


class Listening(Strict):
    """Restrictions on playing recordings back (熊本市 第4条3, さいたま 第4条)."""

    reason_required: bool = False


def describe(rules: Policy | Retention, lang: str = "ja", timezone: str = "Asia/Tokyo") -> list[str]:
    """The retention rule in plain words, one sentence a line, for
    `callrec policy check` and for the section manager who has to sign it off.

    A Policy brings its own time zone and listening rule; a bare Retention is
    described in `timezone` without a listening line.
    """
    if lang not in ("ja", "en"):
        raise ValueError(f"no description in language {lang!r}; use 'ja' or 'en'")
    if isinstance(rules, Retention):
        retention, listening, zone = rules, None, timezone
    else:
        retention, listening, zone = rules.retention, rules.listening, rules.timezone
    lines = _describe_ja(retention, zone) if lang == "ja" else _describe_en(retention, zone)
    if listening is not None:
        if lang == "ja":
            lines.append("録音の再生・書き出しには、その理由の記録が必要です。" if listening.reason_required
                         else "録音の再生・書き出しに理由の記録は求めません。")
        else:
            lines.append("Playing or exporting a recording requires a recorded reason." if listening.reason_required
                         else "Playing or exporting a recording does not require a recorded reason.")
    return lines


def describe_keeping(retention: Retention, lang: str = "ja") -> list[str]:
    """How long a recording is kept, and only that: the sentences of describe() a caller needs
    (the public notice), without the free-space floor, warnings or the counting rules an
    administrator signs off."""
    if lang not in ("ja", "en"):
        raise ValueError(f"no description in language {lang!r}; use 'ja' or 'en'")
    kept, minimum, hold = (_kept_ja, _minimum_ja, _HOLD_JA) if lang == "ja" else (_kept_en, _minimum_en, _HOLD_EN)
    return [*kept(retention), *minimum(retention)[:1], hold]


_HOLD_JA = "開示請求・捜査・訴訟などのため保全(ホールド)された録音は、解除されるまでいずれの規則でも消去しません。"
_HOLD_EN = ("A recording under legal hold (disclosure request, investigation, lawsuit) is kept by every rule "
            "until the hold is released.")


def _calendar(r: Retention) -> tuple[bool, bool, bool]:
    """Which counting notes a rule needs: 民法's days and months, the 年度, month ends."""
    periods = [p for p in (r.keep, r.minimum, r.archive.keep if r.archive else None) if p is not None]
    counted = any(p.counted for p in periods)
    fiscal = any(p.fiscal for p in periods)
    month_end = any(p is not None and not p.counted and not p.fiscal for p in (r.keep, r.archive and r.archive.keep))
    return counted, fiscal, month_end and not counted


def _kept_ja(r: Retention) -> list[str]:
    lines = []
    if r.keep is None:
        if r.capacity is not None:
            lines.append(f"録音は装置の保存容量({format_size(r.capacity)})の範囲で保存し、"
                         "容量に達したときは古い録音から順に消去(上書き)します。")
        else:
            lines.append("録音は保存領域が一杯になるまで保存し、その後は古い録音から順に消去(上書き)します。")
    else:
        if r.archive is not None:
            lines += _archived_ja(r.keep, r.archive.keep)
        elif r.keep.counted:
            lines.append(f"録音は、{r.keep.words('ja')}を経過した後、最初の消去処理で消去します。")
        else:
            lines.append(f"録音は、{r.keep.words('ja')}まで保存し、その後最初の消去処理で消去します。")
        if r.capacity is not None:
            lines.append(f"保存期間内であっても、装置の保存容量({format_size(r.capacity)})に達したときは"
                         "古い録音から順に消去します。")
    return lines


def _archived_ja(keep: Period, archive: Period) -> list[str]:
    moved = (f"録音は、{keep.words('ja')}を経過した後" if keep.counted else f"録音は、{keep.words('ja')}を過ぎた後")
    if archive.counted:
        unit = f"{archive.days}日" if archive.days is not None else f"{archive.months}か月"
        kept = f"装置での保存期間が満了した日の翌日から起算して{unit}を経過した後"
    elif archive.fiscal:
        n = archive.until_end_of_fiscal_year_after
        ends = "装置での保存期間が満了した日の属する年度"
        year = {0: ends, 1: f"{ends}の翌年度"}.get(n or 0, f"{ends}の{n}年度後の年度")
        kept = f"{year}の末日(3月31日)を過ぎた後"
    else:
        n = archive.until_end_of_month_after
        month = {0: "装置での保存期間が満了した月", 1: "装置での保存期間が満了した月の翌月"}.get(
            n or 0, f"装置での保存期間が満了した月の{n}か月後の月")
        kept = f"{month}の末日を過ぎた後"
    return [f"{moved}、最初の処理で、暗号化したまま別の記憶媒体(保存用媒体)へ移します。",
            f"保存用媒体の録音は、{kept}、最初の消去処理で消去します。"]


def _minimum_ja(r: Retention) -> list[str]:
    if r.minimum is None:
        return []
    until = f"{r.minimum.words('ja')}を経過するまで" if r.minimum.counted else f"{r.minimum.words('ja')}まで"
    lines = [f"ただし、{until}は、容量を理由に消去しません。"]
    if r.if_minimum_at_risk == "stop_recording":
        lines.append("容量が足りずこの最低保存期間を守れないときは、新しい通話の録音を停止します。")
    else:
        lines.append("容量が足りずこの最低保存期間を守れないときは、古い録音を上書きし、その旨を通話記録管理簿に記録します。")
    lines.append(f"そのおそれがあるときは、{r.warn_days_before}日前から警告します。")
    return lines


def _describe_ja(r: Retention, zone: str) -> list[str]:
    lines = _kept_ja(r)
    lines.append(f"ファイルシステムの空き容量が{format_size(r.free_space_floor)}を下回るときも、"
                 "古い録音から順に消去します。")
    if r.archive is not None:
        lines.append("保全(ホールド)中の録音は移しません。保存用媒体が接続されていないか、空き容量を"
                     f"{format_size(r.archive.free_space_floor)}以上残せないときも装置に残し、その旨を警告します。"
                     "装置と保存用媒体の期間をともに過ぎた録音は、装置に残っていても消去します。")
    lines += _minimum_ja(r)
    if r.minimum is None and r.keep is not None and r.capacity is not None:
        lines.append(f"容量のために保存期間より前に消去するおそれがあるときは、{r.warn_days_before}日前から警告します。")
    counted, fiscal, month_end = _calendar(r)
    if counted:
        lines.append(f"日数・月数は{zone}の暦で数え、録音日の当日は算入しません(民法第140条)。"
                     "月数は暦に従い、最後の月の起算日に応当する日の前日に満了し、"
                     "応当する日がないときはその月の末日に満了します(民法第143条)。")
    if fiscal:
        lines.append(f"年度は4月1日から翌年3月31日までとし、{zone}の暦で判断します。")
    if month_end:
        lines.append(f"月末は{zone}の暦で判断します。")
    lines.append(_HOLD_JA)
    return lines


_COUNTED = "counted from the day after the day of recording"


def _have(period: Period) -> str:
    """The verb after a counted period: "1 day has passed", "90 days have passed"."""
    return "has" if 1 in (period.days, period.months) else "have"


def _kept_en(r: Retention) -> list[str]:
    lines = []
    if r.keep is None:
        if r.capacity is not None:
            lines.append(f"Recordings are kept within the device's capacity ({format_size(r.capacity)}); "
                         "when it is full, the oldest are erased (overwritten) first.")
        else:
            lines.append("Recordings are kept until the storage is full; "
                         "then the oldest are erased (overwritten) first.")
    else:
        if r.archive is not None:
            lines += _archived_en(r.keep, r.archive.keep)
        elif r.keep.counted:
            lines.append(f"Recordings are erased by the first sweep after {r.keep.words('en')} {_have(r.keep)} passed, "
                         f"{_COUNTED}.")
        else:
            lines.append(f"Recordings are kept until {r.keep.words('en')}, then erased by the first sweep.")
        if r.capacity is not None:
            lines.append(f"Even within that period, the oldest recordings are erased first when the device's "
                         f"capacity ({format_size(r.capacity)}) is reached.")
    return lines


def _archived_en(keep: Period, archive: Period) -> list[str]:
    moved = (f"after {keep.words('en')} {_have(keep)} passed, {_COUNTED}" if keep.counted
             else f"after {keep.words('en')}")
    if archive.counted:
        unit = archive.words("en")
        kept = f"after {unit} {_have(archive)} passed, counted from the day after the period on the device ends"
    elif archive.fiscal:
        n = archive.until_end_of_fiscal_year_after or 0
        year = {0: "the fiscal year in which the period on the device ends",
                1: "the fiscal year after the one in which the period on the device ends"}.get(
            n, f"the {_ordinal(n)} fiscal year after the one in which the period on the device ends")
        kept = f"after the end of {year} (31 March)"
    else:
        n = archive.until_end_of_month_after or 0
        month = {0: "the month in which the period on the device ends",
                 1: "the month after the one in which the period on the device ends"}.get(
            n, f"the {_ordinal(n)} month after the one in which the period on the device ends")
        kept = f"after the end of {month}"
    first = "Recordings are moved, still encrypted, to a second storage medium (the archive) by the first sweep"
    return [f"{first} {moved}.", f"On the archive they are erased by the first sweep {kept}."]


def _minimum_en(r: Retention) -> list[str]:
    if r.minimum is None:
        return []
    until = (f"before {r.minimum.words('en')} {_have(r.minimum)} passed, {_COUNTED}" if r.minimum.counted
             else f"before {r.minimum.words('en')}")
    lines = [f"But capacity never erases a recording {until}."]
    if r.if_minimum_at_risk == "stop_recording":
        lines.append("When capacity cannot be kept without cutting that minimum short, new calls are not recorded.")
    else:
        lines.append("When capacity cannot be kept without cutting that minimum short, the oldest recordings are "
                     "overwritten anyway and the breach is written to the ledger.")
    lines.append(f"A warning is given from {r.warn_days_before} days before that would happen.")
    return lines


def _describe_en(r: Retention, zone: str) -> list[str]:
    lines = _kept_en(r)
    lines.append(f"The oldest recordings are also erased when the filesystem's free space would fall below "
                 f"{format_size(r.free_space_floor)}.")
    if r.archive is not None:
        lines.append("A recording under legal hold is not moved; while the archive medium is not mounted or a move "
                     f"would leave less than {format_size(r.archive.free_space_floor)} free on it, recordings stay "
                     "on the device too, and a warning says so; a recording past both periods is erased even if it "
                     "is still on the device.")
    lines += _minimum_en(r)
    if r.minimum is None and r.keep is not None and r.capacity is not None:
        lines.append(f"A warning is given from {r.warn_days_before} days before capacity would erase recordings "
                     "before the end of their period.")
    counted, fiscal, month_end = _calendar(r)
    if counted:
        lines.append(f"Days and months are counted on the calendar of {zone}, and the day of recording is not "
                     "counted (Civil Code art. 140); a period of months ends on the day before the corresponding "
                     "day of its last month, or on that month's last day when it has none (art. 143).")
    if fiscal:
        lines.append(f"A fiscal year (年度) runs from 1 April to 31 March, on the calendar of {zone}.")
    if month_end:
        lines.append(f"Month ends are those of the calendar of {zone}.")
    lines.append(_HOLD_EN)
    return lines
