"""Returns, re-dispatch, extensions and overrides through the running services, with the
departments written in plain pika (tests/e2e/bus.py) and the bureau over HTTP."""

from __future__ import annotations

import time
from datetime import datetime

import requests

from tests.e2e import suite_time
from tests.e2e.bus import appeal_body, reply_body


def test_return_accepted_redispatches_to_another_unit(bus, urls, token):
    staff = {"Authorization": f"Bearer {token('bureau_staff')}"}
    reg_no = bus.receipt(bus.submit(appeal_body(title="营业执照变更", content="变更经营范围")))[
        "reg_no"]
    lead = bus.dept_message("scjgj", "assignment", reg_no)
    bus.reply("scjgj", "return", reply_body(lead, reason_code="wrong_unit",
                                            reason="应由税务局办理", suggested_unit="swj"))
    assert bus.dept_message("scjgj", "reply_result", reg_no)["status"] == "accepted"

    returned = requests.get(f"{urls['dispatch']}/assignments",
                            params={"state": "returned", "reg_no": reg_no}, headers=staff).json()
    assert [a["assignment_id"] for a in returned] == [lead["assignment_id"]]
    assert returned[0]["return_reason_code"] == "wrong_unit"
    viewer = {"Authorization": f"Bearer {token('viewer')}"}
    url = f"{urls['dispatch']}/assignments/{lead['assignment_id']}/return-decision"
    assert requests.post(url, json={"accept": True, "reason": "x"}, headers=viewer).status_code \
        == 403
    decided = requests.post(url, json={"accept": True, "reason": "同意退单"}, headers=staff)
    assert decided.status_code == 200, decided.text
    assert decided.json()["redispatched"] is True

    told = bus.dept_message("scjgj", "return_decision", reg_no)
    assert told["accepted"] is True
    new_lead = bus.dept_message("zwfwzx", "assignment", reg_no)  # the catch-all rule
    assert new_lead["role"] == "lead"


def test_extension_requested_over_the_bus_and_decided_over_http(bus, urls, token):
    staff = {"Authorization": f"Bearer {token('bureau_staff')}"}
    reg_no = bus.receipt(bus.submit(appeal_body(title="社保补贴申领", content="就业补贴未到账")))[
        "reg_no"]
    lead = bus.dept_message("rsj", "assignment", reg_no)
    bus.reply("rsj", "sign", reply_body(lead))
    bus.dept_message("rsj", "reply_result", reg_no)
    # One working day past the deadline the suite set: after respond_by, well within the
    # category's longest time allowed, and in the future whatever day the suite runs on.
    asked = suite_time.at(suite_time.working_day_after(datetime.fromisoformat(lead["respond_by"])),
                          18)
    bus.reply("rsj", "extend", reply_body(lead, requested_until=suite_time.iso(asked),
                                          reason="需核对社保记录"))
    assert bus.dept_message("rsj", "reply_result", reg_no)["status"] == "accepted"

    deadline = time.monotonic() + 20
    pending = []
    while not pending and time.monotonic() < deadline:
        pending = [e for e in requests.get(f"{urls['dispatch']}/extensions",
                                           params={"state": "requested"}, headers=staff).json()
                   if e["reg_no"] == reg_no]
    assert datetime.fromisoformat(pending[0]["requested_until"]) == asked
    url = f"{urls['dispatch']}/extensions/{pending[0]['extension_id']}/decision"
    bad = requests.post(url, json={"approve": "maybe", "reason": "x"}, headers=staff)
    assert bad.status_code == 422 and "approve" in bad.json()["errors"]
    decided = requests.post(url, json={"approve": False, "reason": "材料齐全，按期办理"},
                            headers=staff)
    assert decided.status_code == 200 and decided.json()["approved"] is False
    told = bus.dept_message("rsj", "extension_decision", reg_no)
    assert told["approved"] is False
    assert datetime.fromisoformat(told["respond_by"]) == datetime.fromisoformat(lead["respond_by"])


def test_bureau_override_reassigns(bus, urls, token):
    staff = {"Authorization": f"Bearer {token('bureau_staff')}"}
    reg_no = bus.receipt(bus.submit(appeal_body(title="退税进度", content="出口退税")))["reg_no"]
    bus.dept_message("swj", "assignment", reg_no)
    resp = requests.post(f"{urls['dispatch']}/appeals/{reg_no}/dispatch", headers=staff,
                         json={"lead": "czj", "co": ["swj"], "reason": "涉及财政奖补"})
    assert resp.status_code == 200, resp.text
    taken = bus.dept_message("swj", "reassigned", reg_no)
    assert taken["new_units"] == {"lead": "czj", "co": ["swj"]}
    assert bus.dept_message("czj", "assignment", reg_no)["role"] == "lead"
    assert bus.dept_message("swj", "assignment", reg_no)["role"] == "co"
    unknown = requests.post(f"{urls['dispatch']}/appeals/{reg_no}/dispatch", headers=staff,
                            json={"lead": "nobody", "reason": "x"})
    assert unknown.status_code == 422
