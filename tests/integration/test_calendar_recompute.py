"""Provisional deadlines counted again once a year's official data is loaded
(`appeals calendar recompute`), on real PostgreSQL: dates move, the unit is told exactly
once, a second run changes nothing."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from appeals_common.calendar import WorkingCalendar, YearOverride
from services.dispatch import recompute as dispatch_recompute
from services.dispatch.models import Assignment
from services.supervision import recompute as supervision_recompute
from services.supervision.models import Activity, Clock
from tests.integration.test_dispatch_rules import CTX
from tests.integration.test_supervision_clocks import TZ
from tests.integration.test_supervision_lists import patrol
from tests.tools_time import first_uncovered_year

YEAR = first_uncovered_year()


def official(*extra_holidays: date) -> WorkingCalendar:
    """The notice for YEAR entered completely (fictitious: New Year's Day and the extra
    days off, no make-up days), as an operator would in calendar_overrides.yaml."""
    return WorkingCalendar({YEAR: YearOverride(
        complete=True, holidays=frozenset({date(YEAR, 1, 1), *extra_holidays}))})


def first_weekday(day: date) -> date:
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day




def test_december_assignment_is_provisional_then_recomputed_and_the_unit_told_once(d):
    d.clock.moment = datetime(YEAR - 1, 12, 30, 10, tzinfo=TZ)
    d.register(category="0102")  # the complex profile: respond in 15 working days
    sent = d.new()
    assignment = next(m for m in sent if m.get("kind") == "assignment" and m["role"] == "lead")
    assert assignment["deadlines_provisional"] is True
    old_respond = datetime.fromisoformat(assignment["respond_by"])
    assert old_respond.year == YEAR
    # Nothing to do while the year is still unofficial: same dates, nobody told.
    assert dispatch_recompute.recompute(d.runtime, CTX.calendar, CTX.policy).view() == {
        "checked": 2, "changed": 0, "still_provisional": 2}
    assert [m for m in d.new() if m.get("kind") == "deadlines_changed"] == []

    # The notice arrives with one more day off in the respond window.
    extra = first_weekday(date(YEAR, 1, 4))
    calendar = official(extra)
    waiting = dispatch_recompute.recompute(d.runtime, calendar, CTX.policy, apply=False)
    assert waiting.view() == {"checked": 2, "changed": 2, "still_provisional": 0}
    assert dispatch_recompute.recompute(d.runtime, calendar, CTX.policy).view() == {
        "checked": 2, "changed": 2, "still_provisional": 0}
    expected = CTX.policy.for_assignment(calendar, d.clock.now(), "normal", "0102")
    assert not expected.provisional and expected.respond_by > old_respond
    told = [m for m in d.new() if m.get("kind") == "deadlines_changed"]
    lead_told = [m for m in told if m["assignment_id"] == assignment["assignment_id"]]
    assert len(lead_told) == 1 and len(told) == 2  # the lead and the co-unit, once each
    assert lead_told[0]["deadlines"]["respond_by"] == expected.respond_by.isoformat()
    assert lead_told[0]["previous"]["respond_by"] == old_respond.isoformat()
    assert lead_told[0]["deadlines_provisional"] is False
    with d.store.read() as session:
        row = session.get(Assignment, assignment["assignment_id"])
        assert (row.respond_by, row.deadlines_provisional) == (expected.respond_by, False)
    # Idempotent: a second run finds nothing provisional and tells nobody.
    assert dispatch_recompute.recompute(d.runtime, calendar, CTX.policy).view() == {
        "checked": 0, "changed": 0, "still_provisional": 0}
    assert d.new() == []


def test_extension_set_respond_by_is_kept_when_recomputing(d):
    d.clock.moment = datetime(YEAR - 1, 12, 30, 10, tzinfo=TZ)
    d.register(category="0102")
    lead = next(m for m in d.new() if m.get("kind") == "assignment" and m["role"] == "lead")
    with d.runtime.unit_of_work() as uow:
        row = uow.session.get(Assignment, lead["assignment_id"])
        row.respond_by += timedelta(days=3)
        row.respond_by_source = "extension"
        kept = row.respond_by
    dispatch_recompute.recompute(d.runtime, official(first_weekday(date(YEAR, 1, 4))),
                                 CTX.policy)
    with d.store.read() as session:
        assert session.get(Assignment, lead["assignment_id"]).respond_by == kept


def test_patrol_plan_recomputed_and_the_chain_lead_told_once(sup):
    held_on = first_weekday(date(YEAR, 1, 11))
    sup.clock.moment = datetime(YEAR - 1, 12, 1, 10, tzinfo=TZ)
    activity_id = patrol(sup, held_on.isoformat())
    with sup.store.read() as session:
        plan = session.get(Clock, f"{activity_id}:plan")
        assert plan.provisional and plan.basis_days == -3
        old_due = plan.due_at
    # The notice makes the first working day before the patrol a day off.
    day_off = held_on - timedelta(days=1)
    while day_off.weekday() >= 5:
        day_off -= timedelta(days=1)
    calendar = official(day_off)
    first = supervision_recompute.recompute(sup.runtime, calendar)
    assert first.changed >= 1 and first.still_provisional == 0
    with sup.store.read() as session:
        plan = session.get(Clock, f"{activity_id}:plan")
        assert plan.due_at < old_due and not plan.provisional
        assert session.get(Activity, activity_id).plan_due_at == plan.due_at
    told = [m for m in sup.sent() if m["kind"] == "deadlines_changed"]
    plan_told = [m for m in told if "plan_due_at" in m["deadlines"]]
    assert len(plan_told) == 1 and plan_told[0]["dept_code"] == "gxj"
    assert plan_told[0]["duty"] == "activity" and plan_told[0]["assignment_id"] == activity_id
    again = supervision_recompute.recompute(sup.runtime, calendar)
    assert again.view() == {"checked": 0, "changed": 0, "still_provisional": 0}
    assert [m for m in sup.sent() if m["kind"] == "deadlines_changed"] == told
