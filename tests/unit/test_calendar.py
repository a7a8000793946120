"""Working-day calendar (DESIGN.md §7): make-up days, holidays, provisional years, overrides."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appeals_common.calendar import (
    CalendarConfigError,
    Deadline,
    WorkingCalendar,
    YearOverride,
    statutory_holidays,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
REPO = Path(__file__).resolve().parents[2]

# Fictitious 2027 data for tests only -- NOT the real notice.
FAKE_2027 = """\
years:
  2027:
    complete: true
    holidays: [2027-01-01, 2027-01-05]
    workdays: ["2027-01-09"]
"""


def at(y: int, m: int, d: int, hh: int = 10, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=SHANGHAI)


def eod(y: int, m: int, d: int) -> datetime:
    return datetime.combine(date(y, m, d), time(23, 59, 59), tzinfo=SHANGHAI)


@pytest.fixture
def cal() -> WorkingCalendar:
    return WorkingCalendar()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "overrides.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# -- library data ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "day",
    [
        date(2026, 1, 4),
        date(2026, 2, 14),
        date(2026, 2, 28),
        date(2026, 5, 9),
        date(2026, 9, 20),
        date(2026, 10, 10),
    ],
)
def test_2026_make_up_days_are_working_days(cal: WorkingCalendar, day: date) -> None:
    assert day.weekday() >= 5  # they really are weekend days
    assert cal.is_working_day(day)


def test_national_day_2026_is_not_working(cal: WorkingCalendar) -> None:
    for i in range(7):
        assert not cal.is_working_day(date(2026, 10, 1) + timedelta(days=i))
    assert cal.is_working_day(date(2026, 9, 30))
    assert cal.is_working_day(date(2026, 10, 8))


def test_covers(cal: WorkingCalendar) -> None:
    assert cal.covers(2004) and cal.covers(2026)
    assert not cal.covers(UNCOVERED)
    assert not cal.covers(2003)


def test_add_working_days_across_national_day(cal: WorkingCalendar) -> None:
    # Wed 2026-09-30 + 1 skips 10-01..10-07; 10-10 (Sat) is a make-up day.
    assert cal.add_working_days(at(2026, 9, 29), 1) == Deadline(eod(2026, 9, 30))
    assert cal.add_working_days(at(2026, 9, 30), 1) == Deadline(eod(2026, 10, 8))
    assert cal.add_working_days(at(2026, 9, 30), 3) == Deadline(eod(2026, 10, 10))
    assert cal.add_working_days(at(2026, 9, 30), 4) == Deadline(eod(2026, 10, 12))


def test_deadline_is_end_of_local_day(cal: WorkingCalendar) -> None:
    deadline = cal.add_working_days(at(2026, 3, 2), 5)
    assert deadline.at == eod(2026, 3, 9)
    assert deadline.at.tzinfo is not None
    assert deadline.at.utcoffset() == timedelta(hours=8)


def test_start_day_is_local_day(cal: WorkingCalendar) -> None:
    # 2026-03-01 17:00 UTC is Mon 2026-03-02 01:00 in Shanghai: counting starts after Monday.
    start = datetime(2026, 3, 1, 17, 0, tzinfo=UTC)
    assert cal.add_working_days(start, 1).at == eod(2026, 3, 3)


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (at(2026, 3, 7), eod(2026, 3, 9)),  # Saturday -> Monday
        (at(2026, 3, 8), eod(2026, 3, 9)),  # Sunday -> Monday
        (at(2026, 10, 3), eod(2026, 10, 8)),  # inside National Day
        (at(2026, 2, 13, 23, 59), eod(2026, 2, 14)),  # Fri before a Saturday make-up day
    ],
)
def test_start_on_weekend_or_holiday(
    cal: WorkingCalendar, start: datetime, expected: datetime
) -> None:
    assert cal.add_working_days(start, 1) == Deadline(expected)


def test_naive_datetime_rejected(cal: WorkingCalendar) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cal.add_working_days(datetime(2026, 3, 2, 10, 0), 1)


@pytest.mark.parametrize("n", [0, -1, True, 1.5])
def test_bad_n_rejected(cal: WorkingCalendar, n: object) -> None:
    with pytest.raises(ValueError, match="n must be"):
        cal.add_working_days(at(2026, 3, 2), n)  # type: ignore[arg-type]


def test_next_and_previous_working_day(cal: WorkingCalendar) -> None:
    assert cal.next_working_day(date(2026, 9, 30)) == date(2026, 10, 8)
    assert cal.previous_working_day(date(2026, 10, 8)) == date(2026, 9, 30)
    assert cal.next_working_day(date(2026, 2, 13)) == date(2026, 2, 14)
    assert cal.previous_working_day(date(2026, 1, 5)) == date(2026, 1, 4)


def test_working_days_between(cal: WorkingCalendar) -> None:
    assert cal.working_days_between(date(2026, 9, 30), date(2026, 10, 12)) == 4
    assert cal.working_days_between(date(2026, 10, 12), date(2026, 9, 30)) == -4
    assert cal.working_days_between(date(2026, 3, 2), date(2026, 3, 2)) == 0
    with pytest.raises(TypeError):
        cal.working_days_between(at(2026, 3, 2), date(2026, 3, 9))


# -- uncovered years -------------------------------------------------------------------
# Found at run time: the suite stays green when next year's official data arrives.


def _first_uncovered_year() -> int:
    cal, year = WorkingCalendar(), datetime.now(UTC).year  # today only picks the year
    while cal.covers(year):
        year += 1
    return year


UNCOVERED = _first_uncovered_year()


def test_deadline_from_2026_12_31_skips_new_years_day_2027(cal: WorkingCalendar) -> None:
    """Whether 2027 is official yet or not, 1 January is no working day."""
    assert not cal.is_working_day(date(2027, 1, 1))
    deadline = cal.add_working_days(at(2026, 12, 31), 1)
    assert deadline.at == eod(2027, 1, 4)  # Fri 1 Jan off, then the weekend
    assert deadline.provisional == (not cal.covers(2027))
    sign = cal.add_working_days(at(2026, 12, 31, 16), 1)
    assert sign.at.date() != date(2027, 1, 1)


def test_fallback_knows_the_2027_statutory_holidays(cal: WorkingCalendar) -> None:
    """The rule for a year without data: Mon-Fri minus the statutory days (2024 revision):
    元旦, 春节 除夕 to 初三 (2027: 5-8 Feb), 清明, May 1-2, 端午, 中秋, Oct 1-3."""
    off = [date(2027, 1, 1), date(2027, 2, 5), date(2027, 2, 8), date(2027, 4, 5),
           date(2027, 6, 9), date(2027, 9, 15), date(2027, 10, 1)]
    for day in off:
        assert day.weekday() < 5 and not cal.law_is_working_day(day), day
    spring = [date(2027, 2, 5) + timedelta(days=i) for i in range(4)]  # 除夕 .. 初三
    assert not any(cal.law_is_working_day(d) for d in spring)
    # No guessed in-lieu days: Thu before and Tue after the festival are working days.
    assert cal.law_is_working_day(date(2027, 2, 4)) and cal.law_is_working_day(date(2027, 2, 9))
    assert cal.law_is_working_day(date(2027, 5, 3))  # Monday after May Day weekend
    assert not cal.law_is_working_day(date(2027, 2, 6))  # a Saturday stays off


def test_an_uncovered_year_follows_the_law(cal: WorkingCalendar) -> None:
    year = UNCOVERED
    new_year = date(year, 1, 1)
    assert not cal.is_working_day(new_year)
    deadline = cal.add_working_days(at(year - 1, 12, 31), 1)
    assert deadline.provisional_years == frozenset({year})
    assert deadline.at.date() > new_year and deadline.at.date().weekday() < 5
    assert all(not cal.is_working_day(d) for d in statutory_holidays(year))
    assert len(statutory_holidays(year)) >= 11  # some festivals can fall on one day


@pytest.mark.parametrize("days", [1, 3, 5])
def test_deadline_into_an_uncovered_year_is_provisional(days: int) -> None:
    cal = WorkingCalendar()
    deadline = cal.add_working_days(at(UNCOVERED - 1, 12, 31), days)
    assert deadline.at.year == UNCOVERED and deadline.provisional_years == {UNCOVERED}


def test_deadline_inside_a_covered_year_is_not_provisional_near_year_end() -> None:
    cal = WorkingCalendar()
    assert cal.add_working_days(at(2026, 12, 29), 2) == Deadline(eod(2026, 12, 31))


def test_uncovered_year_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    cal = WorkingCalendar()
    with caplog.at_level(logging.WARNING, logger="appeals.calendar"):
        cal.add_working_days(at(UNCOVERED - 1, 12, 31), 5)
        cal.add_working_days(at(UNCOVERED - 1, 12, 31), 5)
        cal.is_working_day(date(UNCOVERED, 1, 4))
    warnings = [r for r in caplog.records if r.name == "appeals.calendar"]
    assert len(warnings) == 1 and str(UNCOVERED) in warnings[0].getMessage()


def test_working_day_before_counts_back_and_flags_the_years() -> None:
    cal = WorkingCalendar()
    # Three working days before Thu 2026-10-08: 9-30, 9-29, 9-28 (National Day between).
    assert cal.working_day_before(at(2026, 10, 8), 3) == Deadline(eod(2026, 9, 28))
    back = cal.working_day_before(at(UNCOVERED + 1, 1, 1, 0), 1)
    assert back.at.date().year == UNCOVERED and back.provisional_years == {UNCOVERED}


# -- overrides -------------------------------------------------------------------------


def test_complete_override_covers_a_year(tmp_path: Path) -> None:
    year = UNCOVERED
    text = FAKE_2027.replace("2027", str(year))
    cal = WorkingCalendar.from_file(write(tmp_path, text))
    assert cal.covers(year)
    jan = {d: date(year, 1, d) for d in (1, 4, 5, 6, 7, 8, 9, 10, 11)}
    assert not cal.is_working_day(jan[1]) and not cal.is_working_day(jan[5])
    assert cal.is_working_day(jan[9])  # the listed make-up day, whatever weekday it is
    expected = [d for d in sorted(jan.values())
                if d not in (jan[1], jan[5]) and (d.weekday() < 5 or d == jan[9])]
    deadline = cal.add_working_days(at(year - 1, 12, 31), 2)
    assert deadline == Deadline(datetime.combine(expected[1], time(23, 59, 59), tzinfo=SHANGHAI))


def test_incomplete_override_patches_but_stays_provisional() -> None:
    year = UNCOVERED
    second = date(year, 1, 2)
    cal = WorkingCalendar({year: YearOverride(holidays=frozenset({second}))})
    assert not cal.covers(year) and not cal.is_working_day(second)
    assert cal.add_working_days(at(year - 1, 12, 31), 1).provisional_years == {year}


def test_override_corrects_library_year() -> None:
    cal = WorkingCalendar(
        {2026: YearOverride(holidays={date(2026, 3, 3)}, workdays={date(2026, 10, 3)})}
    )
    assert not cal.is_working_day(date(2026, 3, 3))
    assert cal.is_working_day(date(2026, 10, 3))
    assert not cal.is_working_day(date(2026, 10, 4))  # unlisted days still follow the library
    assert cal.is_working_day(date(2026, 2, 14))


def test_shipped_override_file_loads() -> None:
    cal = WorkingCalendar.from_file(REPO / "config" / "calendar_overrides.yaml")
    assert cal.covers(2026)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("years:\n  2027:\n    holidays: [2027-02-30]\n", "2027-02-30"),
        ("years:\n  2027:\n    holidays: [2027/01/01]\n", "2027/01/01"),
        ("years:\n  2027:\n    holidays: [20270101]\n", "20270101"),
        ("years:\n  2027:\n    holidays: [2026-12-31]\n", "2026-12-31 is not in 2027"),
        (
            "years:\n  2027:\n    holidays: [2027-01-09]\n    workdays: [2027-01-09]\n",
            "2027-01-09 listed in both",
        ),
        ("years:\n  2027:\n    holiday: [2027-01-01]\n", "holiday"),
        ("years: {}\nyear: {}\n", "unknown top-level key(s): year"),
        ("years:\n  2027:\n    complete: yes please\n", "complete must be true or false"),
        ("years:\n  '2027':\n    complete: true\n", "'2027' is not a year number"),
        ("years:\n  2027: {}\n  2027: {complete: true}\n", "duplicate key 2027"),
        ("years:\n  2027:\n    holidays: 2027-01-01\n", "expected a list"),
        ("holidays: [2027-01-01]\n", "expected a mapping with a 'years' key"),
        ("", "expected a mapping with a 'years' key"),
        ("years: [\n", "not valid YAML"),
    ],
)
def test_bad_override_file(tmp_path: Path, text: str, needle: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CalendarConfigError) as info:
        WorkingCalendar.from_file(path)
    assert needle in str(info.value)
    assert str(path) in str(info.value)


def test_bad_programmatic_overrides() -> None:
    with pytest.raises(CalendarConfigError, match="2026-12-31 is not in 2027"):
        WorkingCalendar({2027: YearOverride(holidays={date(2026, 12, 31)})})
    with pytest.raises(CalendarConfigError, match="unknown time zone"):
        WorkingCalendar(tz="Mars/Olympus")


# -- property --------------------------------------------------------------------------

_ZONES = st.sampled_from([SHANGHAI, UTC, ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata")])
_CAL = WorkingCalendar()


@given(
    start=st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2026, 12, 31, 23, 59), timezones=_ZONES
    ),
    n=st.integers(min_value=1, max_value=30),
)
def test_deadline_property(start: datetime, n: int) -> None:
    deadline = _CAL.add_working_days(start, n)
    start_day = start.astimezone(SHANGHAI).date()
    due = deadline.at.date()
    assert deadline.at.tzinfo == SHANGHAI and deadline.at.time() == time(23, 59, 59)
    assert deadline.at > start and due > start_day
    assert _CAL.is_working_day(due)
    counted = sum(
        _CAL.is_working_day(start_day + timedelta(days=i))
        for i in range(1, (due - start_day).days + 1)
    )
    assert counted == n == _CAL.working_days_between(start_day, due)
    first_counted = start_day + timedelta(days=1)
    assert deadline.provisional == any(not _CAL.covers(y)
                                       for y in range(first_counted.year, due.year + 1))
