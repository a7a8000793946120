"""Intake's rules against real PostgreSQL, through its service layer."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from marshmallow import ValidationError
from sqlalchemy import select

from appeals_common.clock import FixedClock
from appeals_common.http import Conflict
from services.intake import usecases
from services.intake.models import Appeal, TimelineEntry
from tests.intake_support import intake_context, intake_runtime, staff_appeal

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
CTX = intake_context()


@pytest.fixture
def runtime(databases):
    rt = intake_runtime(databases.url(f"intake_{datetime.now().strftime('%H%M%S%f')}"), NOW)
    yield rt
    rt.store.dispose()


def outbox(runtime) -> list[dict]:
    with runtime.store.engine.connect() as conn:
        rows = conn.execute(select(runtime.store.outbox).order_by(runtime.store.outbox.c.id))
        return [{**r._mapping, "json": json.loads(r.body)} for r in rows]


def events(runtime, event_type: str) -> list[dict]:
    return [m["json"] for m in outbox(runtime) if m["routing_key"] == event_type]


def test_category_and_chain_filled_by_rules_and_the_rule_recorded(runtime):
    result = usecases.register_by_staff(runtime, CTX, staff_appeal(
        title="软件企业施工许可", content="数字园区项目"), "alice")
    assert (result["category"], result["industry_chain"]) == ("0102", "digital_economy")
    data = events(runtime, "appeal.registered")[0]["data"]
    assert data["category_rule"] == "keyword:施工许可"
    assert data["chain_rule"] == "keyword:数字"  # the chain's first keyword found


def test_given_category_wins_and_unknown_codes_are_refused(runtime):
    result = usecases.register_by_staff(runtime, CTX, staff_appeal(category="0403"), "alice")
    assert result["category"] == "0403"
    with pytest.raises(usecases.FieldErrors) as err:
        usecases.register_by_staff(runtime, CTX, staff_appeal(category="7777",
                                                              industry_chain="mining"), "a")
    assert set(err.value.errors) == {"category", "industry_chain"}


def test_enterprise_history_supplies_the_chain(runtime):
    usecases.register_by_staff(runtime, CTX, staff_appeal(industry_chain="modern_logistics"), "a")
    later = usecases.register_by_staff(runtime, CTX, staff_appeal(
        title="咨询政策", content="了解一下补贴政策"), "a")
    assert later["industry_chain"] == "modern_logistics"
    data = events(runtime, "appeal.registered")[-1]["data"]
    assert data["chain_rule"].startswith("enterprise-history:WH-2026-")


def test_unknown_activity_is_refused_and_a_registered_one_accepted(runtime):
    with pytest.raises(usecases.FieldErrors) as err:
        usecases.register_by_staff(runtime, CTX, staff_appeal(activity_id="sit_in-x"), "a")
    assert "unknown activity" in err.value.errors["activity_id"][0]
    activity = usecases.register_activity(runtime, CTX, {
        "kind": "sit_in", "held_on": "2026-12-15", "title": "第四季度局长坐诊",
        "lead_unit": "zwfwj"}, "alice")
    result = usecases.register_by_staff(runtime, CTX, staff_appeal(
        channel="sit_in", activity_id=activity["activity_id"]), "alice")
    assert result["reg_no"]
    assert events(runtime, "activity.registered")[0]["data"]["activity_id"] == \
        activity["activity_id"]
    with pytest.raises(usecases.FieldErrors):
        usecases.register_activity(runtime, CTX, {"kind": "chain_patrol", "held_on": "2026-06-01",
                                                  "title": "x", "lead_unit": "nobody"}, "a")


def test_on_the_spot_answer_is_recorded_and_not_dispatched(runtime):
    result = usecases.register_on_spot(runtime, CTX, {**staff_appeal(),
                                                      "answer": "已当场解释办理流程"}, "alice")
    assert result["state"] == "resolved_on_spot"
    registered = events(runtime, "appeal.registered")[0]["data"]
    assert registered["resolved_on_spot"] is True
    assert events(runtime, "appeal.resolved_on_spot")[0]["data"]["answer"] == "已当场解释办理流程"
    with pytest.raises(ValidationError):
        usecases.register_on_spot(runtime, CTX, staff_appeal(), "alice")  # no answer


def test_reclassify_keeps_history_and_emits(runtime):
    reg_no = usecases.register_by_staff(runtime, CTX, staff_appeal(), "alice")["reg_no"]
    result = usecases.reclassify(runtime, CTX, reg_no, {"category": "0401",
                                                        "reason": "实为用地问题"}, "bob")
    assert result["category"] == "0401"
    event = events(runtime, "appeal.reclassified")[0]["data"]
    assert event["previous"]["category"] == "0102" and event["reason"] == "实为用地问题"
    with pytest.raises(ValidationError):
        usecases.reclassify(runtime, CTX, reg_no, {"reason": "nothing to change"}, "bob")
    with pytest.raises(usecases.FieldErrors):
        usecases.reclassify(runtime, CTX, reg_no, {"category": "x", "reason": "r"}, "bob")


def test_withdraw_keeps_the_appeal_and_refuses_twice(runtime):
    reg_no = usecases.register_by_staff(runtime, CTX, staff_appeal(), "alice")["reg_no"]
    assert usecases.withdraw(runtime, reg_no, {"reason": "企业已自行解决"}, "alice")["state"] \
        == "withdrawn"
    with pytest.raises(Conflict, match="cannot withdraw"):
        usecases.withdraw(runtime, reg_no, {"reason": "again"}, "alice")
    appeal = usecases.get_appeal(runtime, reg_no)
    assert appeal["withdrawn_reason"] == "企业已自行解决"
    assert [e["event"] for e in appeal["timeline"]] == ["appeal.registered", "appeal.withdrawn"]


def test_possible_duplicate_flagged_within_30_days_only(runtime):
    first = usecases.register_by_staff(runtime, CTX, staff_appeal(
        title="厂房用电容量不足", content="我公司新厂房用电容量不足，申请增容一直没有结果"), "a")
    similar = usecases.register_by_staff(runtime, CTX, staff_appeal(
        title="新厂房用电增容", content="新厂房用电容量不够，增容申请迟迟没有结果"), "a")
    other = usecases.register_by_staff(runtime, CTX, staff_appeal(
        title="招工难", content="希望帮助对接技工学校招聘技术工人"), "a")
    assert similar["possible_duplicate_of"] == first["reg_no"]
    assert other["possible_duplicate_of"] is None
    runtime.clock = FixedClock(NOW + timedelta(days=31))
    late = usecases.register_by_staff(runtime, CTX, staff_appeal(
        title="新厂房用电增容", content="新厂房用电容量不够，增容申请迟迟没有结果"), "a")
    # Only appeals of the last 30 days count: the first two are 31 days old now.
    assert late["possible_duplicate_of"] is None


def test_text_is_stored_verbatim(runtime):
    content = "'; DROP TABLE appeals;-- 😀 Ελληνικά русский 漢字 \\u0000"
    reg_no = usecases.register_by_staff(runtime, CTX, staff_appeal(content=content), "a")["reg_no"]
    with runtime.store.read() as session:
        stored = session.scalars(select(Appeal).where(Appeal.reg_no == reg_no)).one()
        assert stored.content == content
        assert session.scalars(select(TimelineEntry)).first() is not None


def test_search_by_enterprise_state_channel_and_dates_paginated(runtime):
    for i in range(5):
        usecases.register_by_staff(runtime, CTX, staff_appeal(
            channel="sit_in" if i % 2 else "door_visit", title=f"诉求{i}",
            enterprise={"name": f"五华{i}号科技公司", "uscc": "91110000600037341L",
                        "contact_name": "张", "contact_phone": "13800138000"}), "a")
    page = usecases.search(runtime, {"q": "五华", "page_size": "2"})
    assert page["total"] == 5 and len(page["items"]) == 2
    assert usecases.search(runtime, {"q": "五华", "page": "3", "page_size": "2"})["items"]
    assert usecases.search(runtime, {"channel": "sit_in"})["total"] == 2
    assert usecases.search(runtime, {"uscc": "91110000600037341l"})["total"] == 5
    assert usecases.search(runtime, {"state": "closed"})["total"] == 0
    assert usecases.search(runtime, {"from": "2026-11-27T11:00:00+08:00"})["total"] == 0
    with pytest.raises(ValidationError):
        usecases.search(runtime, {"page_size": "1000"})
    with pytest.raises(ValidationError):
        usecases.search(runtime, {"colour": "red"})


def test_a_repeat_a_month_later_is_still_a_duplicate(runtime):
    from tests.e2e.bus import appeal_body

    body = json.dumps(appeal_body(external_id="hotline-2026-42",
                                  submitted_at=NOW.isoformat())).encode()

    def deliver(message_id: str) -> str:
        from appeals_common.nameko_ext import Delivery

        return usecases.handle_inbound(runtime, CTX, Delivery(
            body=body, routing_key="appeal.submit.hotline_12345", exchange="appeals.inbound",
            message_id=message_id, content_type="application/json", headers={}, attempt=1,
            user_id="src-hotline_12345"))

    assert deliver("m-1") == "accepted"
    runtime.clock = FixedClock(NOW + timedelta(days=35))
    assert deliver("m-2") == "duplicate"
    assert deliver("m-2") == "redelivered", "the same message again is only acknowledged"
    receipts = [m["json"] for m in outbox(runtime) if m["routing_key"] == "receipt.hotline_12345"]
    assert [r["status"] for r in receipts] == ["accepted", "duplicate"]
    assert receipts[0]["reg_no"] == receipts[1]["reg_no"]
