"""Supervision's clocks and scans on real PostgreSQL with injected time: notices at the
right working moments, once each, with two scanning replicas and after downtime."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from appeals_common.calendar import WorkingCalendar
from appeals_common.clock import FixedClock
from appeals_common.db import Store
from appeals_common.envelope import Event
from appeals_common.nameko_ext import Delivery, ServiceRuntime
from appeals_common.settings import Settings
from services.supervision import clocks, usecases
from services.supervision.activities import ChainLeads
from services.supervision.escalation import WorkingHours
from services.supervision.models import Base

TZ = ZoneInfo("Asia/Shanghai")
CAL = WorkingCalendar()
HOURS = WorkingHours()
CHAINS = ChainLeads({"digital_economy": "gxj", "modern_logistics": "fgj"})


def at(day: str, hour: int = 10) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=TZ)


class Supervision:
    def __init__(self, url: str) -> None:
        self.store = Store(url, Base.metadata, producer="supervision")
        self.store.create_schema()
        self.clock = FixedClock(at("2026-11-27"))
        self.runtime = ServiceRuntime("supervision", Settings(), self.store, self.clock)

    def deliver(self, event_type: str, appeal_id: str, data: dict,
                producer: str = "dispatch") -> None:
        event = Event(event_type, producer, self.clock.now(), data, appeal_id=appeal_id)
        usecases.on_event(self.runtime, CAL, CHAINS, Delivery(event.to_json(), event_type,
                                                      "appeals.events", event.event_id,
                                                      "application/json", {}, 1))

    def appeal(self, respond_by: datetime, sign_by: datetime) -> tuple[str, str, str]:
        appeal_id, assignment_id = str(uuid.uuid4()), str(uuid.uuid4())
        reg_no = f"WH-2026-{uuid.uuid4().int % 10**6:06d}"
        self.deliver("appeal.registered", appeal_id, {"reg_no": reg_no}, "intake")
        self.deliver("appeal.dispatched", appeal_id, {
            "reg_no": reg_no, "units": {"lead": "zjj", "co": []}, "rule": "r",
            "assignments": [{"assignment_id": assignment_id, "dept_code": "zjj",
                             "role": "lead", "sign_by": sign_by.isoformat(),
                             "respond_by": respond_by.isoformat()}]})
        return appeal_id, assignment_id, reg_no

    def sent(self) -> list[dict]:
        outbox = self.store.outbox
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(outbox).where(outbox.c.exchange == "appeals.dispatch")
                                .order_by(outbox.c.id)).mappings().all()
        return [json.loads(r["body"]) for r in rows]



def run_days(sup: Supervision, start: datetime, days: int, step_hours: int = 1) -> None:
    now = start
    while now < start + timedelta(days=days):
        sup.clock.moment = now
        clocks.scan(sup.runtime, CAL, HOURS)
        now += timedelta(hours=step_hours)


def test_a_month_of_deadlines_in_seconds(sup):
    appeal_id, assignment_id, reg_no = sup.appeal(respond_by=at("2026-12-04", 23),
                                                  sign_by=at("2026-11-30", 23))
    sup.deliver("assignment.signed", appeal_id, {"assignment_id": assignment_id, "role": "lead"})
    run_days(sup, at("2026-11-27", 0), days=30)
    kinds = [(m["kind"], m["deadline"]) for m in sup.sent()]
    # The order's written feedback is then owed: reminded, and chased when it is late.
    assert kinds == [("reminder", "respond"), ("supervision_notice", "respond"),
                     ("key_supervision_order", "respond"), ("reminder", "feedback"),
                     ("supervision_notice", "feedback")]
    notice = sup.sent()[1]
    assert notice["dept_code"] == "zjj" and notice["reg_no"] == reg_no
    assert datetime.fromisoformat(notice["sent_at"]) == at("2026-12-07", 9)
    assert sup.sent()[2]["order_no"].startswith("ZD-")


def test_a_met_deadline_stops_the_notices(sup):
    appeal_id, assignment_id, _ = sup.appeal(respond_by=at("2026-12-04", 23),
                                     sign_by=at("2026-11-30", 23))
    run_days(sup, at("2026-11-27", 0), days=3)  # reminder for the sign deadline only
    assert [m["deadline"] for m in sup.sent()] == ["sign"]
    sup.deliver("assignment.signed", appeal_id, {"assignment_id": assignment_id, "role": "lead"})
    sup.deliver("appeal.responded", appeal_id, {"assignment_id": assignment_id, "dept_code": "zjj",
                                                "outcome": "solved"})
    run_days(sup, at("2026-11-30", 0), days=20)
    assert [m["deadline"] for m in sup.sent()] == ["sign"]


def test_two_replicas_scanning_together_send_each_notice_once(sup, databases):
    other = Store(sup.store.url, Base.metadata, producer="supervision")
    other_runtime = ServiceRuntime("supervision", Settings(), other, sup.clock)
    for _ in range(40):
        sup.appeal(respond_by=at("2026-12-01", 23), sign_by=at("2026-11-30", 23))
    sup.clock.moment = at("2026-12-10", 10)  # everything overdue at once
    counts: list[int] = []

    def scan(runtime: ServiceRuntime) -> None:
        counts.append(clocks.scan(runtime, CAL, HOURS, batch=7))

    threads = [threading.Thread(target=scan, args=(rt,)) for rt in (sup.runtime, other_runtime)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sent = sup.sent()
    keys = [(m["assignment_id"], m["deadline"], m["kind"]) for m in sent]
    assert len(keys) == len(set(keys)), "no notice twice"
    # 40 appeals x 2 deadlines x (notice + order); the reminders' time has passed.
    assert len(keys) == 160 and sum(counts) == 160
    assert {m["kind"] for m in sent} == {"supervision_notice", "key_supervision_order"}
    other.dispose()


def test_no_scan_outside_working_hours(sup):
    sup.appeal(respond_by=at("2026-12-01", 23), sign_by=at("2026-11-30", 23))
    sup.clock.moment = at("2026-12-10", 20)
    assert clocks.scan(sup.runtime, CAL, HOURS) == 0
    sup.clock.moment = at("2026-12-12", 10)  # Saturday
    assert clocks.scan(sup.runtime, CAL, HOURS) == 0


def test_approved_extension_moves_the_deadline(sup):
    appeal_id, assignment_id, _ = sup.appeal(respond_by=at("2026-12-04", 23),
                                     sign_by=at("2026-11-30", 23))
    sup.deliver("assignment.signed", appeal_id, {"assignment_id": assignment_id, "role": "lead"})
    sup.deliver("extension.decided", appeal_id, {"assignment_id": assignment_id, "approved": True,
                                           "respond_by": at("2026-12-18", 23).isoformat()})
    run_days(sup, at("2026-11-27", 0), days=22)  # to 19 Dec: the old deadline passes quietly
    assert [m["kind"] for m in sup.sent()] == ["reminder"]
    assert datetime.fromisoformat(sup.sent()[0]["sent_at"]) == at("2026-12-17", 9)


def test_unsatisfied_followup_key_order_message(sup):
    appeal_id, assignment_id, reg_no = sup.appeal(respond_by=at("2026-12-04", 23),
                                                  sign_by=at("2026-11-30", 23))
    sup.deliver("assignment.signed", appeal_id, {"assignment_id": assignment_id, "role": "lead"})
    sup.deliver("appeal.responded", appeal_id, {"assignment_id": assignment_id, "dept_code": "zjj",
                                                "outcome": "explained"})
    result = usecases.record_followup(sup.runtime, CAL, reg_no, {
        "grade": "unsatisfied", "resolved": False, "comments": "问题未解决"}, "alice")
    assert result["state"] == "reopened"
    (order,) = [m for m in sup.sent() if m["kind"] == "key_supervision_order"]
    assert order["dept_code"] == "zjj" and order["feedback_required"] is True
    assert order["reasons"] == "问题未解决"
    # The lead's respond clock runs again against the order's deadline.
    (respond,) = [c for c in clocks.list_clocks(sup.runtime, reg_no) if c["kind"] == "respond"]
    assert respond["state"] == "open"
    assert datetime.fromisoformat(respond["due_at"]) == datetime.fromisoformat(order["respond_by"])


def test_unreachable_enterprise_closed_only_after_three_attempts(sup):
    from marshmallow import ValidationError

    from appeals_common.http import Conflict

    appeal_id, assignment_id, reg_no = sup.appeal(respond_by=at("2026-12-04", 23),
                                                  sign_by=at("2026-11-30", 23))
    with pytest.raises(Conflict, match="closure refused"):
        usecases.close_unreachable(sup.runtime, reg_no, {"contact_attempts": 3,
                                                         "reason": "电话无人接听"}, "a")
    sup.deliver("assignment.signed", appeal_id, {"assignment_id": assignment_id, "role": "lead"})
    sup.deliver("appeal.responded", appeal_id, {"assignment_id": assignment_id, "dept_code": "zjj",
                                                "outcome": "solved"})
    with pytest.raises(ValidationError, match="at least 3"):
        usecases.close_unreachable(sup.runtime, reg_no, {"contact_attempts": 2,
                                                         "reason": "x"}, "a")
    result = usecases.close_unreachable(sup.runtime, reg_no, {
        "contact_attempts": 3, "reason": "三次电话均无人接听"}, "alice")
    assert result["state"] == "closed"
    before = len(sup.sent())
    sup.clock.moment = at("2026-12-21", 10)
    clocks.scan(sup.runtime, CAL, HOURS)
    assert len(sup.sent()) == before, "a closed appeal's clocks are stopped"


def test_on_the_spot_answer_followed_up_unsatisfied_is_reopened_for_dispatch(sup):
    appeal_id, reg_no = str(uuid.uuid4()), "WH-2026-990001"
    sup.deliver("appeal.registered", appeal_id, {"reg_no": reg_no}, "intake")
    sup.deliver("appeal.resolved_on_spot", appeal_id, {"reg_no": reg_no, "answer": "x"},
                "intake")
    result = usecases.record_followup(sup.runtime, CAL, reg_no, {
        "grade": "very_unsatisfied", "resolved": False}, "alice")
    assert result["state"] == "reopened"
    assert not [m for m in sup.sent() if m["kind"] == "key_supervision_order"], "no unit yet"


def test_key_order_reaches_the_lead_even_when_dispatch_news_arrives_late(sup):
    """Events race: supervision may hear of the response before the dispatch."""
    appeal_id, reg_no, assignment_id = str(uuid.uuid4()), "WH-2026-990003", str(uuid.uuid4())
    sup.deliver("appeal.registered", appeal_id, {"reg_no": reg_no}, "intake")
    sup.deliver("appeal.responded", appeal_id, {"assignment_id": assignment_id,
                                                "dept_code": "rsj", "outcome": "explained"})
    usecases.record_followup(sup.runtime, CAL, reg_no, {
        "grade": "unsatisfied", "resolved": False, "comments": "没解决"}, "alice")
    (order,) = [m for m in sup.sent() if m["kind"] == "key_supervision_order"]
    assert (order["dept_code"], order["assignment_id"]) == ("rsj", assignment_id)
