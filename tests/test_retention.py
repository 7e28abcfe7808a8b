"""Retention rules: the YAML section, how periods are counted, and the sweep planner."""
from __future__ import annotations

from datetime import date, datetime, timezone
from itertools import count
from typing import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.loader import PolicyError, parse_policy
from policy.retention import Period, Retention, describe, describe_keeping, format_size, parse_size
from storage.retention import (
    Stored,
    Usage,
    day_of,
    deadline,
    expiry_cutoff,
    forecast,
    minimum_until,
    plan_sweep,
    start_of_day,
)


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except ZoneInfoNotFoundError:
        raise RuntimeError(f"time zone {name} is missing: install the Debian package tzdata") from None


TOKYO = zone("Asia/Tokyo")
BERLIN = zone("Europe/Berlin")
SAO_PAULO = zone("America/Sao_Paulo")
MB = 10**6
GIB = 2**30


def at(tz: ZoneInfo, *parts: int, micro: int = 0) -> float:
    return datetime(*parts, microsecond=micro, tzinfo=tz).timestamp()


def jst(*parts: int, micro: int = 0) -> float:
    return at(TOKYO, *parts, micro=micro)


def days(n: int) -> Period:
    return Period(days=n)


def months(n: int) -> Period:
    return Period(months=n)


def month_end(n: int) -> Period:
    return Period(until_end_of_month_after=n)


def fiscal(n: int) -> Period:
    return Period(until_end_of_fiscal_year_after=n)


# --- the YAML section -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [("200 GiB", 200 * GIB), ("500 GB", 500 * 10**9), ("1.5 TiB", 3 * 2**39), ("1.5TiB", 3 * 2**39),
     ("64 MiB", 64 * 2**20), ("2 tb", 2 * 10**12), (10**9, 10**9), ("0.25 GiB", GIB // 4)],
)
def test_sizes_parse(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "reason"),
    [("lots", "not a size"), ("200", "not a size"), ("-5 GB", "not a size"), ("5 GiBs", "unknown unit"),
     ("200 B", "less than 1 MiB"), (200, "less than 1 MiB"), (True, "with a unit"), (1.5e9, "with a unit"),
     ("2000 PiB", "larger than any")],
)
def test_nonsense_sizes_are_refused(text: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_size(text)


@pytest.mark.parametrize("size", [200 * GIB, 500 * 10**9, 3 * 2**39, GIB, 123456789012])
def test_sizes_print_back_exactly(size: int) -> None:
    assert parse_size(format_size(size)) == size


def test_full_section_reads_like_the_rule() -> None:
    policy = parse_policy(
        "timezone: Asia/Tokyo\n"
        "retention:\n"
        "  keep: until_overwritten\n"
        "  minimum: {months: 3}\n"
        "  if_minimum_at_risk: overwrite\n"
        "  warn_days_before: 45\n"
        "  capacity: 500 GB\n"
        "  free_space_floor: 2 GiB\n"
        "listening:\n"
        "  reason_required: true\n")
    r = policy.retention
    assert r.keep is None and r.minimum == months(3) and r.if_minimum_at_risk == "overwrite"
    assert (r.warn_days_before, r.capacity, r.free_space_floor) == (45, 500 * 10**9, 2 * GIB)
    assert policy.listening.reason_required


def test_defaults_are_a_ring_bounded_by_the_free_space_floor() -> None:
    policy = parse_policy("")
    assert policy.retention == Retention()
    assert policy.retention.keep is None and policy.retention.capacity is None
    assert policy.retention.free_space_floor == GIB and policy.retention.warn_days_before == 30
    assert not policy.listening.reason_required


@pytest.mark.parametrize(
    ("text", "line", "field", "reason"),
    [
        ("retention:\n  keep: forever\n", 2, "retention.keep", "until_overwritten"),
        ("retention:\n  keep: {weeks: 2}\n", 2, "retention.keep.weeks", "Extra inputs"),
        ("retention:\n  keep: {days: 0}\n", 2, "retention.keep.days", "greater than or equal to 1"),
        ("retention:\n  keep: {days: 3, months: 2}\n", 2, "retention.keep", "exactly one"),
        ("retention:\n  capacity: lots\n", 2, "retention.capacity", "not a size"),
        ("retention:\n  capacity: 200\n", 2, "retention.capacity", "forget the unit"),
        ("retention:\n  capacity:\n", 2, "retention.capacity", "leave capacity out"),
        ("retention:\n  free_space_floor: 1 XB\n", 2, "retention.free_space_floor", "unknown unit"),
        ("retention:\n  warn_days_before: 0\n", 2, "retention.warn_days_before", "greater than or equal"),
        ("retention:\n  minimum: {months: 3}\n", 1, "retention", "if_minimum_at_risk"),
        ("retention:\n  if_minimum_at_risk: overwrite\n", 1, "retention", "no minimum"),
        ("retention:\n  minimum: {months: 3}\n  if_minimum_at_risk: later\n", 3,
         "retention.if_minimum_at_risk", "stop_recording"),
        ("retention:\n  keep: {days: 30}\n  minimum: {months: 3}\n  if_minimum_at_risk: overwrite\n", 1,
         "retention", "longer than the period kept"),
        ("retention:\n  keep: {months: 1}\n  minimum: {days: 31}\n  if_minimum_at_risk: overwrite\n", 1,
         "retention", "longer than the period kept"),
        ("retention:\n  kept: {days: 30}\n", 2, "retention.kept", "Extra inputs"),
        ("retention:\n  keep: {until_end_of_fiscal_year_after: -1}\n", 2,
         "retention.keep.until_end_of_fiscal_year_after", "greater than or equal to 0"),
        ("retention:\n  keep: {until_end_of_fiscal_year_after: 1, months: 2}\n", 2, "retention.keep", "exactly one"),
        ("retention:\n  keep: {until_end_of_fiscal_year: 1}\n", 2, "retention.keep.until_end_of_fiscal_year",
         "Extra inputs"),
        ("retention:\n  keep: {until_end_of_fiscal_year_after: 0}\n  minimum: {months: 3}\n"
         "  if_minimum_at_risk: overwrite\n", 1, "retention", "longer than the period kept"),
        ("listening:\n  reason_required: maybe\n", 2, "listening.reason_required", "boolean"),
    ],
)
def test_mistakes_name_line_field_and_reason(text: str, line: int, field: str, reason: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "site.yaml")
    assert (info.value.line, info.value.field) == (line, field)
    assert reason in info.value.reason


def test_a_minimum_within_the_period_kept_is_accepted() -> None:
    r = Retention(keep=days(92), minimum=months(3), if_minimum_at_risk="stop_recording")
    assert r.minimum == months(3)


def test_describe_in_both_languages() -> None:
    policy = parse_policy("retention:\n  keep: {days: 90}\n  capacity: 200 GiB\nlistening:\n  reason_required: true\n")
    ja = describe(policy, "ja")
    assert ja[0] == "録音は、録音日の翌日から起算して90日を経過した後、最初の消去処理で消去します。"
    assert any("200 GiB" in line and "容量" in line for line in ja)
    assert any("民法第140条" in line and "Asia/Tokyo" in line for line in ja)
    assert ja[-1] == "録音の再生・書き出しには、その理由の記録が必要です。"
    en = describe(policy, "en")
    assert en[0] == ("Recordings are erased by the first sweep after 90 days have passed, counted from the day "
                     "after the day of recording.")
    assert any("capacity (200 GiB)" in line for line in en)


@pytest.mark.parametrize(
    ("rules", "ja", "en"),
    [
        (Retention(keep=month_end(1)), "録音日の属する月の翌月の末日まで保存", "the end of the month after the month"),
        (Retention(keep=month_end(0)), "録音日の属する月の末日まで保存", "the end of the month of recording"),
        (Retention(keep=month_end(2)), "録音日の属する月の2か月後の月の末日", "the 2nd month after"),
        (Retention(keep=months(3)), "起算して3か月を経過した後", "3 calendar months have passed"),
        (Retention(keep=months(1)), "起算して1か月を経過した後", "1 calendar month has passed"),
        (Retention(keep=fiscal(1)), "録音日の属する年度の翌年度の末日(3月31日)まで保存",
         "until the end of the fiscal year after the fiscal year of recording (31 March)"),
        (Retention(keep=fiscal(0)), "年度は4月1日から翌年3月31日まで", "runs from 1 April to 31 March"),
        (Retention(keep=fiscal(2)), "録音日の属する年度の2年度後の年度の末日", "the 2nd fiscal year after"),
        (Retention(capacity=200 * GIB), "保存容量(200 GiB)の範囲で保存", "capacity (200 GiB); when it is full"),
        (Retention(), "一杯になるまで保存", "until the storage is full"),
        (Retention(minimum=months(3), if_minimum_at_risk="stop_recording", capacity=GIB),
         "新しい通話の録音を停止", "new calls are not recorded"),
        (Retention(minimum=months(3), if_minimum_at_risk="overwrite", capacity=GIB),
         "通話記録管理簿に記録", "the breach is written to the ledger"),
    ],
)
def test_describe_each_rule(rules: Retention, ja: str, en: str) -> None:
    assert ja in "".join(describe(rules, "ja"))
    assert en in " ".join(describe(rules, "en"))


def test_describe_unknown_language() -> None:
    with pytest.raises(ValueError, match="'fr'"):
        describe(Retention(), "fr")
    with pytest.raises(ValueError, match="'fr'"):
        describe_keeping(Retention(), "fr")


def test_a_fiscal_year_rule_reads_from_yaml() -> None:
    policy = parse_policy("retention:\n  keep: {until_end_of_fiscal_year_after: 1}\n")
    assert policy.retention.keep == fiscal(1) and policy.retention.keep.fiscal and not policy.retention.keep.counted
    assert describe(policy, "ja")[0] == "録音は、録音日の属する年度の翌年度の末日(3月31日)まで保存し、その後最初の消去処理で消去します。"


def test_a_fiscal_year_minimum_within_a_longer_period_is_accepted() -> None:
    r = Retention(keep=fiscal(1), minimum=fiscal(0), if_minimum_at_risk="stop_recording")
    assert "年度は4月1日から翌年3月31日まで" in "".join(describe(r, "ja"))
    assert not any("民法" in line for line in describe(r, "ja"))


def test_describe_keeping_says_how_long_and_nothing_of_how() -> None:
    """What the public notice prints: the period, the minimum the ring keeps, the legal hold."""
    r = Retention(keep=days(92), minimum=months(3), if_minimum_at_risk="stop_recording", capacity=200 * GIB)
    ja = describe_keeping(r, "ja")
    assert ja[0] == describe(r, "ja")[0] and ja[-1] == describe(r, "ja")[-1]
    assert any("3か月を経過するまでは、容量を理由に消去しません" in line for line in ja)
    assert not any(word in "".join(ja) for word in ("空き容量", "警告", "民法", "録音を停止"))
    en = describe_keeping(r, "en")
    assert en[0] == describe(r, "en")[0] and "legal hold" in en[-1]
    assert describe_keeping(Retention(keep=fiscal(1)), "ja")[0].startswith("録音は、録音日の属する年度の翌年度の末日")


# --- counting periods (民法 第140条, 第143条) ---------------------------------


@pytest.mark.parametrize(
    ("period", "recorded_on", "last"),
    [
        (days(90), date(2027, 1, 10), date(2027, 4, 10)),     # 21 + 28 + 31 + 10 days from 11 Jan
        (days(30), date(2028, 2, 28), date(2028, 3, 29)),     # leap: 29 Feb counts
        (days(30), date(2027, 2, 28), date(2027, 3, 30)),
        (days(1), date(2027, 12, 31), date(2028, 1, 1)),
        (months(3), date(2027, 1, 10), date(2027, 4, 10)),    # counts from 11 Jan, ends the day before 11 Apr
        (months(3), date(2026, 11, 28), date(2027, 2, 28)),   # from 29 Nov; 2027 has no 29 Feb: month's end
        (months(3), date(2027, 11, 28), date(2028, 2, 28)),   # from 29 Nov; 29 Feb 2028 exists: the day before
        (months(3), date(2027, 11, 29), date(2028, 2, 29)),   # from 30 Nov; no 30 Feb: month's end
        (months(3), date(2027, 11, 30), date(2028, 2, 29)),   # from 1 Dec: ends at the end of a month
        (months(3), date(2027, 12, 31), date(2028, 3, 31)),   # from 1 Jan: the fiscal year's last day
        (months(3), date(2028, 5, 30), date(2028, 8, 30)),    # from 31 May; 31 Aug exists
        (months(1), date(2028, 5, 30), date(2028, 6, 30)),    # from 31 May; no 31 Jun
        (months(1), date(2027, 1, 30), date(2027, 2, 28)),
        (months(1), date(2027, 1, 31), date(2027, 2, 28)),    # from 1 Feb
        (months(12), date(2028, 2, 28), date(2029, 2, 28)),   # from 29 Feb 2028; 2029 has none
        (month_end(1), date(2027, 1, 31), date(2027, 2, 28)),
        (month_end(1), date(2027, 2, 1), date(2027, 3, 31)),
        (month_end(1), date(2028, 1, 15), date(2028, 2, 29)),
        (month_end(1), date(2028, 2, 10), date(2028, 3, 31)),
        (month_end(1), date(2027, 12, 5), date(2028, 1, 31)),
        (month_end(0), date(2027, 4, 1), date(2027, 4, 30)),
        (month_end(13), date(2027, 1, 31), date(2028, 2, 29)),
        (fiscal(0), date(2027, 3, 31), date(2027, 3, 31)),    # 年度 2026 ends on the day it was recorded
        (fiscal(0), date(2027, 4, 1), date(2028, 3, 31)),     # 年度 2027 starts on 1 April
        (fiscal(0), date(2028, 2, 29), date(2028, 3, 31)),
        (fiscal(1), date(2026, 4, 1), date(2028, 3, 31)),
        (fiscal(1), date(2027, 3, 31), date(2028, 3, 31)),    # さいたま 第4条6(2): 翌年度末
        (fiscal(1), date(2027, 4, 1), date(2029, 3, 31)),
        (fiscal(1), date(2027, 12, 31), date(2029, 3, 31)),
        (fiscal(2), date(2028, 1, 1), date(2030, 3, 31)),
    ],
)
def test_last_day_kept(period: Period, recorded_on: date, last: date) -> None:
    assert period.last_day(recorded_on) == last
    assert period.last_recorded_on(last) >= recorded_on
    assert period.last_day(period.last_recorded_on(last)) <= last


@given(
    period=st.one_of(st.builds(days, st.integers(1, 800)), st.builds(months, st.integers(1, 40)),
                     st.builds(month_end, st.integers(0, 40)), st.builds(fiscal, st.integers(0, 5))),
    day=st.dates(date(1990, 1, 1), date(2100, 12, 31)),
)
def test_last_recorded_on_is_the_inverse(period: Period, day: date) -> None:
    latest = period.last_recorded_on(day)
    assert period.last_day(latest) <= day
    assert period.last_day(latest + (date(2000, 1, 2) - date(2000, 1, 1))) > day


@pytest.mark.parametrize(
    ("period", "recorded_at", "due"),
    [
        # 23:59:59.9 and 00:00:00 JST: the UTC date differs from the Tokyo date in both.
        (days(90), jst(2027, 3, 31, 23, 59, 59, micro=900000), jst(2027, 6, 30)),
        (days(90), jst(2027, 4, 1, 0, 0, 0), jst(2027, 7, 1)),
        (month_end(1), jst(2027, 1, 31, 23, 59, 59, micro=900000), jst(2027, 3, 1)),
        (month_end(1), jst(2027, 2, 1, 0, 0, 0), jst(2027, 4, 1)),
        (months(3), jst(2027, 12, 31, 23, 59, 59, micro=900000), jst(2028, 4, 1)),
        (months(3), jst(2028, 1, 1, 0, 0, 0), jst(2028, 4, 2)),
        (months(3), jst(2028, 3, 31, 9, 0), jst(2028, 7, 1)),   # from 1 Apr (fiscal year start) to 30 Jun
        (days(90), jst(2027, 1, 10, 10, 0), jst(2027, 4, 11)),
        # 1 April 00:00 JST is still 31 March in UTC: the Tokyo date puts it in the new 年度.
        (fiscal(0), jst(2027, 3, 31, 23, 59, 59, micro=900000), jst(2027, 4, 1)),
        (fiscal(0), jst(2027, 4, 1, 0, 0, 0), jst(2028, 4, 1)),
        (fiscal(1), jst(2027, 3, 31, 23, 59, 59, micro=900000), jst(2028, 4, 1)),
        (fiscal(1), jst(2027, 4, 1, 0, 0, 0), jst(2029, 4, 1)),
    ],
)
def test_deadline_in_tokyo(period: Period, recorded_at: float, due: float) -> None:
    assert deadline(period, recorded_at, TOKYO) == due
    assert expiry_cutoff(period, due - 0.001, TOKYO) <= recorded_at < expiry_cutoff(period, due, TOKYO)


def test_the_day_of_recording_is_never_counted_even_at_midnight() -> None:
    """民法 第140条: a recording at 00:00:00 is treated like any other on that
    day, so the whole day it was made on is never part of the period."""
    start = jst(2027, 5, 10)
    assert deadline(days(1), start, TOKYO) == deadline(days(1), start + 86399.9, TOKYO) == jst(2027, 5, 12)


def test_utc_date_is_not_the_tokyo_date() -> None:
    instant = jst(2027, 2, 1, 0, 0, 0)
    assert datetime.fromtimestamp(instant, timezone.utc).date() == date(2027, 1, 31)
    assert day_of(instant, TOKYO) == date(2027, 2, 1)


def test_capacity_only_has_no_deadline() -> None:
    assert deadline(None, jst(2027, 1, 1), TOKYO) is None
    assert expiry_cutoff(None, jst(2027, 1, 1), TOKYO) is None
    assert minimum_until(None, jst(2027, 1, 1), TOKYO) is None
    assert minimum_until(months(3), jst(2027, 1, 10, 12), TOKYO) == jst(2027, 4, 11)


def test_berlin_days_across_daylight_saving_time() -> None:
    spring = at(BERLIN, 2027, 3, 27, 12)      # the night of 27/28 March 2027 loses an hour
    assert deadline(days(1), spring, BERLIN) == at(BERLIN, 2027, 3, 29)
    assert deadline(days(1), spring, BERLIN) - spring == 35 * 3600
    autumn = at(BERLIN, 2027, 10, 30, 12)     # the night of 30/31 October gains one
    assert deadline(days(1), autumn, BERLIN) - autumn == 37 * 3600
    assert start_of_day(date(2027, 10, 31), BERLIN) == datetime(2027, 10, 30, 22, tzinfo=timezone.utc).timestamp()


def test_midnight_skipped_by_a_clock_change() -> None:
    """São Paulo moved its clocks from 00:00 to 01:00 on 18 Oct 2015: that day
    began at the change, and a deadline on it is not an hour late."""
    change = datetime(2015, 10, 18, 3, tzinfo=timezone.utc).timestamp()
    assert start_of_day(date(2015, 10, 18), SAO_PAULO) == change
    assert day_of(change - 1, SAO_PAULO) == date(2015, 10, 17)
    assert deadline(days(1), at(SAO_PAULO, 2015, 10, 16, 12), SAO_PAULO) == change


def test_hour_repeated_before_midnight_stays_on_its_day() -> None:
    """São Paulo went back from 21 Feb 2016 00:00 to 20 Feb 23:00: the 20th
    lasted 25 hours and the 21st began an hour later in UTC."""
    repeated = datetime(2016, 2, 21, 2, 30, tzinfo=timezone.utc).timestamp()
    assert day_of(repeated, SAO_PAULO) == date(2016, 2, 20)
    assert start_of_day(date(2016, 2, 21), SAO_PAULO) == datetime(2016, 2, 21, 3, tzinfo=timezone.utc).timestamp()


GOOSE_BAY = zone("America/Goose_Bay")
# Goose Bay went back from 29 Oct 1995 00:01 to 28 Oct 23:01: the clock shows
# the 28th again for an hour after the 29th had begun.
GOOSE_BAY_CHANGE = datetime(1995, 10, 29, 3, 1, tzinfo=timezone.utc).timestamp()


def test_hour_repeated_across_midnight_belongs_to_the_new_day() -> None:
    repeated = GOOSE_BAY_CHANGE + 1800
    assert datetime.fromtimestamp(repeated, GOOSE_BAY).date() == date(1995, 10, 28)
    assert day_of(repeated, GOOSE_BAY) == date(1995, 10, 29)
    assert day_of(GOOSE_BAY_CHANGE - 30, GOOSE_BAY) == date(1995, 10, 29)
    assert day_of(GOOSE_BAY_CHANGE - 120, GOOSE_BAY) == date(1995, 10, 28)


@pytest.mark.parametrize("period", [days(1), days(30), months(1), month_end(0), fiscal(0)])
def test_deadline_and_cutoff_agree_around_a_backward_midnight(period: Period) -> None:
    window = [GOOSE_BAY_CHANGE + minutes * 60.0 for minutes in range(-180, 180, 7)]
    for recorded_at in window:
        due = deadline(period, recorded_at, GOOSE_BAY)
        for now in (due - 0.5, due, *[t + shift for t in window for shift in (0.0, 86400.0, 31 * 86400.0)]):
            assert (now >= due) == (recorded_at < expiry_cutoff(period, now, GOOSE_BAY))


EPOCHS = st.floats(datetime(1990, 1, 1, tzinfo=timezone.utc).timestamp(),
                   datetime(2100, 12, 31, tzinfo=timezone.utc).timestamp())
PERIODS = st.one_of(st.builds(days, st.integers(1, 400)), st.builds(months, st.integers(1, 24)),
                    st.builds(month_end, st.integers(0, 24)), st.builds(fiscal, st.integers(0, 3)))
ZONES = st.sampled_from([TOKYO, BERLIN, SAO_PAULO, GOOSE_BAY])


@settings(max_examples=3000, deadline=None)
@given(period=PERIODS, recorded_at=EPOCHS, now=EPOCHS, tz=ZONES)
def test_deadline_and_cutoff_agree(period: Period, recorded_at: float, now: float, tz: ZoneInfo) -> None:
    assert (now >= deadline(period, recorded_at, tz)) == (recorded_at < expiry_cutoff(period, now, tz))


@settings(max_examples=1000, deadline=None)
@given(period=PERIODS, recorded_at=EPOCHS, tz=ZONES)
def test_cutoff_agrees_at_the_deadline_itself(period: Period, recorded_at: float, tz: ZoneInfo) -> None:
    due = deadline(period, recorded_at, tz)
    assert recorded_at < expiry_cutoff(period, due, tz)
    assert recorded_at >= expiry_cutoff(period, due - 0.001, tz)
    assert due > recorded_at


@settings(max_examples=1000, deadline=None)
@given(period=PERIODS, a=EPOCHS, b=EPOCHS, tz=ZONES)
def test_later_recordings_never_have_earlier_deadlines(period: Period, a: float, b: float, tz: ZoneInfo) -> None:
    early, late = sorted((a, b))
    assert deadline(period, early, tz) <= deadline(period, late, tz)
    assert day_of(early, tz) <= day_of(late, tz)


# --- the planner --------------------------------------------------------------


def recs(*items: tuple[str, float, int]) -> list[Stored]:
    return [Stored(i, t, s) for i, t, s in items]


NOW = jst(2027, 6, 1, 3, 0)


def test_the_fiscal_year_ends_at_the_tokyo_midnight_of_31_march() -> None:
    """A sweep at 00:00 JST on 1 April (still 31 March in UTC) erases the 年度 just ended and
    keeps the call of the first second of the new one."""
    items = recs(("a", jst(2027, 4, 1, 0, 0, 0), MB), ("b", jst(2028, 3, 31, 23, 59, 59, micro=900000), MB),
                 ("c", jst(2028, 4, 1, 0, 0, 0), MB))
    for rules, now, erased in [
        (Retention(keep=fiscal(0)), jst(2028, 3, 31, 23, 59, 59, micro=999000), []),
        (Retention(keep=fiscal(0)), jst(2028, 4, 1), ["a", "b"]),
        (Retention(keep=fiscal(1)), jst(2029, 3, 31, 23, 59, 59), []),
        (Retention(keep=fiscal(1)), jst(2029, 4, 1), ["a", "b"]),
    ]:
        plan = plan_sweep(rules, now, TOKYO, items, Usage(used_bytes=3 * MB))
        assert plan.ids("retention") == erased and plan.ids("capacity") == []
        assert plan.cutoff == (jst(2028, 4, 1) if erased else jst(2027, 4, 1))


def test_expired_go_for_retention_oldest_first() -> None:
    rules = Retention(keep=days(30))
    # On 1 Jun the 30 days of a recording made on 1 May (2 May to 31 May) are over.
    items = recs(("a", jst(2027, 4, 20), MB), ("b", jst(2027, 5, 1, 23, 59, 59), MB), ("c", jst(2027, 5, 2), MB))
    plan = plan_sweep(rules, NOW, TOKYO, items, Usage(used_bytes=3 * MB))
    assert plan.ids("retention") == ["a", "b"] and plan.ids("capacity") == []
    assert plan.cutoff == jst(2027, 5, 2) and plan.period() == (items[0].recorded_at, items[1].recorded_at)
    assert plan.used_after_bytes == MB and not plan.stop_recording and plan.warnings == ()


def test_capacity_takes_only_what_is_needed_including_the_reserve() -> None:
    rules = Retention(capacity=10 * MB)
    items = recs(*[(f"r{i}", jst(2027, 5, i + 1), 2 * MB) for i in range(5)])
    plan = plan_sweep(rules, NOW, TOKYO, items, Usage(used_bytes=10 * MB, incoming_bytes=3 * MB))
    assert plan.ids() == ["r0", "r1"] and plan.ids("capacity") == ["r0", "r1"]
    assert plan.used_after_bytes == 6 * MB and plan.freed_bytes == 4 * MB
    assert plan_sweep(rules, NOW, TOKYO, items, Usage(used_bytes=10 * MB)).erase == ()


def test_free_space_floor_bounds_a_store_without_capacity() -> None:
    rules = Retention(free_space_floor=GIB)
    items = recs(*[(f"r{i}", jst(2027, 5, i + 1), 100 * MB) for i in range(10)])
    plan = plan_sweep(rules, NOW, TOKYO, items, Usage(used_bytes=GIB, free_bytes=GIB - 250 * MB))
    assert plan.limit_bytes == GIB - 250 * MB
    assert plan.ids("capacity") == ["r0", "r1", "r2"]
    assert plan_sweep(rules, NOW, TOKYO, items, Usage(used_bytes=GIB)).erase == ()


def test_capacity_and_floor_together_take_the_stricter() -> None:
    rules = Retention(capacity=10 * GIB)
    assert plan_sweep(rules, NOW, TOKYO, [], Usage(used_bytes=GIB, free_bytes=100 * GIB)).limit_bytes == 10 * GIB
    assert plan_sweep(rules, NOW, TOKYO, [], Usage(used_bytes=GIB, free_bytes=2 * GIB)).limit_bytes == 2 * GIB


def test_only_held_left_stops_recording() -> None:
    rules = Retention(capacity=10 * MB)
    items = recs(("a", jst(2027, 5, 1), 2 * MB))
    plan = plan_sweep(rules, NOW, TOKYO, items, Usage(used_bytes=12 * MB, incoming_bytes=MB))
    assert plan.ids() == ["a"] and plan.stop_recording
    assert plan.warning("only_held_left") is not None and plan.warning("only_held_left").at == NOW


def test_expired_and_capacity_in_one_sweep_count_the_bytes_once() -> None:
    rules = Retention(keep=days(30), capacity=10 * MB)
    items = recs(("old", jst(2027, 4, 1), 4 * MB), ("a", jst(2027, 5, 20), 4 * MB), ("b", jst(2027, 5, 21), 4 * MB))
    plan = plan_sweep(rules, NOW, TOKYO, items, Usage(used_bytes=12 * MB, incoming_bytes=3 * MB))
    assert [(e.id, e.reason) for e in plan.erase] == [("old", "retention"), ("a", "capacity")]
    assert plan.period("retention") == (items[0].recorded_at,) * 2
    assert plan.warning("capacity_near").at == NOW


HASHIMA = dict(minimum=months(3), capacity=10 * MB)
# On 1 Jun, "past" (1 Feb) is through its three months; "young" (15 Mar) is not.
MINIMUM_CASE = recs(("past", jst(2027, 2, 1), 2 * MB), ("young", jst(2027, 3, 15), 4 * MB),
                    ("new", jst(2027, 5, 1), 4 * MB))


def test_minimum_at_risk_with_stop_recording_keeps_the_protected() -> None:
    rules = Retention(**HASHIMA, if_minimum_at_risk="stop_recording")
    items = MINIMUM_CASE
    plan = plan_sweep(rules, NOW, TOKYO, items, Usage(used_bytes=10 * MB, incoming_bytes=4 * MB))
    assert plan.ids() == ["past"] and plan.breaches == [] and plan.stop_recording
    warning = plan.warning("minimum_period_at_risk")
    assert warning is not None and warning.at == NOW and "young" in warning.message


def test_minimum_at_risk_with_overwrite_records_the_breach() -> None:
    rules = Retention(**HASHIMA, if_minimum_at_risk="overwrite")
    items = MINIMUM_CASE
    plan = plan_sweep(rules, NOW, TOKYO, items, Usage(used_bytes=10 * MB, incoming_bytes=4 * MB))
    assert plan.ids("capacity") == ["past", "young"] and plan.breaches == ["young"] and not plan.stop_recording
    assert plan.warning("minimum_period_at_risk").at == NOW


def test_the_minimum_ends_on_its_last_day() -> None:
    rules = Retention(**HASHIMA, if_minimum_at_risk="stop_recording")
    items = recs(("a", jst(2027, 3, 1, 12), 6 * MB))   # counts from 2 Mar, three months end on 1 Jun
    usage = Usage(used_bytes=10 * MB, incoming_bytes=MB)
    assert plan_sweep(rules, jst(2027, 6, 1, 23, 59, 59), TOKYO, items, usage).stop_recording
    plan = plan_sweep(rules, jst(2027, 6, 2), TOKYO, items, usage)
    assert plan.ids() == ["a"] and plan.breaches == [] and not plan.stop_recording


def test_forecast_warns_before_the_ring_cuts_into_the_minimum() -> None:
    rules = Retention(**HASHIMA, if_minimum_at_risk="stop_recording", warn_days_before=30)
    # 1 MB a day: the 6 MB stored fill the 10 MB in 4 days, and the oldest
    # (from 1 May) would go inside its three months.
    items = recs(*[(f"r{i}", jst(2027, 5, 1 + i, 12), MB) for i in range(6)])
    plan = plan_sweep(rules, NOW, TOKYO, items, Usage(used_bytes=6 * MB, daily_intake_bytes=MB))
    warning = plan.warning("minimum_period_at_risk")
    assert plan.erase == () and not plan.stop_recording
    assert warning is not None and warning.at == NOW + 3 * 86400   # four days, one day early
    assert plan_sweep(rules, NOW, TOKYO, items, Usage(used_bytes=6 * MB)).warnings == ()


def test_forecast_is_quiet_beyond_the_horizon() -> None:
    rules = Retention(**HASHIMA | {"capacity": 100 * MB}, if_minimum_at_risk="overwrite", warn_days_before=30)
    items = recs(*[(f"r{i}", jst(2027, 5, 1 + i, 12), MB) for i in range(6)])
    quiet = plan_sweep(rules, NOW, TOKYO, items, Usage(used_bytes=6 * MB, daily_intake_bytes=2 * MB))
    assert quiet.warnings == ()       # 94 MB of room is 47 days away
    near = plan_sweep(rules, NOW + 17 * 86400, TOKYO, items, Usage(used_bytes=6 * MB + 34 * MB,
                                                                   daily_intake_bytes=2 * MB))
    assert near.warning("minimum_period_at_risk") is not None


def test_forecast_counts_calls_not_yet_made_when_the_store_runs_out() -> None:
    rules = Retention(**HASHIMA, if_minimum_at_risk="overwrite")
    seen = forecast(rules, NOW, TOKYO, [], used_bytes=5 * MB, limit=10 * MB, daily_intake_bytes=MB)
    assert seen.minimum_cut_at == NOW + 4 * 86400 and seen.deadline_cut_at is None


def test_capacity_near_for_a_period_the_device_cannot_hold() -> None:
    rules = Retention(keep=days(90), capacity=10 * MB)
    items = recs(*[(f"r{i}", jst(2027, 5, 1 + i, 12), MB) for i in range(8)])
    plan = plan_sweep(rules, NOW, TOKYO, items, Usage(used_bytes=8 * MB, daily_intake_bytes=MB))
    assert plan.warning("capacity_near").at == NOW + 86400
    roomy = Retention(keep=days(90), capacity=GIB)
    assert plan_sweep(roomy, NOW, TOKYO, items, Usage(used_bytes=8 * MB, daily_intake_bytes=MB)).warnings == ()


def test_a_ring_without_minimum_never_warns_about_filling() -> None:
    rules = Retention(capacity=10 * MB)
    items = recs(*[(f"r{i}", jst(2027, 5, 1 + i, 12), MB) for i in range(10)])
    plan = plan_sweep(rules, NOW, TOKYO, items, Usage(used_bytes=10 * MB, incoming_bytes=MB, daily_intake_bytes=MB))
    assert plan.ids() == ["r0"] and plan.warnings == ()


def test_out_of_order_listing_fails_loudly() -> None:
    items = recs(("b", jst(2027, 5, 2), MB), ("a", jst(2027, 5, 1), MB))
    with pytest.raises(ValueError, match="oldest first"):
        plan_sweep(Retention(capacity=10 * MB), NOW, TOKYO, items, Usage(used_bytes=12 * MB))


def test_the_listing_is_read_only_as_far_as_needed() -> None:
    """A million recordings: the planner reads the expired ones, the few the
    ring takes and those within the forecast's horizon, not the rest."""
    read = count()

    def listing() -> Iterator[Stored]:
        base = jst(2026, 1, 1)
        for i in range(1_000_000):
            next(read)
            yield Stored(f"r{i}", base + i * 60.0, MB)

    rules = Retention(keep=days(30), capacity=900_000 * MB)
    # 2026-01-01 + 1e6 minutes is 2027-11-26; 30 days back is 2027-10-26, about 957,000 minutes in.
    now = jst(2027, 11, 26)
    plan = plan_sweep(rules, now, TOKYO, listing(), Usage(used_bytes=1_000_000 * MB, incoming_bytes=MB,
                                                         daily_intake_bytes=1440 * MB))
    expired = len(plan.ids("retention"))
    assert 950_000 < expired < 960_000 and plan.ids("capacity") == []
    assert next(read) < expired + 31 * 1440 + 2


def test_a_floor_larger_than_the_disk_erases_nothing_and_says_so() -> None:
    """A 1 GiB floor on a 500 MiB disk: obeying it would erase every
    recording at every sweep; the planner keeps them and warns instead."""
    from storage.retention import Stored, Usage, plan_sweep
    rules = Retention()
    items = [Stored(f"r{i}", 1_800_000_000.0 + i, 10 * 2**20) for i in range(10)]
    plan = plan_sweep(rules, 1_800_000_100.0, ZoneInfo("Asia/Tokyo"), items,
                      Usage(used_bytes=100 * 2**20, free_bytes=400 * 2**20))
    assert plan.erase == () and not plan.stop_recording
    assert plan.warning("floor_unreachable") is not None
