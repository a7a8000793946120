"""Personal data (DESIGN §9): phone numbers however written, contacts' names, whole views for
a viewer, department tokens that name no known department, and what reaches logs and
dead-letter headers (department client, the suite's consumer, database errors)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import jwt
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from appeals_common.auth import AuthError, authenticate, issue_token, known_departments
from appeals_common.db import make_engine
from appeals_common.nameko_ext import Delivery, ReliableConsumer
from appeals_common.privacy import (
    mask_name,
    mask_names_in_text,
    mask_personal,
    mask_phone,
    mask_phones_in_text,
    mask_text,
)
from department_client.client import DepartmentClient, Incoming, loggable

SECRET = "s" * 40


# --- phone numbers in free text ---------------------------------------------------------------

@pytest.mark.parametrize("written", [
    "13800138000", "138-0013-8000", "138 0013 8000", "138  0013  8000", "138 - 0013 - 8000",
    "1380 013 8000", "138 0013-8000",
    "１３８００１３８０００", "１３８－００１３－８０００", "１３８ ００１３ ８０００", "138—0013—8000",
    "+8613800138000", "+86 138 0013 8000", "+86-138-0013-8000", "(+86) 138 0013 8000",
    "0086 13800138000", "86 13800138000", "＋８６ １３８００１３８０００",
    "＋８６－１３８－００１３－８０００",
])
def test_a_mobile_however_written_is_masked(written):
    masked = mask_phones_in_text(f"请致电{written}，谢谢")
    assert masked == "请致电138****8000，谢谢", written


@pytest.mark.parametrize("written", [
    "0871-65123456", "087165123456", "0871 6512 3456", "0871-6512-3456", "(0871)65123456",
    "（０８７１）６５１２３４５６", "+86 (0871) 65123456",
])
def test_a_landline_however_written_is_masked(written):
    assert mask_phones_in_text(f"座机{written}。") == "座机087****3456。", written


@pytest.mark.parametrize("kept", [
    "WH-2026-000123", "91530102MA6K13812345678X", "2026-11-27T02:00:00+08:00", "138001380001",
    "金额1380元", "ZD-WH-2026-000123-zjj-20261127101500", "第12期", "a13800138000b",
])
def test_codes_dates_and_long_numbers_are_left_alone(kept):
    assert mask_phones_in_text(kept) == kept


def test_letters_on_one_side_do_not_hide_a_number():
    assert mask_phones_in_text("tel13800138000") == "tel138****8000"
    assert mask_phones_in_text("电话:13800138000（张先生）") == "电话:138****8000（张先生）"


def test_mask_phone_of_a_field():
    assert mask_phone("１３８００１３８０００") == "138****8000"
    assert mask_phone("0086 138 0013 8000") == "138****8000"
    assert mask_phone("+86 138-0013-8000") == "138****8000"
    assert mask_phone(None) == mask_phone("") == ""


# --- names -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,masked", [
    ("张三", "张*"), ("欧阳娜娜", "欧***"), (" 李四 ", "李*"), ("张", "*"), ("", ""), (None, ""),
    ("张*", "张*")])
def test_mask_name_keeps_the_first_character(name, masked):
    assert mask_name(name) == masked


def test_names_in_text():
    assert mask_names_in_text("联系人张三，张三的电话", ["张三", None, "张"]) == "联系人张*，张*的电话"
    assert mask_text("张三 138-0013-8000", ["张三"]) == "张* 138****8000"


def test_mask_personal_masks_fields_and_text_and_keeps_identifiers():
    view = {"reg_no": "WH-2026-000123", "assignment_id": "c0ffee00-0000-4000-8000-012345678901",
            "enterprise": {"name": "某公司", "contact_name": "张三", "contact_phone": "13800138000"},
            "title": "张三来电１３８００１３８０００",
            "timeline": [{"detail": {"comments": "已联系张三 138 0013 8000", "grade": "satisfied"}}],
            "report": {"service_items": [{"contact_name": "王小五", "contact_phone": "0871-65123456",
                                          "remarks": "王小五说再议"}]},
            "count": 3, "on_time": True, "nothing": None}
    masked = mask_personal(view)
    assert masked["enterprise"] == {"name": "某公司", "contact_name": "张*",
                                    "contact_phone": "138****8000"}
    assert masked["title"] == "张*来电138****8000"
    assert masked["timeline"][0]["detail"]["comments"] == "已联系张* 138****8000"
    assert masked["report"]["service_items"][0] == {
        "contact_name": "王**", "contact_phone": "087****3456", "remarks": "王**说再议"}
    assert masked["reg_no"] == view["reg_no"] and masked["assignment_id"] == view["assignment_id"]
    assert (masked["count"], masked["on_time"], masked["nothing"]) == (3, True, None)
    assert view["enterprise"]["contact_name"] == "张三", "the original is not changed"
    assert mask_personal([{"title": "x"}], names=["x"]) == [{"title": "x"}]  # 1 char: left


# --- department tokens ---------------------------------------------------------------------------

def test_a_department_token_must_name_a_known_department():
    assert "zjj" in known_departments()
    ok = authenticate("Bearer " + issue_token(SECRET, "u", "department", "zjj"), SECRET)
    assert ok.dept_code == "zjj"

    def token(**claims) -> str:
        now = datetime.now(UTC)
        return "Bearer " + jwt.encode({"sub": "u", "iss": "appeals-suite", "iat": now,
                                       "exp": now + timedelta(hours=1), **claims}, SECRET,
                                      algorithm="HS256")

    for claims, message in (({"role": "department"}, "names no department"),
                            ({"role": "department", "dept": ""}, "names no department"),
                            ({"role": "department", "dept": 7}, "names no department"),
                            ({"role": "department", "dept": "nosuchdept"}, "unknown department")):
        with pytest.raises(AuthError, match=message) as refused:
            authenticate(token(**claims), SECRET)
        assert refused.value.status == 403
    # Another role's stray `dept` claim means nothing.
    assert authenticate(token(role="viewer", dept="zjj"), SECRET).dept_code is None


# --- logs and dead-letter headers ----------------------------------------------------------------

ASSIGNMENT = {"kind": "assignment", "message_id": "m-1", "reg_no": "WH-2026-000123",
              "assignment_id": "a-1", "title": "施工许可", "content": "请联系张三13800138000",
              "enterprise": {"name": "某公司", "contact_name": "张三", "contact_phone": "13800138000"}}


def test_the_department_client_gives_up_without_logging_the_body(caplog):
    client = DepartmentClient("amqp://unused/", "zjj", max_attempts=1, retry_delay=0.0)
    client._conn = SimpleNamespace(is_open=True, sleep=lambda seconds: None)
    channel = SimpleNamespace(acks=[], nacks=[])
    channel.basic_ack = channel.acks.append
    channel.basic_nack = lambda tag, requeue=True: channel.nacks.append((tag, requeue))
    raw = json.dumps(ASSIGNMENT, ensure_ascii=False).encode()
    message = Incoming(body=ASSIGNMENT, message_id="m-1", raw=raw, delivery_tag=1)

    def refuses(message: Incoming) -> None:
        raise RuntimeError("endpoint answered 400: 张三 138-0013-8000 unknown")

    with caplog.at_level(logging.DEBUG, logger="department_client"):
        client._dispatch(channel, refuses, message)
    assert channel.nacks == [(1, False)]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "giving up on message m-1 (assignment) for WH-2026-000123" in logged
    assert "138****8000" in logged and "张*" in logged
    for secret in ("13800138000", "138-0013-8000", "张三", "请联系", "施工许可"):
        assert secret not in logged, secret
    assert loggable({"reply": ["１３８００１３８０００"]}) == "{'reply': ['138****8000']}"


def test_dead_letter_headers_mask_phones_in_the_error():
    published: list[dict] = []
    consumer = SimpleNamespace(
        container=SimpleNamespace(service_name="intake"), queue_name="intake.inbound",
        settings=SimpleNamespace(retry_delays_ms=()),
        publisher=SimpleNamespace(publish_batch=published.extend))
    delivery = Delivery(body=b"{}", routing_key="appeal.submit.x", exchange="appeals.inbound",
                        message_id="m-1", content_type="application/json", headers={}, attempt=1)
    try:
        raise IntegrityError("INSERT", {}, Exception(
            "duplicate key value violates unique constraint\n"
            "DETAIL:  Key (contact_phone)=(13800138000) already exists."))
    except IntegrityError:
        ReliableConsumer._park(consumer, delivery, sys.exc_info())
    (parked,) = published
    headers = parked["headers"]
    assert parked["routing_key"] == "intake.inbound.dlq"
    for name in ("x-last-error", "x-error-traceback"):
        assert "13800138000" not in headers[name] and "138****8000" in headers[name], name


def test_database_errors_name_no_parameters(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'hide.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, phone TEXT)"))
        conn.execute(text("INSERT INTO t VALUES (1, :phone)"), {"phone": "13800138000"})
    with pytest.raises(IntegrityError) as failed, engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1, :phone)"), {"phone": "13912345678"})
    assert "13912345678" not in str(failed.value)
    assert "hide_parameters" in str(failed.value)
    engine.dispose()


def test_as_read_by_masks_for_viewers_only():
    from types import SimpleNamespace

    from appeals_common.privacy import as_read_by

    view = [{"assignment_id": "a-13800138000", "return_reason": "联系人张三 13800138000 称不属实",
             "contact_name": "张三"}]
    masked = as_read_by(SimpleNamespace(role="viewer"), view)
    assert masked[0]["assignment_id"] == "a-13800138000"  # identifiers stay
    assert "13800138000" not in masked[0]["return_reason"] and "张三" not in masked[0]["return_reason"]
    assert masked[0]["contact_name"] == "张*"
    assert as_read_by(SimpleNamespace(role="bureau_staff"), view) == view
