"""类题破解 in supervision: suggest classes of similar appeals, and carry a confirmed one
through to its close with the same deadline clocks as assignments."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from marshmallow import fields, validate
from sqlalchemy import func, select

from appeals_common.db import UnitOfWork
from appeals_common.http import Conflict, FieldErrors, NotFound
from appeals_common.nameko_ext import ServiceRuntime
from appeals_common.schemas import CODE_RE, AwareDateTime, StrictSchema
from services.supervision.class_problems import AppealText, ClusterSettings, find_clusters
from services.supervision.clocks import open_clock, settle_clock
from services.supervision.models import (
    ClassIdCounter,
    ClassProblem,
    ClassProblemMember,
    KeyOrder,
    SupervisedAppeal,
)

# An appeal in a class of these states is not suggested again (only a dismissal frees it).
HOLDING_STATES = ("suggested", "confirmed", "resolved", "closed")


class ConfirmSchema(StrictSchema):
    lead_entity = fields.String(required=True, validate=validate.Regexp(CODE_RE))
    units = fields.List(fields.String(validate=validate.Regexp(CODE_RE)), load_default=list,
                        validate=validate.Length(max=20))
    deadline = AwareDateTime(required=True)
    note = fields.String(load_default="", validate=validate.Length(max=2000))


class ResolveSchema(StrictSchema):
    measures = fields.String(required=True, validate=validate.Length(min=1, max=5000))


class CloseSchema(StrictSchema):
    promote = fields.Boolean(required=True)  # 复制推广
    note = fields.String(load_default="", validate=validate.Length(max=2000))


class DismissSchema(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))


def detect(runtime: ServiceRuntime, settings: ClusterSettings) -> list[dict[str, Any]]:
    """Suggest each new cluster of similar recent appeals that no active class holds yet."""
    now = runtime.now()
    with runtime.unit_of_work() as uow:
        counter = _lock_counter(uow)  # first, so a second replica waits and sees our classes
        taken = set(uow.session.scalars(
            select(ClassProblemMember.appeal_id).join(
                ClassProblem, ClassProblem.id == ClassProblemMember.class_id)
            .where(ClassProblem.state.in_(HOLDING_STATES))))
        rows = uow.session.scalars(select(SupervisedAppeal).where(
            SupervisedAppeal.registered_at >= now - timedelta(days=settings.window_days),
            SupervisedAppeal.state != "withdrawn"))
        texts = [AppealText(a.id, a.reg_no, a.registered_at, a.industry_chain, a.category,
                            a.text) for a in rows if a.id not in taken]
        suggested = []
        for cluster in find_clusters(texts, now, settings):
            problem = ClassProblem(
                id=_next_id(counter), state="suggested", industry_chain=cluster.industry_chain,
                category=cluster.category, keywords=json.dumps(list(cluster.keywords),
                                                               ensure_ascii=False),
                score=round(cluster.score, 3), suggested_at=uow.now)
            uow.session.add(problem)
            for appeal_id, reg_no in zip(cluster.appeal_ids, cluster.reg_nos, strict=True):
                uow.session.add(ClassProblemMember(class_id=problem.id, appeal_id=appeal_id,
                                                   reg_no=reg_no))
            uow.session.flush()
            view = _view(uow, problem)
            uow.emit("class_problem.suggested", view)
            suggested.append(view)
        return suggested


def _lock_counter(uow: UnitOfWork) -> ClassIdCounter:
    counter = uow.session.get(ClassIdCounter, uow.now.year, with_for_update=True)
    if counter is None:
        # Once a year two replicas may race to create the row: the loser's run fails
        # whole and the next run goes through.
        # Classes numbered before the counter existed keep their numbers.
        numbered = uow.session.execute(select(func.count()).select_from(ClassProblem).where(
            ClassProblem.id.like(f"LT-{uow.now.year}-%"))).scalar_one()
        counter = ClassIdCounter(year=uow.now.year, last=numbered)
        uow.session.add(counter)
        uow.session.flush()
    return counter


def _next_id(counter: ClassIdCounter) -> str:
    counter.last += 1
    return f"LT-{counter.year}-{counter.last:04d}"


def _view(uow: UnitOfWork, p: ClassProblem) -> dict[str, Any]:
    members = uow.session.scalars(select(ClassProblemMember).where(
        ClassProblemMember.class_id == p.id).order_by(ClassProblemMember.reg_no)).all()
    return {"class_id": p.id, "state": p.state, "industry_chain": p.industry_chain,
            "category": p.category, "keywords": json.loads(p.keywords), "score": p.score,
            "reg_nos": [m.reg_no for m in members], "lead_entity": p.lead_entity,
            "units": json.loads(p.units),
            "deadline": p.deadline.isoformat() if p.deadline else None,
            "measures": p.measures, "promote": p.promote, "note": p.note}


def _locked(uow: UnitOfWork, class_id: str, expected: str) -> ClassProblem:
    problem = uow.session.get(ClassProblem, class_id, with_for_update=True)
    if problem is None:
        raise NotFound(f"no class problem {class_id}")
    if problem.state != expected:
        raise Conflict(f"class problem {class_id} is '{problem.state}', not '{expected}'")
    return problem


def confirm(runtime: ServiceRuntime, departments: frozenset[str], class_id: str, payload: Any,
            actor: str) -> dict[str, Any]:
    """The bureau names the lead entity (牵头主体), responsible units and a deadline; the
    lead entity is supervised against it like any assignment."""
    data = ConfirmSchema().load(payload)
    errors: dict[str, list[str]] = {}
    if data["lead_entity"] not in departments:
        errors["lead_entity"] = [f"unknown department {data['lead_entity']!r}"]
    unknown_units = [u for u in data["units"] if u not in departments]
    if unknown_units:
        errors["units"] = [f"unknown department(s): {', '.join(unknown_units)}"]
    if errors:
        raise FieldErrors(errors)
    with runtime.unit_of_work() as uow:
        problem = _locked(uow, class_id, "suggested")
        if data["deadline"] <= uow.now:
            raise FieldErrors({"deadline": ["must be in the future"]})
        problem.state, problem.lead_entity = "confirmed", data["lead_entity"]
        problem.units = json.dumps(data["units"])
        problem.deadline, problem.note = data["deadline"], data["note"]
        problem.updated_by, problem.updated_at = actor, uow.now
        open_clock(uow, appeal_id=problem.id, dept=problem.lead_entity, duty_id=problem.id,
                   kind="class", due_at=problem.deadline, reg_no=problem.id)
        view = _view(uow, problem)
        uow.emit("class_problem.confirmed", {**view, "actor": actor})
        return view


def resolve(runtime: ServiceRuntime, class_id: str, payload: Any, actor: str) -> dict[str, Any]:
    data = ResolveSchema().load(payload)
    with runtime.unit_of_work() as uow:
        problem = _locked(uow, class_id, "confirmed")
        problem.state, problem.measures = "resolved", data["measures"]
        problem.updated_by, problem.updated_at = actor, uow.now
        settle_clock(uow, problem.id, "class")
        # The measures are the lead entity's written feedback on any key supervision
        # order its overdue class drew (no department reply exists for a class).
        for order in uow.session.scalars(select(KeyOrder).where(
                KeyOrder.reg_no == problem.id, KeyOrder.answered_at.is_(None))):
            order.feedback, order.answered_at = data["measures"], uow.now
            settle_clock(uow, order.order_no, "feedback")
            uow.emit("supervision_order.answered", {
                "reg_no": problem.id, "order_no": order.order_no,
                "assignment_id": order.assignment_id, "dept_code": order.dept_code,
                "feedback": data["measures"], "answered_at": uow.now.isoformat(),
                "on_time": uow.now <= order.feedback_by, "actor": actor})
        view = _view(uow, problem)
        uow.emit("class_problem.resolved", {**view, "actor": actor})
        return view


def close(runtime: ServiceRuntime, class_id: str, payload: Any, actor: str) -> dict[str, Any]:
    """销号 of the class: the measures and whether to promote them (复制推广) are recorded,
    and every linked appeal is annotated."""
    data = CloseSchema().load(payload)
    with runtime.unit_of_work() as uow:
        problem = _locked(uow, class_id, "resolved")
        problem.state, problem.promote = "closed", data["promote"]
        problem.note = data["note"] or problem.note
        problem.updated_by, problem.updated_at = actor, uow.now
        view = _view(uow, problem)
        uow.emit("class_problem.closed", {**view, "actor": actor})
        for member in uow.session.scalars(select(ClassProblemMember).where(
                ClassProblemMember.class_id == problem.id)):
            uow.emit("class_problem.annotated", {
                "reg_no": member.reg_no, "class_id": problem.id, "measures": problem.measures,
                "promote": problem.promote, "actor": actor}, appeal_id=member.appeal_id)
        return view


def dismiss(runtime: ServiceRuntime, class_id: str, payload: Any, actor: str) -> dict[str, Any]:
    """A suggestion the bureau does not take up; its appeals may be suggested again."""
    data = DismissSchema().load(payload)
    with runtime.unit_of_work() as uow:
        problem = _locked(uow, class_id, "suggested")
        problem.state, problem.note = "dismissed", data["reason"]
        problem.updated_by, problem.updated_at = actor, uow.now
        view = _view(uow, problem)
        uow.emit("class_problem.dismissed", {**view, "actor": actor})
        return view


def list_problems(runtime: ServiceRuntime, state: str | None) -> list[dict[str, Any]]:
    with runtime.unit_of_work() as uow:
        query = select(ClassProblem).order_by(ClassProblem.suggested_at.desc())
        if state:
            query = query.where(ClassProblem.state == state)
        return [_view(uow, p) for p in uow.session.scalars(query.limit(200))]
