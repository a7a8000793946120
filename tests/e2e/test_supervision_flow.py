"""Escalation, follow-up and reopen loops through the running services, moving their
clock forward; departments in plain pika, the bureau over HTTP."""

from __future__ import annotations

import io
import time
from datetime import datetime

import openpyxl
import requests

from tests.e2e import suite_time
from tests.e2e.bus import appeal_body, poll, reply_body


def test_missed_deadlines_escalate_to_a_key_supervision_order(bus, move_clock):
    reg_no = bus.receipt(bus.submit(appeal_body(title="退税迟迟未到账")))["reg_no"]
    assignment = bus.dept_message("swj", "assignment", reg_no)
    sign_by = datetime.fromisoformat(assignment["sign_by"])
    # Working days on the suite's own calendar (holidays, 调休, a New Year in between).
    move_clock(suite_time.at(suite_time.working_day_after(sign_by, 1)))  # the day after: 督办
    notice = bus.dept_message("swj", "supervision_notice", reg_no, timeout=30)
    assert notice["deadline"] == "sign" and notice["working_days_overdue"] >= 1
    # 5+ working days overdue: 重点督办单
    move_clock(suite_time.at(suite_time.working_day_after(sign_by, 6)))
    order = bus.dept_message("swj", "key_supervision_order", reg_no, timeout=30)
    assert order["feedback_required"] is True and order["order_no"].startswith("ZD-")


def test_unsatisfied_followup_reopens_until_a_satisfied_one_closes(bus, urls, token):
    staff = {"Authorization": f"Bearer {token('bureau_staff')}"}
    reg_no = bus.receipt(bus.submit(appeal_body(title="招工难", content="用工缺口大")))["reg_no"]
    lead = bus.dept_message("rsj", "assignment", reg_no, timeout=90)
    bus.reply("rsj", "sign", reply_body(lead))
    bus.dept_message("rsj", "reply_result", reg_no, timeout=90)

    def respond() -> None:
        # After a reopen, dispatch lets the lead respond again once it has the event.
        deadline = time.monotonic() + 20
        while True:
            bus.reply("rsj", "respond", reply_body(lead, outcome="explained", reply="已对接",
                                                   contacted_at=suite_time.iso()))
            result = bus.dept_message("rsj", "reply_result", reg_no, timeout=90)
            if result["status"] == "accepted":
                return
            assert time.monotonic() < deadline, result
            time.sleep(0.2)

    def followup(grade: str) -> requests.Response:
        # Supervision may still be working through the notices the previous test's jump
        # in time caused for every open appeal of the run: give it time.
        deadline = time.monotonic() + 90
        while True:
            resp = requests.post(f"{urls['supervision']}/appeals/{reg_no}/followups",
                                 headers=staff, json={"grade": grade, "resolved": False,
                                                      "comments": "仍未解决"})
            if resp.status_code not in (404, 409) or time.monotonic() > deadline:
                return resp
            time.sleep(0.2)  # supervision has not heard of the appeal or response yet

    respond()
    first = followup("unsatisfied")
    assert first.status_code == 201, first.text
    assert first.json()["state"] == "reopened"
    order = bus.dept_message("rsj", "key_supervision_order", reg_no, timeout=90)
    assert order["reasons"] == "仍未解决" and order["respond_by"]
    assert order["feedback_required"] is True and order["feedback_by"]
    # 书面反馈: the lead unit answers the order in writing; a wrong order number is refused.
    bus.reply("rsj", "feedback", reply_body(lead, order_no="ZD-nonsense", feedback="x"))
    refused = bus.dept_message("rsj", "reply_result", reg_no, timeout=90)
    assert refused["status"] == "refused" and "order_no" in refused["errors"]
    bus.reply("rsj", "feedback", reply_body(lead, order_no=order["order_no"],
                                            feedback="已约谈企业，重新研究用工对接方案"))
    assert bus.dept_message("rsj", "reply_result", reg_no, timeout=90)["status"] == "accepted"
    answered = poll(lambda: [o for o in requests.get(
        f"{urls['supervision']}/supervision-orders", params={"state": "answered"},
        headers=staff).json() if o["order_no"] == order["order_no"]], timeout=30)
    assert answered[0]["feedback"] == "已约谈企业，重新研究用工对接方案"
    assert answered[0]["cause"] == "unsatisfied_followup" and answered[0]["late"] is False
    respond()
    assert followup("satisfied").json()["state"] == "closed"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        appeal = requests.get(f"{urls['intake']}/appeals/{reg_no}", headers=staff).json()
        if appeal["state"] == "closed":
            break
        time.sleep(0.2)
    events = [e["event"] for e in appeal["timeline"]]
    assert events.count("appeal.responded") == 2 and "appeal.reopened" in events
    assert "supervision_order.issued" in events and events[-1] == "appeal.closed"
    assert "supervision_order.answered" in events


def test_a_patrol_registered_at_intake_has_its_plan_chased_to_the_chain_lead(bus, urls, token,
                                                                              move_clock):
    """附件1: intake registers the patrol; supervision times its plan (3 working days
    before) and reminds the chain's lead unit (gxj leads digital_economy) on its queue."""
    staff = {"Authorization": f"Bearer {token('bureau_staff')}"}
    lead = {"Authorization": f"Bearer {token('department', 'gxj')}"}
    # Two working weeks ahead on the suite's calendar, whatever day (or year end) it is now.
    held_on = suite_time.working_day_after(suite_time.today(), 10)
    created = requests.post(f"{urls['intake']}/activities", headers=staff, json={
        "kind": "chain_patrol", "held_on": held_on.isoformat(), "title": "数字经济链式巡诊",
        "lead_unit": "gxj", "industry_chain": "digital_economy"})
    assert created.status_code == 201, created.text
    activity_id = created.json()["activity_id"]

    def obligations() -> dict:
        return requests.get(f"{urls['supervision']}/activity-obligations",
                            params={"year": held_on.year}, headers=staff).json()

    mine = poll(lambda: [a for a in obligations()["activities"]
                         if a["activity_id"] == activity_id], timeout=60)[0]
    # The plan by the end of the 3rd working day before the patrol, the report by the end
    # of the 3rd working day after it.
    plan_day = suite_time.working_day_before(held_on, 3)
    report_day = suite_time.working_day_after(held_on, 3)
    assert datetime.fromisoformat(mine["plan"]["due_at"]) == suite_time.end_of_day(plan_day)
    assert datetime.fromisoformat(mine["report"]["due_at"]) == suite_time.end_of_day(report_day)
    # The working day before the plan's due: the lead unit is reminded.
    move_clock(suite_time.at(suite_time.working_day_before(plan_day, 1)))
    reminder = bus.dept_message("gxj", "reminder", activity_id, timeout=120)
    assert reminder["deadline"] == "plan"
    filed = requests.post(f"{urls['supervision']}/activities/{activity_id}/plan", headers=lead,
                          json={"summary": "走访软件园10家企业，宣讲数字经济政策"})
    assert filed.status_code == 200, filed.text
    assert filed.json()["plan"]["status"] == "on_time"
    other = {"Authorization": f"Bearer {token('department', 'zjj')}"}
    assert requests.post(f"{urls['supervision']}/activities/{activity_id}/report", headers=other,
                         json={}).status_code in (403, 422)
    digital = next(p for p in obligations()["patrols"] if p["industry_chain"] == "digital_economy")
    assert digital["status"] == "met" and digital["lead_unit"] == "gxj"

    # The day after the patrol the lead files its report with the 附件3 rows; reporting's
    # patrol report export carries them, the phone masked.
    move_clock(suite_time.at(suite_time.working_day_after(held_on, 1)))
    report = requests.post(f"{urls['supervision']}/activities/{activity_id}/report", headers=lead,
                           json={"policies_delivered": 5, "enterprises_served": 10,
                                 "class_problems": ["数据中心用电报装慢"], "summary": "走访10家企业",
                                 "service_items": [{
                                     "enterprise_name": "昆明某软件有限公司", "contact_name": "王五",
                                     "contact_phone": "13912345678", "item": "高新技术企业认定辅导",
                                     "responsible_unit": "kjj", "status": "in_progress"}]})
    assert report.status_code == 200, report.text
    assert report.json()["report"]["status"] == "on_time"
    viewer = {"Authorization": f"Bearer {token('viewer')}"}

    def exported() -> bytes | None:
        resp = requests.get(f"{urls['reporting']}/exports/patrol-report/{activity_id}",
                            headers=viewer, params={"format": "xlsx"})
        if resp.status_code != 200:
            return None
        book = openpyxl.load_workbook(io.BytesIO(resp.content))
        rows = [[c for c in row] for row in book["附件3 巡诊服务事项清单"].iter_rows(values_only=True)]
        return rows if any("高新技术企业认定辅导" in row for row in rows) else None

    rows = poll(exported, timeout=60)
    header_at = next(i for i, row in enumerate(rows) if row[0] == "序号")
    header, first = rows[header_at], rows[header_at + 1]
    assert dict(zip(header, first, strict=True))["联系电话"] == "139****5678"
    assert not any("13912345678" in str(cell) for row in rows for cell in row)
