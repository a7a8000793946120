"""What a viewer reads of supervision's views, through the HTTP handlers, on real PostgreSQL:
contact phones and names masked, in free text too (a patrol report's 附件3 rows and summary,
a walkthrough's findings, a key order's feedback); the bureau and a department reading its
own items see them as written."""

from __future__ import annotations

import json
from types import SimpleNamespace

from werkzeug.datastructures import MultiDict

from appeals_common.auth import Principal
from services.supervision import activities, walkthroughs
from services.supervision.service import SupervisionService
from tests.integration.test_supervision_clocks import CAL, CHAINS, Supervision, at, run_days
from tests.integration.test_supervision_lists import DEPARTMENTS, REPORT, patrol, walkthrough_body

STAFF = Principal("staff1", "bureau_staff")
VIEWER = Principal("leader", "viewer")
ZJJ = Principal("zjj-user", "department", "zjj")
GXJ = Principal("gxj-user", "department", "gxj")
SECRETS = ("王五", "13912345678", "１３９１２３４５６７８", "0871-6512-3456", "138 0013 8000")



def call(sup: Supervision, handler: str, principal: Principal, **args) -> object:
    """An HTTP handler of the service, past its token check, as `principal`."""
    service = SimpleNamespace(runtime=sup.runtime, calendar=CAL, class_settings=SimpleNamespace(
        chains=CHAINS, departments=DEPARTMENTS, settings=None))
    request = SimpleNamespace(args=MultiDict({k: v for k, v in args.items() if k != "path"}))
    return getattr(SupervisionService, handler).__wrapped__(service, request, principal,
                                                            **args.get("path", {}))


def leaks(view: object) -> list[str]:
    text = json.dumps(view, ensure_ascii=False)
    return [s for s in SECRETS if s in text]


def test_activity_obligations_mask_the_report_for_a_viewer(sup):
    activity_id = patrol(sup, "2026-12-10")
    sup.clock.moment = at("2026-12-14", 16)
    report = {**REPORT, "summary": "走访企业12家，王五留了电话０８７１-６５１２-３４５６",
              "service_items": [{**REPORT["service_items"][0],
                                 "remarks": "王五请回电１３９１２３４５６７８"}]}
    activities.submit_report(sup.runtime, CAL, activity_id, report, GXJ, CHAINS, DEPARTMENTS)
    staff = call(sup, "http_obligations", STAFF, year="2026")
    assert set(leaks(staff)) >= {"王五", "13912345678"}  # the bureau reads it as filed
    seen = call(sup, "http_obligations", VIEWER, year="2026")
    assert leaks(seen) == []
    (filed,) = [a for a in seen["activities"] if a["activity_id"] == activity_id]
    row = filed["report"]["content"]["service_items"][0]
    assert (row["contact_name"], row["contact_phone"]) == ("王*", "139****5678")
    assert row["remarks"] == "王*请回电139****5678"
    assert filed["report"]["content"]["summary"] == "走访企业12家，王*留了电话087****3456"
    assert filed["activity_id"] == activity_id and seen["patrols"] == staff["patrols"]


def test_walkthroughs_and_list_items_mask_phones_for_a_viewer(sup):
    body = walkthrough_body(summary="陪同办理，经办人电话138 0013 8000")
    body["findings"][0]["description"] = "窗口电话0871-6512-3456无人接听"
    view = walkthroughs.record(sup.runtime, DEPARTMENTS, body, "staff1")
    one = call(sup, "http_walkthrough", VIEWER, path={"walkthrough_id": view["walkthrough_id"]})
    assert leaks(one) == [] and one["summary"] == "陪同办理，经办人电话138****8000"
    assert one["items"][0]["description"] == "窗口电话087****3456无人接听"
    assert leaks(call(sup, "http_walkthroughs", VIEWER)) == []
    assert leaks(call(sup, "http_list_items", VIEWER)) == []
    # A unit reads the items it owns as written (its own), and only those.
    own = call(sup, "http_list_items", ZJJ, owner="gxj")
    assert [i["owner"] for i in own] == ["zjj"] and "0871-6512-3456" in own[0]["description"]


def test_key_order_feedback_is_masked_for_a_viewer(sup):
    appeal_id, assignment_id, reg_no = sup.appeal(respond_by=at("2026-11-30", 23),
                                                  sign_by=at("2026-11-28", 23))
    sup.deliver("assignment.signed", appeal_id, {"assignment_id": assignment_id, "role": "lead"})
    run_days(sup, at("2026-11-27", 0), days=11)
    order = next(m for m in sup.sent() if m["kind"] == "key_supervision_order")
    sup.deliver("supervision_order.answered", appeal_id, {
        "reg_no": reg_no, "order_no": order["order_no"], "assignment_id": assignment_id,
        "dept_code": "zjj", "feedback": "已整改，联系人王五 139-1234-5678",
        "answered_at": sup.clock.now().isoformat()})
    (seen,) = call(sup, "http_key_orders", VIEWER)
    assert seen["feedback"] == "已整改，联系人王五 139****5678"  # no known name: phone only
    assert seen["order_no"] == order["order_no"] and seen["assignment_id"] == assignment_id
    (own,) = call(sup, "http_key_orders", ZJJ)
    assert own["feedback"] == "已整改，联系人王五 139-1234-5678"
