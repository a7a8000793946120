"""Prometheus series shared by several services."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from prometheus_client import Counter, Gauge

from appeals_common.calendar import WorkingCalendar

PROVISIONAL_DEADLINES = Counter(
    "appeals_provisional_deadlines_total",
    "Deadlines (a set computed at once counts once) counted over a year without official "
    "working-day data", ["kind", "year"])


PROVISIONAL_OPEN = Gauge(
    "appeals_provisional_deadlines_open",
    "Open deadlines still counted over a year without official working-day data", ["service"])
PROVISIONAL_STALE = Gauge(
    "appeals_provisional_deadlines_stale",
    "Open provisional deadlines whose years now have official data: "
    "run `appeals calendar recompute`", ["service"])


def set_provisional_gauges(service: str, open_provisional: int, still_provisional: int) -> None:
    PROVISIONAL_OPEN.labels(service).set(open_provisional)
    PROVISIONAL_STALE.labels(service).set(open_provisional - still_provisional)


def count_provisional(kind: str, years: Iterable[int]) -> None:
    """One deadline computation of ``kind`` that was provisional in ``years``."""
    for year in sorted(set(years)):
        PROVISIONAL_DEADLINES.labels(kind, str(year)).inc()


def load_calendar(config_dir: Path, tz: str) -> WorkingCalendar:
    """The working-day calendar with the operator's overrides."""
    return WorkingCalendar.from_file(config_dir / "calendar_overrides.yaml", tz=tz)
