"""An attacker on the bus, written as an outsider would: plain pika, its own provisioned
broker user, the documented contract. zjj (a department) and hotline_12345 (a source
system) are the attackers; jrb and investment_matrix the victims. Every attack is
refused, and nothing of the victims' changes (assignment states, timelines, counts)."""

from __future__ import annotations

import json
import time
import uuid

import pika
import pika.exceptions
import pytest
import requests

from tests.e2e.bus import appeal_body, reply_body

pytestmark = pytest.mark.e2e

ATTACKER, VICTIM = "zjj", "jrb"


@pytest.fixture
def staff(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('bureau_staff')}"}


@pytest.fixture
def victim_assignment(bus) -> dict:
    """An appeal whose lead unit is the victim (贷款 routes to jrb), as it stands."""
    reg_no = bus.receipt(bus.submit(appeal_body(
        title="流动资金贷款审批慢", content=f"贷款申请无进展（{uuid.uuid4().hex}）")))["reg_no"]
    return bus.dept_message(VICTIM, "assignment", reg_no)


# What a department's reply adds to an appeal's timeline (not the notices supervision's
# scan may add meanwhile, which have nothing to do with the attack).
REPLY_EVENTS = {"assignment.signed", "assignment.returned", "extension.requested",
                "appeal.responded", "assignment.contributed", "supervision_order.answered"}


def state_of(urls, staff, assignment: dict) -> tuple[str, list[str]]:
    """The assignment's state and the reply events in the appeal's timeline."""
    rows = requests.get(f"{urls['dispatch']}/assignments", headers=staff,
                        params={"reg_no": assignment["reg_no"]}).json()
    mine = next(a for a in rows if a["assignment_id"] == assignment["assignment_id"])
    timeline = requests.get(f"{urls['intake']}/appeals/{assignment['reg_no']}",
                            headers=staff).json()["timeline"]
    return mine["state"], sorted(e["event"] for e in timeline if e["event"] in REPLY_EVENTS)


def attacker_result(bus, reg_no: str = "") -> dict:
    body, _ = bus.wait_for(f"dispatch.{ATTACKER}",
                           lambda b, p: b.get("kind") == "reply_result"
                           and (not reg_no or b.get("reg_no") == reg_no), timeout=20)
    return body


def test_a_header_naming_another_routing_key_does_not_make_a_department_another(
        bus, urls, staff, victim_assignment):
    before = state_of(urls, staff, victim_assignment)
    # zjj may only publish dept.zjj.*; it tries to pass as jrb with the retry header.
    bus.reply(ATTACKER, "sign", reply_body(victim_assignment), headers={
        "x-original-routing-key": f"dept.{VICTIM}.sign", "x-original-exchange": "appeals.replies",
        "x-original-user-id": f"{bus.prefix}dept-{VICTIM}", "x-attempt": 2})
    refused = attacker_result(bus, victim_assignment["reg_no"])
    assert refused["status"] == "refused" and "assignment_id" in refused["errors"]
    time.sleep(1)  # a sign accepted by mistake would reach intake's timeline by now
    assert state_of(urls, staff, victim_assignment) == before == ("assigned", [])


def test_another_users_user_id_is_refused_by_the_broker(bus):
    channel = bus.channel(f"{bus.prefix}dept-{ATTACKER}")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.basic_publish("appeals.replies", f"dept.{ATTACKER}.sign", b"{}",
                              pika.BasicProperties(user_id=f"{bus.prefix}dept-{VICTIM}",
                                                   message_id=str(uuid.uuid4())))
    assert closed.value.reply_code == 406  # PRECONDITION_FAILED: user_id is not the login


def test_another_departments_routing_key_is_refused_by_the_broker(bus, victim_assignment):
    channel = bus.channel(f"{bus.prefix}dept-{ATTACKER}")
    with pytest.raises(pika.exceptions.ChannelClosedByBroker) as closed:
        channel.basic_publish("appeals.replies", f"dept.{VICTIM}.sign",
                              json.dumps(reply_body(victim_assignment)).encode(),
                              pika.BasicProperties(user_id=f"{bus.prefix}dept-{ATTACKER}",
                                                   message_id=str(uuid.uuid4())))
    assert closed.value.reply_code == 403  # ACCESS_REFUSED by the topic permission


def test_a_reply_without_user_id_is_refused_and_changes_nothing(bus, urls, staff):
    reg_no = bus.receipt(bus.submit(appeal_body(title="施工许可办理慢",
                                                content=f"申请两周无答复（{uuid.uuid4().hex}）")))["reg_no"]
    own = bus.dept_message(ATTACKER, "assignment", reg_no)
    before = state_of(urls, staff, own)
    bus.reply(ATTACKER, "sign", reply_body(own), user_id=None)
    refused = attacker_result(bus, reg_no)
    assert refused["status"] == "refused"
    assert "no user_id" in refused["errors"]["user_id"][0]
    time.sleep(1)
    assert state_of(urls, staff, own) == before == ("assigned", [])


def test_a_malformed_retry_header_stops_nothing(bus, urls, staff):
    reg_no = bus.receipt(bus.submit(appeal_body(title="施工许可办理慢",
                                                content=f"申请两周无答复（{uuid.uuid4().hex}）")))["reg_no"]
    own = bus.dept_message(ATTACKER, "assignment", reg_no)
    # Once this made the consumer raise before its error handling, killing the container.
    bus.reply(ATTACKER, "sign", reply_body(own), headers={"x-attempt": "x", "x-death": "y"})
    assert attacker_result(bus, reg_no)["status"] == "accepted"  # read as a first delivery
    for service in ("intake", "dispatch", "supervision", "reporting"):
        assert requests.get(f"{urls[service]}/health", timeout=5).status_code == 200


def test_reusing_another_departments_message_id_suppresses_nothing(
        bus, urls, staff, victim_assignment):
    message_id = str(uuid.uuid4())
    # The attacker sends first, with the id the victim will use.
    bus.reply(ATTACKER, "sign", reply_body(victim_assignment), message_id=message_id)
    assert attacker_result(bus, victim_assignment["reg_no"])["status"] == "refused"
    bus.reply(VICTIM, "sign", reply_body(victim_assignment), message_id=message_id)
    result = bus.dept_message(VICTIM, "reply_result", victim_assignment["reg_no"])
    assert result["status"] == "accepted"
    assert state_of(urls, staff, victim_assignment)[0] == "signed"


def registered(urls, staff, marker: str) -> int:
    """How many appeals of the enterprise named with ``marker`` intake holds."""
    return requests.get(f"{urls['intake']}/appeals", headers=staff,
                        params={"q": marker}).json()["total"]


def marked_body(marker: str, **overrides) -> dict:
    body = appeal_body(**overrides)
    body["enterprise"] = {**body["enterprise"], "name": f"昆明{marker}科技有限公司"}
    return body


def test_a_source_system_cannot_submit_as_another(bus, urls, staff):
    victim = "investment_matrix"
    marker = f"spoof{uuid.uuid4().hex[:12]}"
    # hotline_12345's user may publish only appeal.submit.hotline_12345: it claims to be
    # the victim in the body and in the retry header.
    message_id = bus.submit(marked_body(marker, source=victim), headers={
        "x-original-routing-key": f"appeal.submit.{victim}",
        "x-original-user-id": f"{bus.prefix}src-{victim}", "x-attempt": 2})
    receipt = bus.receipt(message_id)
    assert receipt["status"] == "rejected" and "source_system" in receipt["errors"]
    with pytest.raises(TimeoutError):  # the victim hears nothing of it
        bus.wait_for(f"receipts.{victim}", lambda b, p: b.get("message_id") == message_id, 2)
    assert registered(urls, staff, marker) == 0


def test_reusing_another_sources_message_id_suppresses_nothing(bus):
    message_id = str(uuid.uuid4())
    first = bus.receipt(bus.submit(appeal_body(), message_id=message_id))
    victim = "investment_matrix"
    bus.submit(appeal_body(source=victim, channel="investment_matrix"), source=victim,
               message_id=message_id)
    second = bus.receipt(message_id, source=victim)
    assert first["status"] == "accepted" and second["status"] == "accepted", second
    assert first["reg_no"] != second["reg_no"]


def test_a_submission_without_user_id_is_rejected_and_registers_nothing(bus, urls, staff):
    marker = f"anon{uuid.uuid4().hex[:12]}"
    body = marked_body(marker)
    message_id = bus.submit(body, user_id=None)
    receipt = bus.receipt(message_id)
    assert receipt["status"] == "rejected" and "no user_id" in receipt["errors"]["user_id"][0]
    assert registered(urls, staff, marker) == 0
    # The same appeal sent properly registers (and shows that the count can move).
    assert bus.receipt(bus.submit(body))["status"] == "accepted"
    assert registered(urls, staff, marker) == 1
