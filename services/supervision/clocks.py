"""Supervision's deadline clocks: kept from dispatch's events, scanned for notices.

The scan claims clocks with SKIP LOCKED and records a notice in the same transaction as
the message it causes, so two replicas never send one twice and a crash never half-sends.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from appeals_common.calendar import WorkingCalendar
from appeals_common.db import UnitOfWork
from appeals_common.department_messages import send_to_department
from appeals_common.envelope import Event
from appeals_common.nameko_ext import ServiceRuntime
from services.supervision.escalation import (
    NOTICE,
    ORDER,
    REMINDER,
    WorkingHours,
    in_working_hours,
    notices_due,
    working_days_overdue,
)
from services.supervision.models import Clock

SENT_COLUMN = {REMINDER: "reminder_at", NOTICE: "notice_at", ORDER: "order_at"}
EVENT_FOR = {REMINDER: "appeal.reminded", NOTICE: "appeal.supervised",
             ORDER: "supervision_order.issued"}


def open_clock(uow: UnitOfWork, *, appeal_id: str, dept: str, duty_id: str, kind: str,
               due_at: datetime, reg_no: str) -> None:
    """Start (or restart with a new deadline) the clock of one duty: an assignment's sign
    or respond, or a confirmed class problem's deadline (duty_id = the class id)."""
    _open(uow, appeal_id, dept, duty_id, kind, due_at, reg_no)


def _open(uow: UnitOfWork, appeal_id: str, dept: str, assignment_id: str, kind: str,
          due_at: datetime, reg_no: str) -> None:
    clock_id = f"{assignment_id}:{kind}"
    clock = uow.session.get(Clock, clock_id)
    if clock is None:
        uow.session.add(Clock(id=clock_id, appeal_id=appeal_id, reg_no=reg_no,
                              assignment_id=assignment_id, dept_code=dept, kind=kind,
                              due_at=due_at, state="open"))
    else:  # a new deadline for the same duty (extension, reopen): notices start afresh
        clock.due_at, clock.state, clock.met_at = due_at, "open", None
        clock.reminder_at = clock.notice_at = clock.order_at = None


def cancel_clocks(uow: UnitOfWork, appeal_id: str) -> None:
    """The appeal is closed: nobody is chased about it any more."""
    _set_state(uow, Clock.appeal_id == appeal_id, "cancelled", uow.now)


def _set_state(uow: UnitOfWork, where: Any, state: str, at: datetime) -> None:
    uow.session.execute(update(Clock).where(where, Clock.state == "open")
                        .values(state=state, met_at=at if state == "met" else None))


def apply_to_clocks(uow: UnitOfWork, event: Event) -> None:
    """Keep the clocks in step with what dispatch and the bureau did."""
    data, t = event.data, event.event_type
    if t == "appeal.dispatched":
        for a in data["assignments"]:
            _open(uow, event.appeal_id, a["dept_code"], a["assignment_id"], "sign",
                  datetime.fromisoformat(a["sign_by"]), data["reg_no"])
            if a["role"] == "lead":
                _open(uow, event.appeal_id, a["dept_code"], a["assignment_id"], "respond",
                      datetime.fromisoformat(a["respond_by"]), data["reg_no"])
    elif t == "assignment.signed":
        _set_state(uow, Clock.id == f"{data['assignment_id']}:sign", "met", event.occurred_at)
    elif t == "appeal.responded":
        _set_state(uow, Clock.id == f"{data['assignment_id']}:respond", "met", event.occurred_at)
    elif t == "extension.decided" and data.get("approved"):
        clock = uow.session.get(Clock, f"{data['assignment_id']}:respond")
        if clock is not None:
            _open(uow, clock.appeal_id, clock.dept_code, clock.assignment_id, "respond",
                  datetime.fromisoformat(data["respond_by"]), clock.reg_no)
    elif t in ("assignment.reassigned", "assignment.return_decided") and \
            (t == "assignment.reassigned" or data.get("accepted")):
        _set_state(uow, Clock.assignment_id == data["assignment_id"], "cancelled",
                   event.occurred_at)
    elif t in ("appeal.withdrawn", "appeal.closed"):
        _set_state(uow, Clock.appeal_id == event.appeal_id, "cancelled", event.occurred_at)


def scan(runtime: ServiceRuntime, calendar: WorkingCalendar, hours: WorkingHours,
         batch: int = 200) -> int:
    """Send every notice due now; returns how many were sent."""
    now = runtime.now()
    if not in_working_hours(now, calendar, hours):
        return 0
    # A reminder can fall due up to a few calendar days ahead (weekends, holidays).
    horizon = now + timedelta(days=15)
    sent, after = 0, ""
    while True:
        with runtime.unit_of_work() as uow:
            clocks = list(uow.session.scalars(
                select(Clock).where(Clock.state == "open", Clock.due_at <= horizon,
                                    Clock.id > after)
                .order_by(Clock.id).limit(batch).with_for_update(skip_locked=True)))
            for clock in clocks:
                already = frozenset(k for k, col in SENT_COLUMN.items()
                                    if getattr(clock, col) is not None)
                for kind in notices_due(clock.due_at, already, now, calendar, hours):
                    _notify(uow, clock, kind, now, calendar)
                    sent += 1
        if len(clocks) < batch:
            return sent
        after = clocks[-1].id


def _notify(uow: UnitOfWork, clock: Clock, kind: str, now: datetime,
            calendar: WorkingCalendar) -> None:
    setattr(clock, SENT_COLUMN[kind], now)
    overdue = working_days_overdue(clock.due_at, now, calendar)
    body = {"deadline": clock.kind, "due_at": clock.due_at.isoformat(),
            "working_days_overdue": overdue}
    if kind == ORDER:
        body["order_no"] = f"ZD-{clock.reg_no}-{clock.dept_code}-{clock.kind}-{now:%Y%m%d%H%M}"
        body["feedback_required"] = True
    send_to_department(uow, clock.dept_code, kind, clock.reg_no, clock.assignment_id, body)
    # A class problem's clock is about no single appeal (its reg_no is the class id).
    appeal_id = None if clock.kind == "class" else clock.appeal_id
    if kind == NOTICE:
        uow.emit("appeal.overdue", {"reg_no": clock.reg_no, "assignment_id": clock.assignment_id,
                                    "dept_code": clock.dept_code, "deadline": clock.kind,
                                    "due_at": clock.due_at.isoformat()},
                 appeal_id=appeal_id)
    uow.emit(EVENT_FOR[kind], {"reg_no": clock.reg_no, "assignment_id": clock.assignment_id,
                               "dept_code": clock.dept_code, **body}, appeal_id=appeal_id)


def list_clocks(runtime: ServiceRuntime, reg_no: str) -> list[dict[str, Any]]:
    with runtime.store.read() as session:
        return [{"assignment_id": c.assignment_id, "dept_code": c.dept_code, "kind": c.kind,
                 "due_at": c.due_at.isoformat(), "state": c.state,
                 **{col: (getattr(c, col).isoformat() if getattr(c, col) else None)
                    for col in SENT_COLUMN.values()}}
                for c in session.scalars(select(Clock).where(Clock.reg_no == reg_no)
                                         .order_by(Clock.due_at, Clock.id))]
