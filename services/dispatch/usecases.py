"""Dispatch's service layer: route new appeals, send assignments, take department replies."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import select

from appeals_common.calendar import WorkingCalendar
from appeals_common.db import UnitOfWork
from appeals_common.deadlines import DeadlinePolicy
from appeals_common.department_messages import send_to_department
from appeals_common.envelope import Event
from appeals_common.http import Page
from appeals_common.identity import dept_user, inbox_key, sender_mismatch
from appeals_common.input_guard import JsonRefused, hidden_character_error, parse_json
from appeals_common.lifecycle import (
    IllegalTransition,
    next_appeal_state,
    next_assignment_state,
)
from appeals_common.metrics import count_provisional
from appeals_common.nameko_ext import Delivery, NotYet, ServiceRuntime, Unprocessable
from appeals_common.schemas import MAX_BODY_BYTES, REPLY_SCHEMAS, errors_by_field
from services.dispatch.models import Assignment, DispatchAppeal, Extension, KeyOrder
from services.dispatch.routing import Router, RoutingDecision

log = logging.getLogger("appeals.dispatch")

EVENTS_CONSUMER = "dispatch.events"
REPLIES_CONSUMER = "dispatch.replies"


@dataclass
class DispatchContext:
    router: Router
    calendar: WorkingCalendar
    policy: DeadlinePolicy
    departments: set[str]


# --- appeals coming in from intake --------------------------------------------------------

def on_event(runtime: ServiceRuntime, ctx: DispatchContext, delivery: Delivery) -> None:
    event = Event.from_json(delivery.body)
    with runtime.unit_of_work() as uow:
        if not uow.first_time(EVENTS_CONSUMER, event.event_id):
            return
        if event.event_type == "appeal.registered":
            appeal = _copy_appeal(uow, event)
            if not event.data.get("resolved_on_spot"):  # 当场办结 needs no unit
                dispatch(uow, ctx, appeal, correlation_id=event.correlation_id)
        elif event.event_type == "appeal.reopened":
            _reopen(uow, ctx, event)
        elif event.event_type == "appeal.reclassified":
            appeal = uow.session.get(DispatchAppeal, event.appeal_id)
            if appeal is None:
                raise NotYet(f"reclassified unknown appeal {event.appeal_id}")
            appeal.category = event.data["category"]
            appeal.industry_chain = event.data["industry_chain"]
        elif event.event_type == "appeal.withdrawn":
            _withdraw(uow, event)
        elif event.event_type == "supervision_order.issued":
            _record_key_order(uow, event)
        elif event.event_type == "deadline.recomputed" and event.producer != runtime.service:
            _recomputed_by_supervision(uow, event)
        elif event.event_type in ("appeal.resolved_on_spot", "appeal.closed"):
            # Kept so that no override can dispatch an appeal that is already answered.
            appeal = uow.session.get(DispatchAppeal, event.appeal_id)
            if appeal is None:
                raise NotYet(f"{event.event_type} for unknown appeal {event.appeal_id}")
            appeal.state = "closed" if event.event_type == "appeal.closed" else "resolved_on_spot"


def _copy_appeal(uow: UnitOfWork, event: Event) -> DispatchAppeal:
    d = event.data
    appeal = DispatchAppeal(
        id=event.appeal_id, reg_no=d["reg_no"], channel=d["channel"], title=d["title"],
        content=d["content"], category=d.get("category"), industry_chain=d.get("industry_chain"),
        urgency=d.get("urgency") or "normal",
        enterprise=json.dumps(d["enterprise"], ensure_ascii=False), state="registered",
    )
    uow.session.add(appeal)
    return appeal


def dispatch(uow: UnitOfWork, ctx: DispatchContext, appeal: DispatchAppeal,
             skip: frozenset[str] = frozenset(), correlation_id: str | None = None,
             units: RoutingDecision | None = None, actor: str | None = None) -> None:
    """Route (or take the bureau's choice of `units`), create one assignment per unit,
    tell each unit, record why."""
    fields = {"title": appeal.title, "content": appeal.content, "category": appeal.category,
              "industry_chain": appeal.industry_chain, "channel": appeal.channel}
    decision = units or ctx.router.route(fields, skip=skip)
    appeal.state = next_appeal_state(appeal.state, "dispatch")
    appeal.rule = decision.rule
    appeal.needs_joint_decision = False
    deadlines = ctx.policy.for_assignment(ctx.calendar, uow.now, appeal.urgency, appeal.category)
    count_provisional("assignment", deadlines.provisional_years)
    assignments = []
    for role, dept in [("lead", decision.lead), *[("co", c) for c in decision.co]]:
        assignment = Assignment(
            id=str(uuid.uuid4()), appeal_id=appeal.id, reg_no=appeal.reg_no, dept_code=dept,
            role=role, state="assigned", rule=decision.rule, assigned_at=uow.now,
            sign_by=deadlines.sign_by, return_by=deadlines.return_by,
            respond_by=deadlines.respond_by, latest_respond_by=deadlines.latest_respond_by,
            deadlines_provisional=deadlines.provisional,
        )
        uow.session.add(assignment)
        assignments.append(assignment)
        send_to_department(uow, dept, "assignment", appeal.reg_no, assignment.id, {
            "appeal_id": appeal.id, "role": role, "units": decision.units,
            "enterprise": json.loads(appeal.enterprise), "title": appeal.title,
            "content": appeal.content, "category": appeal.category,
            "industry_chain": appeal.industry_chain, "urgency": appeal.urgency,
            "sign_by": deadlines.sign_by.isoformat(),
            "return_by": deadlines.return_by.isoformat(),
            "respond_by": deadlines.respond_by.isoformat(),
            "deadlines_provisional": deadlines.provisional,
        })
    data = {"reg_no": appeal.reg_no, "units": decision.units, "rule": decision.rule,
            "assignments": [_assignment_view(a) for a in assignments],
            "deadlines_provisional": deadlines.provisional}
    if actor:
        data["actor"] = actor
    uow.emit("appeal.dispatched", data, appeal_id=appeal.id, correlation_id=correlation_id)


def take_back(uow: UnitOfWork, assignment: Assignment, reason: str,
              new_units: dict[str, Any] | None, actor: str) -> None:
    """A unit's assignment is withdrawn from it: the unit is told (`reassigned`)."""
    assignment.state = next_assignment_state(assignment.state, "withdraw")
    close_pending_extensions(uow, assignment, "cancelled")
    send_to_department(uow, assignment.dept_code, "reassigned", assignment.reg_no,
                       assignment.id, {"reason": reason, "new_units": new_units})
    uow.emit("assignment.reassigned", {
        "reg_no": assignment.reg_no, "assignment_id": assignment.id,
        "dept_code": assignment.dept_code, "role": assignment.role, "reason": reason,
        "new_units": new_units, "actor": actor}, appeal_id=assignment.appeal_id)


def close_pending_extensions(uow: UnitOfWork, assignment: Assignment, state: str) -> None:
    """A request nobody can decide any more: `lapsed` (the unit responded) or `cancelled`
    (the assignment was taken back). The bureau's queue of requests learns it too."""
    for ext in uow.session.scalars(select(Extension).where(
            Extension.assignment_id == assignment.id, Extension.state == "requested")):
        ext.state, ext.decided_at = state, uow.now
        uow.emit("extension.closed", {
            "reg_no": ext.reg_no, "assignment_id": assignment.id, "extension_id": ext.id,
            "dept_code": ext.dept_code, "state": state,
            "requested_until": ext.requested_until.isoformat()}, appeal_id=assignment.appeal_id)


def open_assignments(uow: UnitOfWork, appeal_id: str) -> list[Assignment]:
    return list(uow.session.scalars(select(Assignment).where(
        Assignment.appeal_id == appeal_id,
        Assignment.state.in_(("assigned", "signed", "returned"))).with_for_update()))


def _assignment_view(a: Assignment) -> dict[str, Any]:
    return {"assignment_id": a.id, "dept_code": a.dept_code, "role": a.role, "state": a.state,
            "assigned_at": a.assigned_at.isoformat(), "sign_by": a.sign_by.isoformat(),
            "return_by": a.return_by.isoformat(), "respond_by": a.respond_by.isoformat()}


def _reopen(uow: UnitOfWork, ctx: DispatchContext, event: Event) -> None:
    """重办: the lead unit answers again; an on-the-spot answer is dispatched now."""
    appeal = uow.session.get(DispatchAppeal, event.appeal_id)
    if appeal is None:
        raise NotYet(f"reopen for unknown appeal {event.appeal_id}")
    appeal.state = "reopened"
    lead = uow.session.scalars(select(Assignment).where(
        Assignment.appeal_id == appeal.id, Assignment.role == "lead",
        Assignment.state == "responded")).first()
    if lead is not None:
        lead.state = next_assignment_state(lead.state, "reopen")
        if event.data.get("respond_by"):  # the key supervision order's new deadline
            lead.respond_by = datetime.fromisoformat(event.data["respond_by"])
            lead.respond_by_source = "key_order"
    elif not uow.session.scalars(select(Assignment.id).where(
            Assignment.appeal_id == appeal.id)).first():
        dispatch(uow, ctx, appeal, correlation_id=event.correlation_id)


def _record_key_order(uow: UnitOfWork, event: Event) -> None:
    """Remember the order so the unit's `feedback` reply can be matched to it. Orders about
    a class problem (no assignment here) are answered outside the appeal flow."""
    data = event.data
    if not event.appeal_id or uow.session.get(Assignment, data.get("assignment_id")) is None:
        return
    if uow.session.get(KeyOrder, data["order_no"]) is None:
        uow.session.add(KeyOrder(
            order_no=data["order_no"], appeal_id=event.appeal_id, reg_no=data["reg_no"],
            assignment_id=data["assignment_id"], dept_code=data["dept_code"],
            issued_at=event.occurred_at,
            feedback_by=data.get("feedback_by") and datetime.fromisoformat(data["feedback_by"])))


def _recomputed_by_supervision(uow: UnitOfWork, event: Event) -> None:
    """Supervision timed a key supervision order again: its new respond-by and written
    feedback deadline hold here too."""
    data, deadlines = event.data, event.data.get("deadlines", {})
    if data.get("duty") != "key_order":
        return
    order = uow.session.get(KeyOrder, data.get("order_no") or "")
    if order is not None and "feedback_by" in deadlines:
        order.feedback_by = datetime.fromisoformat(deadlines["feedback_by"])
    lead = uow.session.get(Assignment, data.get("assignment_id"))
    if lead is not None and lead.respond_by_source == "key_order" and "respond_by" in deadlines:
        lead.respond_by = datetime.fromisoformat(deadlines["respond_by"])


def _withdraw(uow: UnitOfWork, event: Event) -> None:
    appeal = uow.session.get(DispatchAppeal, event.appeal_id)
    if appeal is None:
        raise NotYet(f"withdrawn unknown appeal {event.appeal_id}")
    appeal.state = "withdrawn"
    for a in open_assignments(uow, appeal.id):
        take_back(uow, a, f"诉求已撤回: {event.data.get('reason', '')}", None,
                  event.data.get("actor") or "intake")


# --- department replies on appeals.replies ------------------------------------------------

class ReplyRefused(Exception):
    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__(json.dumps(errors, ensure_ascii=False))
        self.errors = errors


def parse_reply_routing_key(routing_key: str) -> tuple[str, str]:
    parts = routing_key.split(".")
    if len(parts) != 3 or parts[0] != "dept":
        raise Unprocessable(f"reply routing key must be dept.<dept_code>.<action>: {routing_key!r}")
    return parts[1], parts[2]


def on_reply(runtime: ServiceRuntime, ctx: DispatchContext, delivery: Delivery) -> str:
    """Apply one department reply, or refuse it; the department gets a reply_result."""
    dept_code, action = parse_reply_routing_key(delivery.routing_key)
    if dept_code not in ctx.departments:
        # Nobody to answer: keep it for an operator instead of acking it away.
        raise Unprocessable(f"reply from unknown department {dept_code!r}")
    key = inbox_key(delivery.user_id,
                    delivery.message_id or "sha256:" + hashlib.sha256(delivery.body).hexdigest())
    mismatch = sender_mismatch(delivery.user_id, dept_user(
        dept_code, runtime.settings.bus_user_prefix), delivery.routing_key)
    with runtime.unit_of_work() as uow:
        if not uow.first_time(REPLIES_CONSUMER, key):
            return "redelivered"
        body: dict[str, Any] = {}
        try:
            if mismatch:  # the sender is the broker's word, not the publisher's
                raise ReplyRefused({"user_id": [mismatch]})
            body = _parse_reply(delivery, action, uow.now)
            # A savepoint: a reply refused half way changes nothing.
            with uow.session.begin_nested():
                assignment = _owned_assignment(uow, dept_code, body)
                mark = len(uow.messages)
                try:
                    _apply_reply(uow, assignment, action, body, delivery.message_id)
                except ReplyRefused:
                    del uow.messages[mark:]
                    raise
        except ReplyRefused as refused:
            echo = body or _echo_fields(delivery.body)
            send_to_department(uow, dept_code, "reply_result", str(echo.get("reg_no") or ""),
                               echo.get("assignment_id"), {
                                   "action": action, "reply_message_id": delivery.message_id,
                                   "status": "refused", "errors": refused.errors})
            return "refused"
        send_to_department(uow, dept_code, "reply_result", assignment.reg_no, assignment.id, {
            "action": action, "reply_message_id": delivery.message_id, "status": "accepted",
            "errors": {}})
        return "accepted"


def _echo_fields(raw: bytes) -> dict[str, str]:
    """reg_no and assignment_id from a reply that failed validation, so the department
    can tell which of its replies was refused (not when they carry hidden characters)."""
    if len(raw) > MAX_BODY_BYTES:
        return {}
    try:
        doc = parse_json(raw)
    except JsonRefused:
        return {}
    if not isinstance(doc, dict):
        return {}
    return {k: doc[k][:64] for k in ("reg_no", "assignment_id")
            if isinstance(doc.get(k), str) and hidden_character_error(doc[k][:64]) is None}


def _parse_reply(delivery: Delivery, action: str, now: datetime) -> dict[str, Any]:
    schema_cls = REPLY_SCHEMAS.get(action)
    if schema_cls is None:
        raise ReplyRefused({"action": [f"unknown action {action!r}; one of "
                                       f"{', '.join(REPLY_SCHEMAS)}"]})
    if len(delivery.body) > MAX_BODY_BYTES:
        raise ReplyRefused({"_body": [f"message body larger than {MAX_BODY_BYTES} bytes"]})
    try:
        raw = parse_json(delivery.body)  # UTF-8, nested at most MAX_JSON_DEPTH deep
    except JsonRefused as exc:
        raise ReplyRefused({"_body": [f"body {exc}"]}) from None
    if not isinstance(raw, dict):
        raise ReplyRefused({"_body": ["body must be a JSON object"]})
    try:
        return schema_cls(now=now).load(raw)
    except ValidationError as exc:
        raise ReplyRefused(errors_by_field(exc)) from None


def _owned_assignment(uow: UnitOfWork, dept_code: str, body: dict[str, Any]) -> Assignment:
    assignment = uow.session.get(Assignment, body["assignment_id"], with_for_update=True)
    # Another department's assignment is answered like an unknown one: no leak.
    if assignment is None or assignment.dept_code != dept_code:
        raise ReplyRefused({"assignment_id": ["no such assignment for this department"]})
    if assignment.reg_no != body["reg_no"]:
        raise ReplyRefused({"reg_no": [f"does not match the assignment ({assignment.reg_no})"]})
    return assignment


def _apply_reply(uow: UnitOfWork, a: Assignment, action: str, body: dict[str, Any],
                 reply_message_id: str | None) -> None:
    appeal = uow.session.get(DispatchAppeal, a.appeal_id, with_for_update=True)
    try:
        if action == "sign":
            a.state = next_assignment_state(a.state, "sign")
            a.signed_at = uow.now
            if a.role == "lead":
                appeal.state = next_appeal_state(appeal.state, "lead_sign")
            uow.emit("assignment.signed", {
                "reg_no": a.reg_no, "assignment_id": a.id, "dept_code": a.dept_code,
                "role": a.role, "signed_at": uow.now.isoformat(), "sign_by": a.sign_by.isoformat(),
                "on_time": uow.now <= a.sign_by, "actor": f"dept:{a.dept_code}"},
                appeal_id=a.appeal_id, correlation_id=reply_message_id)
        elif action == "respond":
            a.state = next_assignment_state(a.state, "respond")
            a.responded_at, a.outcome, a.reply = uow.now, body["outcome"], body["reply"]
            close_pending_extensions(uow, a, "lapsed")
            data = {"reg_no": a.reg_no, "assignment_id": a.id, "dept_code": a.dept_code,
                    "role": a.role, "outcome": body["outcome"], "reply": body["reply"],
                    "contacted_at": body["contacted_at"].isoformat(),
                    "responded_at": uow.now.isoformat(), "respond_by": a.respond_by.isoformat(),
                    "on_time": uow.now <= a.respond_by, "actor": f"dept:{a.dept_code}"}
            if a.role == "lead":
                appeal.state = next_appeal_state(appeal.state, "respond")
                uow.emit("appeal.responded", data, appeal_id=a.appeal_id,
                         correlation_id=reply_message_id)
            else:
                uow.emit("assignment.contributed", data, appeal_id=a.appeal_id,
                         correlation_id=reply_message_id)
        elif action == "return":
            if uow.now > a.return_by:
                raise ReplyRefused({"action": [
                    f"the return window closed at {a.return_by.isoformat()}"]})
            a.state = next_assignment_state(a.state, "return")
            a.return_reason_code, a.return_reason = body["reason_code"], body["reason"]
            a.suggested_unit = body.get("suggested_unit")
            uow.emit("assignment.returned", {
                "reg_no": a.reg_no, "assignment_id": a.id, "dept_code": a.dept_code,
                "role": a.role, "reason_code": body["reason_code"], "reason": body["reason"],
                "suggested_unit": body.get("suggested_unit"), "actor": f"dept:{a.dept_code}"},
                appeal_id=a.appeal_id, correlation_id=reply_message_id)
        elif action == "extend":
            if a.state != "signed":
                raise ReplyRefused({"action": ["only a signed assignment can ask for an extension"]})
            if body["requested_until"] <= a.respond_by:
                raise ReplyRefused({"requested_until": [
                    f"must be after the current deadline {a.respond_by.isoformat()}"]})
            if body["requested_until"] > a.latest_respond_by:
                raise ReplyRefused({"requested_until": [
                    "past the longest time this category allows, "
                    f"{a.latest_respond_by.isoformat()}"]})
            pending = uow.session.scalars(select(Extension).where(
                Extension.assignment_id == a.id, Extension.state == "requested")).first()
            if pending is not None:
                raise ReplyRefused({"action": ["an extension request is already waiting for "
                                               "the bureau's decision"]})
            extension = Extension(
                id=str(uuid.uuid4()), assignment_id=a.id, reg_no=a.reg_no,
                dept_code=a.dept_code, requested_until=body["requested_until"],
                reason=body["reason"], state="requested", requested_at=uow.now)
            uow.session.add(extension)
            uow.emit("extension.requested", {
                "reg_no": a.reg_no, "assignment_id": a.id, "extension_id": extension.id,
                "dept_code": a.dept_code, "requested_until": body["requested_until"].isoformat(),
                "reason": body["reason"], "actor": f"dept:{a.dept_code}"},
                appeal_id=a.appeal_id, correlation_id=reply_message_id)
        elif action == "feedback":
            _answer_key_order(uow, a, body, reply_message_id)
    except IllegalTransition as exc:
        raise ReplyRefused({"action": [str(exc)]}) from None


def _answer_key_order(uow: UnitOfWork, a: Assignment, body: dict[str, Any],
                      reply_message_id: str | None) -> None:
    order = uow.session.get(KeyOrder, body["order_no"], with_for_update=True)
    if order is None:
        if body["order_no"].startswith(f"ZD-{a.reg_no}-{a.dept_code}-"):
            # The order's event may still be on its way here (the unit got the order
            # straight from supervision): try the reply again shortly instead of refusing.
            raise NotYet(f"key supervision order {body['order_no']} not known yet")
        raise ReplyRefused({"order_no": ["no such key supervision order for this assignment"]})
    if order.assignment_id != a.id:
        raise ReplyRefused({"order_no": ["no such key supervision order for this assignment"]})
    if order.answered_at is not None:
        raise ReplyRefused({"order_no": [
            f"already answered at {order.answered_at.isoformat()}"]})
    order.feedback, order.answered_at = body["feedback"], uow.now
    uow.emit("supervision_order.answered", {
        "reg_no": a.reg_no, "order_no": order.order_no, "assignment_id": a.id,
        "dept_code": a.dept_code, "feedback": body["feedback"],
        "answered_at": uow.now.isoformat(),
        "on_time": order.feedback_by is None or uow.now <= order.feedback_by,
        "actor": f"dept:{a.dept_code}"}, appeal_id=a.appeal_id, correlation_id=reply_message_id)


def list_assignments(runtime: ServiceRuntime, dept_code: str | None = None,
                     reg_no: str | None = None, state: str | None = None,
                     page: Page = Page()) -> list[dict[str, Any]]:
    with runtime.store.read() as session:
        query = select(Assignment).order_by(Assignment.assigned_at, Assignment.id)
        if dept_code:
            query = query.where(Assignment.dept_code == dept_code)
        if reg_no:
            query = query.where(Assignment.reg_no == reg_no)
        if state:
            query = query.where(Assignment.state == state)
        return [{**_assignment_view(a), "reg_no": a.reg_no, "rule": a.rule, "outcome": a.outcome,
                 "return_reason_code": a.return_reason_code, "return_reason": a.return_reason,
                 "suggested_unit": a.suggested_unit}
                for a in session.scalars(query.offset(page.offset).limit(page.size))]
