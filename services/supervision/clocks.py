"""Supervision's deadline clocks: kept from dispatch's events, scanned for notices.

The scan claims clocks with SKIP LOCKED and records a notice in the same transaction as
the message it causes, so two replicas never send one twice and a crash never half-sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from appeals_common.activity_schedule import (
    PATROL_REMINDER_WORKING_DAYS,
    SIT_IN_KIND,
    SIT_IN_REMINDER_WORKING_DAYS,
)
from appeals_common.calendar import Deadline, WorkingCalendar
from appeals_common.db import UnitOfWork
from appeals_common.deadlines import CountedDeadline
from appeals_common.department_messages import send_to_department
from appeals_common.envelope import Event
from appeals_common.metrics import count_provisional
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
from services.supervision.models import Clock, KeyOrder


@dataclass(frozen=True)
class Counted:
    rule: CountedDeadline
    deadline: Deadline


SENT_COLUMN = {REMINDER: "reminder_at", NOTICE: "notice_at", ORDER: "order_at"}
# What a clock can time: an assignment's sign/respond, a confirmed class problem, a key
# order's written feedback, a patrol's plan and report, a walkthrough list item.
APPEAL_KINDS = frozenset({"sign", "respond", "feedback"})
CLOCK_KINDS = APPEAL_KINDS | {"class", "plan", "report", "patrol", "item", SIT_IN_KIND}
# Most duties are reminded the working day before; a chain's yearly patrol a month ahead,
# the bureau's sit-in a week before its window opens.
REMIND_WORKING_DAYS = {"patrol": PATROL_REMINDER_WORKING_DAYS,
                       SIT_IN_KIND: SIT_IN_REMINDER_WORKING_DAYS}
# Only reminded: a sit-in window is no deadline anyone is chased about.
REMIND_ONLY_KINDS = frozenset({SIT_IN_KIND})
# Only a unit's work on an appeal or a class escalates to a key supervision order; the
# other duties are reminded and chased (督办) without one.
ORDER_KINDS = frozenset({"sign", "respond", "class"})
KEY_ORDER_FEEDBACK_WORKING_DAYS = 5
EVENT_FOR = {REMINDER: "appeal.reminded", NOTICE: "appeal.supervised",
             ORDER: "supervision_order.issued"}


def open_clock(uow: UnitOfWork, *, appeal_id: str, dept: str, duty_id: str, kind: str,
               due_at: datetime, reg_no: str, counted: Counted | None = None) -> None:
    """Start (or restart with a new deadline) the clock of one duty: an assignment's sign
    or respond, or another duty of CLOCK_KINDS (duty_id = that thing's id). ``counted``:
    supervision counted the deadline itself (how, and the result), so it can be recounted."""
    _open(uow, appeal_id, dept, duty_id, kind, due_at, reg_no, counted)


def count_deadline(calendar: WorkingCalendar, kind: str, start: datetime,
                   working_days: int) -> Counted:
    """A deadline supervision counts itself, with how it was counted."""
    rule = CountedDeadline(start, working_days)
    deadline = rule.on(calendar)
    count_provisional(kind, deadline.provisional_years)
    return Counted(rule, deadline)


def _open(uow: UnitOfWork, appeal_id: str, dept: str, assignment_id: str, kind: str,
          due_at: datetime, reg_no: str, counted: Counted | None = None) -> None:
    clock_id = f"{assignment_id}:{kind}"
    clock = uow.session.get(Clock, clock_id)
    if clock is None:
        clock = Clock(id=clock_id, appeal_id=appeal_id, reg_no=reg_no,
                      assignment_id=assignment_id, dept_code=dept, kind=kind,
                      due_at=due_at, state="open")
        uow.session.add(clock)
    else:  # a new deadline for the same duty (extension, reopen): notices start afresh
        clock.due_at, clock.state, clock.met_at = due_at, "open", None
        clock.reminder_at = clock.notice_at = clock.order_at = None
    clock.basis_at = counted.rule.start if counted else None
    clock.basis_days = counted.rule.working_days if counted else None
    clock.provisional = bool(counted and counted.deadline.provisional)


def record_key_order(uow: UnitOfWork, *, order_no: str, appeal_id: str | None, reg_no: str,
                     duty_id: str, dept: str, cause: str, feedback: Counted) -> None:
    """Keep the order and time the unit's written feedback (reminded, then chased)."""
    feedback_by = feedback.deadline.at
    uow.session.add(KeyOrder(order_no=order_no, appeal_id=appeal_id, reg_no=reg_no,
                             assignment_id=duty_id, dept_code=dept, cause=cause,
                             issued_at=uow.now, feedback_by=feedback_by))
    _open(uow, appeal_id or reg_no, dept, order_no, "feedback", feedback_by, reg_no, feedback)


def settle_clock(uow: UnitOfWork, duty_id: str, kind: str, state: str = "met") -> None:
    """A duty done (met) or no longer owed (cancelled)."""
    _set_state(uow, Clock.id == f"{duty_id}:{kind}", state, uow.now)


def cancel_clocks(uow: UnitOfWork, appeal_id: str) -> None:
    """The appeal is closed: nobody is chased about it any more, except for written
    feedback still owed on a key supervision order."""
    _set_state(uow, (Clock.appeal_id == appeal_id) & (Clock.kind != "feedback"), "cancelled",
               uow.now)


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
    elif t == "supervision_order.answered":
        _set_state(uow, Clock.id == f"{data['order_no']}:feedback", "met", event.occurred_at)
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
    elif t == "deadline.recomputed" and data.get("duty") == "assignment":
        # Dispatch counted the assignment's deadlines again on the official calendar.
        for kind, name in (("sign", "sign_by"), ("respond", "respond_by")):
            clock = uow.session.get(Clock, f"{data['assignment_id']}:{kind}")
            if name in data["deadlines"] and clock is not None and clock.state == "open":
                _open(uow, clock.appeal_id, clock.dept_code, clock.assignment_id, kind,
                      datetime.fromisoformat(data["deadlines"][name]), clock.reg_no)
    elif t == "appeal.closed":
        cancel_clocks(uow, event.appeal_id)
    elif t == "appeal.withdrawn":
        _set_state(uow, Clock.appeal_id == event.appeal_id, "cancelled", event.occurred_at)


def scan(runtime: ServiceRuntime, calendar: WorkingCalendar, hours: WorkingHours,
         batch: int = 200) -> int:
    """Send every notice due now; returns how many were sent."""
    now = runtime.now()
    if not in_working_hours(now, calendar, hours):
        return 0
    # A reminder can fall due ahead of its deadline by a few calendar days (weekends,
    # holidays), or by a month and more for a chain's yearly patrol.
    horizon = now + timedelta(days=60)
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
                if clock.kind not in ORDER_KINDS:
                    already |= {ORDER}
                if clock.kind in REMIND_ONLY_KINDS:
                    already |= {NOTICE}
                for kind in notices_due(clock.due_at, already, now, calendar, hours,
                                        REMIND_WORKING_DAYS.get(clock.kind, 1)):
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
    appeal_id = _appeal_of(uow, clock)
    if kind == ORDER:
        feedback = count_deadline(calendar, "key_order", now, KEY_ORDER_FEEDBACK_WORKING_DAYS)
        # Numbers carry the local date and time, as people read them.
        local = now.astimezone(calendar.tz)
        body.update(order_no=f"ZD-{clock.reg_no}-{clock.dept_code}-{clock.kind}-{local:%Y%m%d%H%M}",
                    feedback_required=True, feedback_by=feedback.deadline.at.isoformat(),
                    deadlines_provisional=feedback.deadline.provisional)
        record_key_order(uow, order_no=body["order_no"], appeal_id=appeal_id,
                         reg_no=clock.reg_no, duty_id=clock.assignment_id,
                         dept=clock.dept_code, cause=f"overdue_{clock.kind}",
                         feedback=feedback)
    send_to_department(uow, clock.dept_code, kind, clock.reg_no, clock.assignment_id, body)
    if kind == NOTICE:
        uow.emit("appeal.overdue", {"reg_no": clock.reg_no, "assignment_id": clock.assignment_id,
                                    "dept_code": clock.dept_code, "deadline": clock.kind,
                                    "due_at": clock.due_at.isoformat()},
                 appeal_id=appeal_id)
    uow.emit(EVENT_FOR[kind], {"reg_no": clock.reg_no, "assignment_id": clock.assignment_id,
                               "dept_code": clock.dept_code, **body}, appeal_id=appeal_id)


def _appeal_of(uow: UnitOfWork, clock: Clock) -> str | None:
    """The appeal a clock is about. A class problem's, activity's or list item's clock is
    about none (its reg_no is that thing's id), nor is the feedback owed on a class's order."""
    if clock.kind == "feedback":
        order = uow.session.get(KeyOrder, clock.assignment_id)
        return order.appeal_id if order is not None else None
    return clock.appeal_id if clock.kind in APPEAL_KINDS else None


def list_clocks(runtime: ServiceRuntime, reg_no: str) -> list[dict[str, Any]]:
    with runtime.store.read() as session:
        return [{"assignment_id": c.assignment_id, "dept_code": c.dept_code, "kind": c.kind,
                 "due_at": c.due_at.isoformat(), "state": c.state,
                 **{col: (getattr(c, col).isoformat() if getattr(c, col) else None)
                    for col in SENT_COLUMN.values()}}
                for c in session.scalars(select(Clock).where(Clock.reg_no == reg_no)
                                         .order_by(Clock.due_at, Clock.id))]
