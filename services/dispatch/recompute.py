"""Provisional deadlines corrected (DESIGN §7): once a year's official working-day data is
loaded (a calendar library upgrade, or a complete entry in calendar_overrides.yaml), every
open assignment whose deadlines were counted over a year without it is timed again.

A unit whose dates change is told with a `deadlines_changed` message, and the other
services with a `deadline.recomputed` event, in the transaction that changes the dates and
clears the flag: a second run finds nothing to do, so each change is told exactly once.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any

from sqlalchemy import select

from appeals_common.calendar import WorkingCalendar
from appeals_common.deadlines import DeadlinePolicy
from appeals_common.department_messages import send_to_department
from appeals_common.nameko_ext import ServiceRuntime
from services.dispatch.models import Assignment, DispatchAppeal

OPEN_STATES = ("assigned", "signed", "returned")
# The deadlines the policy sets; respond_by only while no extension or key supervision
# order has set it (respond_by_source), sign_by only until the unit has signed.
POLICY_DEADLINES = ("sign_by", "return_by", "respond_by", "latest_respond_by")


@dataclass
class RecomputeResult:
    checked: int = 0  # open assignments with provisional deadlines
    changed: int = 0  # of which at least one date moved (the unit was told)
    still_provisional: int = 0  # still counted over a year without official data

    def count(self, provisional: bool, changes: dict) -> None:
        self.checked += 1
        self.changed += bool(changes)
        self.still_provisional += provisional

    def view(self) -> dict[str, int]:
        return {"checked": self.checked, "changed": self.changed,
                "still_provisional": self.still_provisional}


def recompute(runtime: ServiceRuntime, calendar: WorkingCalendar, policy: DeadlinePolicy,
              apply: bool = True) -> RecomputeResult:
    """Time every open provisional assignment again; with ``apply=False`` only count
    (the metrics' view of how many are waiting for a recompute)."""
    result = RecomputeResult()
    if not apply:
        with runtime.store.read() as session:
            for _, fresh, changes in _plans(session, calendar, policy, lock=False):
                result.count(fresh.provisional, changes)
        return result
    with runtime.unit_of_work() as uow:
        for a, fresh, changes in _plans(uow.session, calendar, policy, lock=True):
            result.count(fresh.provisional, changes)
            a.deadlines_provisional = fresh.provisional
            for name, (_, new) in changes.items():
                setattr(a, name, new)
            if changes:
                _tell(uow, a, changes, fresh.provisional, calendar.tz)
    return result


def _plans(session: Any, calendar: WorkingCalendar, policy: DeadlinePolicy, lock: bool
           ) -> Iterator[tuple[Assignment, Any, dict]]:
    query = select(Assignment).where(Assignment.deadlines_provisional.is_(True),
                                     Assignment.state.in_(OPEN_STATES))
    if lock:
        query = query.with_for_update(skip_locked=True)
    for a in session.scalars(query.order_by(Assignment.assigned_at, Assignment.id)).all():
        appeal = session.get(DispatchAppeal, a.appeal_id)
        fresh = policy.for_assignment(calendar, a.assigned_at, appeal.urgency, appeal.category)
        yield a, fresh, _changes(a, fresh)


def _changes(a: Assignment, fresh: Any) -> dict[str, tuple[datetime, datetime]]:
    names = [n for n in POLICY_DEADLINES
             if not (n == "sign_by" and a.signed_at is not None)
             and not (n == "respond_by" and a.respond_by_source)]
    return {n: (getattr(a, n), getattr(fresh, n)) for n in names
            if getattr(fresh, n) != getattr(a, n)}


def _tell(uow: Any, a: Assignment, changes: dict[str, tuple[datetime, datetime]],
          provisional: bool, tz: tzinfo) -> None:
    visible = {n: c for n, c in changes.items() if n != "latest_respond_by"}
    deadlines = {n: new.isoformat() for n, (_, new) in changes.items()}
    previous = {n: old.astimezone(tz).isoformat() for n, (old, _) in changes.items()}
    if visible:  # the unit never sees latest_respond_by; nothing to tell it otherwise
        send_to_department(uow, a.dept_code, "deadlines_changed", a.reg_no, a.id, {
            "duty": "assignment", "reason": "calendar",
            "deadlines": {n: new.isoformat() for n, (_, new) in visible.items()},
            "previous": {n: previous[n] for n in visible},
            "deadlines_provisional": provisional})
    uow.emit("deadline.recomputed", {
        "reg_no": a.reg_no, "duty": "assignment", "assignment_id": a.id,
        "dept_code": a.dept_code, "role": a.role, "deadlines": deadlines,
        "previous": previous, "deadlines_provisional": provisional, "actor": "calendar"},
        appeal_id=a.appeal_id)
