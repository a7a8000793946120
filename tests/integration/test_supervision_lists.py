"""Supervision on real PostgreSQL with injected time: 我陪群众走流程 lists closed item by
item, patrol plans/reports timed and chased to the chain's lead unit, and the written
feedback owed on a key supervision order."""

from __future__ import annotations

import json
import uuid

import pytest
from marshmallow import ValidationError
from sqlalchemy import select

from appeals_common.auth import Principal
from appeals_common.http import Conflict, FieldErrors, HttpError
from services.supervision import activities, usecases, walkthroughs
from services.supervision.models import Clock
from tests.integration.test_supervision_clocks import CAL, CHAINS, Supervision, at, run_days

DEPARTMENTS = {"zjj": object(), "gxj": object(), "fgj": object(), "swj": object()}
STAFF = Principal("staff1", "bureau_staff")



def events(sup: Supervision, event_type: str) -> list[dict]:
    outbox = sup.store.outbox
    with sup.store.engine.connect() as conn:
        rows = conn.execute(select(outbox.c.body).where(outbox.c.exchange == "appeals.events")
                            .order_by(outbox.c.id)).scalars().all()
    return [e["data"] for e in map(json.loads, rows) if e["event_type"] == event_type]


def walkthrough_body(**overrides) -> dict:
    return {"service_item": "企业开办一网通办", "mode": "accompanied", "lead_unit": "swj",
            "walked_on": "2026-11-26",
            "scores": {"accuracy": 4, "smoothness": 2, "proofs": 3, "experience": 3, "conduct": 5},
            "summary": "陪同企业办理开办全流程",
            "findings": [
                {"list": "problem", "description": "线上线下材料要求不一致", "owner": "zjj",
                 "due_at": "2026-12-04T17:00:00+08:00"},
                {"list": "optimization", "description": "合并两个表单", "owner": "gxj",
                 "due_at": "2026-12-18T17:00:00+08:00"}],
            **overrides}


def test_walkthrough_findings_become_list_items_closed_one_by_one(sup):
    view = walkthroughs.record(sup.runtime, DEPARTMENTS, walkthrough_body(), "staff1")
    items = view["items"]
    assert [(i["list"], i["owner"], i["state"]) for i in items] == [
        ("problem", "zjj", "open"), ("optimization", "gxj", "open")]
    recorded = events(sup, "walkthrough.recorded")[0]
    assert recorded["mode"] == "accompanied" and recorded["scores"]["smoothness"] == 2
    assert [i["item_id"] for i in recorded["items"]] == [i["item_id"] for i in items]
    # Open items are supervised: the owner is reminded the working day before, chased after.
    run_days(sup, at("2026-11-27", 0), days=7)
    sent = [(m["kind"], m["deadline"], m["dept_code"]) for m in sup.sent()]
    assert sent == [("reminder", "item", "zjj")]
    assert sup.sent()[0]["reg_no"] == items[0]["item_id"]
    sup.clock.moment = at("2026-12-04", 11)
    closed = walkthroughs.close_item(sup.runtime, items[0]["item_id"],
                                     {"resolution": "统一了材料清单"}, "staff1")
    assert closed["state"] == "closed"
    assert events(sup, "walkthrough_item.closed")[0]["on_time"] is True
    with pytest.raises(Conflict):
        walkthroughs.close_item(sup.runtime, items[0]["item_id"], {"resolution": "x"}, "staff1")
    run_days(sup, at("2026-12-04", 12), days=20)
    later = [(m["kind"], m["deadline"], m["dept_code"]) for m in sup.sent()[1:]]
    assert later == [("reminder", "item", "gxj"), ("supervision_notice", "item", "gxj")]
    open_items = walkthroughs.list_items(sup.runtime, None, "open", None)
    assert [i["item_id"] for i in open_items] == [items[1]["item_id"]]
    assert open_items[0]["overdue"] is True
    assert [i["list"] for i in walkthroughs.list_items(sup.runtime, "problem", None, None)] \
        == ["problem"]
    assert walkthroughs.get(sup.runtime, view["walkthrough_id"])["items"][0]["resolution"] \
        == "统一了材料清单"


def test_walkthrough_input_is_checked(sup):
    with pytest.raises(ValidationError) as missing:
        walkthroughs.record(sup.runtime, DEPARTMENTS, walkthrough_body(
            mode="by_phone", scores={"accuracy": 6}), "staff1")
    assert "mode" in missing.value.messages and "scores" in missing.value.messages
    with pytest.raises(FieldErrors) as bad:
        walkthroughs.record(sup.runtime, DEPARTMENTS, walkthrough_body(findings=[
            {"list": "demand", "description": "d", "owner": "nobody",
             "due_at": "2026-11-20T17:00:00+08:00"}]), "staff1")
    assert set(bad.value.errors) == {"findings.0.owner", "findings.0.due_at"}
    with pytest.raises(FieldErrors):
        walkthroughs.list_items(sup.runtime, "wishes", None, None)
    assert walkthroughs.list_walkthroughs(sup.runtime) == []


def patrol(sup: Supervision, held_on: str, chain: str = "digital_economy",
           lead_unit: str = "swj") -> str:
    activity_id = f"chain_patrol-{held_on}-{uuid.uuid4().hex[:4]}"
    sup.deliver("activity.registered", None, {
        "activity_id": activity_id, "kind": "chain_patrol", "held_on": held_on,
        "title": "数字经济链式巡诊", "lead_unit": lead_unit, "industry_chain": chain,
        "actor": "staff1"}, "intake")
    return activity_id


REPORT = {"policies_delivered": 6, "enterprises_served": 12, "class_problems": ["数据中心用电报装慢"],
          "summary": "走访软件园企业12家",
          "service_items": [{"enterprise_name": "某软件公司", "contact_name": "王五",
                             "contact_phone": "13912345678", "item": "高新技术企业认定辅导",
                             "responsible_unit": "gxj", "status": "in_progress",
                             "reg_no": None, "remarks": ""}]}


def test_patrol_plan_and_report_are_timed_and_chased_to_the_chains_lead(sup):
    activity_id = patrol(sup, "2026-12-10")  # plan due Mon 7 Dec, report due Tue 15 Dec
    clocks = {c.kind: c for c in sup_clocks(sup, activity_id)}
    assert clocks["plan"].due_at == at("2026-12-07", 23).replace(minute=59, second=59)
    assert clocks["report"].due_at == at("2026-12-15", 23).replace(minute=59, second=59)
    assert {c.dept_code for c in clocks.values()} == {"gxj"}  # the chain's lead, not swj
    gxj = Principal("gxj-user", "department", "gxj")
    with pytest.raises(HttpError) as forbidden:
        activities.submit_plan(sup.runtime, activity_id, {"summary": "方案"},
                               Principal("swj-user", "department", "swj"), CHAINS)
    assert forbidden.value.status == 403
    run_days(sup, at("2026-11-27", 0), days=12)  # to 9 December, plan not filed
    plan_notices = [(m["kind"], m["deadline"]) for m in sup.sent()
                    if m["reg_no"] == activity_id]
    assert plan_notices == [("reminder", "plan"), ("supervision_notice", "plan")]
    sup.clock.moment = at("2026-12-09", 11)
    view = activities.submit_plan(sup.runtime, activity_id, {"summary": "巡诊方案"}, gxj, CHAINS)
    assert view["plan"]["status"] == "late"
    assert events(sup, "activity.plan_submitted")[0]["on_time"] is False
    with pytest.raises(Conflict):
        activities.submit_plan(sup.runtime, activity_id, {"summary": "again"}, gxj, CHAINS)
    with pytest.raises(Conflict) as early:
        activities.submit_report(sup.runtime, CAL, activity_id, REPORT, gxj, CHAINS, DEPARTMENTS)
    assert "from the patrol day" in str(early.value)
    sup.clock.moment = at("2026-12-14", 16)
    view = activities.submit_report(sup.runtime, CAL, activity_id, REPORT, STAFF, CHAINS,
                                    DEPARTMENTS)
    assert view["report"]["content"]["service_items"][0]["item"] == "高新技术企业认定辅导"
    report_event = events(sup, "activity.report_submitted")[0]
    assert report_event["on_time"] is True and report_event["enterprises_served"] == 12
    before = len(sup.sent())
    run_days(sup, at("2026-12-14", 17), days=10)
    assert [m for m in sup.sent()[before:] if m["reg_no"] == activity_id] == []
    obligations = activities.year_compliance(sup.runtime, CAL, CHAINS, 2026)
    digital = next(p for p in obligations["patrols"] if p["industry_chain"] == "digital_economy")
    assert digital["status"] == "met"
    assert (digital["patrols"][0]["plan"], digital["patrols"][0]["report"]) == ("late", "on_time")


def test_report_rows_name_known_units(sup):
    activity_id = patrol(sup, "2026-11-20")
    bad = {**REPORT, "service_items": [{**REPORT["service_items"][0], "responsible_unit": "nobody"}]}
    with pytest.raises(FieldErrors) as err:
        activities.submit_report(sup.runtime, CAL, activity_id, bad, STAFF, CHAINS, DEPARTMENTS)
    assert list(err.value.errors) == ["service_items.0.responsible_unit"]
    with pytest.raises(ValidationError):
        activities.submit_report(sup.runtime, CAL, activity_id, {**REPORT, "enterprises_served": -1},
                                 STAFF, CHAINS, DEPARTMENTS)


def test_chains_without_a_patrol_are_reminded_a_month_before_the_year_ends(sup):
    patrol(sup, "2026-12-10", chain="digital_economy")
    assert activities.open_year_clocks(sup.runtime, CAL, CHAINS) == 1  # only modern_logistics
    assert activities.open_year_clocks(sup.runtime, CAL, CHAINS) == 0  # idempotent
    run_days(sup, at("2026-11-27", 0), days=8)
    year = [(m["kind"], m["dept_code"], m["reg_no"]) for m in sup.sent() if m["deadline"] == "patrol"]
    assert year == [("reminder", "fgj", "patrol-modern_logistics-2026")]
    sent_at = next(m["sent_at"] for m in sup.sent() if m["deadline"] == "patrol")
    assert sent_at.startswith("2026-12-03T09")
    # A patrol registered for the chain settles its yearly duty.
    patrol(sup, "2026-12-22", chain="modern_logistics")
    assert {c.state for c in sup_clocks(sup, "patrol-modern_logistics-2026")} == {"met"}


def test_key_order_feedback_is_owed_and_settled(sup):
    appeal_id, assignment_id, reg_no = sup.appeal(respond_by=at("2026-11-30", 23),
                                                  sign_by=at("2026-11-28", 23))
    sup.deliver("assignment.signed", appeal_id, {"assignment_id": assignment_id, "role": "lead"})
    run_days(sup, at("2026-11-27", 0), days=11)  # respond-by passed 30 Nov: order on 7 Dec
    order = next(m for m in sup.sent() if m["kind"] == "key_supervision_order")
    assert order["feedback_by"].startswith("2026-12-14")
    owed = usecases.list_key_orders(sup.runtime, "open", None)
    assert [(o["order_no"], o["cause"]) for o in owed] == [(order["order_no"], "overdue_respond")]
    run_days(sup, at("2026-12-08", 0), days=6)
    chased = [m for m in sup.sent() if m["deadline"] == "feedback"]
    assert [m["kind"] for m in chased] == ["reminder"]  # the working day before 14 Dec
    sup.clock.moment = at("2026-12-14", 15)
    sup.deliver("supervision_order.answered", appeal_id, {
        "reg_no": reg_no, "order_no": order["order_no"], "assignment_id": assignment_id,
        "dept_code": "zjj", "feedback": "已书面反馈整改措施",
        "answered_at": sup.clock.now().isoformat()})
    assert usecases.list_key_orders(sup.runtime, "open", None) == []
    answered = usecases.list_key_orders(sup.runtime, "answered", "zjj")[0]
    assert answered["feedback"] == "已书面反馈整改措施" and answered["late"] is False
    before = len(sup.sent())
    run_days(sup, at("2026-12-14", 16), days=10)
    assert [m for m in sup.sent()[before:] if m["deadline"] == "feedback"] == []
    with pytest.raises(FieldErrors):
        usecases.list_key_orders(sup.runtime, "whatever", None)


def sup_clocks(sup: Supervision, duty_id: str) -> list[Clock]:
    with sup.store.read() as session:
        return list(session.scalars(select(Clock).where(Clock.assignment_id == duty_id)))



def test_the_bureau_is_reminded_of_a_sit_in_five_working_days_before_its_window(sup):
    assert activities.open_sit_in_reminders(sup.runtime, CAL, "zwfwj") == 5  # Dec + next year
    assert activities.open_sit_in_reminders(sup.runtime, CAL, "zwfwj") == 0  # idempotent
    run_days(sup, at("2026-11-27", 0), days=10)  # to 7 December
    reminders = [m for m in sup.sent() if m["kind"] == "reminder" and m["deadline"] == "sit_in"]
    # The window opens Fri 11 Dec; five working days before is Fri 4 Dec, in working hours.
    assert [(m["dept_code"], m["reg_no"]) for m in reminders] == [("zwfwj", "sit_in-2026-12")]
    assert reminders[0]["sent_at"].startswith("2026-12-04T09:00")
    # The sit-in registered in its window: nothing more about it; a window that opened
    # without one is never chased either (compliance reports it missed).
    sup.deliver("activity.registered", None, {
        "activity_id": "sit_in-20261215-x", "kind": "sit_in", "held_on": "2026-12-15",
        "title": "第四季度局长坐诊", "lead_unit": "zwfwj", "actor": "staff1"}, "intake")
    with sup.store.read() as session:
        clock = session.get(Clock, "sit_in-2026-12:sit_in")
        assert clock.state == "met"
    run_days(sup, at("2026-12-07", 0), days=30)
    assert [m for m in sup.sent() if m["kind"] != "reminder" and m["reg_no"].startswith("sit_in")] \
        == []


def test_obligations_start_with_the_programme(sup):
    obligations = activities.year_compliance(sup.runtime, CAL, CHAINS, 2026)
    # Issued 27 May 2026: March's window had ended; June's had not started.
    assert [s["status"] for s in obligations["sit_ins"]][:2] == ["not_applicable", "missed"]
    assert {p["status"] for p in activities.year_compliance(sup.runtime, CAL, CHAINS, 2025)[
        "patrols"]} == {"not_applicable"}


def test_numbers_carry_the_local_date(sup):
    from datetime import UTC, datetime

    sup.clock.moment = datetime(2026, 11, 26, 17, 30, tzinfo=UTC)  # 01:30 on the 27th locally
    view = walkthroughs.record(sup.runtime, DEPARTMENTS, walkthrough_body(), "staff1")
    assert view["walkthrough_id"].startswith("WT-20261127-")
    assert all(i["item_id"].startswith("WT-20261127-") for i in view["items"])
