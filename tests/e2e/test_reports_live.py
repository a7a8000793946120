"""Reports through the running suite: appeals published on the bus and answered by a
department in plain pika, follow-ups over HTTP, all in March two years on (every service's
clock moved there, derived from the suite's "now", so no other test's appeals share the
period, whatever day or shifted year the suite runs in); then the rates, the overdue list,
the business series, a rebuild by the CLI while the service runs, and the exports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import date, datetime, timedelta

import pytest
import requests

from tests.e2e import suite_time
from tests.e2e.bus import appeal_body, poll, reply_body

pytestmark = pytest.mark.e2e



def first_working_tuesday_of_march(year: int) -> date:
    day = date(year, 3, 1)
    while day.weekday() != 1 or not suite_time.CALENDAR.is_working_day(day):
        day += timedelta(days=1)
    return day


def test_reports_follow_the_appeals(bus, urls, token, move_clock, suite_env):
    staff = {"Authorization": f"Bearer {token('bureau_staff')}"}
    viewer = {"Authorization": f"Bearer {token('viewer')}"}
    # March two years after the suite's "now": later than any moment another test uses.
    year = suite_time.today().year + 2
    march = {"from": date(year, 3, 1).isoformat(), "to": date(year, 3, 31).isoformat()}
    registered_on = first_working_tuesday_of_march(year)
    move_clock(suite_time.at(registered_on))
    appeals = {}
    for name in ("A", "B", "C"):  # "贷款" routes to jrb (lead) with czj (co)
        receipt = bus.receipt(bus.submit(appeal_body(
            title="流动资金贷款审批慢", content=f"银行贷款申请一个月无进展（{uuid.uuid4().hex}）")))
        reg_no = receipt["reg_no"]
        appeals[name] = {"reg_no": reg_no, "lead": bus.dept_message("jrb", "assignment", reg_no),
                         "co": bus.dept_message("czj", "assignment", reg_no)}

    def reply(dept: str, action: str, assignment: dict, **extra: str) -> None:
        bus.reply(dept, action, reply_body(assignment, **extra))
        result = bus.dept_message(dept, "reply_result", assignment["reg_no"])
        assert (result["action"], result["status"]) == (action, "accepted"), result

    def responded(reg_no: str) -> None:
        # Supervision may still be working through the notices and key orders the jump in
        # time caused for every open appeal of the run (and through its own events of them).
        poll(lambda: requests.get(f"{urls['supervision']}/appeals/{reg_no}/clock",
                                  headers=staff).json().get("state") == "responded", timeout=90)

    # A: both units sign, solved, satisfied (closed). B: the lead signs, explains, the
    # enterprise is not satisfied (key order, reopened). C: nobody signs.
    a, b = appeals["A"], appeals["B"]
    reply("jrb", "sign", a["lead"])
    reply("czj", "sign", a["co"])
    reply("jrb", "respond", a["lead"], outcome="solved", reply="已协调银行放款",
          contacted_at=suite_time.iso())
    reply("jrb", "sign", b["lead"])
    reply("jrb", "respond", b["lead"], outcome="explained", reply="已解释授信政策",
          contacted_at=suite_time.iso())
    for reg_no, grade in ((a["reg_no"], "satisfied"), (b["reg_no"], "unsatisfied")):
        responded(reg_no)
        resp = requests.post(f"{urls['supervision']}/appeals/{reg_no}/followups", headers=staff,
                             json={"grade": grade, "resolved": grade == "satisfied"})
        assert resp.status_code == 201, resp.text

    # Two working days after the sign-by day (the working day after registration, as the
    # suite set it): every sign-by has passed.
    sign_day = suite_time.working_day_after(registered_on, 1)
    assert {suite_time.local_day(datetime.fromisoformat(x[role]["sign_by"]))
            for x in appeals.values() for role in ("lead", "co")} == {sign_day}
    checked_on = suite_time.working_day_after(sign_day, 2)
    move_clock(suite_time.at(checked_on))
    expected = {
        # 响应率: jrb A ✓ B ✓ C ✗; czj A ✓ B ✗ C ✗. 解决率: jrb A solved, B explained.
        # 满意率: A satisfied, B not. 按时办结率: A closed on time.
        "jrb": ((2, 3), (1, 2), (1, 2), (1, 1)),
        "czj": ((1, 3), (0, 0), (0, 0), (0, 0)),
    }

    def figures() -> dict | None:
        report = requests.get(f"{urls['reporting']}/reports/rates", headers=viewer,
                              params={**march, "group_by": "department"}).json()
        got = {g["key"]: tuple((g[k]["numerator"], g[k]["denominator"]) for k in (
            "response_rate", "solve_rate", "satisfaction_rate", "closed_on_time_rate"))
            for g in report["groups"]}
        return got if got == expected else None

    before = poll(figures, timeout=90)

    overdue = requests.get(f"{urls['reporting']}/reports/overdue", headers=viewer,
                           params={"kind": "sign", "limit": "1000"}).json()
    mine = {(i["reg_no"], i["dept_code"]): i for i in overdue["items"]
            if i["reg_no"] in {x["reg_no"] for x in appeals.values()}}
    assert set(mine) == {(appeals["C"]["reg_no"], "jrb"), (appeals["C"]["reg_no"], "czj"),
                         (b["reg_no"], "czj")}
    assert {i["working_days_overdue"] for i in mine.values()} == {2}  # the two days since

    metrics = requests.get(f"{urls['reporting']}/metrics").text
    for series in ('appeals_overdue{dept_code="jrb"}', "appeals_response_seconds_bucket{",
                   "appeals_response_seconds_count", 'appeals_followups_total{grade="satisfied"}',
                   "appeals_satisfaction_rate", 'appeals_open{state="dispatched"}',
                   'appeals_registered_total{channel="hotline_12345"}'):
        assert series in metrics, series

    # A rebuild from the archive while the service runs gives the same figures.
    out = subprocess.run([sys.executable, "-m", "appeals_common.cli", "reporting", "rebuild"],
                         env={**os.environ, **suite_env}, capture_output=True, text=True,
                         check=True, timeout=300)
    rebuilt = json.loads(out.stdout)
    assert rebuilt["events"] > 0 and rebuilt["skipped"] == 0
    assert figures() == before

    # A walkthrough recorded at supervision shows in reporting with its open items.
    walked = requests.post(f"{urls['supervision']}/walkthroughs", headers=staff, json={
        "service_item": "企业开办", "mode": "in_person", "lead_unit": "zwfwzx",
        "walked_on": checked_on.isoformat(),
        "scores": {"accuracy": 5, "smoothness": 4, "proofs": 4, "experience": 3, "conduct": 5},
        "summary": "窗口排队久", "findings": [
            {"list": "optimization", "description": "增设自助终端", "owner": "zwfwzx",
             "due_at": suite_time.iso(suite_time.at(suite_time.working_day_after(checked_on, 10),
                                                    18))}]})
    assert walked.status_code == 201, walked.text
    walkthrough_id = walked.json()["walkthrough_id"]

    def walkthrough() -> dict | None:
        report = requests.get(f"{urls['reporting']}/reports/walkthroughs", headers=viewer,
                              params={"year": str(year)}).json()
        return next((w for w in report["walkthroughs"]
                     if w["walkthrough_id"] == walkthrough_id), None)

    found = poll(walkthrough)
    assert found["lists"]["optimization"]["open"] == 1 and found["scores"]["experience"] == 3

    # Exports: a file with its type and name.
    xlsx = requests.get(f"{urls['reporting']}/exports/annual-review", headers=viewer,
                        params={"year": str(year)})
    assert xlsx.status_code == 200
    assert xlsx.headers["Content-Type"].startswith("application/vnd.openxmlformats")
    assert xlsx.headers["Content-Disposition"] == \
        f'attachment; filename="annual-review-{year}.xlsx"'
    assert xlsx.content[:2] == b"PK"  # a zip: the workbook
    csv = requests.get(f"{urls['reporting']}/exports/sitin-summary", headers=viewer,
                       params={"year": str(year), "quarter": "1", "format": "csv"})
    assert csv.status_code == 200 and csv.headers["Content-Type"].startswith("text/csv")
    assert "13800138000" not in csv.content.decode("utf-8-sig")
