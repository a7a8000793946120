"""What each role reads of an appeal in intake (DESIGN §9 "each sees its own share"), on real
PostgreSQL: the bureau everything, a viewer everything with the contact's phone and name
masked (free text too), a department only its share of an appeal dispatched to it."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from appeals_common.auth import Principal
from appeals_common.envelope import Event
from appeals_common.nameko_ext import Delivery
from services.intake import usecases
from tests.intake_support import intake_context, intake_runtime, staff_appeal

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
CTX = intake_context()
STAFF = Principal("alice", "bureau_staff")
VIEWER = Principal("leader", "viewer")
LEAD = Principal("zjj-user", "department", "zjj")
CO = Principal("zrzyj-user", "department", "zrzyj")
OTHER = Principal("jrb-user", "department", "jrb")


@pytest.fixture
def runtime(databases):
    rt = intake_runtime(databases.url(f"views_{uuid.uuid4().hex[:8]}"), NOW)
    yield rt
    rt.store.dispose()


def deliver(runtime, event_type: str, appeal_id: str, data: dict, producer: str = "dispatch",
            minutes: int = 0) -> None:
    event = Event(event_type, producer, NOW + timedelta(minutes=minutes), data,
                  appeal_id=appeal_id)
    usecases.apply_event(runtime, Delivery(event.to_json(), event_type, "appeals.events",
                                           event.event_id, "application/json", {}, 1))


@pytest.fixture
def appeal(runtime) -> dict:
    """An appeal dispatched to zjj (lead) and zrzyj (co), with a life on both units' sides."""
    registered = usecases.register_by_staff(runtime, CTX, staff_appeal(
        title="施工许可办理慢，请回电 138 0013 8000",
        content="联系人李四，电话１３８００１３８０００，项目施工许可提交两周未批"), "alice")
    reg_no, appeal_id = registered["reg_no"], registered["appeal_id"]
    usecases.reclassify(runtime, CTX, reg_no, {"category": "0102", "reason": "工程建设"}, "alice")
    lead_id, co_id = str(uuid.uuid4()), str(uuid.uuid4())
    deadlines = {"assigned_at": NOW.isoformat(), "sign_by": NOW.isoformat(),
                 "return_by": NOW.isoformat(), "respond_by": NOW.isoformat(), "state": "assigned"}
    deliver(runtime, "appeal.dispatched", appeal_id, {
        "reg_no": reg_no, "units": {"lead": "zjj", "co": ["zrzyj"]}, "rule": "bureau:alice",
        "assignments": [{"assignment_id": lead_id, "dept_code": "zjj", "role": "lead", **deadlines},
                        {"assignment_id": co_id, "dept_code": "zrzyj", "role": "co", **deadlines}],
        "deadlines_provisional": False, "actor": "alice"}, minutes=1)
    deliver(runtime, "assignment.signed", appeal_id, {
        "reg_no": reg_no, "assignment_id": lead_id, "dept_code": "zjj", "role": "lead",
        "actor": "dept:zjj"}, minutes=2)
    deliver(runtime, "assignment.returned", appeal_id, {
        "reg_no": reg_no, "assignment_id": co_id, "dept_code": "zrzyj", "role": "co",
        "reason_code": "not_our_duty", "reason": "非本局职责，已联系李四", "suggested_unit": None,
        "actor": "dept:zrzyj"}, minutes=3)
    deliver(runtime, "assignment.return_decided", appeal_id, {
        "reg_no": reg_no, "assignment_id": co_id, "dept_code": "zrzyj", "role": "co",
        "accepted": False, "reason": "请协办", "actor": "bob"}, minutes=4)
    deliver(runtime, "appeal.responded", appeal_id, {
        "reg_no": reg_no, "assignment_id": lead_id, "dept_code": "zjj", "role": "lead",
        "outcome": "solved", "reply": "已办结，已电话告知李四 13800138000",
        "contacted_at": NOW.isoformat(), "actor": "dept:zjj"}, minutes=5)
    deliver(runtime, "followup.recorded", appeal_id, {
        "reg_no": reg_no, "grade": "unsatisfied", "satisfied": False, "resolved": False,
        "comments": "李四说仍未解决，回拨0871-6512-3456", "contact_attempts": 1, "actor": "carol"},
        producer="supervision", minutes=6)
    deliver(runtime, "supervision_order.issued", appeal_id, {
        "reg_no": reg_no, "order_no": f"ZD-{reg_no}-zjj-1", "dept_code": "zjj",
        "assignment_id": lead_id, "reasons": "李四说仍未解决", "actor": "carol"},
        producer="supervision", minutes=7)
    deliver(runtime, "appeal.reopened", appeal_id, {
        "reg_no": reg_no, "reason": "unsatisfied_followup", "actor": "carol"},
        producer="supervision", minutes=8)
    return {"reg_no": reg_no, "lead_id": lead_id, "co_id": co_id}


def test_the_bureau_sees_everything(runtime, appeal):
    for principal in (STAFF, None):  # HTTP as staff, and the bureau's RPC
        view = usecases.get_appeal(runtime, appeal["reg_no"], principal)
        assert view["enterprise"] == {"name": "昆明某建设有限公司", "uscc": "91110000600037341L",
                                      "contact_name": "李四", "contact_phone": "13800138000"}
        assert [e["event"] for e in view["timeline"]] == [
            "appeal.registered", "appeal.reclassified", "appeal.dispatched",
            "assignment.signed", "assignment.returned", "assignment.return_decided",
            "appeal.responded", "followup.recorded", "supervision_order.issued",
            "appeal.reopened"]
        assert view["registered_by"] == "alice" and "producer" not in view["timeline"][0]


def test_a_viewer_sees_phones_and_names_masked_everywhere(runtime, appeal):
    view = usecases.get_appeal(runtime, appeal["reg_no"], VIEWER)
    assert view["enterprise"]["contact_phone"] == "138****8000"
    assert view["enterprise"]["contact_name"] == "李*"
    assert view["title"] == "施工许可办理慢，请回电 138****8000"
    assert view["content"] == "联系人李*，电话138****8000，项目施工许可提交两周未批"
    text = json.dumps(view, ensure_ascii=False)
    for secret in ("李四", "13800138000", "１３８００１３８０００", "138 0013 8000", "6512-3456"):
        assert secret not in text, secret
    assert len(view["timeline"]) == 10  # the whole timeline, masked
    assert view["reg_no"] == appeal["reg_no"]  # identifiers untouched
    dispatched = view["timeline"][2]["detail"]
    assert {a["assignment_id"] for a in dispatched["assignments"]} == {appeal["lead_id"],
                                                                       appeal["co_id"]}


def test_a_department_sees_only_its_share(runtime, appeal):
    lead = usecases.get_appeal(runtime, appeal["reg_no"], LEAD)
    text = json.dumps(lead, ensure_ascii=False)
    # Nothing of the other unit: not its assignment id (enough to reply as it), its return
    # reason, nor the follow-up's comments, nor who at the bureau did what.
    assert appeal["co_id"] not in text and "非本局职责" not in text
    assert "回拨" not in text and "alice" not in text and "bob" not in text \
        and "carol" not in text
    for hidden in ("registered_by", "source_system", "external_id", "category_rule",
                   "chain_rule", "possible_duplicate_of", "duplicate_score", "answer",
                   "withdrawn_reason"):
        assert hidden not in lead, hidden
    # Its own appeal, with the contact it must call, and what was addressed to it.
    assert lead["enterprise"]["contact_phone"] == "13800138000"
    assert lead["units"] == {"lead": "zjj", "co": ["zrzyj"]}
    assert [(e["event"], e["by"]) for e in lead["timeline"]] == [
        ("appeal.dispatched", "dispatch"), ("assignment.signed", "dept:zjj"),
        ("appeal.responded", "dept:zjj"), ("supervision_order.issued", "supervision")]
    assert [a["assignment_id"] for a in lead["timeline"][0]["detail"]["assignments"]] \
        == [appeal["lead_id"]]
    assert "rule" not in lead["timeline"][0]["detail"]
    assert all("actor" not in e["detail"] for e in lead["timeline"])
    assert lead["timeline"][3]["detail"]["reasons"] == "李四说仍未解决"  # its own key order

    co = usecases.get_appeal(runtime, appeal["reg_no"], CO)
    text = json.dumps(co, ensure_ascii=False)
    assert appeal["lead_id"] not in text and "已办结" not in text and "回拨" not in text
    assert [(e["event"], e["by"]) for e in co["timeline"]] == [
        ("appeal.dispatched", "dispatch"), ("assignment.returned", "dept:zrzyj"),
        ("assignment.return_decided", "dispatch")]
    assert co["timeline"][2]["detail"]["reason"] == "请协办"


def test_a_department_cannot_read_an_appeal_not_dispatched_to_it(runtime, appeal):
    assert usecases.get_appeal(runtime, appeal["reg_no"], OTHER) is None
    assert usecases.get_appeal(runtime, "WH-1999-999999", OTHER) is None
    # Registered, not yet dispatched: no unit may read it.
    fresh = usecases.register_by_staff(runtime, CTX, staff_appeal(title="新诉求"), "alice")
    assert usecases.get_appeal(runtime, fresh["reg_no"], LEAD) is None
    assert usecases.get_appeal(runtime, fresh["reg_no"], STAFF) is not None


def test_a_department_no_longer_a_unit_of_the_appeal_loses_it(runtime, appeal):
    appeal_id = usecases.get_appeal(runtime, appeal["reg_no"])["appeal_id"]
    deliver(runtime, "appeal.dispatched", appeal_id, {
        "reg_no": appeal["reg_no"], "units": {"lead": "jrb", "co": []}, "rule": "bureau:alice",
        "assignments": [{"assignment_id": str(uuid.uuid4()), "dept_code": "jrb", "role": "lead"}],
        "actor": "alice"}, minutes=20)
    assert usecases.get_appeal(runtime, appeal["reg_no"], LEAD) is None
    assert usecases.get_appeal(runtime, appeal["reg_no"], CO) is None
    mine = usecases.get_appeal(runtime, appeal["reg_no"], OTHER)
    assert [e["event"] for e in mine["timeline"]] == ["appeal.dispatched"]


def test_search_masks_titles_for_a_viewer(runtime, appeal):
    masked = usecases.search(runtime, {"q": appeal["reg_no"]}, mask=True)["items"]
    assert masked[0]["title"] == "施工许可办理慢，请回电 138****8000"
    assert masked[0]["reg_no"] == appeal["reg_no"]
    plain = usecases.search(runtime, {"q": appeal["reg_no"]})["items"]
    assert plain[0]["title"] == "施工许可办理慢，请回电 138 0013 8000"


def test_database_errors_on_postgresql_name_no_parameters(runtime):
    """hide_parameters: an error's text (logged, put in dead-letter headers) carries no
    SQL parameters, so not the personal data a statement was writing."""
    row = {"appeal_id": "a", "event_id": "same", "event_type": "x", "occurred_at": NOW,
           "producer": "intake", "detail": json.dumps({"phone": "13912345678"})}
    insert = text("INSERT INTO timeline (appeal_id, event_id, event_type, occurred_at, "
                  "producer, detail) VALUES (:appeal_id, :event_id, :event_type, "
                  ":occurred_at, :producer, :detail)")
    with runtime.store.engine.begin() as conn:
        conn.execute(insert, row)
    with pytest.raises(IntegrityError) as failed, runtime.store.engine.begin() as conn:
        conn.execute(insert, row)
    assert "13912345678" not in str(failed.value) and "hide_parameters" in str(failed.value)
