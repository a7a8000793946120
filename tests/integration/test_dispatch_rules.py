"""Dispatch's rules against real PostgreSQL through its service layer: routing, deadlines,
replies, returns and re-dispatch, 会商, extensions, overrides, withdrawal."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from marshmallow import ValidationError
from sqlalchemy import select

from appeals_common.clock import FixedClock
from appeals_common.db import Store
from appeals_common.deadlines import DeadlinePolicy, PolicyError
from appeals_common.envelope import Event
from appeals_common.http import Conflict, FieldErrors, Page
from appeals_common.metrics import load_calendar
from appeals_common.nameko_ext import Delivery, ServiceRuntime
from appeals_common.registries import load_categories, load_departments, load_routing_rules
from appeals_common.settings import Settings
from services.dispatch import bureau, usecases
from services.dispatch.models import Assignment, Base
from services.dispatch.routing import Router
from tests.tools_time import first_uncovered_year

CONFIG = Path(__file__).resolve().parents[2] / "config"
TZ_NOON = datetime(2026, 11, 27, 4, 0, tzinfo=UTC)  # Friday 12:00 in Kunming


def context() -> usecases.DispatchContext:
    departments = load_departments(CONFIG)
    return usecases.DispatchContext(
        router=Router.from_config(load_routing_rules(CONFIG, departments)),
        calendar=load_calendar(CONFIG, "Asia/Shanghai"),
        policy=DeadlinePolicy.from_file(CONFIG / "deadlines.yaml", set(load_categories(CONFIG))),
        departments=set(departments))


CTX = context()


class Dispatch:
    """Dispatch's service layer on its own database, fed like the bus would feed it."""

    def __init__(self, url: str) -> None:
        self.store = Store(url, Base.metadata, producer="dispatch")
        self.store.create_schema()
        self.clock = FixedClock(TZ_NOON)
        self.runtime = ServiceRuntime("dispatch", Settings(), self.store, self.clock)
        self._seen = 0

    def register(self, title: str = "施工许可办理慢", category: str | None = "0104",
                 urgency: str = "normal") -> str:
        reg_no = f"WH-2026-{uuid.uuid4().int % 10**6:06d}"
        event = Event("appeal.registered", "intake", self.clock.now(), {
            "reg_no": reg_no, "channel": "sit_in", "title": title, "content": "",
            "category": category, "industry_chain": None, "urgency": urgency,
            "enterprise": {"name": "某公司", "uscc": "91110000600037341L",
                           "contact_name": "李四", "contact_phone": "13800138000"}},
            appeal_id=str(uuid.uuid4()))
        self.deliver_event(event)
        return reg_no

    def deliver_event(self, event: Event) -> None:
        usecases.on_event(self.runtime, CTX, Delivery(
            event.to_json(), event.event_type, "appeals.events", event.event_id,
            "application/json", {}, 1))

    def reply(self, dept: str, action: str, assignment: dict, **fields) -> dict:
        body = {"schema_version": 1, "assignment_id": assignment["assignment_id"],
                "reg_no": assignment["reg_no"], "replied_at": "2026-11-27T12:00:00+08:00",
                **fields}
        usecases.on_reply(self.runtime, CTX, Delivery(
            json.dumps(body).encode(), f"dept.{dept}.{action}", "appeals.replies",
            str(uuid.uuid4()), "application/json", {}, 1, user_id=f"dept-{dept}"))
        self.last = self.new()
        return [m for m in self.last if m.get("kind") == "reply_result"][-1]

    def new(self) -> list[dict]:
        """Messages written to the outbox since the last call (department messages and
        events), as dicts with `kind` (department messages) or `event_type` (events)."""
        outbox = self.store.outbox
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(outbox).where(outbox.c.id > self._seen)
                                .order_by(outbox.c.id)).mappings().all()
        if rows:
            self._seen = rows[-1]["id"]
        return [{**json.loads(r["body"]), "_rk": r["routing_key"]} for r in rows]

    def assignments(self, reg_no: str) -> list[dict]:
        return usecases.list_assignments(self.runtime, reg_no=reg_no)



def lead_of(d: Dispatch, reg_no: str) -> dict:
    return next(a for a in d.assignments(reg_no) if a["role"] == "lead" and
                a["state"] not in ("withdrawn",))


def test_routing_rule_recorded_and_assignments_sent_to_lead_and_co(d):
    reg_no = d.register()
    messages = d.new()
    sent = {m["dept_code"]: m for m in messages if m.get("kind") == "assignment"}
    assert set(sent) == {"zjj", "zrzyj"}
    assert sent["zjj"]["role"] == "lead" and sent["zrzyj"]["role"] == "co"
    dispatched = next(m for m in messages if m.get("event_type") == "appeal.dispatched")
    assert dispatched["data"]["rule"] == "construction-permit"
    assert {a["rule"] for a in usecases.list_assignments(d.runtime, reg_no=reg_no)} == \
        {"construction-permit"}


def test_deadlines_follow_category_profile_and_urgency(d):
    d.register(category="0104")  # consultation: 3 working days
    consult = next(m for m in d.new() if m.get("kind") == "assignment")
    d.register(category="0102")  # complex: 15 working days
    complex_ = next(m for m in d.new() if m.get("kind") == "assignment")
    d.register(category="0301", urgency="urgent")
    urgent = next(m for m in d.new() if m.get("kind") == "assignment")
    # Assigned Friday 27 Nov 2026: Mon 30 Nov is the first working day.
    assert consult["respond_by"].startswith("2026-12-02T23:59:59+08:00")
    assert complex_["respond_by"].startswith("2026-12-18T23:59:59+08:00")
    assert datetime.fromisoformat(urgent["sign_by"]) == TZ_NOON + timedelta(hours=2)
    assert urgent["respond_by"].startswith("2026-12-04")


def test_reply_times_in_the_future_are_refused(d):
    reg_no = d.register()
    d.new()
    lead = lead_of(d, reg_no)
    ahead = d.reply("zjj", "sign", lead, replied_at="2026-11-27T18:00:00+08:00")  # now is 12:00
    assert ahead["status"] == "refused" and "must not be in the future" in \
        ahead["errors"]["replied_at"][0]
    d.reply("zjj", "sign", lead)
    early = d.reply("zjj", "respond", lead, outcome="solved", reply="已办结",
                    contacted_at="2026-11-28T10:00:00+08:00")
    assert early["status"] == "refused" and list(early["errors"]) == ["contacted_at"]
    assert lead_of(d, reg_no)["state"] == "signed"


def test_december_assignments_get_provisional_january_deadlines(d):
    year = first_uncovered_year()  # a year without official data, found at run time
    d.clock.moment = datetime(year - 1, 12, 28, 2, 0, tzinfo=UTC)
    d.register(category="0102")
    assignment = next(m for m in d.new() if m.get("kind") == "assignment")
    assert assignment["respond_by"].startswith(f"{year}-01-")
    assert assignment["deadlines_provisional"] is True


def test_reply_state_checks_and_co_unit_contribution(d):
    reg_no = d.register()
    d.new()
    lead = lead_of(d, reg_no)
    co = next(a for a in d.assignments(reg_no) if a["role"] == "co")
    assert d.reply("zjj", "respond", lead, outcome="solved", reply="x",
                   contacted_at="2026-11-27T10:00:00+08:00")["status"] == "refused"
    assert d.reply("zjj", "sign", lead)["status"] == "accepted"
    assert d.reply("zrzyj", "sign", co)["status"] == "accepted"
    assert d.reply("zrzyj", "respond", co, outcome="explained", reply="已配合",
                   contacted_at="2026-11-27T10:00:00+08:00")["status"] == "accepted"
    events = [m["event_type"] for m in d.last if "event_type" in m]
    assert "assignment.contributed" in events and "appeal.responded" not in events
    assert d.reply("zjj", "respond", lead, outcome="solved", reply="已办结",
                   contacted_at="2026-11-27T10:00:00+08:00")["status"] == "accepted"
    assert "appeal.responded" in [m.get("event_type") for m in d.last]


def test_return_window_and_reason_codes(d):
    reg_no = d.register()
    d.new()
    lead = lead_of(d, reg_no)
    refused = d.reply("zjj", "return", lead, reason_code="because", reason="x")
    assert "reason_code" in refused["errors"]
    d.clock.moment = TZ_NOON + timedelta(days=5)  # past the 2-working-day window
    late = d.reply("zjj", "return", lead, reason_code="not_our_duty", reason="非本单位职责")
    assert late["status"] == "refused" and "return window closed" in late["errors"]["action"][0]


def test_rejected_return_goes_back_to_the_unit(d):
    reg_no = d.register()
    d.new()
    lead = lead_of(d, reg_no)
    d.reply("zjj", "return", lead, reason_code="wrong_unit", reason="应由自然资源局",
            suggested_unit="zrzyj")
    d.new()
    result = bureau.decide_return(d.runtime, CTX, lead["assignment_id"],
                                  {"accept": False, "reason": "属于住建职责"}, "chief")
    assert result["state"] == "assigned"
    told = [m for m in d.new() if m.get("kind") == "return_decision"]
    assert told[0]["accepted"] is False and told[0]["dept_code"] == "zjj"
    with pytest.raises(Conflict):
        bureau.decide_return(d.runtime, CTX, lead["assignment_id"],
                             {"accept": True, "reason": "again"}, "chief")


def test_accepted_returns_redispatch_then_go_to_joint_decision(d):
    reg_no = d.register(title="施工许可")
    d.new()
    first = lead_of(d, reg_no)
    d.reply("zjj", "return", first, reason_code="not_our_duty", reason="非本单位职责")
    result = bureau.decide_return(d.runtime, CTX, first["assignment_id"],
                                  {"accept": True, "reason": "同意"}, "chief")
    assert result["redispatched"] is True
    messages = d.new()
    reassigned = [m for m in messages if m.get("kind") == "reassigned"]
    assert {m["dept_code"] for m in reassigned} == {"zrzyj"}, "the co-unit is taken back too"
    second = lead_of(d, reg_no)
    assert second["dept_code"] not in ("zjj",), "the unit that returned it is skipped"

    d.reply(second["dept_code"], "return", second, reason_code="wrong_unit", reason="非本单位")
    result = bureau.decide_return(d.runtime, CTX, second["assignment_id"],
                                  {"accept": True, "reason": "同意"}, "chief")
    assert result.get("joint_decision_required") is True
    events = [m for m in d.new() if m.get("event_type") == "appeal.joint_decision_required"]
    assert events and set(events[0]["data"]["returned_by"]) == {"zjj", second["dept_code"]}
    assert not [a for a in d.assignments(reg_no) if a["state"] in ("assigned", "signed")]

    # 会商: the bureau names the units.
    bureau.override(d.runtime, CTX, reg_no, {"lead": "fgj", "co": ["zjj"],
                                             "reason": "会商决定"}, "chief")
    assert lead_of(d, reg_no)["dept_code"] == "fgj"
    dispatched = [m for m in d.new() if m.get("event_type") == "appeal.dispatched"]
    assert dispatched[-1]["data"]["rule"] == "bureau:chief"


def test_override_takes_back_open_assignments_and_checks_units(d):
    reg_no = d.register()
    d.new()
    with pytest.raises(FieldErrors):
        bureau.override(d.runtime, CTX, reg_no, {"lead": "nobody", "reason": "x"}, "chief")
    with pytest.raises(ValidationError):
        bureau.override(d.runtime, CTX, reg_no, {"lead": "rsj"}, "chief")
    bureau.override(d.runtime, CTX, reg_no, {"lead": "rsj", "reason": "改派"}, "chief")
    messages = d.new()
    assert {m["dept_code"] for m in messages if m.get("kind") == "reassigned"} == \
        {"zjj", "zrzyj"}
    assert [m["dept_code"] for m in messages if m.get("kind") == "assignment"] == ["rsj"]
    states = {a["dept_code"]: a["state"] for a in d.assignments(reg_no)}
    assert states == {"zjj": "withdrawn", "zrzyj": "withdrawn", "rsj": "assigned"}


def test_extension_approved_within_limit_or_denied(d):
    reg_no = d.register(category="0104")  # consultation: respond 3, at most 5 days
    d.new()
    lead = lead_of(d, reg_no)
    assert d.reply("zjj", "extend", lead, requested_until="2026-12-10T18:00:00+08:00",
                   reason="x")["status"] == "refused", "only a signed assignment"
    d.reply("zjj", "sign", lead)
    # Checked on arrival: past the category's limit (end of Fri 4 Dec) or in the past.
    too_late = d.reply("zjj", "extend", lead, requested_until="2026-12-10T18:00:00+08:00",
                       reason="需要现场核查")
    assert too_late["status"] == "refused"
    assert too_late["errors"]["requested_until"] == [
        "past the longest time this category allows, 2026-12-04T15:59:59+00:00"]
    past = d.reply("zjj", "extend", lead, requested_until="2026-11-26T18:00:00+08:00",
                   reason="x")
    assert past["status"] == "refused" and "must be in the future" in \
        past["errors"]["requested_until"][0]
    assert d.reply("zjj", "extend", lead, requested_until="2026-12-04T18:00:00+08:00",
                   reason="需要现场核查")["status"] == "accepted"
    assert d.reply("zjj", "extend", lead, requested_until="2026-12-04T18:00:00+08:00",
                   reason="again")["status"] == "refused", "one request at a time"
    (ext,) = bureau.list_extensions(d.runtime, "requested")
    with pytest.raises(FieldErrors, match="longest time allowed"):
        bureau.decide_extension(d.runtime, ext["extension_id"], {
            "approve": True, "reason": "同意", "respond_by": "2026-12-07T18:00:00+08:00"}, "chief")
    decided = bureau.decide_extension(d.runtime, ext["extension_id"], {
        "approve": True, "reason": "同意延期一天", "respond_by": "2026-12-03T23:59:59+08:00"},
        "chief")
    assert datetime.fromisoformat(decided["respond_by"]) == \
        datetime.fromisoformat("2026-12-03T23:59:59+08:00")
    told = [m for m in d.new() if m.get("kind") == "extension_decision"]
    assert told[-1]["approved"] is True
    with pytest.raises(Conflict):
        bureau.decide_extension(d.runtime, ext["extension_id"],
                                {"approve": False, "reason": "x"}, "chief")


def test_withdrawal_tells_every_unit(d):
    reg_no = d.register()
    appeal_id = next(m for m in d.new() if m.get("event_type") == "appeal.dispatched")[
        "appeal_id"]
    d.deliver_event(Event("appeal.withdrawn", "intake", d.clock.now(),
                          {"reg_no": reg_no, "reason": "企业撤回", "actor": "alice"},
                          appeal_id=appeal_id))
    told = [m for m in d.new() if m.get("kind") == "reassigned"]
    assert {m["dept_code"] for m in told} == {"zjj", "zrzyj"}
    assert all("撤回" in m["reason"] for m in told)
    lead = next(a for a in d.assignments(reg_no) if a["role"] == "lead")
    assert d.reply("zjj", "sign", lead)["status"] == "refused"


def test_policy_file_is_checked(tmp_path):
    (tmp_path / "deadlines.yaml").write_text("default: {respond_working_days: 0}\n")
    with pytest.raises(PolicyError, match="1..60"):
        DeadlinePolicy.from_file(tmp_path / "deadlines.yaml")
    (tmp_path / "deadlines.yaml").write_text("categories: {'0102': fast}\n")
    with pytest.raises(PolicyError, match="unknown profile"):
        DeadlinePolicy.from_file(tmp_path / "deadlines.yaml")


def test_stored_assignment_carries_latest_respond_by(d):
    reg_no = d.register(category="0102")
    with d.store.read() as session:
        a = session.scalars(select(Assignment).where(Assignment.reg_no == reg_no,
                                                     Assignment.role == "lead")).one()
        assert a.latest_respond_by > a.respond_by


def test_reopened_on_the_spot_answer_is_dispatched(d):
    appeal_id, reg_no = str(uuid.uuid4()), "WH-2026-990002"
    d.deliver_event(Event("appeal.registered", "intake", d.clock.now(), {
        "reg_no": reg_no, "channel": "sit_in", "title": "退税咨询", "content": "",
        "category": "0302", "industry_chain": None, "urgency": "normal",
        "resolved_on_spot": True, "enterprise": {"name": "x", "uscc": "91110000600037341L",
                                                 "contact_name": "y",
                                                 "contact_phone": "13800138000"}},
        appeal_id=appeal_id))
    assert not [m for m in d.new() if m.get("kind") == "assignment"]
    d.deliver_event(Event("appeal.reopened", "supervision", d.clock.now(),
                          {"reg_no": reg_no, "reason": "unsatisfied_followup"},
                          appeal_id=appeal_id))
    sent = [m for m in d.new() if m.get("kind") == "assignment"]
    assert [m["dept_code"] for m in sent] == ["swj"]


def test_a_signed_lead_whose_return_is_rejected_can_go_on(d):
    reg_no = d.register()
    d.new()
    lead = lead_of(d, reg_no)
    d.reply("zjj", "sign", lead)
    d.reply("zjj", "return", lead, reason_code="not_our_duty", reason="x")
    bureau.decide_return(d.runtime, CTX, lead["assignment_id"],
                         {"accept": False, "reason": "属本单位职责"}, "chief")
    assert lead_of(d, reg_no)["state"] == "signed"
    assert d.reply("zjj", "respond", lead, outcome="solved", reply="已办结",
                   contacted_at="2026-11-27T10:00:00+08:00")["status"] == "accepted"


def test_no_override_of_an_answered_appeal(d):
    reg_no = d.register()
    appeal_id = next(m for m in d.new() if m.get("event_type") == "appeal.dispatched")[
        "appeal_id"]
    d.deliver_event(Event("appeal.closed", "supervision", d.clock.now(),
                          {"reg_no": reg_no, "reason": "satisfied_followup"},
                          appeal_id=appeal_id))
    with pytest.raises(Conflict):
        bureau.override(d.runtime, CTX, reg_no, {"lead": "rsj", "reason": "x"}, "chief")


def test_pending_extension_lapses_when_the_unit_responds(d):
    reg_no = d.register(category="0102")
    d.new()
    lead = lead_of(d, reg_no)
    d.reply("zjj", "sign", lead)
    assert d.reply("zjj", "extend", lead, requested_until="2026-12-28T18:00:00+08:00",
                   reason="x")["status"] == "accepted"
    d.reply("zjj", "respond", lead, outcome="solved", reply="y",
            contacted_at="2026-11-27T10:00:00+08:00")
    assert [e["state"] for e in bureau.list_extensions(d.runtime)] == ["lapsed"]
    closed = [m["data"] for m in d.last if m.get("event_type") == "extension.closed"]
    assert [(c["state"], c["reg_no"]) for c in closed] == [("lapsed", reg_no)]


def test_feedback_answers_a_key_supervision_order_once(d):
    reg_no = d.register()
    appeal_id = next(m for m in d.new() if m.get("event_type") == "appeal.dispatched")[
        "appeal_id"]
    lead = lead_of(d, reg_no)
    other = d.register()
    d.new()
    order_no = f"ZD-{reg_no}-zjj-20261207090000"
    # The unit may answer before the order's event reached dispatch: the reply is tried
    # again later (an error the reliable consumer retries), not refused.
    with pytest.raises(LookupError):
        d.reply("zjj", "feedback", lead, order_no=order_no, feedback="书面反馈")
    d.deliver_event(Event("supervision_order.issued", "supervision", d.clock.now(), {
        "reg_no": reg_no, "dept_code": "zjj", "assignment_id": lead["assignment_id"],
        "order_no": order_no, "feedback_required": True,
        "feedback_by": "2026-12-04T23:59:59+08:00"}, appeal_id=appeal_id))
    refused = d.reply("zjj", "feedback", lead, order_no="ZD-someone-else", feedback="x")
    assert refused["status"] == "refused" and list(refused["errors"]) == ["order_no"]
    assert d.reply("zjj", "feedback", lead_of(d, other), order_no=order_no,
                   feedback="x")["status"] == "refused"  # not this assignment's order
    assert d.reply("zjj", "feedback", lead, order_no=order_no, feedback="")["errors"] == {
        "feedback": ["Length must be between 1 and 5000."]}
    accepted = d.reply("zjj", "feedback", lead, order_no=order_no, feedback="已研究处置，书面反馈如下")
    assert accepted["status"] == "accepted"
    answered = next(m for m in d.last if m.get("event_type") == "supervision_order.answered")
    assert answered["data"]["order_no"] == order_no and answered["data"]["on_time"] is True
    assert answered["data"]["feedback"] == "已研究处置，书面反馈如下"
    again = d.reply("zjj", "feedback", lead, order_no=order_no, feedback="again")
    assert again["status"] == "refused" and "already answered" in again["errors"]["order_no"][0]


def test_assignments_are_listed_page_by_page(d):
    for _ in range(3):
        d.register()
    everything = [a["assignment_id"] for a in usecases.list_assignments(d.runtime)]
    pages = [[a["assignment_id"] for a in usecases.list_assignments(d.runtime, page=Page(n, 4))]
             for n in (1, 2, 3)]
    assert [len(p) for p in pages] == [4, 2, 0] and pages[0] + pages[1] == everything
