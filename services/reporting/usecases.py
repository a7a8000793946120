"""Reporting's service layer: archive events, project them, answer report queries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from appeals_common.envelope import Event
from appeals_common.lifecycle import OPEN_STATES, project_state
from appeals_common.nameko_ext import Delivery, ServiceRuntime
from appeals_common.reference import SATISFIED_GRADES
from services.reporting.models import AppealFact, ArchivedEvent

EVENTS_CONSUMER = "reporting.events"


def on_event(runtime: ServiceRuntime, delivery: Delivery) -> None:
    event = Event.from_json(delivery.body)
    with runtime.unit_of_work() as uow:
        if not uow.first_time(EVENTS_CONSUMER, event.event_id):
            return
        uow.session.add(ArchivedEvent(
            event_id=event.event_id, event_type=event.event_type, occurred_at=event.occurred_at,
            producer=event.producer, appeal_id=event.appeal_id,
            body=delivery.body.decode("utf-8")))
        project(uow.session, event)


def project(session: Session, event: Event) -> None:
    """Apply one event to the read model. Used live and by rebuild."""
    if not event.appeal_id:
        return
    data = event.data
    if event.event_type == "appeal.registered":
        session.add(AppealFact(
            appeal_id=event.appeal_id, reg_no=data["reg_no"], channel=data["channel"],
            category=data.get("category"), industry_chain=data.get("industry_chain"),
            state="registered", state_at=event.occurred_at, registered_at=event.occurred_at))
        session.flush()
        return
    fact = session.get(AppealFact, event.appeal_id)
    if fact is None:
        raise LookupError(f"{event.event_type} for appeal {event.appeal_id} never registered")
    if event.event_type == "appeal.dispatched":
        fact.lead_dept, fact.dispatched_at = data["units"]["lead"], event.occurred_at
    elif event.event_type == "appeal.responded":
        fact.responded_at, fact.outcome = event.occurred_at, data.get("outcome")
    elif event.event_type == "followup.recorded":
        fact.last_grade = data.get("grade")
    elif event.event_type == "appeal.reclassified":
        fact.category, fact.industry_chain = data["category"], data["industry_chain"]
    elif event.event_type == "appeal.closed":
        fact.closed_at, fact.closed_on_time = event.occurred_at, data.get("on_time")
    fact.state, fact.state_at = project_state(fact.state, fact.state_at, event.event_type,
                                                data, event.occurred_at)


def rebuild(runtime: ServiceRuntime) -> int:
    """Drop the projections and replay the archive in the order events happened."""
    with runtime.store.sessions() as session, session.begin():
        session.execute(delete(AppealFact))
        count = 0
        for row in session.scalars(select(ArchivedEvent).order_by(
                ArchivedEvent.occurred_at, ArchivedEvent.event_id)).yield_per(1000):
            project(session, Event.from_json(row.body.encode()))
            count += 1
        return count


def summary(runtime: ServiceRuntime, start: datetime | None, end: datetime | None) -> dict:
    with runtime.store.read() as session:
        query = select(AppealFact)
        if start:
            query = query.where(AppealFact.registered_at >= start)
        if end:
            query = query.where(AppealFact.registered_at < end)
        sub = query.subquery()
        by_state = dict(session.execute(
            select(sub.c.state, func.count()).group_by(sub.c.state)).all())
        by_channel = dict(session.execute(
            select(sub.c.channel, func.count()).group_by(sub.c.channel)).all())
        count = func.count
        totals = session.execute(select(
            count().filter(sub.c.responded_at.is_not(None)).label("responded"),
            count().filter(sub.c.outcome == "solved").label("solved"),
            count().filter(sub.c.last_grade.is_not(None)).label("followed"),
            count().filter(sub.c.last_grade.in_(SATISFIED_GRADES)).label("satisfied"),
            count().filter(sub.c.closed_at.is_not(None)).label("closed"),
            count().filter(sub.c.closed_on_time.is_(True)).label("closed_on_time"),
        )).one()
    responded, solved, followed, satisfied, closed, closed_on_time = totals
    return {
        "registered": sum(by_state.values()), "by_state": by_state, "by_channel": by_channel,
        "responded": responded, "closed": closed,
        "solve_rate": _rate(solved, responded),
        "satisfaction_rate": _rate(satisfied, followed),
        "closed_on_time_rate": _rate(closed_on_time, closed),
    }


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def metric_snapshot(runtime: ServiceRuntime) -> dict[str, Any]:
    with runtime.store.read() as session:
        by_channel = session.execute(
            select(AppealFact.channel, func.count()).group_by(AppealFact.channel)).all()
        open_by_state = session.execute(
            select(AppealFact.state, func.count()).where(AppealFact.state.in_(OPEN_STATES))
            .group_by(AppealFact.state)).all()
    return {"registered_by_channel": dict(by_channel), "open_by_state": dict(open_by_state)}

