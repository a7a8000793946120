"""Injectable time. Domain code takes `now` as an argument; services ask a Clock.

Business time ("now" for registrations, deadlines, notices, validation) comes only from a
Clock. Two test knobs move it, and every process of the suite honours both:

- ``APPEALS_CLOCK_OFFSET_SECONDS``: real time shifted by a fixed amount. CI runs the whole
  suite a second time shifted to the end of a year the calendar has no official data for
  (`shift_for_year_end`), so deadlines cross a New Year into a provisional year.
- ``APPEALS_CLOCK_FILE``: a file holding an ISO moment that pins "now" (tests jump days);
  empty or missing means the (shifted) real time.

Real wall-clock time is read directly only for infrastructure durations that must not
jump with the business clock: outbox leases and retention, token lifetimes, operational
timestamps in dead-letter headers (see tests/unit/test_clock_sources.py).
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

OFFSET_ENV = "APPEALS_CLOCK_OFFSET_SECONDS"


class Clock:
    """Real time, shifted by ``offset`` (zero in production)."""

    def __init__(self, offset: timedelta = timedelta(0)) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


class FileClock(Clock):
    """Reads the current time from a file so end-to-end tests can move time forward.

    An empty or missing file means (shifted) real time.
    """

    def __init__(self, path: str, offset: timedelta = timedelta(0)) -> None:
        super().__init__(offset)
        self.path = Path(path)

    def now(self) -> datetime:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            text = ""
        if not text:
            return super().now()
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise ValueError(f"clock file {self.path} must hold an ISO time with an offset")
        return moment


class FixedClock(Clock):
    def __init__(self, moment: datetime) -> None:
        super().__init__()
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


def make_clock(clock_file: str | None, offset_seconds: float = 0.0) -> Clock:
    offset = timedelta(seconds=offset_seconds)
    return FileClock(clock_file, offset) if clock_file else Clock(offset)


def process_clock() -> Clock:
    """Real time with this process's APPEALS_CLOCK_OFFSET_SECONDS: for code that is given
    no clock (a schema loaded outside a service)."""
    return make_clock(None, parse_offset(os.environ.get(OFFSET_ENV)))


def parse_offset(raw: str | None) -> float:
    """The value of APPEALS_CLOCK_OFFSET_SECONDS (seconds, may be negative or fractional)."""
    if raw is None or not raw.strip():
        return 0.0
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{OFFSET_ENV} must be a number of seconds, got {raw!r}") from None


class _Covers(Protocol):
    def covers(self, year: int) -> bool: ...


def shift_for_year_end(today: date, calendar: _Covers, tz: str = "Asia/Shanghai") -> datetime:
    """Where CI's second run starts: 30 December, 10:00 local, of the first year after
    ``today``'s whose following year the calendar has no official data for. Deadlines set
    then cross New Year's Day into a provisional year. Derived from today, so it never
    becomes the past."""
    year = today.year + 1
    while calendar.covers(year + 1):
        year += 1
    return datetime.combine(date(year, 12, 30), time(10), tzinfo=ZoneInfo(tz))
