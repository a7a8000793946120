"""The suite's own time, as the tests see it: real time shifted by
APPEALS_CLOCK_OFFSET_SECONDS (CI's year-end run), or the moment a test pinned in the
shared clock file. Tests derive every date they send from this and from what the suite
sent them, and walk days with the suite's own working calendar, never a Mon-Fri loop."""

from __future__ import annotations

import os
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from appeals_common.calendar import WorkingCalendar
from appeals_common.clock import make_clock
from appeals_common.metrics import load_calendar
from appeals_common.settings import load_settings

_SETTINGS = load_settings()
TZ = ZoneInfo(_SETTINGS.timezone)
CALENDAR: WorkingCalendar = load_calendar(_SETTINGS.config_dir, _SETTINGS.timezone)
# Set by tests/e2e/conftest.py once the shared clock file exists.
_clock_file: str | None = os.environ.get("APPEALS_CLOCK_FILE") or None


def use_clock_file(path: str) -> None:
    global _clock_file
    _clock_file = path


def now() -> datetime:
    """The suite's "now" (local time zone)."""
    return make_clock(_clock_file, _SETTINGS.clock_offset_seconds).now().astimezone(TZ)


def today() -> date:
    return now().date()


def iso(moment: datetime | None = None) -> str:
    """An ISO 8601 time with offset, to the second; "now" by default."""
    return (moment or now()).astimezone(TZ).isoformat(timespec="seconds")


def at(day: date, hour: int = 10, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=TZ)


def end_of_day(day: date) -> datetime:
    """23:59:59 local on ``day``: when a deadline falling on that day ends."""
    return datetime.combine(day, time(23, 59, 59), tzinfo=TZ)


def local_day(moment: datetime | date) -> date:
    return moment.astimezone(TZ).date() if isinstance(moment, datetime) else moment


def working_day_after(moment: datetime | date, n: int = 1) -> date:
    """The n-th working day after the local day of ``moment``."""
    day = local_day(moment)
    for _ in range(n):
        day = CALENDAR.next_working_day(day)
    return day


def working_day_before(moment: datetime | date, n: int = 1) -> date:
    day = local_day(moment)
    for _ in range(n):
        day = CALENDAR.previous_working_day(day)
    return day


def first_uncovered_year(start: int | None = None) -> int:
    """The first year from ``start`` (default: this year) without official calendar data."""
    year = start or today().year
    while CALENDAR.covers(year):
        year += 1
    return year
