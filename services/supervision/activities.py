"""Activity obligations (附件1) in supervision: each chain patrol's plan and report are
timed from the day it is registered, each key chain's yearly patrol from the start of the
year; the chain's lead unit is reminded and chased by the same clocks as an assignment.
The rules themselves are in appeals_common.activity_schedule."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from sqlalchemy import select, update

from appeals_common.activity_schedule import (
    PATROL_KIND,
    SIT_IN_KIND,
    ActivityRecord,
    compliance,
    filing_status,
    in_sit_in_window,
    patrol_year_rule,
    plan_rule,
    report_rule,
    sit_in_duty_id,
    sit_in_window,
    sit_in_windows_ahead,
)
from appeals_common.auth import Principal
from appeals_common.calendar import WorkingCalendar
from appeals_common.db import UnitOfWork
from appeals_common.http import Conflict, FieldErrors, HttpError, NotFound
from appeals_common.nameko_ext import ServiceRuntime
from appeals_common.schemas import PatrolPlanSchema, PatrolReportSchema
from services.supervision.clocks import count_deadline, open_clock, settle_clock
from services.supervision.models import Activity, Clock


@dataclass(frozen=True)
class ChainLeads:
    """Each key industry chain's lead unit (附件2), who answers for its patrols."""

    leads: Mapping[str, str]

    def responsible_for(self, activity: Activity) -> str:
        return self.leads.get(activity.industry_chain or "", activity.lead_unit)


def year_clock_id(chain: str, year: int) -> str:
    return f"patrol-{chain}-{year}"


def on_registered(uow: UnitOfWork, calendar: WorkingCalendar, chains: ChainLeads,
                  data: dict[str, Any]) -> None:
    """activity.registered from intake: keep it; a patrol starts its plan and report clocks."""
    if uow.session.get(Activity, data["activity_id"]) is not None:
        return
    held_on = date.fromisoformat(data["held_on"])
    activity = Activity(id=data["activity_id"], kind=data["kind"], held_on=held_on,
                        title=data["title"], lead_unit=data["lead_unit"],
                        industry_chain=data.get("industry_chain"))
    uow.session.add(activity)
    if activity.kind == SIT_IN_KIND:
        if in_sit_in_window(held_on):  # the bureau needs no more reminding of it
            settle_clock(uow, sit_in_duty_id(held_on.year, held_on.month), SIT_IN_KIND)
        return
    if activity.kind != PATROL_KIND:
        return
    plan, report = (count_deadline(calendar, kind, rule.start, rule.working_days)
                    for kind, rule in (("plan", plan_rule(calendar, held_on)),
                                       ("report", report_rule(calendar, held_on))))
    activity.plan_due_at, activity.report_due_at = plan.deadline.at, report.deadline.at
    dept = chains.responsible_for(activity)
    for kind, counted in (("plan", plan), ("report", report)):
        open_clock(uow, appeal_id=activity.id, dept=dept, duty_id=activity.id, kind=kind,
                   due_at=counted.deadline.at, reg_no=activity.id, counted=counted)
    if activity.industry_chain:
        settle_clock(uow, year_clock_id(activity.industry_chain, held_on.year), "patrol")


def open_year_clocks(runtime: ServiceRuntime, calendar: WorkingCalendar, chains: ChainLeads
                     ) -> int:
    """Time this year's patrol of every key chain that has none yet. Idempotent."""
    year = calendar.local_date(runtime.now()).year
    if year < runtime.settings.programme_start.year:
        return 0
    with runtime.unit_of_work() as uow:
        opened = 0
        known = set(uow.session.scalars(select(Clock.assignment_id).where(
            Clock.kind == "patrol", Clock.assignment_id.like(f"patrol-%-{year}"))))
        patrolled = set(uow.session.scalars(select(Activity.industry_chain).where(
            Activity.kind == PATROL_KIND, Activity.held_on >= date(year, 1, 1),
            Activity.held_on <= date(year, 12, 31))))
        for chain, lead in sorted(chains.leads.items()):
            duty = year_clock_id(chain, year)
            if duty in known or chain in patrolled:
                continue
            rule = patrol_year_rule(calendar, year)
            counted = count_deadline(calendar, "patrol", rule.start, rule.working_days)
            open_clock(uow, appeal_id=duty, dept=lead, duty_id=duty, kind="patrol",
                       due_at=counted.deadline.at, reg_no=duty, counted=counted)
            opened += 1
        return opened


def open_sit_in_reminders(runtime: ServiceRuntime, calendar: WorkingCalendar,
                          bureau: str) -> int:
    """A remind-only clock at the opening of each coming sit-in window: the bureau hears
    of it 5 working days before. A window that opened closes its clock. Idempotent."""
    today = calendar.local_date(runtime.now())
    opened = 0
    with runtime.unit_of_work() as uow:
        for year, month in sit_in_windows_ahead(runtime.settings.programme_start, today):
            duty = sit_in_duty_id(year, month)
            if uow.session.get(Clock, f"{duty}:{SIT_IN_KIND}") is None:
                opens = datetime.combine(sit_in_window(year, month)[0], time(0),
                                         tzinfo=calendar.tz)
                open_clock(uow, appeal_id=duty, dept=bureau, duty_id=duty, kind=SIT_IN_KIND,
                           due_at=opens, reg_no=duty)
                opened += 1
        uow.session.execute(update(Clock).where(
            Clock.kind == SIT_IN_KIND, Clock.state == "open", Clock.due_at < uow.now)
            .values(state="cancelled"))
    return opened


def submit_plan(runtime: ServiceRuntime, activity_id: str, payload: Any,
                principal: Principal, chains: ChainLeads) -> dict[str, Any]:
    data = PatrolPlanSchema().load(payload)
    with runtime.unit_of_work() as uow:
        activity = _patrol_for(uow, activity_id, principal, chains)
        if activity.plan_submitted_at is not None:
            raise Conflict(f"the plan of {activity_id} was filed at "
                           f"{activity.plan_submitted_at.isoformat()}")
        activity.plan, activity.plan_submitted_at = data["summary"], uow.now
        settle_clock(uow, activity.id, "plan")
        uow.emit("activity.plan_submitted", {
            **_event_base(activity), "plan_due_at": activity.plan_due_at.isoformat(),
            "submitted_at": uow.now.isoformat(), "on_time": uow.now <= activity.plan_due_at,
            "summary": data["summary"], "actor": principal.subject})
        return view(activity, uow.now)


def submit_report(runtime: ServiceRuntime, calendar: WorkingCalendar, activity_id: str,
                  payload: Any, principal: Principal, chains: ChainLeads,
                  departments: Mapping[str, Any]) -> dict[str, Any]:
    """链式巡诊开展情况报告 with its 附件3 service item list."""
    data = PatrolReportSchema().load(payload)
    unknown = {f"service_items.{i}.responsible_unit": [f"unknown department {row['responsible_unit']!r}"]
               for i, row in enumerate(data["service_items"])
               if row["responsible_unit"] not in departments}
    if unknown:
        raise FieldErrors(unknown)
    with runtime.unit_of_work() as uow:
        activity = _patrol_for(uow, activity_id, principal, chains)
        if activity.report_submitted_at is not None:
            raise Conflict(f"the report of {activity_id} was filed at "
                           f"{activity.report_submitted_at.isoformat()}")
        if calendar.local_date(uow.now) < activity.held_on:
            raise Conflict(f"a report can be filed from the patrol day "
                           f"({activity.held_on.isoformat()}) on")
        activity.report = json.dumps(data, ensure_ascii=False)
        activity.report_submitted_at = uow.now
        settle_clock(uow, activity.id, "report")
        uow.emit("activity.report_submitted", {
            **_event_base(activity), "report_due_at": activity.report_due_at.isoformat(),
            "submitted_at": uow.now.isoformat(), "on_time": uow.now <= activity.report_due_at,
            **data, "actor": principal.subject})
        return view(activity, uow.now)


def _patrol_for(uow: UnitOfWork, activity_id: str, principal: Principal,
                chains: ChainLeads) -> Activity:
    activity = uow.session.get(Activity, activity_id, with_for_update=True)
    if activity is None:
        raise NotFound(f"no activity {activity_id}")
    if principal.role == "department" and principal.dept_code != chains.responsible_for(activity):
        raise HttpError(403, f"only the lead unit of {activity_id} files its plan and report")
    if activity.kind != PATROL_KIND:
        raise Conflict(f"{activity_id} is a {activity.kind}; plans and reports are filed for "
                       f"chain patrols")
    return activity


def _event_base(a: Activity) -> dict[str, Any]:
    return {"activity_id": a.id, "industry_chain": a.industry_chain, "lead_unit": a.lead_unit,
            "held_on": a.held_on.isoformat()}


def view(a: Activity, now: Any) -> dict[str, Any]:
    filings = {}
    if a.kind == PATROL_KIND:
        for name, due, filed, content in (
                ("plan", a.plan_due_at, a.plan_submitted_at, a.plan),
                ("report", a.report_due_at, a.report_submitted_at,
                 a.report and json.loads(a.report))):
            filings[name] = {"due_at": due.isoformat(), "submitted_at": filed and filed.isoformat(),
                             "status": filing_status(filed, due, now), "content": content}
    return {"activity_id": a.id, "kind": a.kind, "held_on": a.held_on.isoformat(),
            "title": a.title, "lead_unit": a.lead_unit, "industry_chain": a.industry_chain,
            **filings}


def list_activities(runtime: ServiceRuntime, year: int | None) -> list[dict[str, Any]]:
    with runtime.store.read() as session:
        query = select(Activity).order_by(Activity.held_on, Activity.id)
        if year:
            query = query.where(Activity.held_on >= date(year, 1, 1),
                                Activity.held_on <= date(year, 12, 31))
        now = runtime.now()
        return [view(a, now) for a in session.scalars(query.limit(1000))]


def year_compliance(runtime: ServiceRuntime, calendar: WorkingCalendar, chains: ChainLeads,
                    year: int) -> dict[str, Any]:
    with runtime.store.read() as session:
        rows = session.scalars(select(Activity).where(
            Activity.held_on >= date(year, 1, 1), Activity.held_on <= date(year, 12, 31)))
        records = [ActivityRecord(a.id, a.kind, a.held_on, a.industry_chain,
                                  a.plan_submitted_at, a.report_submitted_at) for a in rows]
    return compliance(calendar, year, chains.leads, records, runtime.now(),
                      runtime.settings.programme_start)
