"""Working-day calendar for mainland China (DESIGN.md §7).

Pure Python: no nameko, pika or SQLAlchemy, so deadline rules test in milliseconds.

Data sources, in order of precedence for a given day:

1. Operator overrides (a YAML file, see below): the official State Council notice may
   arrive before the ``chinesecalendar`` library is released, or correct a day.
2. The ``chinesecalendar`` library (covers 2004-2026 in version 1.11), which already
   knows the 调休 make-up working days (e.g. 2026-01-04, 02-14, 02-28, 05-09, 09-20, 10-10).
3. For a year neither source covers, the law: Monday to Friday minus the statutory public
   holidays of the State Council's 《全国年节及纪念日放假办法》 (2024 revision): 元旦,
   春节 (除夕 to 初三), 清明, 劳动节 (May 1-2), 端午, 中秋 and 国庆 (Oct 1-3). The lunar
   dates come from the ``holidays`` package; its estimated in-lieu days and any notice
   data it carries are left out, since the 调休 make-up working days that go with them
   are not known. Such a year never crashes a computation; instead the result is flagged
   provisional, a warning is logged once per year (logger ``appeals.calendar``) and
   ``on_provisional(year)`` is called so the services can count it.

Override file format (``config/calendar_overrides.yaml``)::

    years:
      2027:
        complete: true        # the notice is fully entered: days not listed follow Mon-Fri
        holidays: [2027-01-01, ...]
        workdays: [2027-02-07, ...]   # 调休 make-up working days

- ``years`` is required (it may be empty: ``years: {}``); no other top-level key.
- Year keys are integers. Per year only ``complete``, ``holidays``, ``workdays`` are allowed.
- ``complete`` (bool, default false): true makes the year *covered* and authoritative: the
  listed days plus Mon-Fri define it and the library is ignored for that year. False means
  the listed days patch whatever else applies (library, or Mon-Fri if it lacks the year), so
  a partially entered uncovered year stays provisional.
- Dates are ``YYYY-MM-DD`` (quoted or not), must lie in their key's year, and may not be in
  both lists. Any violation raises :class:`CalendarConfigError` naming the key and date.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import chinese_calendar
import holidays
import yaml

__all__ = [
    "CalendarConfigError",
    "Deadline",
    "WorkingCalendar",
    "YearOverride",
    "parse_overrides",
]

logger = logging.getLogger("appeals.calendar")

_END_OF_DAY = time(23, 59, 59)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_YEAR_KEYS = frozenset({"complete", "holidays", "workdays"})


class CalendarConfigError(ValueError):
    """The override file or the overrides passed in are invalid."""


@dataclass(frozen=True)
class YearOverride:
    """Operator corrections for one year; see the module docstring for ``complete``."""

    complete: bool = False
    holidays: frozenset[date] = field(default_factory=frozenset)
    workdays: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        # Accept any iterable from callers but keep the instance hashable and immutable.
        object.__setattr__(self, "holidays", frozenset(self.holidays))
        object.__setattr__(self, "workdays", frozenset(self.workdays))


@dataclass(frozen=True)
class Deadline:
    """End of the deadline's working day; provisional if a year without data was used."""

    at: datetime
    provisional_years: frozenset[int] = frozenset()

    @property
    def provisional(self) -> bool:
        return bool(self.provisional_years)


@cache
def _library_covers(year: int) -> bool:
    # Probe through the public API instead of the library's internal tables.
    try:
        chinese_calendar.is_workday(date(year, 1, 1))
    except NotImplementedError:
        return False
    return True


@cache
def statutory_holidays(year: int) -> frozenset[date]:
    """The statutory public holidays of ``year`` (no in-lieu or make-up arrangements)."""
    days = holidays.China(years=year, observed=False, language="en_US")
    # Dates a State Council notice moved ("Day off (substituted from ...)") are not
    # statutory; without the matching make-up working days they would only mislead.
    return frozenset(d for d, name in days.items()
                     if not all("substituted" in part for part in name.split("; ")))


class WorkingCalendar:
    """Working days in mainland China, including 调休 make-up days."""

    def __init__(
        self,
        overrides: dict[int, YearOverride] | None = None,
        tz: str = "Asia/Shanghai",
    ) -> None:
        self._overrides: dict[int, YearOverride] = _validate_overrides(overrides or {})
        try:
            self.tz = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise CalendarConfigError(f"unknown time zone {tz!r}") from exc
        self._warned_years: set[int] = set()
        self._lock = threading.Lock()

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        tz: str = "Asia/Shanghai",
    ) -> WorkingCalendar:
        """Build a calendar from a YAML override file (OSError if it cannot be read)."""
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        return cls(parse_overrides(text, source=str(path)), tz=tz)

    # -- queries ---------------------------------------------------------------------

    def covers(self, year: int) -> bool:
        """True if the library or a ``complete`` override has official data for ``year``."""
        override = self._overrides.get(year)
        return (override is not None and override.complete) or _library_covers(year)

    def law_is_working_day(self, d: date) -> bool:
        """The fallback rule alone (Mon-Fri minus statutory holidays), whatever the data."""
        d = _as_date(d)
        return d.weekday() < 5 and d not in statutory_holidays(d.year)

    def is_working_day(self, d: date) -> bool:
        d = _as_date(d)
        working, covered = self._classify(d)
        if not covered:
            self._report({d.year})
        return working

    def next_working_day(self, d: date) -> date:
        """First working day strictly after ``d``."""
        return self._step(_as_date(d), 1)

    def previous_working_day(self, d: date) -> date:
        """Last working day strictly before ``d``."""
        return self._step(_as_date(d), -1)

    def working_days_between(self, start: date, end: date) -> int:
        """Number of working days in the half-open interval (start, end].

        Zero when ``start == end``. When ``end < start`` the result is the negated count of
        working days in (end, start], so the function is antisymmetric and additive:
        ``between(a, b) + between(b, c) == between(a, c)`` (handy for "days overdue").
        """
        start, end = _as_date(start), _as_date(end)
        if end < start:
            return -self.working_days_between(end, start)
        count = 0
        uncovered: set[int] = set()
        d = start
        while d < end:
            d += timedelta(days=1)
            working, covered = self._classify(d)
            count += working
            if not covered:
                uncovered.add(d.year)
        self._report(uncovered)
        return count

    def add_working_days(self, start: datetime, n: int) -> Deadline:
        """Deadline ``n`` working days after the local calendar day of ``start``.

        The start day never counts (working or not); the deadline is 23:59:59 local time on
        the n-th working day after it. Provisional if any counted day fell in an uncovered
        year.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        d = self.local_date(start)
        remaining = n
        uncovered: set[int] = set()
        while remaining:
            d += timedelta(days=1)
            working, covered = self._classify(d)
            remaining -= working
            if not covered:
                uncovered.add(d.year)
        self._report(uncovered)
        return Deadline(at=self.end_of_day(d), provisional_years=frozenset(uncovered))

    def local_date(self, moment: datetime) -> date:
        """Calendar day of an aware ``moment`` in this calendar's time zone."""
        if not isinstance(moment, datetime):
            raise TypeError(f"expected a datetime, got {type(moment).__name__}")
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"datetime must be timezone-aware, got naive {moment.isoformat()}")
        return moment.astimezone(self.tz).date()

    def end_of_day(self, d: date) -> datetime:
        """23:59:59 local time on ``d``, tz-aware."""
        return datetime.combine(_as_date(d), _END_OF_DAY, tzinfo=self.tz)

    # -- internals -------------------------------------------------------------------

    def _classify(self, d: date) -> tuple[bool, bool]:
        """(is working, year is covered) without side effects."""
        override = self._overrides.get(d.year)
        if override is not None:
            if d in override.workdays:
                return True, self.covers(d.year)
            if d in override.holidays:
                return False, self.covers(d.year)
            if override.complete:
                # A complete notice is authoritative: unlisted days follow Mon-Fri.
                return d.weekday() < 5, True
        if _library_covers(d.year):
            return chinese_calendar.is_workday(d), True
        return self.law_is_working_day(d), False

    def working_day_before(self, moment: datetime, n: int) -> Deadline:
        """End of the n-th working day before the local day of ``moment`` (a plan due some
        working days before an event), provisional like ``add_working_days``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        d, uncovered = self.local_date(moment), set()
        for _ in range(n):
            d, years = self._walk(d, -1)
            uncovered |= years
        self._report(uncovered)
        return Deadline(at=self.end_of_day(d), provisional_years=frozenset(uncovered))

    def _step(self, d: date, direction: int) -> date:
        d, uncovered = self._walk(d, direction)
        self._report(uncovered)
        return d

    def _walk(self, d: date, direction: int) -> tuple[date, set[int]]:
        uncovered: set[int] = set()
        while True:
            d += timedelta(days=direction)
            working, covered = self._classify(d)
            if not covered:
                uncovered.add(d.year)
            if working:
                return d, uncovered

    def _report(self, years: Iterable[int]) -> None:
        """Warn once per year per calendar. Counting is the caller's: a deadline set
        counts once, however many calendar queries it took (metrics.count_provisional)."""
        for year in sorted(years):
            with self._lock:
                first = year not in self._warned_years
                self._warned_years.add(year)
            if first:
                logger.warning(
                    "no official working-day data for %d: using Mon-Fri minus the statutory "
                    "holidays; deadlines are provisional until the State Council notice is "
                    "entered in the overrides (then run `appeals calendar recompute`)",
                    year,
                )


def _as_date(d: date) -> date:
    # A datetime is a date subclass; silently dropping its time zone would pick the wrong day.
    if isinstance(d, datetime):
        raise TypeError("pass a date; convert a datetime with WorkingCalendar.local_date()")
    if not isinstance(d, date):
        raise TypeError(f"expected a date, got {type(d).__name__}")
    return d


def _validate_overrides(overrides: Mapping[int, YearOverride]) -> dict[int, YearOverride]:
    if not isinstance(overrides, Mapping):
        raise CalendarConfigError("overrides must be a mapping of year -> YearOverride")
    checked: dict[int, YearOverride] = {}
    for year, override in overrides.items():
        if isinstance(year, bool) or not isinstance(year, int) or not 1 <= year <= 9998:
            raise CalendarConfigError(f"years: key {year!r} is not a valid year")
        if not isinstance(override, YearOverride):
            raise CalendarConfigError(f"years.{year}: expected a YearOverride")
        if not isinstance(override.complete, bool):
            raise CalendarConfigError(f"years.{year}.complete must be true or false")
        for name in ("holidays", "workdays"):
            for d in getattr(override, name):
                if isinstance(d, datetime) or not isinstance(d, date):
                    raise CalendarConfigError(f"years.{year}.{name}: {d!r} is not a date")
                if d.year != year:
                    raise CalendarConfigError(
                        f"years.{year}.{name}: {d.isoformat()} is not in {year}"
                    )
        both = override.holidays & override.workdays
        if both:
            listed = ", ".join(sorted(d.isoformat() for d in both))
            raise CalendarConfigError(
                f"years.{year}: {listed} listed in both holidays and workdays"
            )
        checked[year] = override
    return checked


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that keeps dates as strings and rejects duplicate keys.

    PyYAML would turn ``2027-02-30`` into an opaque constructor error and silently keep the
    last of two duplicate year keys; both must be reported clearly instead.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise CalendarConfigError(
                    f"duplicate key {key!r} (line {key_node.start_mark.line + 1})"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_overrides(text: str, source: str = "<string>") -> dict[int, YearOverride]:
    """Parse and strictly validate the YAML override format described in the module doc."""
    try:
        doc = yaml.load(text, Loader=_StrictLoader)
    except CalendarConfigError as exc:
        raise CalendarConfigError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise CalendarConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or "years" not in doc:
        raise CalendarConfigError(f"{source}: expected a mapping with a 'years' key")
    unknown = sorted(str(k) for k in doc if k != "years")
    if unknown:
        raise CalendarConfigError(f"{source}: unknown top-level key(s): {', '.join(unknown)}")
    years = doc["years"] if doc["years"] is not None else {}
    if not isinstance(years, dict):
        raise CalendarConfigError(f"{source}: 'years' must be a mapping of year -> entry")

    overrides: dict[int, YearOverride] = {}
    for key, entry in years.items():
        if isinstance(key, bool) or not isinstance(key, int):
            raise CalendarConfigError(f"{source}: years: key {key!r} is not a year number")
        where = f"{source}: years.{key}"
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise CalendarConfigError(f"{where}: expected a mapping")
        bad = sorted(str(k) for k in entry if k not in _YEAR_KEYS)
        if bad:
            raise CalendarConfigError(
                f"{where}: unknown key(s) {', '.join(bad)} "
                f"(allowed: {', '.join(sorted(_YEAR_KEYS))})"
            )
        complete = entry.get("complete", False)
        if not isinstance(complete, bool):
            raise CalendarConfigError(f"{where}.complete must be true or false, got {complete!r}")
        override = YearOverride(
            complete=complete,
            holidays=_parse_dates(entry.get("holidays"), f"{where}.holidays"),
            workdays=_parse_dates(entry.get("workdays"), f"{where}.workdays"),
        )
        try:
            overrides.update(_validate_overrides({key: override}))
        except CalendarConfigError as exc:
            raise CalendarConfigError(f"{source}: {exc}") from None
    return overrides


def _parse_dates(value: Any, where: str) -> frozenset[date]:
    if value is None:
        return frozenset()
    if not isinstance(value, list):
        raise CalendarConfigError(f"{where}: expected a list of YYYY-MM-DD dates")
    days: set[date] = set()
    for item in value:
        text = str(item)
        if not isinstance(item, str) or not _DATE_RE.fullmatch(text):
            raise CalendarConfigError(f"{where}: {text!r} is not a YYYY-MM-DD date")
        try:
            days.add(date.fromisoformat(text))
        except ValueError as exc:
            raise CalendarConfigError(f"{where}: {text!r} is not a valid date ({exc})") from None
    return frozenset(days)
