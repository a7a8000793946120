"""Hostile input on the bus against real PostgreSQL (DESIGN §9): a body nested 40,000 to
100,000 levels deep, or text with NUL and bidi overrides, gets a refusal that says why - a
rejected receipt from intake, a refused reply_result from dispatch - never a crash, a
dead letter or a stored NUL."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from appeals_common.nameko_ext import Delivery
from appeals_common.topology import REJECTED_QUEUE
from services.dispatch import usecases as dispatch_usecases
from services.intake import usecases as intake_usecases
from services.intake.models import Appeal
from tests.intake_support import intake_context, intake_runtime
from tests.integration.test_dispatch_rules import CTX as DISPATCH_CTX
from tests.integration.test_dispatch_rules import Dispatch, lead_of

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)
INTAKE_CTX = intake_context()
# Both under the 256 KiB body limit, both far past Python's recursion limit.
DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"schema_version": 1, "x": ' + b'{"a":' * 40_000 + b"1" + b"}" * 40_001
TOO_DEEP = "nests arrays and objects more than 32 levels deep (the limit is 32)"


@pytest.fixture
def intake(databases):
    rt = intake_runtime(databases.url(f"hostile_intake_{uuid.uuid4().hex[:6]}"), NOW)
    yield rt
    rt.store.dispose()



def outbox(runtime) -> list[dict]:
    with runtime.store.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(
            select(runtime.store.outbox).order_by(runtime.store.outbox.c.id))]


def submit(runtime, body: bytes) -> tuple[str, str]:
    message_id = str(uuid.uuid4())
    status = intake_usecases.handle_inbound(runtime, INTAKE_CTX, Delivery(
        body=body, routing_key="appeal.submit.hotline_12345", exchange="appeals.inbound",
        message_id=message_id, content_type="application/json", headers={}, attempt=1,
        user_id="src-hotline_12345"))
    return status, message_id


def receipt_and_kept_copy(runtime, message_id: str) -> tuple[dict, dict]:
    rows = outbox(runtime)
    receipts = [json.loads(r["body"]) for r in rows if r["routing_key"] == "receipt.hotline_12345"]
    (receipt,) = [r for r in receipts if r["message_id"] == message_id]
    (kept,) = [r for r in rows if r["routing_key"] == REJECTED_QUEUE and
               json.loads(r["headers"]).get("x-original-message-id") == message_id]
    return receipt, kept


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["array", "object"])
def test_an_inbound_appeal_nested_too_deep_gets_a_rejected_receipt(intake, body):
    status, message_id = submit(intake, body)
    assert status == "rejected"
    receipt, kept = receipt_and_kept_copy(intake, message_id)
    assert receipt["status"] == "rejected"
    assert receipt["errors"]["_body"] == [f"body {TOO_DEEP}"]
    assert "reg_no" not in receipt
    assert bytes(kept["body"]) == body, "the raw message is kept as it came"
    assert TOO_DEEP in json.loads(json.loads(kept["headers"])["x-errors"])["_body"][0]


def test_an_inbound_appeal_with_nul_and_bidi_is_rejected_field_by_field(intake):
    from tests.e2e.bus import appeal_body

    body = appeal_body(external_id="hostile-1", submitted_at=NOW.isoformat())
    body["enterprise"]["contact_name"] = "张\x00三"
    body["title"] = "退税\u202egnp.exe"
    body["content"] = "第一行\r\n第二行\n第三行"  # line breaks are fine
    status, message_id = submit(intake, json.dumps(body, ensure_ascii=False).encode())
    assert status == "rejected"
    receipt, _ = receipt_and_kept_copy(intake, message_id)
    assert set(receipt["errors"]) == {"enterprise.contact_name", "title"}
    assert receipt["errors"]["enterprise.contact_name"][0].startswith(
        "contains a control character (U+0000) at character 2")
    assert "(U+202E RIGHT-TO-LEFT OVERRIDE) at character 3" in receipt["errors"]["title"][0]
    with intake.store.read() as session:
        assert session.scalar(select(func.count()).select_from(Appeal)) == 0

    body["enterprise"]["contact_name"], body["title"] = "张三", "退税进度"
    status, _ = submit(intake, json.dumps(body, ensure_ascii=False).encode())
    assert status == "accepted"


def reply_raw(d: Dispatch, dept: str, action: str, body: bytes) -> dict:
    dispatch_usecases.on_reply(d.runtime, DISPATCH_CTX, Delivery(
        body, f"dept.{dept}.{action}", "appeals.replies", str(uuid.uuid4()),
        "application/json", {}, 1, user_id=f"dept-{dept}"))
    return [m for m in d.new() if m.get("kind") == "reply_result"][-1]


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["array", "object"])
def test_a_reply_nested_too_deep_is_refused_saying_so(d, body):
    reg_no = d.register()
    d.new()
    result = reply_raw(d, "zjj", "sign", body)
    assert result["status"] == "refused"
    assert result["errors"] == {"_body": [f"body {TOO_DEEP}"]}
    assert (result["reg_no"], result["assignment_id"]) == ("", None)
    assert lead_of(d, reg_no)["state"] == "assigned", "nothing changed"


def test_a_reply_with_hidden_characters_is_refused_by_field_and_echo_is_clean(d):
    reg_no = d.register()
    d.new()
    lead = lead_of(d, reg_no)
    body = {"schema_version": 1, "assignment_id": lead["assignment_id"], "reg_no": reg_no,
            "replied_at": "2026-11-27T12:00:00+08:00", "operator": "李\u2066四"}
    result = reply_raw(d, "zjj", "sign", json.dumps(body).encode())
    assert result["status"] == "refused"
    assert set(result["errors"]) == {"operator"}
    assert "(U+2066 LEFT-TO-RIGHT ISOLATE)" in result["errors"]["operator"][0]
    assert (result["reg_no"], result["assignment_id"]) == (reg_no, lead["assignment_id"])

    hostile_echo = {**body, "reg_no": reg_no + "\x00", "operator": "李四"}
    result = reply_raw(d, "zjj", "sign", json.dumps(hostile_echo).encode())
    assert result["status"] == "refused" and "reg_no" in result["errors"]
    assert result["reg_no"] == "", "a hidden character is not echoed back"

    result = reply_raw(d, "zjj", "sign", json.dumps({**body, "operator": "李四"}).encode())
    assert result["status"] == "accepted"


def test_a_reply_larger_than_the_body_limit_is_refused(d):
    d.register()
    d.new()
    result = reply_raw(d, "zjj", "sign", b" " * (256 * 1024 + 1))
    assert result["status"] == "refused"
    assert result["errors"] == {"_body": ["message body larger than 262144 bytes"]}
