"""附件1 obligations: patrol plan/report due dates on the working-day calendar, the
quarterly sit-in window, the yearly patrol per chain, and a month-ahead reminder."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from appeals_common.activity_schedule import (
    ActivityRecord,
    compliance,
    in_sit_in_window,
    patrol_year_due,
    plan_due,
    report_due,
)
from appeals_common.calendar import WorkingCalendar
from services.supervision.escalation import REMINDER, WorkingHours, notices_due

TZ = ZoneInfo("Asia/Shanghai")
CAL = WorkingCalendar()


def end_of(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(hour=23, minute=59, second=59, tzinfo=TZ)


@pytest.mark.parametrize("held_on, plan_by, report_by", [
    # Thursday: Mon-Wed before it; Fri, Mon, Tue after it.
    ("2026-03-19", "2026-03-16", "2026-03-24"),
    # Monday after National Day: Sat 10 Oct is a make-up working day, Thu 8 Oct works too.
    ("2026-10-12", "2026-10-08", "2026-10-15"),
    # A patrol on a holiday: its report counts 8, 9 and the make-up Saturday 10 October.
    ("2026-10-01", "2026-09-28", "2026-10-10"),
    ("2026-12-10", "2026-12-07", "2026-12-15"),
])
def test_plan_three_working_days_before_and_report_three_after(held_on, plan_by, report_by):
    day = date.fromisoformat(held_on)
    assert plan_due(CAL, day) == end_of(plan_by)
    assert report_due(CAL, day) == end_of(report_by)


def test_sit_in_window_is_mid_month_of_the_quarters_last_month():
    assert in_sit_in_window(date(2026, 3, 11)) and in_sit_in_window(date(2026, 12, 20))
    assert not in_sit_in_window(date(2026, 3, 10)) and not in_sit_in_window(date(2026, 6, 21))
    assert not in_sit_in_window(date(2026, 5, 15))


def test_patrol_year_due_is_the_last_working_day():
    assert patrol_year_due(CAL, 2026) == end_of("2026-12-31")


def test_compliance_of_a_year_part_way_through():
    chains = {"digital_economy": "gxj", "modern_logistics": "fgj", "trade_consumption": "swtcj"}
    activities = [
        ActivityRecord("s1", "sit_in", date(2026, 3, 16)),
        ActivityRecord("s2", "sit_in", date(2026, 6, 25)),  # held, but not mid-month
        ActivityRecord("p1", "chain_patrol", date(2026, 12, 10), "digital_economy",
                       plan_submitted_at=end_of("2026-12-08"),  # a day late
                       report_submitted_at=None),
        ActivityRecord("p2", "chain_patrol", date(2026, 9, 17), "modern_logistics",
                       plan_submitted_at=end_of("2026-09-14"),
                       report_submitted_at=datetime(2026, 9, 18, 15, tzinfo=TZ)),
        ActivityRecord("old", "chain_patrol", date(2025, 9, 17), "trade_consumption"),
    ]
    now = datetime(2026, 12, 16, 10, tzinfo=TZ)
    result = compliance(CAL, 2026, chains, activities, now)
    assert [(s["month"], s["status"]) for s in result["sit_ins"]] == [
        (3, "met"), (6, "missed"), (9, "missed"), (12, "pending")]  # the window ends on the 20th
    assert result["sit_ins"][1]["activities"][0]["in_window"] is False
    patrols = {p["industry_chain"]: p for p in result["patrols"]}
    assert patrols["trade_consumption"]["status"] == "pending"  # last year's does not count
    assert patrols["trade_consumption"]["lead_unit"] == "swtcj"
    digital = patrols["digital_economy"]
    assert digital["status"] == "met"
    assert digital["patrols"][0]["plan"] == "late"
    assert digital["patrols"][0]["report"] == "missing"  # due 15 December, now the 16th
    logistics = patrols["modern_logistics"]["patrols"][0]
    assert (logistics["plan"], logistics["report"]) == ("on_time", "on_time")
    early = compliance(CAL, 2026, chains, activities, datetime(2026, 12, 14, 10, tzinfo=TZ))
    assert early["sit_ins"][3]["status"] == "pending"
    assert {p["industry_chain"]: p for p in early["patrols"]}[
        "digital_economy"]["patrols"][0]["report"] == "pending"
    late = compliance(CAL, 2026, chains, activities, datetime(2027, 1, 5, 10, tzinfo=TZ))
    assert {p["industry_chain"]: p["status"] for p in late["patrols"]}["trade_consumption"] == "missed"
    assert late["sit_ins"][3]["status"] == "missed"


def test_a_chains_yearly_patrol_is_reminded_a_month_ahead():
    due = patrol_year_due(CAL, 2026)
    hours = WorkingHours()
    # 20 working days before Thu 31 December 2026 is Thu 3 December.
    assert notices_due(due, frozenset(), datetime(2026, 12, 2, 10, tzinfo=TZ), CAL, hours, 20) == []
    assert notices_due(due, frozenset(), datetime(2026, 12, 3, 10, tzinfo=TZ), CAL, hours, 20) \
        == [REMINDER]
    # The usual one working day ahead for every other duty.
    assert notices_due(due, frozenset(), datetime(2026, 12, 3, 10, tzinfo=TZ), CAL, hours) == []


def test_sit_in_windows_still_to_be_reminded_of():
    from appeals_common.activity_schedule import PROGRAMME_ISSUED, sit_in_windows_ahead

    assert date(2026, 5, 27) == PROGRAMME_ISSUED
    # Before the programme: only windows that end after it counts.
    assert sit_in_windows_ahead(PROGRAMME_ISSUED, date(2026, 1, 5)) == [
        (2026, 6), (2026, 9), (2026, 12), (2027, 3), (2027, 6), (2027, 9), (2027, 12)]
    # A window that has opened is no longer ahead.
    assert sit_in_windows_ahead(PROGRAMME_ISSUED, date(2026, 12, 11))[0] == (2027, 3)
    assert sit_in_windows_ahead(PROGRAMME_ISSUED, date(2026, 12, 10))[0] == (2026, 12)
