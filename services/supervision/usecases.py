"""Supervision's service layer: follow the appeal's clocks, take follow-ups, close out."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from appeals_common.calendar import WorkingCalendar
from appeals_common.db import UnitOfWork
from appeals_common.department_messages import send_to_department
from appeals_common.envelope import Event
from appeals_common.http import Conflict, FieldErrors, NotFound, Page
from appeals_common.lifecycle import IllegalTransition, next_appeal_state, project_state
from appeals_common.metrics import count_provisional
from appeals_common.nameko_ext import Delivery, NotYet, ServiceRuntime
from appeals_common.reference import SATISFIED_GRADES
from appeals_common.schemas import FollowupSchema, UnreachableClosureSchema
from services.supervision import activities
from services.supervision.activities import ChainLeads
from services.supervision.clocks import (
    apply_to_clocks,
    cancel_clocks,
    count_deadline,
    open_clock,
    record_key_order,
)
from services.supervision.models import Followup, KeyOrder, SupervisedAppeal

EVENTS_CONSUMER = "supervision.events"
FOLLOWUP_WORKING_DAYS = 2
REOPEN_WORKING_DAYS = 5  # the lead unit's new respond-by after an unsatisfied follow-up


def on_event(runtime: ServiceRuntime, calendar: WorkingCalendar, chains: ChainLeads,
             delivery: Delivery) -> None:
    event = Event.from_json(delivery.body)
    if event.event_type == "activity.registered":
        with runtime.unit_of_work() as uow:
            if uow.first_time(EVENTS_CONSUMER, event.event_id):
                activities.on_registered(uow, calendar, chains, event.data)
        return
    if not event.appeal_id:
        return
    with runtime.unit_of_work() as uow:
        if not uow.first_time(EVENTS_CONSUMER, event.event_id):
            return
        if event.event_type == "appeal.registered":
            data = event.data
            uow.session.add(SupervisedAppeal(
                id=event.appeal_id, reg_no=data["reg_no"], state="registered",
                state_at=event.occurred_at, registered_at=event.occurred_at,
                text=f"{data.get('title', '')}\n{data.get('content', '')}",
                category=data.get("category"), industry_chain=data.get("industry_chain")))
            return
        if event.producer == runtime.service:
            return  # our own changes were applied when we made them
        if event.event_type == "supervision_order.answered":
            _answered(uow, event)
        appeal = uow.session.get(SupervisedAppeal, event.appeal_id, with_for_update=True)
        if appeal is None:
            raise NotYet(f"{event.event_type} for unknown appeal {event.appeal_id}")
        _apply(appeal, event, calendar)
        apply_to_clocks(uow, event)


def _answered(uow: UnitOfWork, event: Event) -> None:
    order = uow.session.get(KeyOrder, event.data["order_no"], with_for_update=True)
    if order is None:
        raise NotYet(f"feedback on unknown key supervision order {event.data['order_no']}")
    if order.answered_at is None:
        order.feedback = event.data["feedback"]
        order.answered_at = datetime.fromisoformat(event.data["answered_at"])


def list_key_orders(runtime: ServiceRuntime, state: str | None, dept_code: str | None,
                    page: Page = Page()) -> list[dict[str, Any]]:
    """Key supervision orders, open (feedback owed) or answered, newest first."""
    with runtime.store.read() as session:
        query = select(KeyOrder).order_by(KeyOrder.issued_at.desc(), KeyOrder.order_no) \
            .offset(page.offset).limit(page.size)
        if state == "open":
            query = query.where(KeyOrder.answered_at.is_(None))
        elif state == "answered":
            query = query.where(KeyOrder.answered_at.is_not(None))
        elif state is not None:
            raise FieldErrors({"state": ["one of open, answered"]})
        if dept_code:
            query = query.where(KeyOrder.dept_code == dept_code)
        now = runtime.now()
        return [{"order_no": o.order_no, "reg_no": o.reg_no, "dept_code": o.dept_code,
                 "assignment_id": o.assignment_id, "cause": o.cause,
                 "issued_at": o.issued_at.isoformat(), "feedback_by": o.feedback_by.isoformat(),
                 "answered_at": o.answered_at and o.answered_at.isoformat(),
                 "feedback": o.feedback,
                 "late": (o.answered_at or now) > o.feedback_by}
                for o in session.scalars(query)]


def _apply(appeal: SupervisedAppeal, event: Event, calendar: WorkingCalendar) -> None:
    data = event.data
    if event.event_type == "appeal.dispatched":
        lead = next(a for a in data["assignments"] if a["role"] == "lead")
        appeal.lead_dept, appeal.lead_assignment_id = lead["dept_code"], lead["assignment_id"]
        appeal.respond_by = datetime.fromisoformat(lead["respond_by"])
    elif event.event_type == "appeal.responded":
        # The unit that responded is the lead, whichever of the events came first.
        appeal.lead_dept, appeal.lead_assignment_id = data["dept_code"], data["assignment_id"]
        appeal.responded_at = event.occurred_at
        appeal.outcome = data.get("outcome")
        appeal.followup_by = _followup_by(calendar, event)
    elif event.event_type == "extension.decided" and data.get("approved"):
        appeal.respond_by = datetime.fromisoformat(data["respond_by"])
    elif event.event_type == "deadline.recomputed" and data.get("role") == "lead" \
            and "respond_by" in data.get("deadlines", {}):
        appeal.respond_by = datetime.fromisoformat(data["deadlines"]["respond_by"])
    elif event.event_type == "appeal.reclassified":
        appeal.category, appeal.industry_chain = data["category"], data["industry_chain"]
    elif event.event_type == "appeal.resolved_on_spot":
        appeal.followup_by = _followup_by(calendar, event)
    appeal.state, appeal.state_at = project_state(appeal.state, appeal.state_at, event.event_type,
                                                data, event.occurred_at)


def _followup_by(calendar: WorkingCalendar, event: Event) -> datetime:
    deadline = calendar.add_working_days(event.occurred_at, FOLLOWUP_WORKING_DAYS)
    count_provisional("followup", deadline.provisional_years)
    return deadline.at


def _locked_appeal(uow: UnitOfWork, reg_no: str) -> SupervisedAppeal:
    appeal = uow.session.scalars(select(SupervisedAppeal).where(
        SupervisedAppeal.reg_no == reg_no).with_for_update()).first()
    if appeal is None:
        raise NotFound(f"no appeal {reg_no}")
    return appeal


def record_followup(runtime: ServiceRuntime, calendar: WorkingCalendar, reg_no: str,
                    payload: Any, actor: str) -> dict:
    """回访: a satisfied grade closes the appeal (销号); an unsatisfied one reopens it (重办)."""
    data = FollowupSchema().load(payload)
    with runtime.unit_of_work() as uow:
        appeal = _locked_appeal(uow, reg_no)
        satisfied = data["grade"] in SATISFIED_GRADES
        try:
            new_state = next_appeal_state(appeal.state, "close" if satisfied else "reopen")
        except IllegalTransition as exc:
            raise Conflict(f"follow-up refused: {exc}") from None
        followup = Followup(appeal_id=appeal.id, grade=data["grade"], resolved=data["resolved"],
                            comments=data["comments"], contact_attempts=data["contact_attempts"],
                            recorded_by=actor, recorded_at=uow.now)
        uow.session.add(followup)
        uow.emit("followup.recorded", {
            "reg_no": reg_no, "grade": data["grade"], "satisfied": satisfied,
            "resolved": data["resolved"], "comments": data["comments"],
            "contact_attempts": data["contact_attempts"], "actor": actor,
            "on_time": appeal.followup_by is None or uow.now <= appeal.followup_by},
            appeal_id=appeal.id)
        appeal.state, appeal.state_at = new_state, uow.now
        if satisfied:
            appeal.closed_at = uow.now
            cancel_clocks(uow, appeal.id)
            uow.emit("appeal.closed", {
                "reg_no": reg_no, "reason": "satisfied_followup", "actor": actor,
                "on_time": appeal.respond_by is None or appeal.responded_at is None
                or appeal.responded_at <= appeal.respond_by}, appeal_id=appeal.id)
        elif appeal.lead_dept is None:
            # An on-the-spot answer the enterprise is not satisfied with: dispatch routes it.
            uow.emit("appeal.reopened", {"reg_no": reg_no, "reason": "unsatisfied_followup",
                                         "grade": data["grade"], "actor": actor},
                     appeal_id=appeal.id)
        else:
            _issue_key_order(uow, calendar, appeal, data, actor)
        return {"reg_no": reg_no, "state": new_state, "grade": data["grade"]}


def close_unreachable(runtime: ServiceRuntime, reg_no: str, payload: Any, actor: str) -> dict:
    """The bureau closes an appeal whose enterprise it could not reach, with the reason."""
    data = UnreachableClosureSchema().load(payload)
    with runtime.unit_of_work() as uow:
        appeal = _locked_appeal(uow, reg_no)
        try:
            appeal.state = next_appeal_state(appeal.state, "close")
        except IllegalTransition as exc:
            raise Conflict(f"closure refused: {exc}") from None
        appeal.state_at = appeal.closed_at = uow.now
        cancel_clocks(uow, appeal.id)
        uow.emit("appeal.closed", {
            "reg_no": reg_no, "reason": "enterprise_unreachable", "note": data["reason"],
            "contact_attempts": data["contact_attempts"], "actor": actor,
            "on_time": appeal.respond_by is None or appeal.responded_at is None
            or appeal.responded_at <= appeal.respond_by}, appeal_id=appeal.id)
        return {"reg_no": reg_no, "state": appeal.state}


def _issue_key_order(uow: UnitOfWork, calendar: WorkingCalendar, appeal: SupervisedAppeal,
                     followup: dict[str, Any], actor: str) -> None:
    """不满意: a key supervision order to the lead unit with a new deadline, and 重办."""
    counted = count_deadline(calendar, "key_order", uow.now, REOPEN_WORKING_DAYS)
    due = counted.deadline.at
    order_no = f"ZD-{appeal.reg_no}-{appeal.lead_dept}-{uow.now.astimezone(calendar.tz):%Y%m%d%H%M%S}"
    # The written feedback is due with the new response.
    body = {"order_no": order_no, "reasons": followup["comments"] or followup["grade"],
            "grade": followup["grade"], "respond_by": due.isoformat(),
            "feedback_required": True, "feedback_by": due.isoformat(),
            "deadlines_provisional": counted.deadline.provisional}
    send_to_department(uow, appeal.lead_dept, "key_supervision_order", appeal.reg_no,
                       appeal.lead_assignment_id, body)
    record_key_order(uow, order_no=order_no, appeal_id=appeal.id, reg_no=appeal.reg_no,
                     duty_id=appeal.lead_assignment_id, dept=appeal.lead_dept,
                     cause="unsatisfied_followup", feedback=counted)
    open_clock(uow, appeal_id=appeal.id, dept=appeal.lead_dept,
               duty_id=appeal.lead_assignment_id, kind="respond", due_at=due,
               reg_no=appeal.reg_no, counted=counted)
    uow.emit("supervision_order.issued", {"reg_no": appeal.reg_no, "actor": actor,
                                          "dept_code": appeal.lead_dept,
                                          "assignment_id": appeal.lead_assignment_id, **body},
             appeal_id=appeal.id)
    uow.emit("appeal.reopened", {"reg_no": appeal.reg_no, "reason": "unsatisfied_followup",
                                 "grade": followup["grade"], "order_no": order_no,
                                 "respond_by": due.isoformat(), "actor": actor},
             appeal_id=appeal.id)
    appeal.respond_by, appeal.responded_at, appeal.followup_by = due, None, None


def get_clock(runtime: ServiceRuntime, reg_no: str) -> dict | None:
    with runtime.store.read() as session:
        appeal = session.scalars(select(SupervisedAppeal).where(
            SupervisedAppeal.reg_no == reg_no)).first()
        if appeal is None:
            return None
        times = {name: (value.isoformat() if value else None) for name, value in (
            ("respond_by", appeal.respond_by), ("responded_at", appeal.responded_at),
            ("followup_by", appeal.followup_by), ("closed_at", appeal.closed_at))}
        return {"reg_no": appeal.reg_no, "state": appeal.state, "lead_dept": appeal.lead_dept,
                **times}
