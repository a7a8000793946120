"""Every report figure of a fixed scenario, against numbers worked out by hand.

Twelve appeals across three departments (zjj, scjgj, rsj), two channels (sit_in,
hotline_12345), two industry chains (digital_economy, trade_consumption) and two
categories (0102, 0402), with known sign, response, follow-up and close outcomes, plus a
class problem, a key supervision order, a walkthrough and activities. The events are fed
through reporting's consumer (usecases.on_event) into a SQLite read model here;
tests/integration/test_reporting_readmodel.py runs the same scenario on PostgreSQL.

"Now" is 2026-12-10 15:00 Asia/Shanghai (a Thursday). The appeals (times local):

  A1  sit_in  digital 0102  zjj    signed on time, solved, satisfied, closed on time (Nov)
  A2  sit_in  digital 0102  zjj    lead signed on time; co-unit scjgj signed late;
                                   explained, unsatisfied -> key order (answered) ->
                                   reopened, solved, basically satisfied, closed late (Nov)
  A3  hotline trade   0402  scjgj  signed late, solved, very satisfied, closed on time (Nov)
  A4  hotline trade   0402  scjgj  never signed (sign-by Nov 6), respond-by Nov 12: open
  A5  hotline digital 0402  rsj    signed on time, not solvable (late), satisfied, closed late
  A6  sit_in  trade   0102  rsj    rsj returned it before its sign-by (accepted), re-dispatched
                                   to zjj: signed on time, solved; no follow-up yet
  A7  sit_in  digital 0102  zjj    like A1 but all in September (Q3)
  A8  hotline trade   0402  scjgj  registered 2026-10-01 07:30 (+08:00), i.e. Sep 30 in UTC:
                                   a Q4 appeal; signed, solved, satisfied, closed (Oct)
  A9  sit_in  trade   0402  -      answered on the spot; satisfied; closed on time (Nov)
  A10 hotline digital 0102  rsj    dispatched today 08:00, sign-by today 10:00: unsigned
  A11 hotline trade   0402  scjgj  dispatched today 14:00, sign-by today 16:00: not due yet
  A12 sit_in  digital 0402  zjj    withdrawn (assignment taken back) before its sign-by
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from appeals_common.clock import FixedClock
from appeals_common.db import Store
from appeals_common.envelope import Event
from appeals_common.nameko_ext import Delivery, ServiceRuntime
from appeals_common.settings import Settings
from services.reporting import usecases
from services.reporting.models import METADATA
from services.reporting.usecases import ReportingContext

TZ = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 12, 10, 15, 0, tzinfo=TZ)
DIMS = {"sit_in": "sit_in", "hotline": "hotline_12345"}


def at(text: str) -> datetime:
    """'11-02 09:00' (2026, local time) or a full ISO time."""
    if "T" in text:
        return datetime.fromisoformat(text)
    return datetime.fromisoformat(f"2026-{text}").replace(tzinfo=TZ)


def end_of(day: str) -> str:
    return at(f"{day} 23:59:59").isoformat()


@dataclass
class Scenario:
    """Builds the events the services would emit, in the order they happened."""

    events: list[Event] = field(default_factory=list)
    appeals: dict[str, str] = field(default_factory=dict)  # name -> appeal_id

    def emit(self, event_type: str, when: datetime, data: dict[str, Any],
             appeal: str | None = None, producer: str = "test") -> Event:
        event = Event(event_type, producer, when, data,
                      appeal_id=self.appeals[appeal] if appeal else None)
        self.events.append(event)
        return event

    def register(self, name: str, when: str, channel: str, chain: str, category: str,
                 activity_id: str | None = None, on_spot: bool = False) -> None:
        self.appeals[name] = str(uuid.uuid4())
        moment = at(when)
        self.emit("appeal.registered", moment, {
            "reg_no": f"WH-2026-{int(name[1:]):06d}", "channel": DIMS[channel],
            "source_system": "staff", "category": category, "industry_chain": chain,
            "urgency": "normal", "title": f"诉求{name}", "activity_id": activity_id,
            "enterprise": {"name": f"企业{name}", "uscc": "91110000600037341L",
                           "contact_name": "张三", "contact_phone": "13800138000"},
            "resolved_on_spot": on_spot}, name, "intake")
        if on_spot:
            self.emit("appeal.resolved_on_spot", moment + timedelta(microseconds=1),
                      {"reg_no": name, "answer": "当场答复"}, name, "intake")

    def dispatch(self, name: str, when: str, *units: tuple[str, str, str, str, str]) -> None:
        """units: (assignment, dept, role, sign_by, respond_by)."""
        assignments = [{"assignment_id": f"{name}-{a}", "dept_code": dept, "role": role,
                        "state": "assigned", "assigned_at": at(when).isoformat(),
                        "sign_by": sign_by, "return_by": sign_by, "respond_by": respond_by}
                       for a, dept, role, sign_by, respond_by in units]
        lead = next(u[1] for u in units if u[2] == "lead")
        self.emit("appeal.dispatched", at(when), {
            "reg_no": name, "units": {"lead": lead, "co": [u[1] for u in units if u[2] == "co"]},
            "rule": "test", "assignments": assignments}, name, "dispatch")

    def sign(self, name: str, assignment: str, when: str, role: str, on_time: bool) -> None:
        self.emit("assignment.signed", at(when), {
            "reg_no": name, "assignment_id": f"{name}-{assignment}", "role": role,
            "signed_at": at(when).isoformat(), "on_time": on_time}, name, "dispatch")

    def respond(self, name: str, assignment: str, when: str, outcome: str,
                on_time: bool = True) -> None:
        self.emit("appeal.responded", at(when), {
            "reg_no": name, "assignment_id": f"{name}-{assignment}", "role": "lead",
            "dept_code": assignment_dept(self, name, assignment), "outcome": outcome,
            "responded_at": at(when).isoformat(), "on_time": on_time}, name, "dispatch")

    def followup(self, name: str, when: str, grade: str, closes: bool | None = None) -> None:
        """closes: the close's on_time flag when the grade closes the appeal."""
        self.emit("followup.recorded", at(when), {"reg_no": name, "grade": grade,
                                                  "on_time": True}, name, "supervision")
        if closes is not None:
            self.emit("appeal.closed", at(when) + timedelta(seconds=1), {
                "reg_no": name, "reason": "satisfied_followup", "on_time": closes},
                name, "supervision")


def assignment_dept(s: Scenario, name: str, assignment: str) -> str:
    for event in s.events:
        if event.event_type == "appeal.dispatched" and event.appeal_id == s.appeals[name]:
            for a in event.data["assignments"]:
                if a["assignment_id"] == f"{name}-{assignment}":
                    return a["dept_code"]
    raise KeyError(assignment)


def build() -> Scenario:
    s = Scenario()
    s.register("A1", "11-02 09:00", "sit_in", "digital_economy", "0102", "sitin-2026q4")
    s.dispatch("A1", "11-02 09:00:01", ("z", "zjj", "lead", end_of("11-03"), end_of("11-09")))
    s.sign("A1", "z", "11-02 15:00", "lead", True)
    s.respond("A1", "z", "11-05 10:00", "solved")
    s.followup("A1", "11-06 10:00", "satisfied", closes=True)

    s.register("A2", "11-03 09:00", "sit_in", "digital_economy", "0102", "sitin-2026q4")
    s.dispatch("A2", "11-03 09:00:01", ("z", "zjj", "lead", end_of("11-04"), end_of("11-10")),
               ("s", "scjgj", "co", end_of("11-04"), end_of("11-10")))
    s.sign("A2", "z", "11-03 14:00", "lead", True)
    s.sign("A2", "s", "11-05 09:00", "co", False)
    s.respond("A2", "z", "11-09 10:00", "explained")
    s.followup("A2", "11-10 10:00", "unsatisfied")
    s.emit("supervision_order.issued", at("11-10 10:00:01"), {
        "reg_no": "A2", "dept_code": "zjj", "assignment_id": "A2-z", "order_no": "ZD-A2",
        "reasons": "不满意", "grade": "unsatisfied", "respond_by": end_of("11-17"),
        "feedback_required": True, "feedback_by": end_of("11-17")}, "A2", "supervision")
    s.emit("appeal.reopened", at("11-10 10:00:02"), {
        "reg_no": "A2", "reason": "unsatisfied_followup", "order_no": "ZD-A2",
        "respond_by": end_of("11-17")}, "A2", "supervision")
    s.emit("supervision_order.answered", at("11-12 10:00"), {
        "reg_no": "A2", "order_no": "ZD-A2", "assignment_id": "A2-z", "dept_code": "zjj",
        "feedback": "已重新研究处置", "answered_at": at("11-12 10:00").isoformat(),
        "on_time": True}, "A2", "dispatch")
    s.respond("A2", "z", "11-16 10:00", "solved")
    s.followup("A2", "11-17 10:00", "basically_satisfied", closes=False)

    s.register("A3", "11-04 09:00", "hotline", "trade_consumption", "0402")
    s.dispatch("A3", "11-04 09:00:01", ("s", "scjgj", "lead", end_of("11-05"), end_of("11-11")))
    s.sign("A3", "s", "11-06 09:00", "lead", False)
    s.respond("A3", "s", "11-10 09:00", "solved")
    s.followup("A3", "11-11 10:00", "very_satisfied", closes=True)

    s.register("A4", "11-05 09:00", "hotline", "trade_consumption", "0402")
    s.dispatch("A4", "11-05 09:00:01", ("s", "scjgj", "lead", end_of("11-06"), end_of("11-12")))
    s.emit("appeal.overdue", at("11-09 09:30"), {
        "reg_no": "A4", "assignment_id": "A4-s", "dept_code": "scjgj", "deadline": "sign",
        "due_at": end_of("11-06")}, "A4", "supervision")

    s.register("A5", "11-09 09:00", "hotline", "digital_economy", "0402")
    s.dispatch("A5", "11-09 09:00:01", ("r", "rsj", "lead", end_of("11-10"), end_of("11-16")))
    s.sign("A5", "r", "11-10 09:00", "lead", True)
    s.respond("A5", "r", "11-18 10:00", "not_solvable", on_time=False)
    s.followup("A5", "11-19 10:00", "satisfied", closes=False)

    s.register("A6", "11-10 09:00", "sit_in", "trade_consumption", "0102")
    s.dispatch("A6", "11-10 09:00:01", ("r", "rsj", "lead", end_of("11-11"), end_of("11-17")))
    s.emit("assignment.returned", at("11-10 15:00"), {
        "reg_no": "A6", "assignment_id": "A6-r", "dept_code": "rsj", "role": "lead",
        "reason_code": "not_our_duty", "reason": "不属于本单位"}, "A6", "dispatch")
    s.emit("assignment.return_decided", at("11-11 09:00"), {
        "reg_no": "A6", "assignment_id": "A6-r", "dept_code": "rsj", "role": "lead",
        "accepted": True, "reason": "同意"}, "A6", "dispatch")
    s.dispatch("A6", "11-11 09:00:01", ("z", "zjj", "lead", end_of("11-12"), end_of("11-18")))
    s.sign("A6", "z", "11-11 16:00", "lead", True)
    s.respond("A6", "z", "11-16 10:00", "solved")

    s.register("A7", "09-01 09:00", "sit_in", "digital_economy", "0102")
    s.dispatch("A7", "09-01 09:00:01", ("z", "zjj", "lead", end_of("09-02"), end_of("09-08")))
    s.sign("A7", "z", "09-01 15:00", "lead", True)
    s.respond("A7", "z", "09-04 10:00", "solved")
    s.followup("A7", "09-07 10:00", "satisfied", closes=True)

    s.register("A8", "2026-10-01T07:30:00+08:00", "hotline", "trade_consumption", "0402")
    s.dispatch("A8", "2026-10-01T07:30:01+08:00",
               ("s", "scjgj", "lead", end_of("10-01"), end_of("10-12")))
    s.sign("A8", "s", "10-01 09:00", "lead", True)
    s.respond("A8", "s", "10-09 10:00", "solved")
    s.followup("A8", "10-12 10:00", "satisfied", closes=True)

    s.register("A9", "11-20 09:00", "sit_in", "trade_consumption", "0402", "sitin-2026q4",
               on_spot=True)
    s.followup("A9", "11-23 10:00", "satisfied", closes=True)

    s.register("A12", "11-24 09:00", "sit_in", "digital_economy", "0402")
    s.dispatch("A12", "11-24 09:00:01", ("z", "zjj", "lead", end_of("11-25"), end_of("12-01")))
    s.emit("appeal.withdrawn", at("11-24 15:00"), {"reg_no": "A12", "reason": "企业撤回"},
           "A12", "intake")
    s.emit("assignment.reassigned", at("11-24 15:00:01"), {
        "reg_no": "A12", "assignment_id": "A12-z", "dept_code": "zjj", "role": "lead",
        "reason": "诉求已撤回"}, "A12", "dispatch")

    s.register("A10", "12-10 07:50", "hotline", "digital_economy", "0102")
    s.dispatch("A10", "12-10 08:00", ("r", "rsj", "lead", at("12-10 10:00").isoformat(),
                                      end_of("12-15")))
    s.register("A11", "12-10 13:50", "hotline", "trade_consumption", "0402")
    s.dispatch("A11", "12-10 14:00", ("s", "scjgj", "lead", at("12-10 16:00").isoformat(),
                                      end_of("12-15")))

    # 类题破解: confirmed with a deadline that has passed (an overdue duty of fgj).
    view = {"class_id": "LT-2026-0001", "industry_chain": "modern_logistics",
            "category": "0402", "keywords": ["用电", "增容"], "score": 0.4,
            "reg_nos": ["WH-2026-000003", "WH-2026-000004", "WH-2026-000008"],
            "lead_entity": None, "units": [], "deadline": None, "measures": None,
            "promote": None, "note": ""}
    s.emit("class_problem.suggested", at("11-20 10:00"), {**view, "state": "suggested"})
    s.emit("class_problem.confirmed", at("11-21 10:00"), {
        **view, "state": "confirmed", "lead_entity": "fgj", "units": ["swtcj"],
        "deadline": end_of("12-01")})
    # 我陪群众走流程: one item closed on time, one open and past due, one open not yet due.
    s.emit("walkthrough.recorded", at("11-13 10:00"), {
        "walkthrough_id": "WT-1", "service_item": "食品经营许可", "mode": "accompanied",
        "lead_unit": "zwfwzx", "walked_on": "2026-11-13",
        "scores": {"accuracy": 4, "smoothness": 3, "proofs": 5, "experience": 4, "conduct": 5},
        "summary": "材料重复提交", "items": [
            {"item_id": "WI-1", "list": "problem", "description": "材料重复",
             "owner": "scjgj", "due_at": end_of("11-27")},
            {"item_id": "WI-2", "list": "demand", "description": "线上预约",
             "owner": "zjj", "due_at": end_of("12-04")},
            {"item_id": "WI-3", "list": "optimization", "description": "一表申请",
             "owner": "zwfwzx", "due_at": end_of("12-31")}]})
    s.emit("walkthrough_item.closed", at("11-20 16:00"), {
        "walkthrough_id": "WT-1", "item_id": "WI-1", "list": "problem", "owner": "scjgj",
        "resolution": "取消重复材料", "closed_at": at("11-20 16:00").isoformat(),
        "on_time": True})
    # Activities: the Q4 sit-in (mid-December is still to come: held on 12-15) and a
    # patrol whose plan was late and whose report is on time.
    s.emit("activity.registered", at("11-01 09:00"), {
        "activity_id": "sitin-2026q4", "kind": "sit_in", "held_on": "2026-12-15",
        "title": "第四季度局长坐诊", "lead_unit": "zwfwj", "industry_chain": None})
    s.emit("activity.registered", at("11-01 09:00"), {
        "activity_id": "patrol-de-2026", "kind": "chain_patrol", "held_on": "2026-11-18",
        "title": "数字经济链式巡诊", "lead_unit": "gxj", "industry_chain": "digital_economy"})
    s.emit("activity.plan_submitted", at("11-16 09:00"), {
        "activity_id": "patrol-de-2026", "industry_chain": "digital_economy", "lead_unit": "gxj",
        "held_on": "2026-11-18", "plan_due_at": end_of("11-13"),
        "submitted_at": at("11-16 09:00").isoformat(), "on_time": False, "summary": "方案"})
    s.emit("activity.report_submitted", at("11-20 09:00"), {
        "activity_id": "patrol-de-2026", "industry_chain": "digital_economy", "lead_unit": "gxj",
        "held_on": "2026-11-18", "report_due_at": end_of("11-23"),
        "submitted_at": at("11-20 09:00").isoformat(), "on_time": True,
        "policies_delivered": 12, "enterprises_served": 30, "class_problems": ["数据确权"],
        "summary": "巡诊情况", "service_items": [
            {"enterprise_name": "云南某软件公司", "contact_name": "李四",
             "contact_phone": "13912345678", "item": "算力补贴", "responsible_unit": "gxj",
             "status": "in_progress", "reg_no": None, "remarks": ""}]})
    s.events.sort(key=lambda e: e.occurred_at)
    return s


class Reporting:
    """The reporting service's use cases on a database, with "now" fixed."""

    def __init__(self, url: str) -> None:
        self.store = Store(url, METADATA, producer="reporting")
        self.store.create_schema()
        self.clock = FixedClock(NOW)
        self.runtime = ServiceRuntime("reporting", Settings(), self.store, self.clock)
        self.ctx = ReportingContext.load(Settings())

    def deliver(self, events: list[Event]) -> None:
        for event in events:
            usecases.on_event(self.runtime, self.ctx, Delivery(
                event.to_json(), event.event_type, "appeals.events", event.event_id,
                "application/json", {}, 1))

    def rates(self, **params: str) -> dict[str, Any]:
        return usecases.rates(self.runtime, self.ctx, params)


def figures(group: dict[str, Any]) -> tuple[tuple[int, int], ...]:
    """(numerator, denominator) of 响应率, 解决率, 满意率, 按时办结率."""
    return tuple((group[name]["numerator"], group[name]["denominator"])
                 for name in ("response_rate", "solve_rate", "satisfaction_rate",
                              "closed_on_time_rate"))


def by_key(report: dict[str, Any]) -> dict[str | None, tuple]:
    return {g["key"]: figures(g) for g in report["groups"]}


# --- the hand-worked figures, checked by every database --------------------------------------

def check_q4_rates(r: Reporting) -> None:
    q4 = {"period": "quarter", "year": "2026", "quarter": "4"}
    report = r.rates(**q4, group_by="department")
    # 响应率, assignments whose sign-by is in Q4 (A7 is Q3; A6's rsj assignment was
    # returned before its sign-by and A12's taken back, so they do not count; A11's
    # sign-by, 16:00 today, has not come yet):
    #   zjj   A1 ✓ A2 ✓ A6 ✓            3/3
    #   scjgj A2(co) ✗ A3 ✗ A4 ✗ A8 ✓    1/4
    #   rsj   A5 ✓ A10 ✗ (10:00 today)   1/2            total 5/9
    # 解决率, appeals by the time of their last response (A2's second one, solved):
    #   zjj A1 A2 A6 solved 3/3, scjgj A3 A8 2/2, rsj A5 not solvable 0/1     5/6
    # 满意率, follow-ups recorded (the lead unit at the time; A9 has none):
    #   zjj A1 ✓ A2 ✗ A2 ✓ 2/3, scjgj A3 A8 2/2, rsj A5 1/1, none A9 1/1     6/7
    # 按时办结率, closed appeals: zjj A1 ✓ A2 ✗ 1/2, scjgj A3 A8 2/2, rsj A5 ✗ 0/1,
    #   none A9 ✓ 1/1                                                         4/6
    assert by_key(report) == {
        "zjj": ((3, 3), (3, 3), (2, 3), (1, 2)),
        "scjgj": ((1, 4), (2, 2), (2, 2), (2, 2)),
        "rsj": ((1, 2), (0, 1), (1, 1), (0, 1)),
        None: ((0, 0), (0, 0), (1, 1), (1, 1)),
    }
    assert figures(report["total"]) == ((5, 9), (5, 6), (6, 7), (4, 6))
    assert [report["total"][k]["rate"] for k in ("response_rate", "solve_rate",
                                                 "satisfaction_rate", "closed_on_time_rate")] \
        == [0.5556, 0.8333, 0.8571, 0.6667]
    assert {g["key"]: g["label"] for g in report["groups"]}["zjj"] == "区住房和城乡建设局"
    assert report["period"] == {"kind": "quarter", "label": "2026-Q4", "from": "2026-10-01",
                                "to": "2026-12-31", "timezone": "Asia/Shanghai"}

    # By channel: sit_in has A1 A2 A6 (A9 and A12 add no assignment), hotline A3 A4 A5 A8 A10.
    #   响应率 sit_in A1 ✓ A2 ✓ A2co ✗ A6 ✓ 3/4; hotline A3 ✗ A4 ✗ A5 ✓ A8 ✓ A10 ✗ 2/5
    #   解决率 sit_in A1 A2 A6 3/3; hotline A3 ✓ A5 ✗ A8 ✓ 2/3
    #   满意率 sit_in A1 ✓ A2 ✗ A2 ✓ A9 ✓ 3/4; hotline A3 A5 A8 3/3
    #   按时办结率 sit_in A1 ✓ A2 ✗ A9 ✓ 2/3; hotline A3 ✓ A5 ✗ A8 ✓ 2/3
    assert by_key(r.rates(**q4, group_by="channel")) == {
        "sit_in": ((3, 4), (3, 3), (3, 4), (2, 3)),
        "hotline_12345": ((2, 5), (2, 3), (3, 3), (2, 3)),
    }
    # By chain: digital A1 A2 A5 A10 (A12 withdrawn), trade A3 A4 A6 A8 A9.
    #   响应率 digital A1 ✓ A2 ✓ A2co ✗ A5 ✓ A10 ✗ 3/5; trade A3 ✗ A4 ✗ A6 ✓ A8 ✓ 2/4
    #   解决率 digital A1 ✓ A2 ✓ A5 ✗ 2/3; trade A3 A6 A8 3/3
    #   满意率 digital A1 ✓ A2 ✗ A2 ✓ A5 ✓ 3/4; trade A3 A8 A9 3/3
    #   按时办结率 digital A1 ✓ A2 ✗ A5 ✗ 1/3; trade A3 A8 A9 3/3
    assert by_key(r.rates(**q4, group_by="industry_chain")) == {
        "digital_economy": ((3, 5), (2, 3), (3, 4), (1, 3)),
        "trade_consumption": ((2, 4), (3, 3), (3, 3), (3, 3)),
    }
    # By category: 0102 A1 A2 A6 A10, 0402 A3 A4 A5 A8 A9.
    #   响应率 0102 A1 ✓ A2 ✓ A2co ✗ A6 ✓ A10 ✗ 3/5; 0402 A3 ✗ A4 ✗ A5 ✓ A8 ✓ 2/4
    #   解决率 0102 A1 A2 A6 3/3; 0402 A3 ✓ A5 ✗ A8 ✓ 2/3
    #   满意率 0102 A1 ✓ A2 ✗ A2 ✓ 2/3; 0402 A3 A5 A8 A9 4/4
    #   按时办结率 0102 A1 ✓ A2 ✗ 1/2; 0402 A3 ✓ A5 ✗ A8 ✓ A9 ✓ 3/4
    assert by_key(r.rates(**q4, group_by="category")) == {
        "0102": ((3, 5), (3, 3), (2, 3), (1, 2)),
        "0402": ((2, 4), (2, 3), (4, 4), (3, 4)),
    }
    # By month of Q4: October is A8 alone; December has only A10's missed signature.
    assert by_key(r.rates(**q4, group_by="month")) == {
        "2026-10": ((1, 1), (1, 1), (1, 1), (1, 1)),
        "2026-11": ((4, 7), (4, 5), (5, 6), (3, 5)),
        "2026-12": ((0, 1), (0, 0), (0, 0), (0, 0)),
    }


def check_other_periods(r: Reporting) -> None:
    # The year adds A7 (all in September) to every figure: 6/10, 6/7, 7/8, 5/7.
    year = r.rates(year="2026", group_by="quarter")
    assert figures(year["total"]) == ((6, 10), (6, 7), (7, 8), (5, 7))
    assert by_key(year) == {"2026-Q1": ((0, 0),) * 4, "2026-Q2": ((0, 0),) * 4,
                            "2026-Q3": ((1, 1),) * 4,
                            "2026-Q4": ((5, 9), (5, 6), (6, 7), (4, 6))}
    # One month; and a custom range, whose days are local: A8's 07:30 on 10-01 (still
    # September in UTC) is inside 10-01..10-31.
    assert figures(r.rates(period="month", year="2026", month="11")["total"]) == \
        ((4, 7), (4, 5), (5, 6), (3, 5))
    october = r.rates(**{"from": "2026-10-01", "to": "2026-10-31"})
    assert figures(october["total"]) == ((1, 1),) * 4
    assert october["period"]["kind"] == "custom" and october["groups"] == []
    # Today only: A10's 10:00 sign-by passed unsigned, A11's 16:00 has not come.
    assert figures(r.rates(**{"from": "2026-12-10", "to": "2026-12-10"})["total"])[0] == (0, 1)
    assert figures(r.rates(year="2025")["total"]) == ((0, 0),) * 4


def check_summary(r: Reporting) -> None:
    # All twelve: closed A1 A2 A3 A5 A7 A8 A9, dispatched A4 A10 A11, responded A6,
    # withdrawn A12. Responded (ever) A1 A2 A3 A5 A6 A7 A8, solved all but A5: 6/7.
    # Last grades all satisfied-ish (A2's last is basically satisfied): 7/7.
    # Closed on time A1 A3 A7 A8 A9 of 7.
    everything = usecases.summary(r.runtime, r.ctx, None, None)
    assert everything == {
        "registered": 12, "by_state": {"closed": 7, "dispatched": 3, "responded": 1,
                                       "withdrawn": 1},
        "by_channel": {"hotline_12345": 6, "sit_in": 6}, "responded": 7, "closed": 7,
        "solve_rate": 0.8571, "satisfaction_rate": 1.0, "closed_on_time_rate": 0.7143}
    # A window of whole local days reads the roll-up, one cut at 12:00 the facts: Q3 is
    # A7 alone either way; 10-01 07:00 local cuts A8 (07:30) in.
    q3 = usecases.summary(r.runtime, r.ctx, at("07-01 00:00"), at("10-01 00:00"))
    assert (q3["registered"], q3["by_state"]) == (1, {"closed": 1})
    odd = usecases.summary(r.runtime, r.ctx, at("09-30 12:00"), at("10-01 07:45"))
    assert (odd["registered"], odd["by_channel"]) == (1, {"hotline_12345": 1})


def check_overdue(r: Reporting) -> None:
    # Open duties past their deadline at 12-10 15:00: A4's signature (due 11-06) and
    # response (11-12), A10's signature (10:00 today), the class problem (fgj, 12-01),
    # walkthrough item WI-2 (zjj, 12-04). A11 (16:00) and WI-3 (12-31) are not due yet;
    # the key order was answered.
    report = usecases.overdue(r.runtime, r.ctx, {})
    assert report["total"] == 5
    assert report["by_dept"] == {"fgj": 1, "rsj": 1, "scjgj": 2, "zjj": 1}
    assert report["by_kind"] == {"class": 1, "item": 1, "respond": 1, "sign": 2}
    first = report["items"][0]
    # 11-06 -> 12-10: working days 11-09..13, 16..20, 23..27, 11-30..12-04, 12-07..10 = 24.
    assert (first["kind"], first["reg_no"], first["dept_code"], first["working_days_overdue"],
            first["days_overdue"]) == ("sign", "WH-2026-000004", "scjgj", 24, 34)
    assert [i["kind"] for i in report["items"]] == ["sign", "respond", "class", "item", "sign"]
    only = usecases.overdue(r.runtime, r.ctx, {"dept": "scjgj", "kind": "respond"})
    assert (only["total"], [i["ref"] for i in only["items"]]) == (1, ["A4-s"])


def check_metrics(r: Reporting) -> None:
    snap = usecases.metric_snapshot(r.runtime, r.ctx)
    assert snap["registered_by_channel"] == {"hotline_12345": 6, "sit_in": 6}
    assert snap["open_by_state"] == {"dispatched": 3, "responded": 1}
    assert snap["overdue_by_dept"] == {"fgj": 1, "rsj": 1, "scjgj": 2, "zjj": 1}
    # Follow-ups: satisfied A1 A5 A7 A8 A9, very A3, basically A2, unsatisfied A2: 7/8.
    assert snap["followups_by_grade"] == {"satisfied": 5, "very_satisfied": 1,
                                          "basically_satisfied": 1, "unsatisfied": 1}
    assert snap["satisfaction_rate"] == 7 / 8
    # First responses: A1 and A7 after 3d1h (<= 5d); A2 A6 6d1h, A3 6d, A5 9d1h, A8 8d2h30m
    # (<= 10d). Sum 2*262800 + 2*522000 + 518400 + 781200 + 700200 = 3,569,400 s.
    assert snap["response_buckets"] == [(3600.0, 0), (14400.0, 0), (86400.0, 0), (172800.0, 0),
                                        (432000.0, 2), (864000.0, 7), (2592000.0, 7)]
    assert (snap["response_count"], snap["response_sum"]) == (7, 3569400.0)


def check_lists(r: Reporting) -> None:
    problems = usecases.class_problems(r.runtime, r.ctx, {})
    (problem,) = problems["items"]
    assert (problem["state"], problem["lead_entity"], problem["members"], problem["overdue"]) \
        == ("confirmed", "fgj", 3, True)
    walks = usecases.walkthroughs(r.runtime, r.ctx, {"year": "2026"})
    assert walks["totals"] == {
        "problem": {"open": 0, "closed": 1, "closed_on_time": 1, "overdue": 0},
        "demand": {"open": 1, "closed": 0, "closed_on_time": 0, "overdue": 1},
        "optimization": {"open": 1, "closed": 0, "closed_on_time": 0, "overdue": 0}}
    (walk,) = walks["walkthroughs"]
    assert walk["scores"] == {"accuracy": 4, "smoothness": 3, "proofs": 5, "experience": 4,
                              "conduct": 5}
    assert walk["mode_label"] == "陪同办"
    assert usecases.walkthroughs(r.runtime, r.ctx, {"year": "2025"})["count"] == 0
    schedule = usecases.activity_compliance(r.runtime, r.ctx, {"year": "2026"})
    # Sit-ins: none registered for March (before the programme's issue on 27 May: not
    # applicable), June, September (missed); December's is on the 15th, mid-month, not
    # yet held but it is registered in the window: met.
    assert [s["status"] for s in schedule["sit_ins"]] == ["not_applicable", "missed", "missed",
                                                          "met"]
    chains = {c["industry_chain"]: c for c in schedule["patrols"]}
    assert chains["digital_economy"]["status"] == "met"
    (patrol,) = chains["digital_economy"]["patrols"]
    # Plan due 3 working days before 11-18 (11-13 end of day), filed 11-16: late.
    # Report due 3 working days after (11-23), filed 11-20: on time.
    assert (patrol["plan"], patrol["report"]) == ("late", "on_time")
    assert chains["trade_consumption"]["status"] == "pending"  # the year is not over
    assert {"flag": "plan_late", "activity_id": "patrol-de-2026",
            "industry_chain": "digital_economy"} in schedule["flags"]
    assert schedule["summary"]["sit_ins"] == {"met": 1, "missed": 2, "not_applicable": 1}
    assert schedule["summary"]["chains"] == {"met": 1, "pending": 7}


def check_all(r: Reporting) -> None:
    check_q4_rates(r)
    check_other_periods(r)
    check_summary(r)
    check_overdue(r)
    check_metrics(r)
    check_lists(r)


@pytest.fixture(scope="module")
def sqlite_reporting(tmp_path_factory) -> Reporting:
    r = Reporting(f"sqlite:///{tmp_path_factory.mktemp('reporting')}/reporting.db")
    r.deliver(build().events)
    return r


def test_q4_rates_by_every_grouping(sqlite_reporting):
    check_q4_rates(sqlite_reporting)


def test_other_periods(sqlite_reporting):
    check_other_periods(sqlite_reporting)


def test_summary(sqlite_reporting):
    check_summary(sqlite_reporting)


def test_overdue(sqlite_reporting):
    check_overdue(sqlite_reporting)


def test_metric_snapshot(sqlite_reporting):
    check_metrics(sqlite_reporting)


def test_class_problems_walkthroughs_and_schedule(sqlite_reporting):
    check_lists(sqlite_reporting)


def test_a_rebuild_gives_the_same_figures(tmp_path):
    r = Reporting(f"sqlite:///{tmp_path}/reporting.db")
    r.deliver(build().events)
    result = usecases.rebuild(r.runtime, r.ctx)
    assert (result["events"], result["skipped"]) == (len(build().events), 0)
    check_all(r)


# --- exports ---------------------------------------------------------------------------------

def check_exports(r: Reporting) -> None:
    import io

    from openpyxl import load_workbook

    patrol = usecases.export(r.runtime, r.ctx, "patrol-report", {}, "patrol-de-2026")
    assert (patrol.media_type, patrol.filename) == (usecases.XLSX_TYPE,
                                                    "patrol-report-patrol-de-2026.xlsx")
    book = load_workbook(io.BytesIO(patrol.content))
    cells = [str(c) for ws in book.worksheets for row in ws.iter_rows(values_only=True)
             for c in row if c is not None]
    assert "139****5678" in cells and not any("13912345678" in c for c in cells)
    listing = usecases.export(r.runtime, r.ctx, "patrol-report", {"format": "csv"},
                              "patrol-de-2026")
    text = listing.content.decode("utf-8-sig")
    assert listing.filename == "patrol-report-patrol-de-2026-2.csv"
    assert "云南某软件公司" in text and "139****5678" in text and "13912345678" not in text

    # The Q4 sit-in took A1, A2 and A9: assignments A1 ✓, A2 ✓, A2 co ✗ (2/3); responded
    # A1 A2, both solved; follow-ups A1 ✓ A2 ✗ A2 ✓ A9 ✓ (3/4); closed A1 ✓ A2 ✗ A9 ✓ (2/3).
    summary = usecases.sitin_summary(r.runtime, r.ctx, {"year": "2026", "quarter": "4"})
    assert summary["totals"] == {"registered": 3, "resolved_on_spot": 1, "assigned": 3,
                                 "signed_on_time": 2, "responded": 2, "solved": 2,
                                 "followed": 4, "satisfied": 3, "closed": 3,
                                 "closed_on_time": 2}
    assert summary["rates"] == {"response_rate": 0.6667, "solve_rate": 1.0,
                                "satisfaction_rate": 0.75, "closed_on_time_rate": 0.6667}
    assert [(s["activity_id"], s["in_window"], s["appeals"]) for s in summary["sit_ins"]] == \
        [("sitin-2026q4", True, 3)]
    assert {a["contact_phone"] for a in summary["appeals"]} == {"138****8000"}
    csv_file = usecases.export(r.runtime, r.ctx, "sitin-summary",
                               {"year": "2026", "quarter": "4", "format": "csv"})
    assert csv_file.filename == "sitin-summary-2026-q4-2.csv"
    assert "13800138000" not in csv_file.content.decode("utf-8-sig")

    review = usecases.annual_review(r.runtime, r.ctx, {"year": "2026"})
    # The year's figures (A7 included): 6/10, 6/7, 7/8, 5/7; all twelve registered in 2026.
    assert review["totals"] == {"registered": 12, "resolved_on_spot": 1, "assigned": 10,
                                "signed_on_time": 6, "responded": 7, "solved": 6,
                                "followed": 8, "satisfied": 7, "closed": 7,
                                "closed_on_time": 5}
    assert {d["key"]: (d["signed_on_time"], d["assigned"]) for d in review["by_department"]} \
        == {"zjj": (4, 4), "scjgj": (1, 4), "rsj": (1, 2), None: (0, 0)}
    assert [c["reg_no"] for c in review["typical_cases"]] == ["WH-2026-000002",
                                                              "WH-2026-000003"]
    assert review["walkthrough_lists"][0] == {"list": "problem", "total": 1, "closed": 1,
                                              "open": 0}
    book = load_workbook(io.BytesIO(usecases.export(r.runtime, r.ctx, "annual-review",
                                                    {"year": "2026"}).content))
    assert book.sheetnames[:4] == ["总体情况", "按承办单位", "按受理渠道", "按产业链"]


def test_exports(sqlite_reporting):
    check_exports(sqlite_reporting)


@pytest.mark.parametrize(("what", "params", "field"), [
    ("sitin-summary", {"quarter": "5"}, "quarter"),
    ("sitin-summary", {"format": "pdf"}, "format"),
    ("annual-review", {"year": "1999"}, "year"),
    ("annual-review", {"sheet": "2"}, "sheet"),
    ("annual-review", {"format": "csv", "sheet": "99"}, "sheet"),
    ("annual-review", {"colour": "red"}, "colour"),
])
def test_export_parameters_are_checked(sqlite_reporting, what, params, field):
    from appeals_common.http import FieldErrors

    with pytest.raises(FieldErrors) as refused:
        usecases.export(sqlite_reporting.runtime, sqlite_reporting.ctx, what, params)
    assert field in refused.value.errors


def test_unknown_activity_is_404(sqlite_reporting):
    from appeals_common.http import NotFound

    with pytest.raises(NotFound):
        usecases.export(sqlite_reporting.runtime, sqlite_reporting.ctx, "patrol-report", {},
                        "no-such")


@pytest.mark.parametrize(("report", "params", "field"), [
    ("rates", {"colour": "red"}, "colour"),
    ("rates", {"group_by": "weekday"}, "group_by"),
    ("rates", {"period": "quarter", "quarter": "5"}, "quarter"),
    ("rates", {"year": "2026", "from": "2026-01-01", "to": "2026-02-01"}, "year"),
    ("rates", {"month": "4" * 200}, "month"),
    ("overdue", {"limit": "0"}, "limit"),
    ("overdue", {"dept": "nobody"}, "dept"),
    ("overdue", {"kind": "lunch"}, "kind"),
    ("class_problems", {"state": "lost"}, "state"),
    ("walkthroughs", {"period": "week"}, "period"),
    ("activity_compliance", {"year": "1999"}, "year"),
])
def test_bad_report_parameters_are_422_by_name(sqlite_reporting, report, params, field):
    from appeals_common.http import FieldErrors

    with pytest.raises(FieldErrors) as refused:
        getattr(usecases, report)(sqlite_reporting.runtime, sqlite_reporting.ctx, params)
    assert field in refused.value.errors and refused.value.status == 422
