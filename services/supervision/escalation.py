"""催办 / 督办 / 重点督办单: which notices a deadline calls for at a given moment.

Pure rules (DESIGN §7), evaluated by a periodic scan:
  * reminder (催办) from the working day before the deadline, while it has not passed;
  * supervision notice (督办) from the working day after a missed deadline;
  * key supervision order (重点督办单) once the deadline is 5 or more working days past.
Notices go out in working hours only. Each is sent once; a scan after downtime sends
whatever became due meanwhile (a reminder whose deadline already passed is superseded by
the supervision notice and not sent).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time

from appeals_common.calendar import WorkingCalendar

REMINDER = "reminder"
NOTICE = "supervision_notice"
ORDER = "key_supervision_order"
KEY_ORDER_AFTER_WORKING_DAYS = 5


@dataclass(frozen=True)
class WorkingHours:
    start: time = time(9, 0)
    end: time = time(17, 30)

    @classmethod
    def parse(cls, text: str) -> WorkingHours:
        """"09:00-17:30"."""
        try:
            start, end = (time.fromisoformat(part.strip()) for part in text.split("-"))
        except ValueError:
            raise ValueError(f"working hours must look like 09:00-17:30, got {text!r}") from None
        if start.tzinfo is not None or end.tzinfo is not None:
            raise ValueError(f"working hours are local times without an offset "
                             f"(APPEALS_TIMEZONE gives the zone), like 09:00-17:30: got {text!r}")
        if start >= end:
            raise ValueError(f"working hours start after they end: {text!r}")
        return cls(start, end)


def in_working_hours(now: datetime, calendar: WorkingCalendar, hours: WorkingHours) -> bool:
    local = now.astimezone(calendar.tz)
    return calendar.is_working_day(local.date()) and hours.start <= local.time() < hours.end


def notices_due(due_at: datetime, sent: frozenset[str], now: datetime,
                calendar: WorkingCalendar, hours: WorkingHours,
                remind_working_days: int = 1) -> list[str]:
    """The notices to send now for a deadline not yet met, given those already sent.
    The reminder goes out from ``remind_working_days`` working days before the deadline."""
    if not in_working_hours(now, calendar, hours):
        return []
    today = calendar.local_date(now)
    due_day = calendar.local_date(due_at)
    due: list[str] = []
    if now <= due_at:
        remind_from = due_day
        for _ in range(remind_working_days):
            remind_from = calendar.previous_working_day(remind_from)
        if REMINDER not in sent and today >= remind_from:
            due.append(REMINDER)
        return due
    if NOTICE not in sent and today >= calendar.next_working_day(due_day):
        due.append(NOTICE)
    if ORDER not in sent and \
            calendar.working_days_between(due_day, today) >= KEY_ORDER_AFTER_WORKING_DAYS:
        due.append(ORDER)
    return due


def working_days_overdue(due_at: datetime, now: datetime, calendar: WorkingCalendar) -> int:
    if now <= due_at:
        return 0
    return calendar.working_days_between(calendar.local_date(due_at), calendar.local_date(now))
