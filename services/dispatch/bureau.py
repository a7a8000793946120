"""The bureau's decisions in dispatch: returns (退单), extensions (延期), and choosing the
units itself (override, reassignment, 会商 after repeated returns)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from appeals_common.db import UnitOfWork
from appeals_common.department_messages import send_to_department
from appeals_common.http import Conflict, FieldErrors, NotFound, Page
from appeals_common.lifecycle import IllegalTransition, next_assignment_state
from appeals_common.nameko_ext import ServiceRuntime
from appeals_common.schemas import ExtensionDecisionSchema, OverrideSchema, ReturnDecisionSchema
from services.dispatch.models import Assignment, DispatchAppeal, Extension
from services.dispatch.routing import NoRoute, RoutingDecision
from services.dispatch.usecases import (
    DispatchContext,
    close_pending_extensions,
    dispatch,
    open_assignments,
    take_back,
)

# After this many accepted returns the units are chosen by the bureau, not the rules.
MAX_RETURNS_BEFORE_JOINT_DECISION = 2


def _appeal(uow: UnitOfWork, appeal_id: str) -> DispatchAppeal:
    appeal = uow.session.get(DispatchAppeal, appeal_id, with_for_update=True)
    if appeal is None:
        raise NotFound(f"no appeal {appeal_id}")
    return appeal


def decide_return(runtime: ServiceRuntime, ctx: DispatchContext, assignment_id: str,
                  payload: Any, actor: str) -> dict[str, Any]:
    """Accept a return (re-dispatch without that unit) or reject it (the unit keeps it)."""
    data = ReturnDecisionSchema().load(payload)
    with runtime.unit_of_work() as uow:
        a = uow.session.get(Assignment, assignment_id, with_for_update=True)
        if a is None:
            raise NotFound(f"no assignment {assignment_id}")
        if a.state != "returned":
            raise Conflict(f"assignment is '{a.state}', not waiting for a return decision")
        appeal = _appeal(uow, a.appeal_id)
        uow.emit("assignment.return_decided", {
            "reg_no": a.reg_no, "assignment_id": a.id, "dept_code": a.dept_code,
            "role": a.role, "accepted": data["accept"], "reason": data["reason"],
            "actor": actor}, appeal_id=a.appeal_id)
        if not data["accept"]:
            a.state = next_assignment_state(
                a.state, "reject_return" if a.signed_at is None else "reject_return_signed")
            send_to_department(uow, a.dept_code, "return_decision", a.reg_no, a.id, {
                "accepted": False, "reason": data["reason"]})
            return {"assignment_id": a.id, "state": a.state, "redispatched": False}
        a.state = next_assignment_state(a.state, "withdraw")
        close_pending_extensions(uow, a, "cancelled")
        send_to_department(uow, a.dept_code, "return_decision", a.reg_no, a.id, {
            "accepted": True, "reason": data["reason"]})
        returned = set(json.loads(appeal.returned_units)) | {a.dept_code}
        appeal.returned_units = json.dumps(sorted(returned))
        if a.role == "co":
            return {"assignment_id": a.id, "state": a.state, "redispatched": False}
        # The lead returned it: the whole appeal is routed again, or goes to 会商.
        for other in open_assignments(uow, appeal.id):
            take_back(uow, other, "牵头单位退单，重新分办", None, actor)
        if len(returned) >= MAX_RETURNS_BEFORE_JOINT_DECISION:
            return _joint_decision(uow, appeal, a, returned, "returned by "
                                   f"{len(returned)} units")
        try:
            dispatch(uow, ctx, appeal, skip=frozenset(returned), actor=actor)
        except NoRoute:
            return _joint_decision(uow, appeal, a, returned, "no other unit fits the rules")
        return {"assignment_id": a.id, "state": a.state, "redispatched": True}


def _joint_decision(uow: UnitOfWork, appeal: DispatchAppeal, a: Assignment,
                    returned: set[str], why: str) -> dict[str, Any]:
    appeal.needs_joint_decision = True
    uow.emit("appeal.joint_decision_required", {
        "reg_no": appeal.reg_no, "returned_by": sorted(returned), "reason": why},
        appeal_id=appeal.id)
    return {"assignment_id": a.id, "state": a.state, "redispatched": False,
            "joint_decision_required": True}


def override(runtime: ServiceRuntime, ctx: DispatchContext, reg_no: str, payload: Any,
             actor: str) -> dict[str, Any]:
    """The bureau chooses lead and co-units: open assignments are taken back and the
    appeal is dispatched to the chosen units (also how a 会商 decision is recorded)."""
    data = OverrideSchema().load(payload)
    unknown = [u for u in [data["lead"], *data["co"]] if u not in ctx.departments]
    if unknown:
        raise FieldErrors({"lead" if data["lead"] in unknown else "co":
                           [f"unknown department(s): {', '.join(unknown)}"]})
    co = tuple(dict.fromkeys(u for u in data["co"] if u != data["lead"]))
    units = RoutingDecision(data["lead"], co, f"bureau:{actor}")
    with runtime.unit_of_work() as uow:
        appeal = uow.session.scalars(select(DispatchAppeal).where(
            DispatchAppeal.reg_no == reg_no).with_for_update()).first()
        if appeal is None:
            raise NotFound(f"no appeal {reg_no}")
        for a in open_assignments(uow, appeal.id):
            take_back(uow, a, f"局改派: {data['reason']}", units.units, actor)
        try:
            dispatch(uow, ctx, appeal, units=units, actor=actor)
        except IllegalTransition as exc:
            raise Conflict(str(exc)) from None
        return {"reg_no": reg_no, "units": units.units, "rule": units.rule}


def decide_extension(runtime: ServiceRuntime, extension_id: str, payload: Any, actor: str
                     ) -> dict[str, Any]:
    """Approve (moving respond-by, never past the policy's limit) or deny; the unit is told."""
    data = ExtensionDecisionSchema().load(payload)
    with runtime.unit_of_work() as uow:
        ext = uow.session.get(Extension, extension_id, with_for_update=True)
        if ext is None:
            raise NotFound(f"no extension request {extension_id}")
        if ext.state != "requested":
            raise Conflict(f"extension request already {ext.state}")
        a = uow.session.get(Assignment, ext.assignment_id, with_for_update=True)
        if a.state != "signed":
            raise Conflict(f"assignment is '{a.state}': nothing to extend")
        if data["approve"]:
            until = data["respond_by"] or ext.requested_until
            if until <= a.respond_by:
                raise FieldErrors({"respond_by": [
                    f"must be after the current deadline {a.respond_by.isoformat()}"]})
            if until > a.latest_respond_by:
                raise FieldErrors({"respond_by": [
                    f"past the longest time allowed, {a.latest_respond_by.isoformat()}"]})
            a.respond_by, a.respond_by_source = until, "extension"
        ext.state = "approved" if data["approve"] else "denied"
        ext.decided_by, ext.decided_at, ext.decision_reason = actor, uow.now, data["reason"]
        view = {"reg_no": a.reg_no, "assignment_id": a.id, "extension_id": ext.id,
                "dept_code": a.dept_code, "approved": data["approve"],
                "reason": data["reason"], "respond_by": a.respond_by.isoformat(),
                "actor": actor}
        send_to_department(uow, a.dept_code, "extension_decision", a.reg_no, a.id, {
            "extension_id": ext.id, "approved": data["approve"], "reason": data["reason"],
            "respond_by": a.respond_by.isoformat()})
        uow.emit("extension.decided", view, appeal_id=a.appeal_id)
        return view


def list_extensions(runtime: ServiceRuntime, state: str | None = None,
                    page: Page = Page()) -> list[dict[str, Any]]:
    with runtime.store.read() as session:
        query = select(Extension).order_by(Extension.requested_at, Extension.id)
        if state:
            query = query.where(Extension.state == state)
        return [{"extension_id": e.id, "assignment_id": e.assignment_id, "reg_no": e.reg_no,
                 "dept_code": e.dept_code, "requested_until": e.requested_until.isoformat(),
                 "reason": e.reason, "state": e.state,
                 "decided_by": e.decided_by, "decision_reason": e.decision_reason}
                for e in session.scalars(query.offset(page.offset).limit(page.size))]
