"""附件1 活动日程: what the programme's yearly schedule obliges, as plain rules.

* The bureau's director sits in (坐诊) in mid-month (the 11th to the 20th) of the last
  month of each quarter: March, June, September and December.
* Every key industry chain's lead unit holds at least one chain patrol (链式巡诊) a year.
* For each patrol the lead unit files its plan (活动方案) 3 working days before the patrol
  at the latest, and its report (开展情况报告 with the 附件3 service item list) within 3
  working days after it.

Used by supervision (clocks and reminders) and reporting (compliance); free of any
framework so the rules test in milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time

from appeals_common.calendar import WorkingCalendar
from appeals_common.deadlines import CountedDeadline

# The programme's notice was issued on this day; nothing is owed for windows before it
# (APPEALS_PROGRAMME_START moves it for another year's programme).
PROGRAMME_ISSUED = date(2026, 5, 27)
SIT_IN_MONTHS = (3, 6, 9, 12)
MID_MONTH_DAYS = (11, 20)  # 中旬
PLAN_WORKING_DAYS_BEFORE = 3
REPORT_WORKING_DAYS_AFTER = 3
# A chain without a patrol is reminded this many working days before its year runs out.
PATROL_REMINDER_WORKING_DAYS = 20
# The bureau is reminded of a sit-in this many working days before its window opens.
SIT_IN_REMINDER_WORKING_DAYS = 5
PATROL_KIND = "chain_patrol"
SIT_IN_KIND = "sit_in"


def plan_rule(calendar: WorkingCalendar, held_on: date) -> CountedDeadline:
    """End of the working day that lies 3 working days before the patrol."""
    return CountedDeadline(calendar.end_of_day(held_on), -PLAN_WORKING_DAYS_BEFORE)


def report_rule(calendar: WorkingCalendar, held_on: date) -> CountedDeadline:
    """End of the 3rd working day after the patrol."""
    return CountedDeadline(calendar.end_of_day(held_on), REPORT_WORKING_DAYS_AFTER)


def patrol_year_rule(calendar: WorkingCalendar, year: int) -> CountedDeadline:
    """A chain's yearly patrol is due by the end of the year's last working day."""
    return CountedDeadline(datetime.combine(date(year + 1, 1, 1), time(0), tzinfo=calendar.tz), -1)


def plan_due(calendar: WorkingCalendar, held_on: date) -> datetime:
    return plan_rule(calendar, held_on).on(calendar).at


def report_due(calendar: WorkingCalendar, held_on: date) -> datetime:
    return report_rule(calendar, held_on).on(calendar).at


def patrol_year_due(calendar: WorkingCalendar, year: int) -> datetime:
    return patrol_year_rule(calendar, year).on(calendar).at


def sit_in_window(year: int, month: int) -> tuple[date, date]:
    first, last = MID_MONTH_DAYS
    return date(year, month, first), date(year, month, last)


def sit_in_duty_id(year: int, month: int) -> str:
    return f"sit_in-{year}-{month:02d}"


def sit_in_windows_ahead(programme_start: date, today: date) -> list[tuple[int, int]]:
    """(year, month) of this year's and next year's sit-in windows that have not opened
    yet and fall after the programme's start: those the bureau is still to be reminded of."""
    return [(year, month) for year in (today.year, today.year + 1) for month in SIT_IN_MONTHS
            if today < sit_in_window(year, month)[0]
            and sit_in_window(year, month)[1] >= programme_start]


def in_sit_in_window(held_on: date) -> bool:
    first, last = MID_MONTH_DAYS
    return held_on.month in SIT_IN_MONTHS and first <= held_on.day <= last


@dataclass(frozen=True)
class ActivityRecord:
    """What compliance needs to know of one registered activity."""

    activity_id: str
    kind: str
    held_on: date
    industry_chain: str | None = None
    plan_submitted_at: datetime | None = None
    report_submitted_at: datetime | None = None


def compliance(calendar: WorkingCalendar, year: int, chains: Mapping[str, str],
               activities: Iterable[ActivityRecord], now: datetime,
               programme_start: date = PROGRAMME_ISSUED) -> dict:
    """The year's obligations and how each stands at ``now``.

    ``chains`` maps each key industry chain to its lead unit. A filing is ``on_time``,
    ``late`` (filed after its due time), ``missing`` (not filed and past due) or
    ``pending`` (not filed, not yet due). An obligation whose time ended before the
    programme started (a sit-in window, a year) is ``not_applicable`` unless met.
    """
    held = [a for a in activities if a.held_on.year == year]
    sit_ins = []
    for month in SIT_IN_MONTHS:
        in_month = sorted((a for a in held if a.kind == SIT_IN_KIND and a.held_on.month == month),
                          key=lambda a: a.held_on)
        in_window = [a for a in in_month if in_sit_in_window(a.held_on)]
        window_end = calendar.end_of_day(date(year, month, MID_MONTH_DAYS[1]))
        status = "met" if in_window else ("missed" if now > window_end else "pending")
        if status != "met" and date(year, month, MID_MONTH_DAYS[1]) < programme_start:
            status = "not_applicable"
        sit_ins.append({"month": month, "status": status,
                        "activities": [{"activity_id": a.activity_id,
                                        "held_on": a.held_on.isoformat(),
                                        "in_window": in_sit_in_window(a.held_on)}
                                       for a in in_month]})
    patrols = []
    year_due = patrol_year_due(calendar, year)
    for chain, lead in sorted(chains.items()):
        mine = sorted((a for a in held if a.kind == PATROL_KIND and a.industry_chain == chain),
                      key=lambda a: a.held_on)
        status = "met" if mine else ("missed" if now > year_due else "pending")
        if status != "met" and year < programme_start.year:
            status = "not_applicable"
        patrols.append({"industry_chain": chain, "lead_unit": lead, "status": status,
                        "patrols": [patrol_filings(calendar, a, now) for a in mine]})
    return {"year": year, "sit_ins": sit_ins, "patrols": patrols}


def patrol_filings(calendar: WorkingCalendar, activity: ActivityRecord, now: datetime) -> dict:
    plan_by, report_by = plan_due(calendar, activity.held_on), report_due(calendar, activity.held_on)
    return {"activity_id": activity.activity_id, "held_on": activity.held_on.isoformat(),
            "plan_due_at": plan_by.isoformat(),
            "plan": filing_status(activity.plan_submitted_at, plan_by, now),
            "report_due_at": report_by.isoformat(),
            "report": filing_status(activity.report_submitted_at, report_by, now)}


def filing_status(submitted_at: datetime | None, due_at: datetime, now: datetime) -> str:
    if submitted_at is not None:
        return "on_time" if submitted_at <= due_at else "late"
    return "missing" if now > due_at else "pending"
