"""Reporting's plain rules: report periods in local dates, rate arithmetic, the response
time buckets, masking. No nameko, no SQLAlchemy (docs/reports.md explains them)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from appeals_common.input_guard import whole_number

PERIOD_KINDS = ("month", "quarter", "year", "custom")
# Ways to split a rate report: by a dimension of the facts, or by calendar bucket.
DIMENSIONS = ("department", "channel", "industry_chain", "category")
TIME_BUCKETS = ("month", "quarter", "year")
GROUP_BYS = (*DIMENSIONS, *TIME_BUCKETS, "none")
MIN_YEAR, MAX_YEAR = 2000, 2100
MAX_CUSTOM_DAYS = 3660  # ten years: enough for any review, bounded for the database

# appeals_response_seconds (registered → first response): 1h, 4h, 1d, 2d, 5d, 10d, 30d.
RESPONSE_BUCKETS = (3600, 4 * 3600, 86400, 2 * 86400, 5 * 86400, 10 * 86400, 30 * 86400)

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class ParameterError(ValueError):
    """Query parameters that do not make a report, by parameter name."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class Period:
    """Local calendar days [start, end], both inclusive, in the reporting time zone."""

    kind: str
    start: date
    end: date
    label: str

    def bounds(self, tz: tzinfo) -> tuple[datetime, datetime]:
        """The UTC instants [from, to) the period covers: local midnight to local midnight."""
        return local_midnight(self.start, tz), local_midnight(self.end + timedelta(days=1), tz)

    def view(self, tz_name: str) -> dict[str, str]:
        return {"kind": self.kind, "label": self.label, "from": self.start.isoformat(),
                "to": self.end.isoformat(), "timezone": tz_name}


def local_midnight(day: date, tz: tzinfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def local_day(moment: datetime, tz: tzinfo) -> date:
    return moment.astimezone(tz).date()


def check_known(params: Mapping[str, str], allowed: Iterable[str]) -> None:
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ParameterError({name: [f"unknown parameter; allowed: {', '.join(sorted(allowed))}"]
                              for name in unknown})


def _int(params: Mapping[str, str], name: str, low: int, high: int,
         errors: dict[str, list[str]]) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    value = whole_number(raw, len(str(high)) + 2)
    if value is None:
        errors[name] = [f"must be a whole number from {low} to {high}, got {raw[:40]!r}"]
        return None
    if not low <= value <= high:
        errors[name] = [f"must be from {low} to {high}, got {value}"]
        return None
    return value


def _day(params: Mapping[str, str], name: str, errors: dict[str, list[str]]) -> date | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        if not _DATE_RE.match(raw):
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        errors[name] = [f"must be a date YYYY-MM-DD (a local day in the reporting time zone), "
                        f"got {raw!r}"]
        return None


def parse_period(params: Mapping[str, str], today: date) -> Period:
    """A period from `period`, `year`, `quarter`, `month`, `from`, `to` (local dates).

    `period` may be left out: `from`/`to` mean custom, else `month` or `quarter` given
    mean that, else the year (`year` defaults to this year).
    """
    errors: dict[str, list[str]] = {}
    kind = params.get("period") or None
    if kind is not None and kind not in PERIOD_KINDS:
        errors["period"] = [f"must be one of {', '.join(PERIOD_KINDS)}, got {kind!r}"]
    year = _int(params, "year", MIN_YEAR, MAX_YEAR, errors)
    quarter = _int(params, "quarter", 1, 4, errors)
    month = _int(params, "month", 1, 12, errors)
    start, end = _day(params, "from", errors), _day(params, "to", errors)
    given = {name for name in ("year", "quarter", "month", "from", "to") if params.get(name)}
    if kind is None:
        kind = ("custom" if given & {"from", "to"} else "month" if "month" in given
                else "quarter" if "quarter" in given else "year")
    if errors:
        raise ParameterError(errors)
    # Parameters that belong to another kind of period are refused, not ignored.
    belongs = {"month": {"year", "month"}, "quarter": {"year", "quarter"}, "year": {"year"},
               "custom": {"from", "to"}}[kind]
    for name in sorted(given - belongs):
        errors[name] = [f"does not apply to period={kind}"]
    year = year or today.year
    if kind == "month":
        if month is None:
            errors["month"] = ["required for period=month (1-12)"]
        else:
            first = date(year, month, 1)
            return _checked(errors, Period("month", first, _month_end(first), f"{year}-{month:02d}"))
    elif kind == "quarter":
        if quarter is None:
            errors["quarter"] = ["required for period=quarter (1-4)"]
        else:
            first = date(year, 3 * quarter - 2, 1)
            last = _month_end(date(year, 3 * quarter, 1))
            return _checked(errors, Period("quarter", first, last, f"{year}-Q{quarter}"))
    elif kind == "year":
        return _checked(errors, Period("year", date(year, 1, 1), date(year, 12, 31), str(year)))
    else:
        for name, value in (("from", start), ("to", end)):
            if value is None:
                errors.setdefault(name, ["required for period=custom (YYYY-MM-DD, inclusive)"])
        if start and end:
            if end < start:
                errors["to"] = [f"must not be before from ({start.isoformat()})"]
            elif (end - start).days + 1 > MAX_CUSTOM_DAYS:
                errors["to"] = [f"a custom period spans at most {MAX_CUSTOM_DAYS} days"]
            elif not (start.year >= MIN_YEAR and end.year <= MAX_YEAR):
                errors["from"] = [f"dates must lie in {MIN_YEAR}-{MAX_YEAR}"]
            else:
                return _checked(errors, Period("custom", start, end,
                                               f"{start.isoformat()}..{end.isoformat()}"))
    raise ParameterError(errors)


def _checked(errors: dict[str, list[str]], period: Period) -> Period:
    if errors:
        raise ParameterError(errors)
    return period


def _month_end(first: date) -> date:
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return following - timedelta(days=1)


def bucket_of(day: date, unit: str) -> str:
    """The calendar bucket a local day falls in: 2026-11, 2026-Q4, 2026."""
    if unit == "month":
        return f"{day.year}-{day.month:02d}"
    if unit == "quarter":
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    return str(day.year)


def buckets_in(period: Period, unit: str) -> list[str]:
    """Every bucket the period touches, in order (so a series has no gaps)."""
    out: list[str] = []
    day = period.start
    while day <= period.end:
        label = bucket_of(day, unit)
        if not out or out[-1] != label:
            out.append(label)
        day = _month_end(date(day.year, day.month, 1)) + timedelta(days=1)
    return out


def ratio(numerator: int, denominator: int) -> dict[str, int | float | None]:
    """A rate with the counts it comes from; no rate when there is nothing to divide by."""
    return {"numerator": int(numerator), "denominator": int(denominator),
            "rate": round(numerator / denominator, 4) if denominator else None}


def response_bucket(seconds: float) -> str:
    """The histogram bucket (upper bound in seconds, Prometheus `le`) a duration falls in."""
    for bound in RESPONSE_BUCKETS:
        if seconds <= bound:
            return str(bound)
    return "+Inf"


def working_days_since(is_working: Callable[[date], bool], days: Iterable[date],
                       today: date) -> dict[date, int]:
    """Working days in (day, today] for each day up to today, each calendar day looked up
    once: an overdue list of old duties would otherwise walk the calendar per duty."""
    wanted = sorted(set(days))
    if not wanted:
        return {}
    running, cumulative, day = 0, {wanted[0]: 0}, wanted[0]
    while day < today:
        day += timedelta(days=1)
        running += 1 if is_working(day) else 0
        cumulative[day] = running
    return {d: running - cumulative[d] if d <= today else 0 for d in wanted}
