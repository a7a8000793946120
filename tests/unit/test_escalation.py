"""Escalation over a month of injected time, in milliseconds."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from appeals_common.calendar import WorkingCalendar
from services.supervision.escalation import (
    NOTICE,
    ORDER,
    REMINDER,
    WorkingHours,
    in_working_hours,
    notices_due,
)

TZ = ZoneInfo("Asia/Shanghai")
CAL = WorkingCalendar()
HOURS = WorkingHours()


def at(day: str, hour: int = 10, minute: int = 0) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, minute=minute, tzinfo=TZ)


def simulate(due_at: datetime, start: datetime, days: int, step_minutes: int = 30
             ) -> list[tuple[str, datetime]]:
    """Scan every `step_minutes` for `days` days; what went out, and when."""
    sent: list[tuple[str, datetime]] = []
    now = start
    while now < start + timedelta(days=days):
        for kind in notices_due(due_at, frozenset(k for k, _ in sent), now, CAL, HOURS):
            sent.append((kind, now))
        now += timedelta(minutes=step_minutes)
    return sent


def test_a_month_of_scans_sends_each_notice_once_on_the_right_working_day():
    # Respond-by Friday 4 Dec 2026 23:59:59.
    due = at("2026-12-04", 23, 59)
    sent = simulate(due, at("2026-11-27", 0), days=31)
    assert [k for k, _ in sent] == [REMINDER, NOTICE, ORDER]
    when = {k: t for k, t in sent}
    assert when[REMINDER] == at("2026-12-03", 9)   # the working day before, 09:00
    assert when[NOTICE] == at("2026-12-07", 9)     # Monday: the working day after
    assert when[ORDER] == at("2026-12-11", 9)      # 5 working days overdue


def test_nothing_outside_working_hours_or_on_holidays():
    due = at("2026-10-09", 23, 59)  # Friday after the National Day holiday
    assert notices_due(due, frozenset(), at("2026-10-08", 8, 59), CAL, HOURS) == []
    assert notices_due(due, frozenset(), at("2026-10-08", 17, 30), CAL, HOURS) == []
    assert notices_due(due, frozenset(), at("2026-10-08", 9), CAL, HOURS) == [REMINDER]
    # Saturday 10 Oct 2026 is a make-up working day: the notice goes out then.
    assert notices_due(due, frozenset({REMINDER}), at("2026-10-10", 9), CAL, HOURS) == [NOTICE]
    assert not in_working_hours(at("2026-10-03", 10), CAL, HOURS)  # 国庆


def test_after_downtime_missed_notices_go_out_once_and_a_stale_reminder_does_not():
    due = at("2026-12-04", 23, 59)
    # Down from before the reminder day until 10 working days later.
    assert notices_due(due, frozenset(), at("2026-12-18", 10), CAL, HOURS) == [NOTICE, ORDER]
    assert notices_due(due, frozenset({NOTICE, ORDER}), at("2026-12-18", 11), CAL, HOURS) == []


def test_deadline_met_means_no_more_notices_is_the_callers_job_but_future_ones_wait():
    due = at("2026-12-31", 23, 59)
    assert notices_due(due, frozenset(), at("2026-12-29", 10), CAL, HOURS) == []
    assert notices_due(due, frozenset(), at("2026-12-30", 10), CAL, HOURS) == [REMINDER]


def test_working_hours_parse():
    assert WorkingHours.parse("08:30-18:00").start.hour == 8
    with pytest.raises(ValueError):
        WorkingHours.parse("18:00-08:00")
    with pytest.raises(ValueError):
        WorkingHours.parse("nine to five")


@pytest.mark.parametrize("text", ["09:00+08:00-17:30", "09:00-17:30Z", "09:00+00:00-17:30+00:00"])
def test_working_hours_with_an_offset_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="without an offset"):
        WorkingHours.parse(text)


def test_supervision_refuses_to_start_with_offset_working_hours() -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "APPEALS_WORKING_HOURS": "09:00+08:00-17:30"}
    proc = subprocess.run([sys.executable, "-c", "import services.supervision.service"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "APPEALS_WORKING_HOURS: working hours are local times without an offset" in proc.stderr
