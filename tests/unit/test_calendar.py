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
    assert not cal.covers(2027)
    assert not cal.covers(2003)


def test_add_working_days_across_national_day(cal: WorkingCalendar) -> None:
    # Wed 2026-09-30 + 1 skips 10-01..10-07; 10-10 (Sat) is a make-up day.
    assert cal.add_working_days(at(2026, 9, 29), 1) == Deadline(eod(2026, 9, 30), False)
    assert cal.add_working_days(at(2026, 9, 30), 1) == Deadline(eod(2026, 10, 8), False)
    assert cal.add_working_days(at(2026, 9, 30), 3) == Deadline(eod(2026, 10, 10), False)
    assert cal.add_working_days(at(2026, 9, 30), 4) == Deadline(eod(2026, 10, 12), False)


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
    assert cal.add_working_days(start, 1) == Deadline(expected, False)


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


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (at(2026, 12, 29), eod(2027, 1, 5)),  # Dec 30, 31, Jan 1, 4, 5 (Mon-Fri guess)
        (at(2026, 12, 30), eod(2027, 1, 6)),
        (at(2026, 12, 31), eod(2027, 1, 7)),
    ],
)
def test_deadline_into_2027_is_provisional(start: datetime, expected: datetime) -> None:
    seen: list[int] = []
    cal = WorkingCalendar(on_provisional=seen.append)
    assert cal.add_working_days(start, 5) == Deadline(expected, True)
    assert seen == [2027]


def test_deadline_inside_2026_is_not_provisional_near_year_end() -> None:
    seen: list[int] = []
    cal = WorkingCalendar(on_provisional=seen.append)
    assert cal.add_working_days(at(2026, 12, 29), 2) == Deadline(eod(2026, 12, 31), False)
    assert seen == []


def test_uncovered_year_warns_once_but_hook_called_each_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[int] = []
    cal = WorkingCalendar(on_provisional=seen.append)
    with caplog.at_level(logging.WARNING, logger="appeals.calendar"):
        cal.add_working_days(at(2026, 12, 31), 5)
        cal.add_working_days(at(2026, 12, 31), 5)
        assert cal.is_working_day(date(2027, 1, 4))
        assert not cal.is_working_day(date(2027, 1, 2))
    warnings = [r for r in caplog.records if r.name == "appeals.calendar"]
    assert len(warnings) == 1 and "2027" in warnings[0].getMessage()
    assert seen == [2027] * 4


def test_failing_hook_does_not_break_deadlines() -> None:
    def boom(year: int) -> None:
        raise RuntimeError("metrics down")

    cal = WorkingCalendar(on_provisional=boom)
    assert cal.add_working_days(at(2026, 12, 31), 1) == Deadline(eod(2027, 1, 1), True)


# -- overrides -------------------------------------------------------------------------


def test_complete_override_covers_2027(tmp_path: Path) -> None:
    seen: list[int] = []
    cal = WorkingCalendar.from_file(write(tmp_path, FAKE_2027), on_provisional=seen.append)
    assert cal.covers(2027)
    assert not cal.is_working_day(date(2027, 1, 1))
    assert not cal.is_working_day(date(2027, 1, 5))
    assert cal.is_working_day(date(2027, 1, 9))  # Saturday make-up day
    assert not cal.is_working_day(date(2027, 1, 10))  # unlisted Sunday
    # Dec 30, 31, (Jan 1 off), Jan 4, (Jan 5 off), Jan 6, 7
    assert cal.add_working_days(at(2026, 12, 29), 5) == Deadline(eod(2027, 1, 7), False)
    assert cal.add_working_days(at(2027, 1, 7), 2) == Deadline(eod(2027, 1, 9), False)
    assert seen == []


def test_incomplete_override_patches_but_stays_provisional() -> None:
    seen: list[int] = []
    cal = WorkingCalendar(
        {2027: YearOverride(holidays=frozenset({date(2027, 1, 1)}))}, on_provisional=seen.append
    )
    assert not cal.covers(2027)
    assert cal.add_working_days(at(2026, 12, 31), 1) == Deadline(eod(2027, 1, 4), True)
    assert seen == [2027]


def test_override_corrects_library_year() -> None:
    cal = WorkingCalendar(
        {2026: YearOverride(holidays={date(2026, 3, 3)}, workdays={date(2026, 10, 3)})}
    )
    assert not cal.is_working_day(date(2026, 3, 3))
    assert cal.is_working_day(date(2026, 10, 3))
    assert not cal.is_working_day(date(2026, 10, 4))  # unlisted days still follow the library
    assert cal.is_working_day(date(2026, 2, 14))


def test_shipped_override_file_loads_and_leaves_2027_uncovered() -> None:
    cal = WorkingCalendar.from_file(REPO / "config" / "calendar_overrides.yaml")
    assert cal.covers(2026)
    assert not cal.covers(2027)


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
    assert deadline.provisional == (due.year >= 2027)
