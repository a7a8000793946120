"""Years the working-day calendar has no official data for, found at run time: tests
that need one stay green when next year's State Council notice arrives."""

from __future__ import annotations

from datetime import UTC, datetime

from appeals_common.calendar import WorkingCalendar


def first_uncovered_year(calendar: WorkingCalendar | None = None) -> int:
    calendar = calendar or WorkingCalendar()
    year = datetime.now(UTC).year  # today only picks where to start looking
    while calendar.covers(year):
        year += 1
    return year
