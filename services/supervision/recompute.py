"""Provisional deadlines supervision counted itself, counted again (DESIGN §7): a key
supervision order's respond-by and written feedback, a chain patrol's plan and report,
a key chain's yearly patrol. The deadlines of assignments are dispatch's: their clocks
follow dispatch's `deadline.recomputed` events (clocks.apply_to_clocks).

A changed deadline restarts its clock's notices, tells the unit (`deadlines_changed`) and
the other services (`deadline.recomputed`) in the transaction that clears the flag, so a
second run finds nothing to do and each change is told exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any

from sqlalchemy import select

from appeals_common.calendar import Deadline, WorkingCalendar
from appeals_common.db import UnitOfWork
from appeals_common.deadlines import CountedDeadline
from appeals_common.department_messages import send_to_department
from appeals_common.nameko_ext import ServiceRuntime
from services.supervision.models import Activity, Clock, KeyOrder, SupervisedAppeal

# How each kind of counted clock is named to the unit, and what duty it belongs to.
DEADLINE_NAME = {"respond": "respond_by", "feedback": "feedback_by", "plan": "plan_due_at",
                 "report": "report_due_at", "patrol": "patrol_due_at"}
DUTY = {"respond": "key_order", "feedback": "key_order", "plan": "activity",
        "report": "activity", "patrol": "patrol"}


@dataclass
class RecomputeResult:
    checked: int = 0
    changed: int = 0
    still_provisional: int = 0

    def count(self, fresh: Deadline, clock: Clock) -> None:
        self.checked += 1
        self.changed += fresh.at != clock.due_at
        self.still_provisional += fresh.provisional

    def view(self) -> dict[str, int]:
        return {"checked": self.checked, "changed": self.changed,
                "still_provisional": self.still_provisional}


def recompute(runtime: ServiceRuntime, calendar: WorkingCalendar,
              apply: bool = True) -> RecomputeResult:
    """Count every open provisional clock again; ``apply=False`` only counts."""
    result = RecomputeResult()
    if not apply:
        with runtime.store.read() as session:
            for clock, fresh in _plans(session, calendar, lock=False):
                result.count(fresh, clock)
        return result
    with runtime.unit_of_work() as uow:
        for clock, fresh in _plans(uow.session, calendar, lock=True):
            result.count(fresh, clock)
            clock.provisional = fresh.provisional
            if fresh.at != clock.due_at:
                _move(uow, clock, fresh, calendar.tz)
    return result


def _plans(session: Any, calendar: WorkingCalendar, lock: bool
           ) -> Iterator[tuple[Clock, Deadline]]:
    query = select(Clock).where(Clock.provisional.is_(True), Clock.state == "open",
                                Clock.basis_at.is_not(None))
    if lock:
        query = query.with_for_update(skip_locked=True)
    for clock in session.scalars(query.order_by(Clock.due_at, Clock.id)).all():
        fresh = CountedDeadline(clock.basis_at, clock.basis_days).on(calendar)
        yield clock, fresh


def _move(uow: UnitOfWork, clock: Clock, fresh: Deadline, tz: tzinfo) -> None:
    previous = clock.due_at.astimezone(tz)
    clock.due_at = fresh.at
    # Notices about the old date no longer apply; the scan sends what the new one calls for.
    clock.reminder_at = clock.notice_at = clock.order_at = None
    name, duty = DEADLINE_NAME[clock.kind], DUTY[clock.kind]
    data: dict[str, Any] = {"duty": duty, "deadlines": {name: fresh.at.isoformat()},
                            "previous": {name: previous.isoformat()},
                            "deadlines_provisional": fresh.provisional}
    appeal_id, assignment_id = None, clock.assignment_id
    if clock.kind == "feedback":
        order = uow.session.get(KeyOrder, clock.assignment_id)
        order.feedback_by = fresh.at
        appeal_id, assignment_id = order.appeal_id, order.assignment_id
        data["order_no"] = order.order_no
    elif clock.kind == "respond":
        appeal_id = clock.appeal_id
        appeal = uow.session.get(SupervisedAppeal, clock.appeal_id)
        if appeal is not None and appeal.lead_assignment_id == clock.assignment_id:
            appeal.respond_by = fresh.at  # what GET /appeals/{reg_no}/clock shows
    elif clock.kind in ("plan", "report"):
        activity = uow.session.get(Activity, clock.assignment_id)
        setattr(activity, f"{clock.kind}_due_at", fresh.at)
    send_to_department(uow, clock.dept_code, "deadlines_changed", clock.reg_no, assignment_id,
                       {**data, "reason": "calendar"})
    uow.emit("deadline.recomputed", {
        "reg_no": clock.reg_no, "assignment_id": assignment_id, "dept_code": clock.dept_code,
        **data, "actor": "calendar"}, appeal_id=appeal_id)
