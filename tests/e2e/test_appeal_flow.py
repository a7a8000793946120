"""One appeal end to end through all four services, and the ways input goes wrong."""

from __future__ import annotations

import json
import os
import re
import uuid

import requests

from tests.e2e import suite_time
from tests.e2e.bus import appeal_body, poll, reply_body


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}




def test_full_cycle_from_publish_to_close(bus, urls, token):
    staff = auth(token("bureau_staff"))
    before = requests.get(f"{urls['reporting']}/reports/summary", headers=staff).json()

    message_id = bus.submit(appeal_body())
    receipt = bus.receipt(message_id)
    assert receipt["status"] == "accepted"
    reg_no = receipt["reg_no"]
    assert re.fullmatch(r"WH-20\d\d-\d{6}", reg_no)

    lead = bus.dept_message("zjj", "assignment", reg_no)
    co = bus.dept_message("zrzyj", "assignment", reg_no)
    assert (lead["role"], co["role"]) == ("lead", "co")
    assert lead["units"] == {"lead": "zjj", "co": ["zrzyj"]}
    assert lead["sign_by"] < lead["respond_by"]
    assert lead["enterprise"]["uscc"] == "91110000600037341L"

    bus.reply("zjj", "sign", reply_body(lead))
    result = bus.dept_message("zjj", "reply_result", reg_no)
    assert (result["action"], result["status"]) == ("sign", "accepted")
    bus.reply("zrzyj", "sign", reply_body(co))
    bus.reply("zjj", "respond", reply_body(lead, outcome="solved", reply="已协调办理施工许可",
                                           contacted_at=suite_time.iso()))
    result = bus.dept_message("zjj", "reply_result", reg_no)
    assert (result["action"], result["status"]) == ("respond", "accepted")

    # Supervision learns of the response over the bus; then the bureau calls the enterprise.
    poll(lambda: requests.get(f"{urls['supervision']}/appeals/{reg_no}/clock",
                              headers=staff).json().get("state") == "responded")
    resp = requests.post(f"{urls['supervision']}/appeals/{reg_no}/followups", headers=staff,
                         json={"grade": "satisfied", "resolved": True, "comments": "满意"})
    assert resp.status_code == 201, resp.text
    assert resp.json()["state"] == "closed"

    appeal = poll(lambda: (a := requests.get(f"{urls['intake']}/appeals/{reg_no}",
                                             headers=staff).json())["state"] == "closed" and a)
    events = [entry["event"] for entry in appeal["timeline"]]
    for expected in ("appeal.registered", "appeal.dispatched", "assignment.signed",
                     "appeal.responded", "followup.recorded", "appeal.closed"):
        assert expected in events
    assert events[0] == "appeal.registered" and events[-1] == "appeal.closed"

    after = poll(lambda: (s := requests.get(f"{urls['reporting']}/reports/summary",
                                            headers=staff).json())["closed"] > before["closed"]
                 and s)
    assert after["registered"] == before["registered"] + 1
    assert after["closed"] == before["closed"] + 1

    metrics = requests.get(f"{urls['reporting']}/metrics").text
    assert 'appeals_registered_total{channel="hotline_12345"}' in metrics


def test_duplicate_external_id_gets_the_original_reg_no(bus):
    body = appeal_body()
    first = bus.receipt(bus.submit(body))
    second = bus.receipt(bus.submit(body))
    assert second["status"] == "duplicate"
    assert second["reg_no"] == first["reg_no"]

    changed = {**body, "title": "换了标题"}
    conflict = bus.receipt(bus.submit(changed))
    assert conflict["status"] == "rejected"
    assert first["reg_no"] in conflict["errors"]["external_id"][0]


def test_invalid_message_is_rejected_with_field_errors_and_kept(bus):
    body = appeal_body()
    body["enterprise"]["uscc"] = "91110000600037341X"  # wrong check digit
    del body["title"]
    message_id = bus.submit(body)
    receipt = bus.receipt(message_id)
    assert receipt["status"] == "rejected"
    assert set(receipt["errors"]) >= {"enterprise.uscc", "title"}
    assert "reg_no" not in receipt

    kept, props = bus.wait_for("appeals.inbound.rejected",
                               lambda b, p: p.headers.get("x-original-message-id") == message_id)
    assert kept == body, "the raw message is kept as it came"
    assert "enterprise.uscc" in json.loads(props.headers["x-errors"])


def test_non_json_and_mismatched_source_are_rejected(bus):
    mid = bus.submit(b"\xff\xfe not utf-8")
    assert bus.receipt(mid)["errors"]["_body"] == ["body is not UTF-8"]
    mid = bus.submit(appeal_body(source="online_portal"))  # published under hotline_12345
    assert "source_system" in bus.receipt(mid)["errors"]


def test_department_replies_are_checked(bus):
    reg_no = bus.receipt(bus.submit(appeal_body()))["reg_no"]
    lead = bus.dept_message("zjj", "assignment", reg_no)

    # Another department answering for zjj's assignment is refused and changes nothing.
    bus.reply("zrzyj", "sign", reply_body(lead))
    refused = bus.dept_message("zrzyj", "reply_result", reg_no)
    assert refused["status"] == "refused" and "assignment_id" in refused["errors"]

    bus.reply("zjj", "respond", reply_body(lead, outcome="solved", reply="x",
                                           contacted_at=suite_time.iso()))
    refused = bus.dept_message("zjj", "reply_result", reg_no)
    assert refused["status"] == "refused"
    assert "state 'assigned'" in refused["errors"]["action"][0]

    bus.reply("zjj", "sign", {"schema_version": 1, "assignment_id": lead["assignment_id"],
                              "reg_no": reg_no})
    refused = bus.dept_message("zjj", "reply_result", reg_no)
    assert refused["errors"] == {"replied_at": ["Missing data for required field."]}

    bus.reply("zjj", "sign", reply_body(lead))
    assert bus.dept_message("zjj", "reply_result", reg_no)["status"] == "accepted"
    bus.reply("zjj", "sign", reply_body(lead))
    assert bus.dept_message("zjj", "reply_result", reg_no)["status"] == "refused"


def test_staff_http_register_and_permissions(urls, token, bus):
    body = {"channel": "sit_in", "title": "融资贷款难", "content": "希望对接担保机构",
            "enterprise": {"name": "某餐饮公司", "uscc": "91110000600037341L",
                           "contact_name": "王五", "contact_phone": "0871-65123456"}}
    assert requests.post(f"{urls['intake']}/appeals", json=body).status_code == 401
    assert requests.post(f"{urls['intake']}/appeals", json=body,
                         headers=auth(token("viewer"))).status_code == 403
    bad = requests.post(f"{urls['intake']}/appeals", json={**body, "channel": "x"},
                        headers=auth(token("bureau_staff")))
    assert bad.status_code == 422 and "channel" in bad.json()["errors"]

    created = requests.post(f"{urls['intake']}/appeals", json=body,
                            headers=auth(token("bureau_staff")))
    assert created.status_code == 201, created.text
    reg_no = created.json()["reg_no"]
    assignment = bus.dept_message("jrb", "assignment", reg_no)
    assert assignment["units"] == {"lead": "jrb", "co": ["czj"]}

    poll(lambda: requests.get(f"{urls['intake']}/appeals/{reg_no}",
                              headers=auth(token("bureau_staff"))).json()["state"] == "dispatched")
    mine = requests.get(f"{urls['intake']}/appeals/{reg_no}", headers=auth(token("department", "jrb")))
    assert mine.status_code == 200
    other = requests.get(f"{urls['intake']}/appeals/{reg_no}", headers=auth(token("department", "zjj")))
    assert other.status_code == 404
    own = requests.get(f"{urls['dispatch']}/assignments?dept=zjj",
                       headers=auth(token("department", "jrb"))).json()
    assert own and {a["dept_code"] for a in own} == {"jrb"}, "a department sees only its own"


def test_followup_before_response_is_refused(urls, token, bus):
    reg_no = bus.receipt(bus.submit(appeal_body()))["reg_no"]
    bus.dept_message("zjj", "assignment", reg_no)
    staff = auth(token("bureau_staff"))
    # Once supervision knows the appeal (not 404), closing it now must be refused.
    [resp] = poll(lambda: (r := requests.post(
        f"{urls['supervision']}/appeals/{reg_no}/followups", headers=staff,
        json={"grade": "satisfied", "resolved": True})).status_code != 404 and [r])
    assert resp.status_code == 409
    assert "cannot close" in resp.json()["error"]


def test_failing_handler_retries_then_dead_letters_and_replays(bus, suite_env):
    import subprocess
    import sys

    event_id = str(uuid.uuid4())
    # An envelope whose data is no object: handlers fail. (An event for an appeal no
    # service has heard of is no failure: it waits for its predecessor, see below.)
    bad_event = {"event_id": event_id, "event_type": "appeal.responded", "schema_version": 1,
                 "occurred_at": suite_time.iso(), "producer": "dispatch",
                 "appeal_id": str(uuid.uuid4()), "correlation_id": None, "data": "broken"}
    bus.publish("appeals.events", "appeal.responded", bad_event, message_id=event_id)
    env = {**__import__("os").environ, **suite_env}
    cli = [sys.executable, "-m", "appeals_common.cli", "dead-letters"]

    def listed() -> list[dict]:
        out = subprocess.run([*cli, "list", "--queue", "reporting.events.dlq"], env=env,
                             capture_output=True, text=True, check=True).stdout
        return [json.loads(line) for line in out.splitlines() if event_id in line]

    item = poll(lambda: listed(), timeout=30)[0]
    assert item["attempts"] == 4, "three retries, then the dead-letter queue"
    assert "ValidationError" in item["error"]
    shown = json.loads(subprocess.run([*cli, "show", event_id, "--queue", "reporting.events.dlq"],
                                      env=env, capture_output=True, text=True, check=True).stdout)
    assert json.loads(shown["body"])["event_id"] == event_id
    out = subprocess.run([*cli, "replay", "--queue", "reporting.events.dlq", "--message-id",
                          event_id], env=env, capture_output=True, text=True, check=True).stdout
    assert "replayed 1" in out
    # It fails again, goes through its retries again, and is back: nothing was dropped.
    poll(lambda: listed(), timeout=30)


def test_an_event_before_its_predecessor_waits_instead_of_failing(bus, urls, suite_env):
    import subprocess
    import sys

    def waiting() -> float:
        metrics = requests.get(f"{urls['reporting']}/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                   if line.startswith("appeals_messages_waiting_total{")
                   and 'queue="reporting.events"' in line)

    before = waiting()
    event_id = str(uuid.uuid4())
    early = {"event_id": event_id, "event_type": "appeal.responded", "schema_version": 1,
             "occurred_at": suite_time.iso(), "producer": "dispatch",
             "appeal_id": str(uuid.uuid4()), "correlation_id": None, "data": {}}
    bus.publish("appeals.events", "appeal.responded", early, message_id=event_id)
    poll(lambda: waiting() >= before + 3, timeout=30)  # past the 4 tries a failure gets
    out = subprocess.run([sys.executable, "-m", "appeals_common.cli", "dead-letters", "list",
                          "--queue", "reporting.events.dlq"], env={**os.environ, **suite_env},
                         capture_output=True, text=True, check=True).stdout
    assert event_id not in out, "waiting, not dead-lettered"
