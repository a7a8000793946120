from datetime import UTC, datetime

import pytest
from marshmallow import ValidationError

from appeals_common.envelope import Event
from appeals_common.schemas import REPLY_SCHEMAS, InboundAppealSchema, errors_by_field
from services.intake.domain import content_hash, format_reg_no, source_from_routing_key

NOW = datetime(2026, 11, 27, 2, 0, tzinfo=UTC)


def valid() -> dict:
    return {"schema_version": 1, "source_system": "hotline_12345", "external_id": "e-1",
            "channel": "hotline_12345", "submitted_at": "2026-11-27T09:00:00+08:00",
            "enterprise": {"name": "昆明某某有限公司", "uscc": "91110000600037341L",
                           "contact_name": "张三", "contact_phone": "13800138000"},
            "title": "施工许可", "content": "内容 '; DROP TABLE appeals;-- 😀 mixed Ελληνικά"}


def errors(body: dict) -> dict:
    with pytest.raises(ValidationError) as err:
        InboundAppealSchema(now=NOW).load(body)
    return errors_by_field(err.value)


def test_valid_body_loads_verbatim():
    loaded = InboundAppealSchema(now=NOW).load(valid())
    assert loaded["content"] == valid()["content"]
    assert loaded["urgency"] == "normal"


@pytest.mark.parametrize("path,value,field", [
    (("enterprise", "uscc"), "91110000600037341X", "enterprise.uscc"),
    (("enterprise", "uscc"), "123", "enterprise.uscc"),
    (("enterprise", "contact_phone"), "12345", "enterprise.contact_phone"),
    (("enterprise", "contact_phone"), "+1 212 555 0100", "enterprise.contact_phone"),
    (("channel",), "carrier_pigeon", "channel"),
    (("urgency",), "asap", "urgency"),
    (("submitted_at",), "2026-11-27T09:00:00", "submitted_at"),
    (("submitted_at",), "2027-01-01T00:00:00+08:00", "submitted_at"),
    (("title",), "x" * 201, "title"),
    (("content",), "x" * 5001, "content"),
    (("schema_version",), 2, "schema_version"),
    (("attachments",), [{"name": "a", "url": "http://example.com/a.pdf"}], "attachments.0.url"),
])
def test_field_errors(path, value, field):
    body = valid()
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert field in errors(body)


def test_missing_and_unknown_fields_each_named():
    body = valid()
    del body["title"]
    body["surprise"] = 1
    found = errors(body)
    assert "title" in found and "surprise" in found


def test_landline_accepted():
    body = valid()
    body["enterprise"]["contact_phone"] = "0871-65123456"
    InboundAppealSchema(now=NOW).load(body)


def test_reply_schemas():
    base = {"schema_version": 1, "assignment_id": "a", "reg_no": "WH-2026-000001",
            "replied_at": "2026-11-27T10:00:00+08:00"}
    REPLY_SCHEMAS["sign"]().load(base)
    with pytest.raises(ValidationError) as err:
        REPLY_SCHEMAS["respond"]().load({**base, "outcome": "maybe"})
    assert {"outcome", "reply", "contacted_at"} <= set(err.value.messages)


def test_envelope_roundtrip():
    evt = Event("appeal.registered", "intake", NOW, {"reg_no": "WH-2026-000001"}, appeal_id="x")
    again = Event.from_json(evt.to_json())
    assert again == evt


def test_intake_domain_rules():
    assert format_reg_no("WH", 2026, 123) == "WH-2026-000123"
    assert source_from_routing_key("appeal.submit.hotline_12345") == "hotline_12345"
    assert source_from_routing_key("appeal.submit.a.b") is None
    assert source_from_routing_key("appeal.other.x") is None
    a, b = valid(), valid()
    b["external_id"] = "other"
    assert content_hash(a) == content_hash(b), "the key is not part of the content"
    b["title"] = "不同"
    assert content_hash(a) != content_hash(b)


@pytest.mark.parametrize(("submitted_at", "message"), [
    ("2026-11-27T10:10:00+08:00", "must not be in the future"),  # 10 min ahead of NOW
    ("2025-11-20T09:00:00+08:00", "must not be more than 366 days ago"),
    ("1970-01-01T00:00:00+00:00", "must not be more than 366 days ago"),
])
def test_submitted_at_is_bounded_both_ways(submitted_at: str, message: str):
    assert message in errors({**valid(), "submitted_at": submitted_at})["submitted_at"][0]


def test_submitted_at_within_clock_skew_and_age_loads():
    for submitted_at in ("2026-11-27T10:04:00+08:00", "2025-11-27T10:00:00+08:00"):
        InboundAppealSchema(now=NOW).load({**valid(), "submitted_at": submitted_at})


@pytest.mark.parametrize(("action", "field", "extra"), [
    ("sign", "replied_at", {}),
    ("respond", "contacted_at", {"outcome": "solved", "reply": "ok"}),
])
def test_reply_times_may_not_lie_in_the_future(action: str, field: str, extra: dict):
    body = {"schema_version": 1, "assignment_id": "a", "reg_no": "WH-2026-000001",
            "replied_at": "2026-11-27T10:00:00+08:00",
            "contacted_at": "2026-11-27T09:00:00+08:00", **extra}
    if action == "sign":
        body.pop("contacted_at")
    REPLY_SCHEMAS[action](now=NOW).load(body)
    with pytest.raises(ValidationError) as err:
        REPLY_SCHEMAS[action](now=NOW).load({**body, field: "2026-11-28T10:00:00+08:00"})
    assert list(errors_by_field(err.value)) == [field]
