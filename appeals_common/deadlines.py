"""Deadline policy (DESIGN §7) on the working-day calendar; pure functions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from appeals_common.calendar import WorkingCalendar


@dataclass(frozen=True)
class AssignmentDeadlines:
    sign_by: datetime
    return_by: datetime
    respond_by: datetime
    provisional: bool


@dataclass(frozen=True)
class DeadlinePolicy:
    sign_working_days: int = 1
    urgent_sign_hours: int = 2
    return_working_days: int = 2
    respond_working_days: int = 5

    def for_assignment(self, calendar: WorkingCalendar, assigned_at: datetime,
                       urgency: str) -> AssignmentDeadlines:
        respond = calendar.add_working_days(assigned_at, self.respond_working_days)
        returns = calendar.add_working_days(assigned_at, self.return_working_days)
        if urgency == "urgent":
            # Urgent appeals are signed within hours, whatever the calendar says.
            sign_by, sign_provisional = assigned_at + timedelta(hours=self.urgent_sign_hours), False
        else:
            sign = calendar.add_working_days(assigned_at, self.sign_working_days)
            sign_by, sign_provisional = sign.at, sign.provisional
        return AssignmentDeadlines(
            sign_by=sign_by, return_by=returns.at, respond_by=respond.at,
            provisional=respond.provisional or returns.provisional or sign_provisional,
        )
