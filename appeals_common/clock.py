"""Injectable time. Domain code takes `now` as an argument; services ask a Clock."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path


class Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FileClock(Clock):
    """Reads the current time from a file so end-to-end tests can move time forward.

    An empty or missing file means real time.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def now(self) -> datetime:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            text = ""
        if not text:
            return datetime.now(UTC)
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            raise ValueError(f"clock file {self.path} must hold an ISO time with an offset")
        return moment


class FixedClock(Clock):
    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def now(self) -> datetime:
        return self.moment


def make_clock(clock_file: str | None) -> Clock:
    return FileClock(clock_file) if clock_file else Clock()
