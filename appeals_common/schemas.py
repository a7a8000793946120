"""Marshmallow schemas for every message on the bus (DESIGN §5).

The same schemas validate HTTP, RPC and bus input, so a rule is written once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import phonenumbers
from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates,
    validates_schema,
)
from stdnum.cn import uscc as uscc_number

from appeals_common.clock import process_clock
from appeals_common.input_guard import escape_hidden, hidden_character_error
from appeals_common.reference import (
    ACTIVITY_KINDS,
    CHANNELS,
    FIVE_CHECKS,
    FOLLOWUP_GRADES,
    RESPONSE_OUTCOMES,
    RETURN_REASONS,
    SERVICE_ITEM_STATUSES,
    URGENCIES,
    WALKTHROUGH_LISTS,
    WALKTHROUGH_MODES,
)

SCHEMA_VERSION = 1
MAX_BODY_BYTES = 256 * 1024
TITLE_MAX = 200
CONTENT_MAX = 5000
CODE_RE = r"^[a-z0-9][a-z0-9_-]{0,47}$"  # safe as one routing-key word


def validate_uscc(value: str) -> None:
    """18-character unified social credit code with its GB 32100-2015 check digit."""
    if not uscc_number.is_valid(value):
        raise ValidationError("not a valid unified social credit code (GB 32100-2015 check digit)")


def validate_cn_phone(value: str) -> None:
    """A mainland China mobile or landline number."""
    try:
        number = phonenumbers.parse(value, "CN")
    except phonenumbers.NumberParseException:
        raise ValidationError("not a phone number") from None
    if number.country_code != 86 or not phonenumbers.is_valid_number(number):
        raise ValidationError("not a valid mainland China mobile or landline number")


def schema_version_field() -> fields.Integer:
    return fields.Integer(required=True, strict=True, validate=validate.Equal(
        SCHEMA_VERSION, error=f"unsupported schema_version; supported: {SCHEMA_VERSION}"))


class AwareDateTime(fields.AwareDateTime):
    """ISO 8601 with an explicit offset; naive times are refused, not guessed."""

    def __init__(self, **kwargs):
        super().__init__(format="iso", **kwargs)


def refuse_hidden_characters(value: Any) -> Any:
    """A string field's first step: refuse control, bidirectional-formatting and other
    hidden characters (appeals_common/input_guard.py says which, and why)."""
    if isinstance(value, str):
        error = hidden_character_error(value)
        if error:
            raise ValidationError(error)
    return value


def guard_text(field: fields.Field) -> None:
    """Make `field` - and the fields inside a List, Tuple or Dict field (keys too) -
    refuse hidden characters before anything else, if it takes text."""
    if isinstance(field, fields.String) and refuse_hidden_characters not in field.pre_load:
        field.pre_load.insert(0, refuse_hidden_characters)
    inner: list[fields.Field | None] = []
    if isinstance(field, fields.List):
        inner.append(field.inner)
    elif isinstance(field, fields.Tuple):
        inner.extend(field.tuple_fields)
    elif isinstance(field, fields.Mapping):
        inner.extend((field.key_field, field.value_field))
    for sub in inner:
        if sub is not None:
            guard_text(sub)


class StrictSchema(Schema):
    """Every input schema's base: unknown fields are refused, and so is text with hidden
    characters, in every string field (nested schemas are StrictSchemas too), whoever
    declares it."""

    class Meta:
        unknown = RAISE

    def on_bind_field(self, field_name: str, field_obj: fields.Field) -> None:
        super().on_bind_field(field_name, field_obj)
        guard_text(field_obj)


class UsccField(fields.String):
    """Stored in its standard form: 18 characters, upper case, no spaces or hyphens."""

    def _deserialize(self, value, attr, data, **kwargs):  # type: ignore[override]
        text = super()._deserialize(value, attr, data, **kwargs)
        validate_uscc(text)
        return uscc_number.compact(text)


class EnterpriseSchema(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    uscc = UsccField(required=True)
    contact_name = fields.String(required=True, validate=validate.Length(min=1, max=50))
    contact_phone = fields.String(required=True, validate=validate_cn_phone)


class AttachmentSchema(StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    url = fields.Url(required=True, schemes={"https"}, validate=validate.Length(max=2000))


class AppealFieldsSchema(StrictSchema):
    """What an appeal says, whatever channel it came in by."""

    channel = fields.String(required=True, validate=validate.OneOf(list(CHANNELS)))
    enterprise = fields.Nested(EnterpriseSchema, required=True)
    title = fields.String(required=True, validate=validate.Length(min=1, max=TITLE_MAX))
    content = fields.String(required=True, validate=validate.Length(min=1, max=CONTENT_MAX))
    category = fields.String(load_default=None, validate=validate.Length(max=64))
    industry_chain = fields.String(load_default=None, validate=validate.Length(max=64))
    urgency = fields.String(load_default="normal", validate=validate.OneOf(list(URGENCIES)))
    activity_id = fields.String(load_default=None, validate=validate.Length(max=64))
    attachments = fields.List(
        fields.Nested(AttachmentSchema), load_default=list, validate=validate.Length(max=20)
    )


# Other systems' clocks may run a little ahead of ours.
CLOCK_SKEW = timedelta(minutes=5)
# An appeal submitted longer ago than this is a replay or a wrong date, not a late delivery.
SUBMITTED_AT_MAX_AGE = timedelta(days=366)


class TimedSchema(StrictSchema):
    """A schema whose times are checked against "now": the suite's clock, given by the
    caller (real time when none is given)."""

    def __init__(self, *, now: datetime | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.now = now or process_clock().now()

    def not_in_future(self, value: datetime) -> None:
        if value - self.now > CLOCK_SKEW:
            raise ValidationError(f"must not be in the future (now is {self.now.isoformat()})")


class InboundAppealSchema(AppealFieldsSchema, TimedSchema):
    """Body v1 of `appeals.inbound` / `appeal.submit.<source_system>`."""

    schema_version = schema_version_field()
    source_system = fields.String(required=True, validate=validate.Regexp(CODE_RE))
    external_id = fields.String(required=True, validate=validate.Length(min=1, max=128))
    submitted_at = AwareDateTime(required=True)

    @validates("submitted_at")
    def _plausible(self, value: datetime, **_: object) -> None:
        self.not_in_future(value)
        if self.now - value > SUBMITTED_AT_MAX_AGE:
            raise ValidationError(f"must not be more than {SUBMITTED_AT_MAX_AGE.days} days "
                                  f"ago (now is {self.now.isoformat()})")


class StaffAppealSchema(AppealFieldsSchema):
    """Registration by bureau staff over HTTP or RPC."""

    external_id = fields.String(load_default=None, validate=validate.Length(min=1, max=128))


class OnSpotAppealSchema(StaffAppealSchema):
    """当场办结: registered and answered at once."""

    answer = fields.String(required=True, validate=validate.Length(min=1, max=CONTENT_MAX))


class ReclassifySchema(StrictSchema):
    category = fields.String(load_default=None, validate=validate.Length(max=64))
    industry_chain = fields.String(load_default=None, validate=validate.Length(max=64))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))

    @validates_schema
    def _something_to_change(self, data: dict, **_: object) -> None:
        if data.get("category") is None and data.get("industry_chain") is None:
            raise ValidationError("give category, industry_chain or both", "_schema")


class WithdrawSchema(StrictSchema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))


class ActivitySchema(StrictSchema):
    activity_id = fields.String(load_default=None, validate=validate.Regexp(CODE_RE))
    kind = fields.String(required=True, validate=validate.OneOf(list(ACTIVITY_KINDS)))
    held_on = fields.Date(required=True)
    title = fields.String(required=True, validate=validate.Length(min=1, max=200))
    lead_unit = fields.String(required=True, validate=validate.Regexp(CODE_RE))
    industry_chain = fields.String(load_default=None, validate=validate.Length(max=64))


class SearchSchema(StrictSchema):
    q = fields.String(load_default=None, validate=validate.Length(min=1, max=200))
    uscc = fields.String(load_default=None, validate=validate.Length(max=32))
    state = fields.String(load_default=None, validate=validate.Length(max=24))
    channel = fields.String(load_default=None, validate=validate.OneOf(list(CHANNELS)))
    registered_from = AwareDateTime(data_key="from", load_default=None)
    registered_to = AwareDateTime(data_key="to", load_default=None)
    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=100_000))
    page_size = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))


class ReceiptSchema(Schema):
    source_system = fields.String(required=True)
    external_id = fields.String(allow_none=True)
    message_id = fields.String(allow_none=True)
    status = fields.String(required=True, validate=validate.OneOf(["accepted", "duplicate", "rejected"]))
    appeal_id = fields.String(allow_none=True)
    reg_no = fields.String(allow_none=True)
    errors = fields.Dict(keys=fields.String(), values=fields.Raw())


# --- department messages on appeals.dispatch / dept.<dept_code> ---------------------------

class DepartmentMessageSchema(Schema):
    class Meta:
        unknown = EXCLUDE  # departments read; the suite adds fields in minor versions

    schema_version = fields.Integer(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(
        ["assignment", "reply_result", "reminder", "supervision_notice",
         "key_supervision_order", "reassigned", "return_decision", "extension_decision",
         "deadlines_changed"]))
    message_id = fields.String(required=True)
    sent_at = AwareDateTime(required=True)
    dept_code = fields.String(required=True)
    reg_no = fields.String(required=True)
    assignment_id = fields.String(allow_none=True)


class UnitsSchema(Schema):
    lead = fields.String(required=True)
    co = fields.List(fields.String(), required=True)


class AssignmentMessageSchema(DepartmentMessageSchema):
    appeal_id = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(["lead", "co"]))
    units = fields.Nested(UnitsSchema, required=True)
    enterprise = fields.Dict(required=True)
    title = fields.String(required=True)
    content = fields.String(required=True)
    category = fields.String(allow_none=True)
    industry_chain = fields.String(allow_none=True)
    urgency = fields.String(required=True)
    sign_by = AwareDateTime(required=True)
    return_by = AwareDateTime(required=True)
    respond_by = AwareDateTime(required=True)
    deadlines_provisional = fields.Boolean(load_default=False)


class ReplyResultMessageSchema(DepartmentMessageSchema):
    action = fields.String(required=True)
    reply_message_id = fields.String(allow_none=True)
    status = fields.String(required=True, validate=validate.OneOf(["accepted", "refused"]))
    errors = fields.Dict(keys=fields.String(), values=fields.Raw())


# --- department replies on appeals.replies / dept.<dept_code>.<action> -------------------

class ReplyBaseSchema(TimedSchema):
    schema_version = schema_version_field()
    assignment_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    reg_no = fields.String(required=True, validate=validate.Length(min=1, max=32))
    replied_at = AwareDateTime(required=True)
    operator = fields.String(load_default=None, validate=validate.Length(max=50))

    @validates("replied_at")
    def _replied_not_in_future(self, value: datetime, **_: object) -> None:
        self.not_in_future(value)


class SignReplySchema(ReplyBaseSchema):
    pass


class RespondReplySchema(ReplyBaseSchema):
    outcome = fields.String(required=True, validate=validate.OneOf(list(RESPONSE_OUTCOMES)))
    reply = fields.String(required=True, validate=validate.Length(min=1, max=CONTENT_MAX))
    contacted_at = AwareDateTime(required=True)

    @validates("contacted_at")
    def _contacted_not_in_future(self, value: datetime, **_: object) -> None:
        self.not_in_future(value)


class ReturnReplySchema(ReplyBaseSchema):
    reason_code = fields.String(required=True, validate=validate.OneOf(list(RETURN_REASONS)))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))
    suggested_unit = fields.String(load_default=None, validate=validate.Regexp(CODE_RE))


class ExtendReplySchema(ReplyBaseSchema):
    requested_until = AwareDateTime(required=True)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))

    @validates("requested_until")
    def _in_future(self, value: datetime, **_: object) -> None:
        # Against the assignment's deadlines (after respond_by, within the category's
        # limit) dispatch checks it once it knows the assignment.
        if value <= self.now:
            raise ValidationError(f"must be in the future (now is {self.now.isoformat()})")


class FeedbackReplySchema(ReplyBaseSchema):
    """书面反馈: the lead unit's written answer to a key supervision order."""

    order_no = fields.String(required=True, validate=validate.Length(min=1, max=80))
    feedback = fields.String(required=True, validate=validate.Length(min=1, max=CONTENT_MAX))


REPLY_SCHEMAS: dict[str, type[ReplyBaseSchema]] = {
    "sign": SignReplySchema,
    "respond": RespondReplySchema,
    "return": ReturnReplySchema,
    "extend": ExtendReplySchema,
    "feedback": FeedbackReplySchema,
}


# --- bureau decisions in dispatch ---------------------------------------------------------

class ReturnDecisionSchema(StrictSchema):
    accept = fields.Boolean(required=True)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))


class ExtensionDecisionSchema(StrictSchema):
    approve = fields.Boolean(required=True)
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))
    # Approve a shorter extension than asked for.
    respond_by = AwareDateTime(load_default=None)


class OverrideSchema(StrictSchema):
    """The bureau chooses the units itself (override, reassignment, 会商 decision)."""

    lead = fields.String(required=True, validate=validate.Regexp(CODE_RE))
    co = fields.List(fields.String(validate=validate.Regexp(CODE_RE)), load_default=list,
                     validate=validate.Length(max=10))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))


# --- follow-up (回访), taken by supervision over HTTP/RPC ---------------------------------

class FollowupSchema(StrictSchema):
    grade = fields.String(required=True, validate=validate.OneOf(list(FOLLOWUP_GRADES)))
    resolved = fields.Boolean(required=True)
    comments = fields.String(load_default="", validate=validate.Length(max=2000))
    contact_attempts = fields.Integer(load_default=1, strict=True,
                                      validate=validate.Range(min=1, max=20))


class UnreachableClosureSchema(StrictSchema):
    """销号 without a follow-up: the enterprise could not be reached."""

    contact_attempts = fields.Integer(required=True, strict=True, validate=validate.Range(
        min=3, max=50,
        error="close without a follow-up only after at least {min} contact attempts"))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=1000))


# --- 我陪群众走流程 and activity reports, taken by supervision over HTTP/RPC --------------

class WalkthroughFindingSchema(StrictSchema):
    list = fields.String(required=True, validate=validate.OneOf(list(WALKTHROUGH_LISTS)))
    description = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    owner = fields.String(required=True, validate=validate.Regexp(CODE_RE))
    due_at = AwareDateTime(required=True)


class WalkthroughSchema(StrictSchema):
    service_item = fields.String(required=True, validate=validate.Length(min=1, max=200))
    mode = fields.String(required=True, validate=validate.OneOf(list(WALKTHROUGH_MODES)))
    lead_unit = fields.String(required=True, validate=validate.Regexp(CODE_RE))
    walked_on = fields.Date(required=True)
    scores = fields.Dict(keys=fields.String(validate=validate.OneOf(list(FIVE_CHECKS))),
                         values=fields.Integer(strict=True, validate=validate.Range(min=1, max=5)),
                         required=True)
    summary = fields.String(load_default="", validate=validate.Length(max=CONTENT_MAX))
    findings = fields.List(fields.Nested(WalkthroughFindingSchema), load_default=list,
                           validate=validate.Length(max=100))

    @validates_schema
    def _all_five_checks(self, data: dict, **_: object) -> None:
        missing = [k for k in FIVE_CHECKS if k not in data.get("scores", {})]
        if missing:
            raise ValidationError(f"score every 五看 standard; missing {', '.join(missing)}",
                                  "scores")


class ItemClosureSchema(StrictSchema):
    """销号 of one list item: what was done."""

    resolution = fields.String(required=True, validate=validate.Length(min=1, max=2000))


class PatrolPlanSchema(StrictSchema):
    summary = fields.String(required=True, validate=validate.Length(min=1, max=CONTENT_MAX))


class ServiceItemSchema(StrictSchema):
    """One row of 附件3 (巡诊服务事项清单)."""

    enterprise_name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    contact_name = fields.String(load_default="", validate=validate.Length(max=50))
    contact_phone = fields.String(load_default=None, validate=validate_cn_phone)
    item = fields.String(required=True, validate=validate.Length(min=1, max=1000))
    responsible_unit = fields.String(required=True, validate=validate.Regexp(CODE_RE))
    status = fields.String(required=True, validate=validate.OneOf(list(SERVICE_ITEM_STATUSES)))
    reg_no = fields.String(load_default=None, validate=validate.Length(max=32))
    remarks = fields.String(load_default="", validate=validate.Length(max=1000))


class PatrolReportSchema(StrictSchema):
    """链式巡诊开展情况报告: policies delivered, enterprises served, class problems, 附件3."""

    policies_delivered = fields.Integer(required=True, strict=True,
                                        validate=validate.Range(min=0, max=100_000))
    enterprises_served = fields.Integer(required=True, strict=True,
                                        validate=validate.Range(min=0, max=100_000))
    class_problems = fields.List(fields.String(validate=validate.Length(min=1, max=500)),
                                 load_default=list, validate=validate.Length(max=100))
    summary = fields.String(required=True, validate=validate.Length(min=1, max=CONTENT_MAX))
    service_items = fields.List(fields.Nested(ServiceItemSchema), load_default=list,
                                validate=validate.Length(max=500))


def errors_by_field(err: ValidationError) -> dict[str, list[str]]:
    """Flatten marshmallow's nested messages to {"enterprise.uscc": ["..."]}."""
    flat: dict[str, list[str]] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                # A field name is the sender's (an unknown field, a Dict key): escaped.
                key = escape_hidden(str(key))
                walk(f"{prefix}.{key}" if prefix else key, sub)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            flat.setdefault(prefix or "_schema", []).extend(value)
        elif isinstance(value, list):
            for item in value:
                walk(prefix, item)
        else:
            flat.setdefault(prefix or "_schema", []).append(str(value))

    walk("", err.messages)
    return flat


