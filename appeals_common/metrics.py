"""Prometheus series shared by several services."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import Counter

from appeals_common.calendar import WorkingCalendar

PROVISIONAL_DEADLINES = Counter(
    "appeals_provisional_deadlines_total",
    "Deadline computations that touched a year the holiday calendar does not cover", ["year"])


def load_calendar(config_dir: Path, tz: str) -> WorkingCalendar:
    """The working-day calendar with the operator's overrides, counting provisional years."""
    return WorkingCalendar.from_file(
        config_dir / "calendar_overrides.yaml", tz=tz,
        on_provisional=lambda year: PROVISIONAL_DEADLINES.labels(str(year)).inc())
