"""类题破解 through supervision's service layer on PostgreSQL: suggested from similar
appeals, confirmed with a lead entity and deadline, supervised, resolved, closed."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select

from appeals_common.db import Store
from appeals_common.http import Conflict, FieldErrors
from appeals_common.nameko_ext import ServiceRuntime
from appeals_common.settings import Settings
from services.supervision import class_problem_usecases as classes
from services.supervision import clocks, usecases
from services.supervision.class_problems import ClusterSettings
from services.supervision.escalation import WorkingHours
from services.supervision.models import Base
from tests.integration.test_supervision_clocks import CAL, Supervision, at, run_days

DEPARTMENTS = frozenset({"zjj", "zrzyj", "gxj"})
SIMILAR = [
    "施工许可审批时间太长，项目迟迟不能开工",
    "项目施工许可办理周期长，影响开工进度",
    "施工许可证审批慢，开工时间一再推迟",
    "申请施工许可等了一个多月还没批下来，项目无法开工",
]



def register(sup: Supervision, text: str, chain: str | None = "construction_realestate",
             category: str = "0102") -> str:
    appeal_id = str(uuid.uuid4())
    sup.deliver("appeal.registered", appeal_id, {
        "reg_no": f"WH-2026-{uuid.uuid4().int % 10**6:06d}", "title": text, "content": "",
        "category": category, "industry_chain": chain}, "intake")
    return appeal_id


def events(sup: Supervision, event_type: str) -> list[dict]:
    outbox = sup.store.outbox
    with sup.store.engine.connect() as conn:
        rows = conn.execute(select(outbox).where(outbox.c.routing_key == event_type)
                            .order_by(outbox.c.id)).mappings().all()
    return [json.loads(r["body"]) for r in rows]


def test_class_problem_from_suggestion_to_close(sup):
    members = {register(sup, text) for text in SIMILAR}
    register(sup, "餐饮店食品经营许可证延续办理", chain="trade_consumption", category="0103")
    (suggested,) = classes.detect(sup.runtime, ClusterSettings())
    assert suggested["state"] == "suggested" and len(suggested["reg_nos"]) == 4
    assert classes.detect(sup.runtime, ClusterSettings()) == [], "not suggested twice"

    class_id = suggested["class_id"]
    with pytest.raises(FieldErrors):
        classes.confirm(sup.runtime, DEPARTMENTS, class_id, {
            "lead_entity": "nobody", "deadline": at("2026-12-18", 18).isoformat()}, "chief")
    confirmed = classes.confirm(sup.runtime, DEPARTMENTS, class_id, {
        "lead_entity": "zjj", "units": ["zrzyj"], "deadline": at("2026-12-18", 18).isoformat(),
        "note": "专项研判施工许可提速"}, "chief")
    assert confirmed["state"] == "confirmed"

    # Supervised with the same clocks: the lead entity is reminded before the deadline.
    sup.clock.moment = at("2026-12-17", 10)
    clocks.scan(sup.runtime, CAL, WorkingHours())
    (reminder,) = [m for m in sup.sent() if m["kind"] == "reminder"]
    assert (reminder["dept_code"], reminder["reg_no"], reminder["deadline"]) == \
        ("zjj", class_id, "class")

    with pytest.raises(Conflict):
        classes.close(sup.runtime, class_id, {"promote": True}, "chief")
    classes.resolve(sup.runtime, class_id, {"measures": "推行告知承诺制，审批压缩至5个工作日"},
                    "zjj-user")
    sup.clock.moment = at("2026-12-22", 10)
    clocks.scan(sup.runtime, CAL, WorkingHours())
    assert not [m for m in sup.sent() if m["kind"] == "supervision_notice"], "met in time"
    closed = classes.close(sup.runtime, class_id, {"promote": True, "note": "全区推广"}, "chief")
    assert closed["state"] == "closed" and closed["promote"] is True
    annotated = events(sup, "class_problem.annotated")
    assert {e["appeal_id"] for e in annotated} == members
    assert all(e["data"]["measures"].startswith("推行告知承诺制") for e in annotated)


def test_dismissed_suggestion_frees_its_appeals(sup):
    for text in SIMILAR[:3]:
        register(sup, text)
    (first,) = classes.detect(sup.runtime, ClusterSettings())
    classes.dismiss(sup.runtime, first["class_id"], {"reason": "个案，不成类"}, "chief")
    assert classes.detect(sup.runtime, ClusterSettings())[0]["reg_nos"] == first["reg_nos"]
    assert sorted(p["state"] for p in classes.list_problems(sup.runtime, None)) == \
        ["dismissed", "suggested"]
    assert len(classes.list_problems(sup.runtime, "dismissed")) == 1


def test_old_appeals_are_outside_the_window(sup):
    sup.clock.moment = at("2026-11-27") - timedelta(days=120)
    for text in SIMILAR:
        register(sup, text)
    sup.clock.moment = at("2026-11-27")
    assert classes.detect(sup.runtime, ClusterSettings()) == []


def test_a_closed_class_is_not_suggested_again(sup):
    for text in SIMILAR[:3]:
        register(sup, text)
    (problem,) = classes.detect(sup.runtime, ClusterSettings())
    class_id = problem["class_id"]
    classes.confirm(sup.runtime, DEPARTMENTS, class_id, {
        "lead_entity": "zjj", "deadline": at("2026-12-18", 18).isoformat()}, "chief")
    classes.resolve(sup.runtime, class_id, {"measures": "告知承诺制"}, "zjj-user")
    classes.close(sup.runtime, class_id, {"promote": False}, "chief")
    assert classes.detect(sup.runtime, ClusterSettings()) == []


def test_two_replicas_detecting_together_suggest_each_class_once(sup):
    assert classes.detect(sup.runtime, ClusterSettings()) == []  # this year's counter exists
    for text in SIMILAR:
        register(sup, text)
    other = Store(sup.store.url, Base.metadata, producer="supervision")
    runtimes = [sup.runtime, ServiceRuntime("supervision", Settings(), other, sup.clock)]
    barrier, results, errors = threading.Barrier(2), [], []

    def detect(runtime: ServiceRuntime) -> None:
        barrier.wait()
        try:
            results.append(classes.detect(runtime, ClusterSettings()))
        except Exception as exc:  # noqa: BLE001 - collected to fail the test below
            errors.append(exc)

    threads = [threading.Thread(target=detect, args=(rt,)) for rt in runtimes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.dispose()
    assert errors == []
    assert sorted(len(r) for r in results) == [0, 1]
    assert [e["data"]["class_id"] for e in events(sup, "class_problem.suggested")] == [
        f"LT-{sup.clock.now().year}-0001"]


def test_an_overdue_class_draws_a_key_order_answered_by_its_resolution(sup):
    for text in SIMILAR:
        register(sup, text)
    (suggested,) = classes.detect(sup.runtime, ClusterSettings())
    class_id = suggested["class_id"]
    classes.confirm(sup.runtime, DEPARTMENTS, class_id, {
        "lead_entity": "zjj", "deadline": at("2026-11-30", 18).isoformat()}, "chief")
    run_days(sup, at("2026-11-30", 0), days=13)  # order on 7 Dec, feedback due 14 Dec
    order = next(m for m in sup.sent() if m["kind"] == "key_supervision_order")
    assert order["reg_no"] == class_id and order["feedback_by"].startswith("2026-12-14")
    feedback_reminder = next(m for m in sup.sent() if m["deadline"] == "feedback")
    assert feedback_reminder["reg_no"] == class_id
    # Its events are about no appeal (intake would have none to put them on).
    reminded = [e for e in events(sup, "appeal.reminded") if e["data"]["deadline"] == "feedback"]
    assert reminded and all(e["appeal_id"] is None for e in reminded)
    classes.resolve(sup.runtime, class_id, {"measures": "推行告知承诺制"}, "zjj-user")
    (answered,) = usecases.list_key_orders(sup.runtime, "answered", "zjj")
    assert answered["order_no"] == order["order_no"] and answered["feedback"] == "推行告知承诺制"
    # Reporting learns it the way it learns a unit's answer: the order leaves its overdue list.
    (event,) = events(sup, "supervision_order.answered")
    assert event["appeal_id"] is None and event["producer"] == "supervision"
    assert event["data"]["order_no"] == order["order_no"] and event["data"]["on_time"] is True
    before = len(sup.sent())
    run_days(sup, at("2026-12-13", 0), days=5)
    assert [m for m in sup.sent()[before:] if m["reg_no"] == class_id] == []
