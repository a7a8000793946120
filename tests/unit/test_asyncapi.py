"""docs/asyncapi.yaml stays true to the code (DESIGN §5, §6). No broker needed.

Two kinds of checks: the document against the code's own definitions (event types,
topology, marshmallow schemas, vocabularies), and the document against the messages the
code really emits - the use cases of intake, dispatch and supervision run on SQLite and
every message they put in their outboxes is validated against the documented schema.
"""

from __future__ import annotations

import json
import re
import sys
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from marshmallow import validate
from sqlalchemy import select

from appeals_common.deadlines import DeadlinePolicy
from appeals_common.envelope import EVENT_TYPES, EVENTS_EXCHANGE, EnvelopeSchema
from appeals_common.reference import (
    ACTIVITY_KINDS,
    CHANNELS,
    FOLLOWUP_GRADES,
    REPLY_ACTIONS,
    RESPONSE_OUTCOMES,
    RETURN_REASONS,
    URGENCIES,
)
from appeals_common.registries import (
    load_categories,
    load_departments,
    load_industry_chains,
    load_source_systems,
)
from appeals_common.schemas import (
    CODE_RE,
    CONTENT_MAX,
    REPLY_SCHEMAS,
    SCHEMA_VERSION,
    TITLE_MAX,
    ActivitySchema,
    AssignmentMessageSchema,
    DepartmentMessageSchema,
    InboundAppealSchema,
    ReceiptSchema,
    ReplyResultMessageSchema,
)
from appeals_common.settings import Settings
from appeals_common.topology import (
    DISPATCH_EXCHANGE,
    INBOUND_EXCHANGE,
    RECEIPTS_EXCHANGE,
    REJECTED_QUEUE,
    REPLIES_EXCHANGE,
    SERVICE_QUEUES,
    build_topology,
    dead_letter_queue,
    dept_queue,
    receipts_queue,
    retry_exchange,
)

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config"
DOC_PATH = REPO / "docs" / "asyncapi.yaml"
# The deadline policy the services load (dispatch's DispatchRules).
POLICY = DeadlinePolicy.from_file(CONFIG / "deadlines.yaml", set(load_categories(CONFIG)))
DOC: dict[str, Any] = yaml.safe_load(DOC_PATH.read_text(encoding="utf-8"))
MESSAGES: dict[str, Any] = DOC["components"]["messages"]
SCHEMAS: dict[str, Any] = DOC["components"]["schemas"]
USCC_LOOSE = "9111 0000-6000 3734 1l"  # the loose input shown in the Uscc description
USCC_COMPACT = "91110000600037341L"


# --- reading the document -------------------------------------------------------------

def resolve(node: Any) -> Any:
    """Follow local `$ref`s (JSON pointers into this document)."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), f"only local references are used: {ref}"
        node = DOC
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def merged(schema: Any) -> tuple[dict[str, Any], set[str]]:
    """Properties and required names of a schema, through `$ref` and `allOf`."""
    schema = resolve(schema)
    props: dict[str, Any] = {}
    required: set[str] = set()
    for part in schema.get("allOf", []):
        sub_props, sub_required = merged(part)
        props.update(sub_props)
        required |= sub_required
    props.update(schema.get("properties", {}))
    required |= set(schema.get("required", []))
    return props, required


def message_payload(message: Any) -> Any:
    return resolve(resolve(message)["payload"])


def channel_messages(channel: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for op in ("publish", "subscribe"):
        if op in channel:
            message = channel[op]["message"]
            found += [resolve(m) for m in message["oneOf"]] if "oneOf" in message else [resolve(message)]
    return found


def amqp_binding(channel: dict[str, Any]) -> dict[str, Any]:
    return resolve(resolve(channel["bindings"])["amqp"])


def enum_of(schema: Any) -> list[Any]:
    schema = resolve(schema)
    if "enum" in schema:
        return schema["enum"]
    for part in schema.get("allOf", []):
        values = enum_of(part)
        if values:
            return values
    return []


def choices(marshmallow_field: Any) -> list[str]:
    validators = marshmallow_field.validators
    return next(list(v.choices) for v in validators if isinstance(v, validate.OneOf))


def required_fields(schema: Any) -> set[str]:
    return {name for name, f in schema.fields.items() if f.required}


def _is_type(value: Any, kind: str) -> bool:
    return {
        "null": value is None,
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "object": isinstance(value, dict),
        "array": isinstance(value, list),
    }[kind]


def problems(schema: Any, value: Any, where: str = "$", closed: bool = True) -> list[str]:
    """A small JSON Schema check covering the keywords this document uses.

    `closed`: an object may hold only documented properties (merged across `allOf`),
    so a field the code adds without documenting it fails the test.
    """
    s = resolve(schema)
    errors: list[str] = []
    for part in s.get("allOf", []):
        errors += problems(part, value, where, closed=False)
    if "oneOf" in s:
        matching = sum(not problems(part, value, where, closed=False) for part in s["oneOf"])
        if matching != 1:
            errors.append(f"{where}: matches {matching} of the oneOf alternatives")
    if "not" in s and not problems(s["not"], value, where, closed=False):
        errors.append(f"{where}: matches a schema it must not match")
    if "const" in s and value != s["const"]:
        errors.append(f"{where}: {value!r} is not {s['const']!r}")
    if "enum" in s and value not in s["enum"]:
        errors.append(f"{where}: {value!r} not in {s['enum']}")
    if "type" in s:
        kinds = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_is_type(value, k) for k in kinds):
            return [*errors, f"{where}: {value!r} is not of type {s['type']}"]
    if isinstance(value, str):
        if len(value) < s.get("minLength", 0) or len(value) > s.get("maxLength", sys.maxsize):
            errors.append(f"{where}: length {len(value)} out of bounds")
        if "pattern" in s and not re.search(s["pattern"], value):
            errors.append(f"{where}: {value!r} does not match {s['pattern']}")
        if s.get("format") == "date-time":
            try:
                if datetime.fromisoformat(value).tzinfo is None:
                    errors.append(f"{where}: {value!r} has no UTC offset")
            except ValueError:
                errors.append(f"{where}: {value!r} is not an ISO 8601 date-time")
        if s.get("format") == "date":
            try:
                date.fromisoformat(value)
                if len(value) != 10:
                    raise ValueError(value)
            except ValueError:
                errors.append(f"{where}: {value!r} is not an ISO 8601 date (YYYY-MM-DD)")
    if _is_type(value, "number") and not s.get("minimum", -sys.maxsize) <= value <= s.get(
            "maximum", sys.maxsize):
        errors.append(f"{where}: {value} out of bounds")
    if isinstance(value, dict):
        props, required = merged(s)
        errors += [f"{where}: missing {name}" for name in sorted(required - set(value))]
        extra = s.get("additionalProperties")
        for key, item in value.items():
            if key in s.get("properties", {}):
                errors += problems(s["properties"][key], item, f"{where}.{key}")
            elif isinstance(extra, dict):
                errors += problems(extra, item, f"{where}.{key}")
            elif key not in props and (extra is False or (closed and props)):
                errors.append(f"{where}: undocumented field {key!r}")
    if isinstance(value, list):
        if len(value) > s.get("maxItems", sys.maxsize):
            errors.append(f"{where}: more than {s['maxItems']} items")
        if "items" in s:
            for i, item in enumerate(value):
                errors += problems(s["items"], item, f"{where}[{i}]")
    return errors


def event_messages() -> dict[str, dict[str, Any]]:
    """Documented messages whose payload is an event envelope, by event type."""
    envelope = "#/components/schemas/Envelope"
    found = {}
    for message in MESSAGES.values():
        payload = message_payload(message)
        if any(part.get("$ref") == envelope for part in payload.get("allOf", [])):
            props, _ = merged(payload)
            found[props["event_type"]["const"]] = message
    return found


def is_reserved(message: dict[str, Any]) -> bool:
    return any(tag.get("name") == "reserved" for tag in message.get("tags", []))


def department_messages() -> dict[str, dict[str, Any]]:
    """The messages of the appeals.dispatch channel, by `kind`."""
    channel = DOC["channels"]["appeals.dispatch/dept.{dept_code}"]
    by_kind = {}
    for message in channel_messages(channel):
        props, _ = merged(message_payload(message))
        kinds = [props["kind"]["const"]] if "const" in props["kind"] else []
        by_kind[message["name"]] = message
        assert not kinds or kinds == [message["name"]], message["name"]
    return by_kind


def topic_matches(binding_key: str, routing_key: str) -> bool:
    """AMQP topic matching: `*` is exactly one word, `#` zero or more."""
    def match(b: list[str], r: list[str]) -> bool:
        if not b:
            return not r
        if b[0] == "#":
            return any(match(b[1:], r[i:]) for i in range(len(r) + 1))
        return bool(r) and b[0] in ("*", r[0]) and match(b[1:], r[1:])

    return match(binding_key.split("."), routing_key.split("."))


def bound_queues(exchange: str, routing_key: str) -> list[str]:
    """The service queues a message with this routing key reaches (SERVICE_QUEUES)."""
    return [queue for queue, bindings in SERVICE_QUEUES.items()
            if any(e == exchange and topic_matches(k, routing_key) for e, k in bindings)]


# --- the document itself -------------------------------------------------------------

def test_document_header() -> None:
    assert DOC["asyncapi"] == "2.6.0"
    server = DOC["servers"]["rabbitmq"]
    assert (server["url"], server["protocol"]) == ("amqp://localhost:5672/", "amqp")
    assert DOC["defaultContentType"] == "application/json"
    trait = DOC["components"]["messageTraits"]["persistentJson"]
    assert trait["contentType"] == "application/json"
    assert trait["x-amqp-properties"]["delivery_mode"] == 2
    for name, trait in DOC["components"]["operationTraits"].items():
        assert trait["bindings"]["amqp"]["deliveryMode"] == 2, name


def test_every_local_reference_resolves() -> None:
    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                resolve(node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(DOC)


def test_channel_parameters_match_channel_names() -> None:
    for name, channel in DOC["channels"].items():
        assert set(re.findall(r"{(\w+)}", name)) == set(channel.get("parameters", {})), name


# --- (1) event types -----------------------------------------------------------------

def test_every_event_type_has_a_message_and_a_channel() -> None:
    documented = event_messages()
    assert set(documented) == set(EVENT_TYPES), "EVENT_TYPES and the documented events differ"
    for event_type in EVENT_TYPES:
        assert event_type in MESSAGES, f"components/messages/{event_type} is missing"
        assert MESSAGES[event_type]["name"] == event_type
        channel = DOC["channels"][f"{EVENTS_EXCHANGE}/{event_type}"]
        assert [m["name"] for m in channel_messages(channel)] == [event_type]
        assert amqp_binding(channel)["exchange"]["name"] == EVENTS_EXCHANGE


def test_envelope_matches_the_code() -> None:
    props, required = merged(SCHEMAS["Envelope"])
    assert set(props) == set(EnvelopeSchema().fields)
    assert required == required_fields(EnvelopeSchema())
    assert props["schema_version"]["const"] == SCHEMA_VERSION


# --- (2) topology --------------------------------------------------------------------

@pytest.fixture(scope="module")
def topology():
    return build_topology(load_departments(CONFIG), load_source_systems(CONFIG))


def _documented_exchanges() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for name, channel in DOC["channels"].items():
        binding = amqp_binding(channel)
        if binding.get("is", "routingKey") == "routingKey":
            exchange = binding["exchange"]
            assert found.get(exchange["name"], exchange) == exchange, name
            found[exchange["name"]] = exchange
    return found


def _documented_queues() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for channel in DOC["channels"].values():
        binding = amqp_binding(channel)
        for queue in binding.get("x-queues", []):
            found[queue["name"]] = {**queue, "exchange": binding["exchange"]["name"]}
        if binding.get("is") == "queue":
            found[binding["queue"]["name"]] = binding["queue"]
    return found


def test_every_exchange_is_documented(topology) -> None:
    documented = _documented_exchanges()
    for exchange in topology.exchanges:
        assert exchange.name in documented, f"exchange {exchange.name} is not documented"
        assert documented[exchange.name]["type"] == exchange.type, exchange.name
        assert documented[exchange.name]["durable"] is True
    assert set(documented) == {e.name for e in topology.exchanges}, "documented exchange not in code"


def test_every_queue_and_binding_is_documented(topology) -> None:
    documented = _documented_queues()
    by_name = {q.name: q for q in topology.queues}
    for name, bindings in SERVICE_QUEUES.items():
        doc = documented[name]
        keys = doc.get("bindingKeys") or [doc["bindingKey"]]
        assert sorted((doc["exchange"], k) for k in keys) == sorted(bindings), name
        assert doc["deadLetterQueue"] == dead_letter_queue(name)
        assert dead_letter_queue(name) in by_name
    dlq = DOC["channels"]["{queue}.dlq"]
    assert enum_of(resolve(dlq["parameters"]["queue"])["schema"]) == list(SERVICE_QUEUES)
    assert amqp_binding(dlq)["queue"]["name"] == dead_letter_queue("{queue}")
    assert {q for q in by_name if q.endswith(".dlq")} == {dead_letter_queue(q) for q in SERVICE_QUEUES}

    assert REJECTED_QUEUE in documented and REJECTED_QUEUE in by_name
    assert documented[dept_queue("{dept_code}")]["exchange"] == DISPATCH_EXCHANGE
    assert documented[dept_queue("{dept_code}")]["bindingKey"] == "dept.{dept_code}"
    assert documented[receipts_queue("{source_system}")]["exchange"] == RECEIPTS_EXCHANGE
    assert documented[receipts_queue("{source_system}")]["bindingKey"] == "receipt.{source_system}"
    for code in load_departments(CONFIG):
        assert by_name[dept_queue(code)].bindings == ((DISPATCH_EXCHANGE, f"dept.{code}"),)
    for source in load_source_systems(CONFIG):
        assert by_name[receipts_queue(source)].bindings == ((RECEIPTS_EXCHANGE, f"receipt.{source}"),)


def test_event_subscribers_are_the_bound_queues() -> None:
    assert topic_matches("assignment.*", "assignment.signed")
    assert not topic_matches("assignment.*", "appeal.registered")
    assert topic_matches("#", "appeal.registered")
    for event_type in EVENT_TYPES:
        channel = DOC["channels"][f"{EVENTS_EXCHANGE}/{event_type}"]
        bound = bound_queues(EVENTS_EXCHANGE, event_type)
        assert sorted(channel["x-subscribers"]) == sorted(bound), event_type
    # Intake applies its own events as it makes them; intake.events gets only the others'.
    for event_type, message in event_messages().items():
        producer = merged(message_payload(message))[0]["producer"]
        if producer.get("const") == "intake" or "intake" in DOC["channels"][
                f"{EVENTS_EXCHANGE}/{event_type}"]["x-publishers"]:
            assert "intake.events" not in bound_queues(EVENTS_EXCHANGE, event_type), event_type


def test_retry_delay_queues_are_documented(topology) -> None:
    documented = _documented_queues()
    delays = Settings().retry_delays_ms
    for delay in delays:
        queue = next(q for q in topology.queues if q.name == retry_exchange(delay))
        doc = documented[queue.name]
        assert doc["exchange"] == retry_exchange(delay)
        for key in ("x-message-ttl", "x-dead-letter-exchange"):
            assert doc["arguments"][key] == queue.arguments[key], (queue.name, key)
    documented_retry = {n for n in DOC["channels"] if n.startswith("appeals.retry.")}
    assert documented_retry == {retry_exchange(d) for d in delays}


def test_registered_codes_fit_the_routing_key_parameters() -> None:
    for param, codes in (("dept_code", load_departments(CONFIG)),
                         ("source_system", load_source_systems(CONFIG))):
        pattern = resolve(DOC["components"]["parameters"][param]["schema"])["pattern"]
        assert pattern == CODE_RE
        for code in codes:
            assert re.fullmatch(pattern, code), (param, code)


# --- (3) inbound appeal --------------------------------------------------------------

def test_inbound_appeal_schema_matches_the_code() -> None:
    schema = InboundAppealSchema()
    props, required = merged(SCHEMAS["InboundAppeal"])
    assert set(props) == set(schema.fields)
    assert required == required_fields(schema)
    assert set(resolve(SCHEMAS["InboundAppeal"])["required"]) == required_fields(schema)
    assert props["title"]["maxLength"] == TITLE_MAX == 200
    assert props["content"]["maxLength"] == CONTENT_MAX == 5000
    assert props["schema_version"] == {"$ref": "#/components/schemas/SchemaVersion"}
    assert SCHEMAS["SchemaVersion"]["const"] == SCHEMA_VERSION
    assert enum_of(props["urgency"]) == list(URGENCIES) == choices(schema.fields["urgency"])
    assert resolve(props["submitted_at"]["allOf"][0])["format"] == "date-time"
    enterprise_props, enterprise_required = merged(props["enterprise"])
    nested = schema.fields["enterprise"].schema
    assert set(enterprise_props) == set(nested.fields)
    assert enterprise_required == required_fields(nested)
    uscc = resolve(enterprise_props["uscc"])
    assert "GB 32100-2015" in uscc["description"]
    # Input may carry spaces/hyphens/lowercase; UsccField stores the compact form.
    assert f"`{USCC_LOOSE}`" in uscc["description"] and "compact form" in uscc["description"]
    example = MESSAGES["InboundAppeal"]["examples"][0]["payload"]
    loaded = InboundAppealSchema(now=datetime(2025, 3, 4, tzinfo=UTC)).load(
        {**example, "enterprise": {**example["enterprise"], "uscc": USCC_LOOSE}})
    assert loaded["enterprise"]["uscc"] == USCC_COMPACT == example["enterprise"]["uscc"]
    assert re.fullmatch(uscc["pattern"], USCC_COMPACT) and not re.fullmatch(uscc["pattern"], USCC_LOOSE)
    attachment_props, _ = merged(props["attachments"]["items"])
    assert set(attachment_props) == set(schema.fields["attachments"].inner.schema.fields)
    assert attachment_props["url"]["pattern"] == "^https://"


# --- (6) channel codes ---------------------------------------------------------------

def test_channel_enum_is_the_reference_list() -> None:
    props, _ = merged(SCHEMAS["InboundAppeal"])
    assert set(CHANNELS) <= set(enum_of(props["channel"]))
    assert enum_of(props["channel"]) == list(CHANNELS)


def test_classification_reference_data_fits_the_document() -> None:
    """category / industry_chain are codes of config/categories.yaml and
    config/industry_chains.yaml; intake refuses others, and the examples use known ones."""
    from services.intake.classification import OTHER_CATEGORY, Classifier

    categories = load_categories(CONFIG)
    chains = load_industry_chains(CONFIG, load_departments(CONFIG))
    assert OTHER_CATEGORY == "99" and OTHER_CATEGORY in categories
    assert "`99`" in SCHEMAS["CategoryCode"]["description"]
    for code in categories:
        assert not problems(SCHEMAS["CategoryCode"], code), code
    for code in chains:
        assert not problems(SCHEMAS["IndustryChainCode"], code), code
    props, _ = merged(SCHEMAS["InboundAppeal"])
    assert "config/categories.yaml" in props["category"]["description"]
    assert "config/industry_chains.yaml" in props["industry_chain"]["description"]
    assert "registered" in props["activity_id"]["description"]
    for name in ("category", "industry_chain"):  # optional, null allowed
        assert not problems(props[name], None) and name not in SCHEMAS["InboundAppeal"]["required"]

    classifier = Classifier(categories, chains)
    inbound = MESSAGES["InboundAppeal"]["examples"][0]["payload"]
    assert classifier.unknown_fields(inbound["category"], inbound["industry_chain"]) == {}
    assignment = department_messages()["assignment"]["examples"][0]["payload"]
    assert classifier.unknown_fields(assignment["category"], assignment["industry_chain"]) == {}
    # The documented refusal is the classifier's wording.
    refused = next(e["payload"] for e in MESSAGES["Receipt"]["examples"]
                   if e["name"] == "rejected-unknown-reference")
    assert classifier.unknown_fields("tax", None) == {"category": refused["errors"]["category"]}


def test_other_vocabularies_match() -> None:
    assert enum_of(SCHEMAS["RespondReply"]["properties"]["outcome"]) == list(RESPONSE_OUTCOMES)
    reason_code = SCHEMAS["ReturnReply"]["properties"]["reason_code"]
    assert enum_of(reason_code) == list(RETURN_REASONS) == choices(
        REPLY_SCHEMAS["return"]().fields["reason_code"])
    assert enum_of(SCHEMAS["AssignmentReturnedData"]["properties"]["reason_code"]) == list(
        RETURN_REASONS)
    description = resolve(reason_code)["description"]
    for code, meaning in RETURN_REASONS.items():  # each code with its Chinese meaning
        assert f"`{code}` {meaning}" in " ".join(description.split()), code
    assert enum_of(SCHEMAS["FollowupRecordedData"]["properties"]["grade"]) == list(FOLLOWUP_GRADES)
    receipt_props, _ = merged(SCHEMAS["Receipt"])
    assert set(receipt_props) == set(ReceiptSchema().fields)
    assert enum_of(receipt_props["status"]) == choices(ReceiptSchema().fields["status"])
    activity_kind = SCHEMAS["ActivityRegisteredData"]["properties"]["kind"]
    assert enum_of(activity_kind) == list(ACTIVITY_KINDS) == choices(ActivitySchema().fields["kind"])


def test_examples_are_accepted_by_the_code() -> None:
    inbound = MESSAGES["InboundAppeal"]["examples"][0]["payload"]
    InboundAppealSchema(now=datetime(2025, 3, 4, tzinfo=UTC)).load(inbound)
    assert not problems(SCHEMAS["InboundAppeal"], inbound)
    for action in REPLY_SCHEMAS:
        message = channel_messages(DOC["channels"][f"{REPLIES_EXCHANGE}/dept.{{dept_code}}.{action}"])[0]
        for example in message["examples"]:
            # Checked as the suite does when the reply arrives, at its replied_at.
            replied = datetime.fromisoformat(example["payload"]["replied_at"])
            REPLY_SCHEMAS[action](now=replied).load(example["payload"])
            assert not problems(message["payload"], example["payload"])
    for message in MESSAGES.values():
        for example in message.get("examples", []):
            assert not problems(message["payload"], example["payload"]), (message["name"], example)


# --- (4) replies ---------------------------------------------------------------------

def test_reply_schemas_match_the_code() -> None:
    assert set(REPLY_SCHEMAS) == set(REPLY_ACTIONS)
    documented = {n.rsplit(".", 1)[1] for n in DOC["channels"] if n.startswith(f"{REPLIES_EXCHANGE}/")}
    assert documented == set(REPLY_SCHEMAS)
    for action, schema_cls in REPLY_SCHEMAS.items():
        channel = DOC["channels"][f"{REPLIES_EXCHANGE}/dept.{{dept_code}}.{action}"]
        assert "publish" in channel, action
        (message,) = channel_messages(channel)
        props, required = merged(message_payload(message))
        assert set(props) == set(schema_cls().fields), action
        assert required == required_fields(schema_cls()), action
        assert message_payload(message)["additionalProperties"] is False, action


# --- (5) department messages ---------------------------------------------------------

# What supervision's messages carry beyond the common fields (services/supervision/clocks.py
# and usecases.py build them; there is no marshmallow schema for them).
DEADLINE_FIELDS = {"deadline", "due_at", "working_days_overdue"}
SUPERVISION_KIND_FIELDS = {
    "reminder": DEADLINE_FIELDS,
    "supervision_notice": DEADLINE_FIELDS,
    # From the scan (deadline fields) or after an unsatisfied follow-up.
    "key_supervision_order": DEADLINE_FIELDS | {"order_no", "feedback_required", "feedback_by",
                                                "reasons", "grade", "respond_by",
                                                "deadlines_provisional"},
}
# What a `deadlines_changed` carries beyond the common fields (services/dispatch/recompute.py
# and services/supervision/recompute.py), and the duties whose dates they are.
DEADLINES_CHANGED_FIELDS = {"duty", "reason", "deadlines", "previous", "deadlines_provisional",
                            "order_no"}
DUTIES = {"assignment", "key_order", "activity", "patrol"}


def test_department_messages_match_the_code() -> None:
    by_kind = department_messages()
    schema_kinds = set(choices(DepartmentMessageSchema().fields["kind"]))
    assert schema_kinds == set(by_kind), "DepartmentMessageSchema's kinds and the documented ones differ"
    common, common_required = merged(SCHEMAS["DepartmentMessageCommon"])
    assert set(common) == set(DepartmentMessageSchema().fields)
    assert common_required == required_fields(DepartmentMessageSchema())
    assert enum_of(common["kind"]) == list(by_kind)
    for kind, message in by_kind.items():
        props, required = merged(message_payload(message))
        assert set(common) <= set(props) and common_required <= required, kind
        assert not is_reserved(message), f"{kind} is sent: nothing about it is reserved"
        assert kind in DOC["channels"]["appeals.dispatch/dept.{dept_code}"]["description"]

    assignment, assignment_required = merged(message_payload(by_kind["assignment"]))
    assert set(AssignmentMessageSchema().fields) <= set(assignment)
    assert required_fields(AssignmentMessageSchema()) <= assignment_required
    assert {"sign_by", "return_by", "respond_by"} <= assignment_required
    default = POLICY.default
    assert f"{default.return_working_days} working days" in assignment["return_by"]["description"]
    # respond_by: the default and every category profile, with their longest extension.
    respond = " ".join(assignment["respond_by"]["description"].split())
    assert f"{default.respond_working_days} working days by default (at most " \
        f"{default.max_respond_working_days}" in respond
    for name, limits in (POLICY.profiles or {}).items():
        assert f"`{name}` {limits.respond_working_days} working days (at most " \
            f"{limits.max_respond_working_days})" in respond, name
    assert f"is {POLICY.urgent_sign_hours} hours after assignment" in " ".join(
        by_kind["assignment"]["description"].split())
    # The example's deadlines are what the policy and calendar give for its sent_at.
    from appeals_common.metrics import load_calendar

    example = by_kind["assignment"]["examples"][0]["payload"]
    deadlines = POLICY.for_assignment(
        load_calendar(CONFIG, Settings().timezone), datetime.fromisoformat(example["sent_at"]),
        example["urgency"], example["category"])
    for name in ("sign_by", "return_by", "respond_by"):
        assert datetime.fromisoformat(example[name]) == getattr(deadlines, name), name
    assert example["deadlines_provisional"] == deadlines.provisional
    assert assignment["kind"]["const"] == "assignment"
    assert enum_of(assignment["role"]) == choices(AssignmentMessageSchema().fields["role"])
    reply_result, _ = merged(message_payload(by_kind["reply_result"]))
    assert set(ReplyResultMessageSchema().fields) <= set(reply_result)
    assert enum_of(reply_result["status"]) == choices(ReplyResultMessageSchema().fields["status"])
    from services.supervision.clocks import CLOCK_KINDS, ORDER_KINDS

    for kind, extra in SUPERVISION_KIND_FIELDS.items():
        props, required = merged(message_payload(by_kind[kind]))
        assert set(props) - set(common) == extra, kind
        assert resolve(props["assignment_id"])["type"] == "string", kind
        assert "assignment_id" in required, kind
        # Whatever supervision's clocks time (services/supervision/clocks.py): an
        # assignment's deadlines, a confirmed class problem's, a key order's written
        # feedback, a patrol's plan and report, a chain's yearly patrol, a list item -
        # but only some of them escalate to a key supervision order.
        kinds = ORDER_KINDS if kind == "key_supervision_order" else CLOCK_KINDS
        assert len(enum_of(props["deadline"])) == len(kinds), kind
        assert set(enum_of(props["deadline"])) == kinds, kind
    order_props, order_required = merged(message_payload(by_kind["key_supervision_order"]))
    assert {"feedback_by", "deadlines_provisional"} <= order_required  # both shapes
    issued_props, issued_required = merged(SCHEMAS["SupervisionOrderIssuedData"])
    assert {"assignment_id", "feedback_by", "deadlines_provisional"} <= issued_required
    # Deadlines counted again on the official calendar: the dates by the names the
    # department client knows (department_client.contract), the duties of the recompute.
    from department_client.contract import DEADLINE_NAMES, KNOWN_KINDS
    from services.supervision.recompute import DEADLINE_NAME, DUTY

    assert set(KNOWN_KINDS) == set(by_kind)
    changed, changed_required = merged(message_payload(by_kind["deadlines_changed"]))
    assert set(changed) - set(common) == DEADLINES_CHANGED_FIELDS
    assert DEADLINES_CHANGED_FIELDS - changed_required == {"order_no"}
    assert resolve(changed["assignment_id"])["type"] == "string"
    assert set(enum_of(changed["duty"])) == DUTIES == set(DUTY.values()) | {"assignment"}
    dates, _ = merged(changed["deadlines"])
    assert set(dates) == set(DEADLINE_NAMES) == set(DEADLINE_NAME.values()) | {
        "sign_by", "return_by", "respond_by"}
    assert merged(changed["previous"])[0] == dates
    recomputed_dates, _ = merged(SCHEMAS["DeadlineRecomputedData"]["properties"]["deadlines"])
    assert set(recomputed_dates) == set(dates) | {"latest_respond_by"}
    assert set(enum_of(issued_props["deadline"])) == ORDER_KINDS
    # The bureau's decisions: what the unit is told, with the fields of the request bodies.
    from appeals_common.schemas import ExtensionDecisionSchema, ReturnDecisionSchema

    reassigned, _ = merged(message_payload(by_kind["reassigned"]))
    assert set(reassigned) - set(common) == {"reason", "new_units"}
    return_decision, _ = merged(message_payload(by_kind["return_decision"]))
    assert set(return_decision) - set(common) == {"accepted", "reason"}
    assert set(ReturnDecisionSchema().fields) == {"accept", "reason"}
    extension_decision, _ = merged(message_payload(by_kind["extension_decision"]))
    assert set(extension_decision) - set(common) == {"extension_id", "approved", "reason",
                                                     "respond_by"}
    assert set(ExtensionDecisionSchema().fields) == {"approve", "reason", "respond_by"}


def test_supervision_rules_are_stated_as_in_the_code() -> None:
    """Supervision's escalation rules (services/supervision) as the document states them."""
    import os
    import warnings

    from appeals_common.activity_schedule import (
        PATROL_REMINDER_WORKING_DAYS,
        PLAN_WORKING_DAYS_BEFORE,
        REPORT_WORKING_DAYS_AFTER,
        SIT_IN_REMINDER_WORKING_DAYS,
        patrol_year_due,
    )
    from appeals_common.metrics import load_calendar
    from appeals_common.reference import SATISFIED_GRADES
    from services.supervision import clocks
    from services.supervision.escalation import (
        KEY_ORDER_AFTER_WORKING_DAYS,
        NOTICE,
        ORDER,
        REMINDER,
        WorkingHours,
        notices_due,
        working_days_overdue,
    )
    from services.supervision.usecases import FOLLOWUP_WORKING_DAYS, REOPEN_WORKING_DAYS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eventlet's deprecation notice, through nameko
        from services.supervision import service

    by_kind = department_messages()
    assert {REMINDER, NOTICE, ORDER} <= set(by_kind)
    assert clocks.EVENT_FOR == {REMINDER: "appeal.reminded", NOTICE: "appeal.supervised",
                                ORDER: "supervision_order.issued"}
    channel = " ".join(DOC["channels"]["appeals.dispatch/dept.{dept_code}"]["description"].split())
    hours = WorkingHours()
    default_hours = f"{hours.start:%H:%M}-{hours.end:%H:%M}"
    assert WorkingHours.parse(default_hours) == hours
    assert f"`APPEALS_WORKING_HOURS`, default `{default_hours}`" in channel
    if "APPEALS_WORKING_HOURS" not in os.environ:
        assert hours == service.WORKING_HOURS
    if "APPEALS_SCAN_SECONDS" not in os.environ:
        assert f"`APPEALS_SCAN_SECONDS` (default {service.SCAN_SECONDS:g} s" in channel
    assert f"once the deadline is {KEY_ORDER_AFTER_WORKING_DAYS} or more working days past" \
        in channel
    assert f"a new `respond_by` ({REOPEN_WORKING_DAYS} working days later)" in channel
    assert f"`feedback_by` ({clocks.KEY_ORDER_FEEDBACK_WORKING_DAYS} working days after the " \
        "order)" in channel
    assert f"gets the `reminder` from {PATROL_REMINDER_WORKING_DAYS} working days before" \
        in channel
    assert clocks.REMIND_WORKING_DAYS == {"patrol": PATROL_REMINDER_WORKING_DAYS,
                                          "sit_in": SIT_IN_REMINDER_WORKING_DAYS}
    assert f"gets the `reminder` from {SIT_IN_REMINDER_WORKING_DAYS} working days before each " \
        "sit-in window" in " ".join(channel.split())
    assert PLAN_WORKING_DAYS_BEFORE == REPORT_WORKING_DAYS_AFTER == 3
    assert "by the end of the 3rd working day before the patrol" in channel
    assert "by the end of the 3rd working day after it" in channel
    assert "`feedback` (the written feedback, 书面反馈, a key supervision order asks for by " \
        "its `feedback_by`)" in " ".join(SCHEMAS["DeadlineKind"]["description"].split())
    assert f"on the {clocks.KEY_ORDER_FEEDBACK_WORKING_DAYS}th working day after the day of " \
        "the order" in " ".join(SCHEMAS["FeedbackBy"]["description"].split())
    assert f"reminded {PATROL_REMINDER_WORKING_DAYS} working days before" in " ".join(
        SCHEMAS["DeadlineKind"]["description"].split())
    order = resolve(message_payload(by_kind[ORDER]))
    scan_shape, followup_shape = order["oneOf"]
    assert scan_shape["properties"]["working_days_overdue"]["minimum"] == \
        KEY_ORDER_AFTER_WORKING_DAYS == SCHEMAS["SupervisionOrderIssuedData"]["properties"][
            "working_days_overdue"]["minimum"]
    assert set(followup_shape["required"]) == {"reasons", "grade", "respond_by"}
    assert f"({REOPEN_WORKING_DAYS} working days later" in " ".join(
        by_kind[ORDER]["description"].split())
    assert f"{REOPEN_WORKING_DAYS} working days" in " ".join(
        MESSAGES["appeal.reopened"]["description"].split())
    assert f"follow-up clock ({FOLLOWUP_WORKING_DAYS} working days)" in \
        MESSAGES["appeal.responded"]["description"]
    assert SCHEMAS["UnsatisfiedGrade"]["enum"] == [
        g for g in FOLLOWUP_GRADES if g not in SATISFIED_GRADES]
    # The examples are what the rules give at their sent_at.
    calendar = load_calendar(CONFIG, Settings().timezone)
    chains = load_industry_chains(CONFIG, load_departments(CONFIG))
    for kind, before in ((REMINDER, frozenset()), (NOTICE, frozenset({REMINDER})),
                         (ORDER, frozenset({REMINDER, NOTICE}))):
        for example in by_kind[kind]["examples"]:
            m = example["payload"]
            sent_at = datetime.fromisoformat(m["sent_at"])
            if "deadline" in m:
                due_at = datetime.fromisoformat(m["due_at"])
                # The scan never orders about a duty outside ORDER_KINDS.
                sent = before if m["deadline"] in clocks.ORDER_KINDS else before | {ORDER}
                assert notices_due(due_at, sent, sent_at, calendar, hours,
                                   clocks.REMIND_WORKING_DAYS.get(m["deadline"], 1)) == [kind], m
                assert m["working_days_overdue"] == working_days_overdue(due_at, sent_at,
                                                                         calendar)
                if kind == ORDER:
                    assert m["order_no"] == \
                        f"ZD-{m['reg_no']}-{m['dept_code']}-{m['deadline']}-{sent_at:%Y%m%d%H%M}"
                    assert datetime.fromisoformat(m["feedback_by"]) == calendar.add_working_days(
                        sent_at, clocks.KEY_ORDER_FEEDBACK_WORKING_DAYS).at
                if m["deadline"] == "class":
                    assert m["reg_no"] == m["assignment_id"]
                    assert not problems(SCHEMAS["ClassId"], m["reg_no"])
                elif m["deadline"] == "feedback":  # the order's reg_no, the order as duty
                    assert re.fullmatch(SCHEMAS["OrderNo"]["pattern"], m["assignment_id"])
                    assert m["assignment_id"].startswith(f"ZD-{m['reg_no']}-{m['dept_code']}-")
                elif m["deadline"] not in ("sign", "respond"):  # no appeal's: one id
                    assert m["reg_no"] == m["assignment_id"], m
                if m["deadline"] == "patrol":
                    chain, year = re.fullmatch(r"patrol-(.+)-([0-9]{4})", m["reg_no"]).groups()
                    assert chains[chain].lead == m["dept_code"]
                    assert due_at == patrol_year_due(calendar, int(year))
                elif m["deadline"] == "item":
                    assert not problems(SCHEMAS["ListItemId"], m["reg_no"])
            else:  # after an unsatisfied follow-up
                assert datetime.fromisoformat(m["respond_by"]) == calendar.add_working_days(
                    sent_at, REOPEN_WORKING_DAYS).at
                assert m["order_no"] == \
                    f"ZD-{m['reg_no']}-{m['dept_code']}-{sent_at:%Y%m%d%H%M%S}"
                assert m["feedback_by"] == m["respond_by"]
            if "order_no" in m:
                assert re.fullmatch(SCHEMAS["OrderNo"]["pattern"], m["order_no"]), m
    assert {e["payload"]["deadline"] for e in by_kind[REMINDER]["examples"]} == {
        "respond", "class", "feedback", "item", "patrol"}
    assert {e["payload"]["deadline"] for e in by_kind[NOTICE]["examples"]} == {"respond", "plan"}
    # The events a scan emits are the supervision service's own, never reserved.
    for event_type in ("appeal.reminded", "appeal.overdue", "appeal.supervised",
                       "supervision_order.issued"):
        channel_doc = DOC["channels"][f"{EVENTS_EXCHANGE}/{event_type}"]
        assert channel_doc["x-publishers"] == ["supervision"], event_type
        assert merged(message_payload(MESSAGES[event_type]))[0]["producer"] == {
            "const": "supervision"}, event_type


def test_class_problem_rules_are_stated_as_in_the_code() -> None:
    """类题破解 (services/supervision/class_problem_usecases.py, class_problems.py): the
    detection settings and their defaults, the states and the limits of the bodies."""
    import os
    import warnings

    from services.supervision.class_problem_usecases import HOLDING_STATES, ConfirmSchema
    from services.supervision.class_problems import ClusterSettings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # eventlet's deprecation notice, through nameko
        from services.supervision import service

    described = " ".join(MESSAGES["class_problem.suggested"]["description"].split())
    defaults = ClusterSettings()
    for variable, default in (("APPEALS_CLASS_WINDOW_DAYS", f"default {defaults.window_days}"),
                              ("APPEALS_CLASS_THRESHOLD", f"default {defaults.threshold:g}"),
                              ("APPEALS_CLASS_MIN_SIZE", f"default {defaults.min_size}")):
        assert f"`{variable}`, {default}" in described, variable
    if "APPEALS_CLASS_DETECT_SECONDS" not in os.environ:
        assert f"`APPEALS_CLASS_DETECT_SECONDS`, default {service.DETECT_SECONDS:g} s" \
            in described
    assert "POST /class-problems/detection" in described
    states = SCHEMAS["ClassProblemState"]["enum"]
    assert set(HOLDING_STATES) < set(states) and set(states) - set(HOLDING_STATES) == {
        "dismissed"}
    view, required = merged(SCHEMAS["ClassProblemView"])
    assert required == set(view)
    assert view["units"]["maxItems"] == next(
        v.max for v in ConfirmSchema().fields["units"].validators)
    assert resolve(view["keywords"])["maxItems"] == 5
    assert re.fullmatch(SCHEMAS["ClassId"]["pattern"], "LT-2025-0001")
    # Every class event is supervision's and, but for the annotation, about no appeal.
    for event_type in EVENT_TYPES:
        if event_type.startswith("class_problem."):
            props = merged(message_payload(MESSAGES[event_type]))[0]
            assert props["producer"] == {"const": "supervision"}, event_type
            assert ("appeal_id" in props and props["appeal_id"] == {"type": "null"}) == (
                event_type != "class_problem.annotated"), event_type


# --- what the code really sends ------------------------------------------------------

NOW = datetime(2025, 3, 3, 2, 0, tzinfo=UTC)


def _delivery(body: Any, routing_key: str, exchange: str, message_id: str | None = None,
              content_type: str = "application/json"):
    from appeals_common.nameko_ext import Delivery

    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    from tests.senders import rightful_sender

    return Delivery(body=raw, routing_key=routing_key, exchange=exchange,
                    message_id=message_id if message_id is not None else str(uuid.uuid4()),
                    content_type=content_type, headers={}, attempt=1,
                    user_id=rightful_sender(routing_key))


def _wired(directory: Path, calendar: Any) -> tuple[Any, ...]:
    """Intake, dispatch and supervision on SQLite with the reference data their services
    load: (intake, dispatch, supervision, departments, intake_ctx, dispatch_ctx, chains)."""
    from appeals_common.registries import (
        load_categories,
        load_departments,
        load_industry_chains,
        load_routing_rules,
        load_source_systems,
    )
    from services.dispatch import usecases as dispatch_uc
    from services.dispatch.models import Base as DispatchBase
    from services.dispatch.routing import Router
    from services.intake import usecases as intake_uc
    from services.intake.classification import Classifier
    from services.intake.models import Base as IntakeBase
    from services.supervision.activities import ChainLeads
    from services.supervision.models import Base as SupervisionBase

    departments = load_departments(CONFIG)
    chains_config = load_industry_chains(CONFIG, departments)
    intake_ctx = intake_uc.IntakeContext(
        sources=frozenset(load_source_systems(CONFIG)), departments=frozenset(departments),
        classifier=Classifier(load_categories(CONFIG), chains_config))
    dispatch_ctx = dispatch_uc.DispatchContext(
        router=Router.from_config(load_routing_rules(CONFIG, departments)), calendar=calendar,
        policy=POLICY, departments=set(departments))
    # Each key industry chain's lead unit (附件2), as supervision's service loads them.
    chains = ChainLeads({code: chain.lead for code, chain in chains_config.items()})
    return (_Service("intake", IntakeBase, directory), _Service("dispatch", DispatchBase, directory),
            _Service("supervision", SupervisionBase, directory), departments, intake_ctx,
            dispatch_ctx, chains)


class _Service:
    """One service's use cases on SQLite, with its outbox readable."""

    def __init__(self, name: str, base: Any, directory: Path) -> None:
        metadata = base.metadata
        from appeals_common.clock import FixedClock
        from appeals_common.db import Store
        from appeals_common.nameko_ext import ServiceRuntime

        self.store = Store(f"sqlite:///{directory / name}.db", metadata, producer=name)
        self.store.create_schema()
        self.clock = FixedClock(NOW)
        # The documented examples are dated 2025: a programme that started that year.
        settings = Settings(programme_start=date(2024, 1, 1))
        self.runtime = ServiceRuntime(name, settings, self.store, self.clock)
        self._seen = 0

    def new_messages(self) -> list[dict[str, Any]]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(self.store.outbox).where(self.store.outbox.c.id > self._seen)
                                .order_by(self.store.outbox.c.id)).mappings().all()
        if rows:
            self._seen = rows[-1]["id"]
        return [{**row, "headers": json.loads(row["headers"] or "{}")} for row in rows]


def _events(messages: list[dict[str, Any]]) -> list[Any]:
    return [_delivery(m["body"], m["routing_key"], EVENTS_EXCHANGE, m["message_id"])
            for m in messages if m["exchange"] == EVENTS_EXCHANGE]


@pytest.fixture(scope="module")
def emitted(tmp_path_factory) -> list[dict[str, Any]]:
    """Run appeals through intake, dispatch and supervision; every message they send.

    Besides appeals from source systems and department replies, staff register an appeal
    on the spot, an activity (and an appeal taken at it), reclassify and withdraw; the
    bureau decides returns (rejected; accepted from a co-unit; accepted from the lead
    twice, up to 会商; rejected after the unit had signed), extensions (approved up to the
    category's limit; denied; left to lapse, or be cancelled by an override or by the
    unit's accepted return) and chooses units itself (override, 会商 decision) -
    `services.dispatch.bureau`. Supervision takes follow-ups (satisfied, one while a
    co-unit has not signed; unsatisfied with a key supervision order to the lead;
    unsatisfied with an on-the-spot answer, which dispatch then routes), closes an appeal
    whose enterprise cannot be reached, suggests class problems (类题破解) among similar
    appeals - the bureau confirms two, dismisses one, resolves and closes one - and at the
    end scans the deadlines with its clock moved across working days (reminders,
    supervision notices, key supervision orders; about assignments and classes). Units
    answer key supervision orders in writing (`feedback` replies: accepted on time and
    late, refused), staff record walkthroughs (我陪群众走流程) and close their list items,
    chain patrols are registered and their plans and reports filed (on time, late, and
    some refused), and the chains' yearly patrols of 2024 are timed in December 2024 - so
    the scans also chase feedback, plans, reports, yearly patrols and list items.

    Timestamps make the real round trip through SQLite (`appeals_common.db.UtcDateTime`):
    deadlines stored at assignment are read back aware and compared with aware times."""
    return _run_appeals(tmp_path_factory.mktemp("asyncapi"))


def _run_appeals(directory: Path) -> list[dict[str, Any]]:
    from marshmallow import ValidationError

    from appeals_common.auth import Principal
    from appeals_common.http import Conflict, FieldErrors, HttpError, NotFound
    from appeals_common.metrics import load_calendar
    from services.dispatch import bureau
    from services.dispatch import usecases as dispatch_uc
    from services.dispatch.models import Assignment as DispatchAssignment
    from services.dispatch.models import DispatchAppeal
    from services.intake import usecases as intake_uc
    from services.intake.models import TimelineEntry
    from services.supervision import activities, clocks, walkthroughs
    from services.supervision import class_problem_usecases as classes
    from services.supervision import usecases as supervision_uc
    from services.supervision.class_problems import ClusterSettings
    from services.supervision.escalation import WorkingHours

    calendar = load_calendar(CONFIG, Settings().timezone)
    intake, dispatch, supervision, departments, intake_ctx, ctx, chains = _wired(
        directory, calendar)
    sent: list[dict[str, Any]] = []

    def collect(service: _Service) -> list[dict[str, Any]]:
        new = service.new_messages()
        sent.extend(new)
        return new

    def to_others(messages: list[dict[str, Any]]) -> None:
        """Deliver events as the bindings of SERVICE_QUEUES do (reporting is not run)."""
        for event in _events(messages):
            queues = bound_queues(EVENTS_EXCHANGE, event.routing_key)
            if "intake.events" in queues:
                intake_uc.apply_event(intake.runtime, event)
            if "dispatch.events" in queues:
                dispatch_uc.on_event(dispatch.runtime, ctx, event)
            if "supervision.events" in queues:
                supervision_uc.on_event(supervision.runtime, calendar, chains, event)

    example = MESSAGES["InboundAppeal"]["examples"][0]["payload"]

    def settle() -> dict[tuple[str, str], dict[str, Any]]:
        """Deliver what intake sent, then what dispatch sent in answer; the assignments."""
        to_others(collect(intake))
        return _from_dispatch()

    def _from_dispatch() -> dict[tuple[str, str], dict[str, Any]]:
        """Deliver what dispatch sent; the assignments among its department messages."""
        assignments = {}
        new = collect(dispatch)
        for m in new:
            body = json.loads(m["body"])
            if m["exchange"] == DISPATCH_EXCHANGE and body["kind"] == "assignment":
                assignments[body["role"], body["dept_code"]] = body
        to_others(new)
        collect(supervision)
        return assignments

    def decide(fn: Any, *args: Any) -> tuple[dict[str, Any], dict[tuple[str, str], dict]]:
        """A bureau decision (`services.dispatch.bureau`); its result and new assignments."""
        result = fn(*args)
        return result, _from_dispatch()

    def refused(error: type[Exception], fn: Any, *args: Any) -> Exception:
        """A bureau decision refused before any change: nothing is sent."""
        with pytest.raises(error) as caught:
            fn(*args)
        assert not dispatch.new_messages()
        return caught.value

    def submit(external_id: str, title: str, content: str, **extra: Any) -> dict[str, Any]:
        body = {**example, "external_id": external_id, "title": title, "content": content, **extra}
        status = intake_uc.handle_inbound(intake.runtime, intake_ctx, _delivery(
            body, f"appeal.submit.{body['source_system']}", INBOUND_EXCHANGE))
        assert status == "accepted", status
        return settle()

    def reply(assignment: dict[str, Any], action: str, expect: str = "accepted",
              **fields: Any) -> dict[str, Any]:
        """Send a reply; the reply_result dispatch answers it with."""
        body = {"schema_version": 1, "assignment_id": assignment["assignment_id"],
                "reg_no": assignment["reg_no"], "replied_at": NOW.isoformat(), **fields}
        status = dispatch_uc.on_reply(dispatch.runtime, ctx, _delivery(
            body, f"dept.{assignment['dept_code']}.{action}", REPLIES_EXCHANGE))
        assert status == expect, (action, status)
        new = collect(dispatch)
        (result,) = [json.loads(m["body"]) for m in new if m["exchange"] == DISPATCH_EXCHANGE]
        to_others(new)
        collect(supervision)
        return result

    # 附件1: every key chain owes a patrol a year. In December 2024, with no patrol of
    # that year registered, supervision's scan opens the chains' yearly clocks and their
    # lead units are reminded (20 working days ahead); the scans of March 2025 chase them.
    supervision.clock.moment = _local(2024, 12, 5, 10)
    assert activities.open_year_clocks(supervision.runtime, calendar, chains) == len(chains.leads)
    assert activities.open_year_clocks(supervision.runtime, calendar, chains) == 0
    assert clocks.scan(supervision.runtime, calendar, WorkingHours()) == len(chains.leads)
    to_others(collect(supervision))
    # The bureau is reminded of each coming sit-in window on its own queue, 5 working days
    # ahead (December's opens on the 11th), and never chased about it.
    assert activities.open_sit_in_reminders(supervision.runtime, calendar, "zwfwj") == 5
    assert clocks.scan(supervision.runtime, calendar, WorkingHours()) == 1
    to_others(collect(supervision))
    supervision.clock.moment = NOW

    # Appeal A: the lead signs and responds; a satisfied follow-up closes it.
    a = submit("A-1", "留抵退税进度", "申请退税至今未到账。")
    (lead_a,) = a.values()
    # It returns it first; the bureau rejects the return, so the unit keeps it.
    reply(lead_a, "return", reason_code="wrong_unit", reason="应由财政局办理", suggested_unit="czj")
    kept, again = decide(bureau.decide_return, dispatch.runtime, ctx, lead_a["assignment_id"],
                         {"accept": False, "reason": "留抵退税属于税务职责"}, STAFF)
    assert kept == {"assignment_id": lead_a["assignment_id"], "state": "assigned",
                    "redispatched": False} and again == {}
    refused(Conflict, bureau.decide_return, dispatch.runtime, ctx, lead_a["assignment_id"],
            {"accept": True, "reason": "再次审核"}, STAFF)
    reply(lead_a, "sign", operator="李四")
    # Signed, it returns it again; rejected, the assignment is back to `signed`, not
    # `assigned` (nothing to sign again).
    reply(lead_a, "return", reason_code="other", reason="需财政局配合")
    kept, _ = decide(bureau.decide_return, dispatch.runtime, ctx, lead_a["assignment_id"],
                     {"accept": False, "reason": "请牵头办理，财政局协助"}, STAFF)
    assert kept["state"] == "signed"
    assert _row(dispatch, DispatchAssignment, lead_a["assignment_id"]).state == "signed"
    reply(lead_a, "sign", expect="refused")
    reply(lead_a, "respond", outcome="solved", reply="已到账。", contacted_at=NOW.isoformat())
    supervision_uc.record_followup(supervision.runtime, calendar, lead_a["reg_no"],
                                   {"grade": "satisfied", "resolved": True}, "staff:wang")
    to_others(collect(supervision))

    # Appeal B: lead and co-unit; the co-unit contributes, the lead asks for more time,
    # responds, and an unsatisfied follow-up reopens it under a key supervision order;
    # the lead answers again and the bureau closes it (enterprise unreachable).
    # Its enterprise's USCC is sent with spaces, hyphens and lowercase (USCC_LOOSE).
    b = submit("B-1", "施工许可办理", "项目施工许可审批超时。", category=None, attachments=[],
               enterprise={**example["enterprise"], "uscc": USCC_LOOSE})
    lead_b = next(v for (role, _), v in b.items() if role == "lead")
    co_b = next(v for (role, _), v in b.items() if role == "co")
    reply(co_b, "sign")
    reply(co_b, "respond", outcome="explained", reply="已配合说明。", contacted_at=NOW.isoformat())
    reply(lead_b, "sign")
    # It asks for more time than its category allows (max_respond_working_days after
    # assignment): refused on arrival, saying so. Up to the limit it is taken; the bureau
    # may approve less, never more.
    latest = POLICY.for_assignment(calendar, datetime.fromisoformat(lead_b["sent_at"]),
                                   lead_b["urgency"], lead_b["category"]).latest_respond_by
    asked = latest + timedelta(days=10)
    refusal = reply(lead_b, "extend", expect="refused", requested_until=asked.isoformat(),
                    reason="需要会商")
    (limit_refusal,) = refusal["errors"]["requested_until"]
    assert datetime.fromisoformat(limit_refusal.rsplit(" ", 1)[1]) == latest, limit_refusal
    reply(lead_b, "extend", requested_until=latest.isoformat(), reason="需要会商")
    (ext_b,) = [e for e in bureau.list_extensions(dispatch.runtime, "requested")
                if e["assignment_id"] == lead_b["assignment_id"]]
    assert datetime.fromisoformat(ext_b["requested_until"]) == latest
    too_late = refused(FieldErrors, bureau.decide_extension, dispatch.runtime,
                       ext_b["extension_id"], {"approve": True, "reason": "同意",
                                               "respond_by": (latest + timedelta(seconds=1))
                                               .isoformat()}, STAFF)
    (limit_error,) = too_late.errors["respond_by"]
    assert datetime.fromisoformat(limit_error.rsplit(" ", 1)[1]) == latest, limit_error
    shorter = latest - timedelta(days=1)
    approved, _ = decide(bureau.decide_extension, dispatch.runtime, ext_b["extension_id"],
                         {"approve": True, "reason": "同意延期，少于所请",
                          "respond_by": shorter.isoformat()}, STAFF)
    assert datetime.fromisoformat(approved["respond_by"]) == shorter and approved["approved"]
    # Supervision moved the respond clock and its copy of the appeal's respond_by.
    supervised_b = supervision_uc.get_clock(supervision.runtime, lead_b["reg_no"])
    assert datetime.fromisoformat(supervised_b["respond_by"]) == shorter
    refused(Conflict, bureau.decide_extension, dispatch.runtime, ext_b["extension_id"],
            {"approve": False, "reason": "重复审批"}, STAFF)
    # A second request, up to the limit, is denied: respond_by stays.
    reply(lead_b, "extend", requested_until=latest.isoformat(), reason="仍需会商")
    (ext_b2,) = bureau.list_extensions(dispatch.runtime, "requested")
    denied, _ = decide(bureau.decide_extension, dispatch.runtime, ext_b2["extension_id"],
                       {"approve": False, "reason": "已达最长办理时限"}, STAFF)
    assert datetime.fromisoformat(denied["respond_by"]) == shorter and not denied["approved"]
    # A third request is still waiting when the unit responds: it lapses, undecided.
    reply(lead_b, "extend", requested_until=latest.isoformat(), reason="再次申请")
    (ext_b3,) = bureau.list_extensions(dispatch.runtime, "requested")
    reply(lead_b, "respond", outcome="not_solvable", reply="政策不支持。", contacted_at=NOW.isoformat())
    assert [e["extension_id"] for e in bureau.list_extensions(dispatch.runtime, "lapsed")] == [
        ext_b3["extension_id"]]
    refused(Conflict, bureau.decide_extension, dispatch.runtime, ext_b3["extension_id"],
            {"approve": True, "reason": "同意"}, STAFF)
    supervision_uc.record_followup(supervision.runtime, calendar, lead_b["reg_no"],
                                   {"grade": "unsatisfied", "resolved": False,
                                    "comments": "企业认为答复未解决问题"}, STAFF)
    followed_up = collect(supervision)
    to_others(followed_up)
    (reopened_b,) = [json.loads(m["body"])["data"] for m in followed_up
                     if m["routing_key"] == "appeal.reopened"]
    # Dispatch's lead assignment is signed again, with the order's new respond_by.
    lead_b_now = _row(dispatch, DispatchAssignment, lead_b["assignment_id"])
    assert lead_b_now.state == "signed"
    assert lead_b_now.respond_by == datetime.fromisoformat(reopened_b["respond_by"])
    assert datetime.fromisoformat(supervision_uc.get_clock(
        supervision.runtime, lead_b["reg_no"])["respond_by"]) == lead_b_now.respond_by
    reply(lead_b, "respond", outcome="explained", reply="已重新核查并解释。",
          contacted_at=NOW.isoformat())
    # 书面反馈: the lead answers the order in writing. Refused: an order dispatch does not
    # know for the assignment, the lead's order answered by the co-unit, a second answer.
    # An order number of the unit and appeal dispatch has not seen yet is retried (the
    # order's event may still be on its way), not refused.
    (order_b,) = [json.loads(m["body"]) for m in followed_up
                  if m["exchange"] == DISPATCH_EXCHANGE
                  and json.loads(m["body"])["kind"] == "key_supervision_order"]
    assert supervision_uc.list_key_orders(supervision.runtime, "open", lead_b["dept_code"])[0][
        "order_no"] == order_b["order_no"]
    unknown = reply(lead_b, "feedback", expect="refused", order_no="ZD-nonsense", feedback="已整改")
    assert set(unknown["errors"]) == {"order_no"}
    with pytest.raises(LookupError):
        dispatch_uc.on_reply(dispatch.runtime, ctx, _delivery(
            {"schema_version": 1, "assignment_id": lead_b["assignment_id"],
             "reg_no": lead_b["reg_no"], "replied_at": NOW.isoformat(),
             "order_no": f"ZD-{lead_b['reg_no']}-{lead_b['dept_code']}-20990101000000",
             "feedback": "已整改"}, f"dept.{lead_b['dept_code']}.feedback", REPLIES_EXCHANGE))
    assert not dispatch.new_messages()
    not_theirs = reply(co_b, "feedback", expect="refused", order_no=order_b["order_no"],
                       feedback="已配合整改")
    assert set(not_theirs["errors"]) == {"order_no"}
    reply(lead_b, "feedback", order_no=order_b["order_no"],
          feedback="已约谈企业，重新核查并书面答复，整改措施见附件。")
    twice = reply(lead_b, "feedback", expect="refused", order_no=order_b["order_no"],
                  feedback="再次反馈")
    assert "already answered" in twice["errors"]["order_no"][0]
    (answered_b,) = supervision_uc.list_key_orders(supervision.runtime, "answered", None)
    assert (answered_b["order_no"], answered_b["cause"], answered_b["late"]) == (
        order_b["order_no"], "unsatisfied_followup", False)

    # Appeal C: returned by its lead; then refused replies.
    c = submit("C-1", "发票领用", "发票领用数量不够。", urgency="urgent")
    (lead_c,) = c.values()
    reply(lead_c, "return", reason_code="not_our_duty", reason="不属本单位职责", suggested_unit="scjgj")
    reply(lead_c, "sign", expect="refused", unexpected="field")
    status = dispatch_uc.on_reply(dispatch.runtime, ctx, _delivery(
        b"not json", f"dept.{lead_c['dept_code']}.approve", REPLIES_EXCHANGE))
    assert status == "refused"
    collect(dispatch)
    # The bureau accepts the return: C is routed again without that unit; the next lead
    # returns it too, and after the second accepted return C goes to 会商 - the bureau
    # then chooses its units itself.
    result, c2 = decide(bureau.decide_return, dispatch.runtime, ctx, lead_c["assignment_id"],
                        {"accept": True, "reason": "同意退单"}, STAFF)
    assert result == {"assignment_id": lead_c["assignment_id"], "state": "withdrawn",
                      "redispatched": True}
    (lead_c2,) = c2.values()
    assert lead_c2["role"] == "lead" and lead_c2["dept_code"] != lead_c["dept_code"]
    reply(lead_c2, "return", reason_code="insufficient_info", reason="诉求信息不全")
    result, c3 = decide(bureau.decide_return, dispatch.runtime, ctx, lead_c2["assignment_id"],
                        {"accept": True, "reason": "同意退单"}, STAFF)
    assert result == {"assignment_id": lead_c2["assignment_id"], "state": "withdrawn",
                      "redispatched": False, "joint_decision_required": True} and c3 == {}
    refused(FieldErrors, bureau.override, dispatch.runtime, ctx, lead_c["reg_no"],
            {"lead": "nobody", "reason": "会商决定"}, STAFF)
    units, c4 = decide(bureau.override, dispatch.runtime, ctx, lead_c["reg_no"],
                       {"lead": "scjgj", "co": [lead_c["dept_code"]], "reason": "会商决定"}, STAFF)
    assert units == {"reg_no": lead_c["reg_no"], "rule": f"bureau:{STAFF}",
                     "units": {"lead": "scjgj", "co": [lead_c["dept_code"]]}}
    assert set(c4) == {("lead", "scjgj"), ("co", lead_c["dept_code"])}

    # Appeal J: its co-unit signs, asks for more time and returns it while the request
    # waits (accepted: only that unit drops out, and its request is cancelled), then the
    # bureau overrides the units - the open lead assignment is taken back.
    j = submit("J-1", "竣工验收备案", "竣工验收备案迟迟未办结。")
    lead_j = next(v for (role, _), v in j.items() if role == "lead")
    co_j = next(v for (role, _), v in j.items() if role == "co")
    reply(co_j, "sign")
    reply(co_j, "extend", requested_until=(NOW + timedelta(days=20)).isoformat(),
          reason="需要核实备案材料")
    (ext_co_j,) = bureau.list_extensions(dispatch.runtime, "requested")
    reply(co_j, "return", reason_code="duplicate", reason="与已办结诉求重复")
    result, none = decide(bureau.decide_return, dispatch.runtime, ctx, co_j["assignment_id"],
                          {"accept": True, "reason": "同意"}, STAFF)
    assert result == {"assignment_id": co_j["assignment_id"], "state": "withdrawn",
                      "redispatched": False} and none == {}
    assert [e["extension_id"] for e in bureau.list_extensions(dispatch.runtime, "cancelled")] \
        == [ext_co_j["extension_id"]]
    refused(Conflict, bureau.decide_extension, dispatch.runtime, ext_co_j["extension_id"],
            {"approve": True, "reason": "同意"}, STAFF)
    # The lead signs and asks for more time; the override takes its assignment back
    # before the bureau decides, so the request is cancelled.
    reply(lead_j, "sign")
    reply(lead_j, "extend", requested_until=(NOW + timedelta(days=20)).isoformat(),
          reason="需要现场核查")
    (ext_j,) = bureau.list_extensions(dispatch.runtime, "requested")
    units, j2 = decide(bureau.override, dispatch.runtime, ctx, lead_j["reg_no"],
                       {"lead": "czj", "co": [lead_j["dept_code"], "czj", lead_j["dept_code"]],
                        "reason": "涉及财政奖补"}, STAFF)
    assert units["units"] == {"lead": "czj", "co": [lead_j["dept_code"]]}
    assert set(j2) == {("lead", "czj"), ("co", lead_j["dept_code"])}
    reply(lead_j, "respond", expect="refused", outcome="solved", reply="已办理。",
          contacted_at=NOW.isoformat())  # taken back: a reply about it is refused
    assert sorted(e["extension_id"] for e in bureau.list_extensions(dispatch.runtime,
                                                                     "cancelled")) \
        == sorted([ext_co_j["extension_id"], ext_j["extension_id"]])
    refused(Conflict, bureau.decide_extension, dispatch.runtime, ext_j["extension_id"],
            {"approve": False, "reason": "已改派"}, STAFF)
    # The new lead answers and a satisfied follow-up closes J while its co-unit has not
    # signed: the closure cancels that unit's sign clock, so no scan chases it.
    # (A minute later: the projections order an appeal's events by time, and the
    # override's appeal.dispatched is a few microseconds after NOW.)
    lead_j2, co_j2 = j2["lead", "czj"], j2["co", lead_j["dept_code"]]
    dispatch.clock.moment = supervision.clock.moment = NOW + timedelta(minutes=1)
    reply(lead_j2, "sign")
    reply(lead_j2, "respond", outcome="solved", reply="奖补资金已拨付。",
          contacted_at=NOW.isoformat())
    supervision_uc.record_followup(supervision.runtime, calendar, lead_j["reg_no"],
                                   {"grade": "basically_satisfied", "resolved": True,
                                    "contact_attempts": 2}, STAFF)
    to_others(collect(supervision))
    dispatch.clock.moment = supervision.clock.moment = NOW
    j_clocks = {(c["assignment_id"], c["kind"]): c["state"]
                for c in clocks.list_clocks(supervision.runtime, lead_j["reg_no"])}
    assert j_clocks[co_j2["assignment_id"], "sign"] == "cancelled"
    assert j_clocks[lead_j2["assignment_id"], "respond"] == "met"
    with pytest.raises(ValidationError):  # contact_attempts is a strict integer
        supervision_uc.record_followup(supervision.runtime, calendar, lead_j["reg_no"],
                                       {"grade": "satisfied", "resolved": True,
                                        "contact_attempts": "2"}, STAFF)

    # Appeal E: its lead returns it after `return_by` - refused, naming when the window closed.
    e = submit("E-1", "留抵退税到账慢", "申请退税一直未到账。")
    (lead_e,) = e.values()
    return_by = datetime.fromisoformat(lead_e["return_by"])
    assert NOW < return_by < datetime.fromisoformat(lead_e["respond_by"])
    dispatch.clock.moment = return_by + timedelta(seconds=1)
    late = reply(lead_e, "return", expect="refused", reason_code="not_our_duty", reason="超期退单")
    dispatch.clock.moment = NOW
    (closed,) = late["errors"]["action"]
    assert datetime.fromisoformat(closed.rsplit(" ", 1)[1]) == return_by, closed

    # Staff: an appeal answered on the spot (当场办结) is not dispatched; a satisfied
    # follow-up closes it.
    on_spot = intake_uc.register_on_spot(intake.runtime, intake_ctx, {
        "channel": "clinic_point", "enterprise": example["enterprise"],
        "title": "营业执照地址变更", "content": "询问营业执照地址变更需要哪些材料。",
        "answer": "已当场告知所需材料及网上办理入口。"}, STAFF)
    assert on_spot["state"] == "resolved_on_spot" and not on_spot["duplicate"]
    assert settle() == {}, "an appeal resolved on the spot is not dispatched"
    # Dispatch keeps its copy's state: no override dispatches an answered appeal.
    assert _row(dispatch, DispatchAppeal, on_spot["appeal_id"]).state == "resolved_on_spot"
    refused(Conflict, bureau.override, dispatch.runtime, ctx, on_spot["reg_no"],
            {"lead": "scjgj", "reason": "改派"}, STAFF)
    supervision_uc.record_followup(supervision.runtime, calendar, on_spot["reg_no"],
                                   {"grade": "satisfied", "resolved": True}, STAFF)
    to_others(collect(supervision))
    assert _row(dispatch, DispatchAppeal, on_spot["appeal_id"]).state == "closed"
    refused(Conflict, bureau.override, dispatch.runtime, ctx, on_spot["reg_no"],
            {"lead": "scjgj", "reason": "改派"}, STAFF)
    # Another answered on the spot, followed up unsatisfied: no unit to order, so only
    # appeal.reopened - and dispatch routes it now, like a new appeal.
    on_spot_2 = intake_uc.register_on_spot(intake.runtime, intake_ctx, {
        "channel": "clinic_point", "enterprise": example["enterprise"],
        "title": "食品经营许可咨询", "content": "询问食品经营许可证延续办理流程。",
        "answer": "已当场告知延续办理流程。"}, STAFF)
    assert settle() == {}
    supervision_uc.record_followup(supervision.runtime, calendar, on_spot_2["reg_no"],
                                   {"grade": "very_unsatisfied", "resolved": False,
                                    "comments": "流程说明不清楚"}, STAFF)
    to_others(collect(supervision))
    assert _from_dispatch(), "a reopened on-the-spot answer is dispatched"

    # The bureau closes B (answered again) because the enterprise cannot be reached:
    # refused below three contact attempts, or before the lead answered.
    with pytest.raises(ValidationError):
        supervision_uc.close_unreachable(supervision.runtime, lead_b["reg_no"], {
            "contact_attempts": 2, "reason": "电话无人接听"}, STAFF)
    with pytest.raises(Conflict):
        supervision_uc.close_unreachable(supervision.runtime, lead_c["reg_no"], {
            "contact_attempts": 3, "reason": "电话无人接听"}, STAFF)
    assert not supervision.new_messages()
    closed_b = supervision_uc.close_unreachable(supervision.runtime, lead_b["reg_no"], {
        "contact_attempts": 3, "reason": "三次电话均无人接听"}, STAFF)
    assert closed_b == {"reg_no": lead_b["reg_no"], "state": "closed"}
    to_others(collect(supervision))
    assert _row(dispatch, DispatchAppeal, lead_b["appeal_id"]).state == "closed"
    refused(Conflict, bureau.override, dispatch.runtime, ctx, lead_b["reg_no"],
            {"lead": "zjj", "reason": "改派"}, STAFF)

    # Staff: an activity, and an appeal taken at it (chain given, no category keyword).
    activity = intake_uc.register_activity(intake.runtime, intake_ctx, {
        "kind": "sit_in", "held_on": "2025-03-03", "title": "局长坐诊：商贸消费专场",
        "lead_unit": "swtcj", "industry_chain": "trade_consumption"}, STAFF)
    assert settle() == {}
    with pytest.raises(intake_uc.FieldErrors):  # unknown lead unit: refused, nothing emitted
        intake_uc.register_activity(intake.runtime, intake_ctx, {
            "kind": "door_visit", "held_on": "2025-03-04", "title": "上门问诊",
            "lead_unit": "nobody"}, STAFF)
    assert not intake.new_messages()
    f = submit("F-1", "新店开业咨询", "新店开业前想了解可以享受哪些扶企政策。", channel="sit_in",
               category=None, industry_chain="trade_consumption",
               activity_id=activity["activity_id"])
    assert f, "an appeal taken at an activity is dispatched"
    # The same enterprise again, with nothing in the text naming a chain: the chain F-1
    # was given carries over (enterprise-history).
    assert submit("F-2", "办事流程咨询", "想了解办事需要准备哪些材料。", channel="online",
                  category=None, industry_chain=None)

    # 附件1: two chain patrols registered at intake. Supervision times each one's plan (3
    # working days before) and report (3 working days after) for the lead unit of its
    # chain - not the activity's own lead unit - and meets the chain's yearly patrol clock
    # (this year's, opened first); the scans below chase the filings.
    assert activities.open_year_clocks(supervision.runtime, calendar, chains) == len(chains.leads)

    def patrol(held_on: str, title: str, lead_unit: str, chain: str) -> str:
        registered = intake_uc.register_activity(intake.runtime, intake_ctx, {
            "kind": "chain_patrol", "held_on": held_on, "title": title,
            "lead_unit": lead_unit, "industry_chain": chain}, STAFF)
        assert settle() == {}
        return registered["activity_id"]

    patrol_digital = patrol("2025-03-10", "数字经济链式巡诊", "kjj", "digital_economy")
    patrol_logistics = patrol("2025-03-04", "现代物流链式巡诊", "fgj", "modern_logistics")
    for chain in ("digital_economy", "modern_logistics"):
        (year_clock,) = clocks.list_clocks(supervision.runtime, f"patrol-{chain}-2025")
        assert (year_clock["kind"], year_clock["state"]) == ("patrol", "met")
    staff = Principal(STAFF, "bureau_staff")
    digital_lead = Principal("gxj-user", "department", chains.leads["digital_economy"])
    logistics_lead = Principal("fgj-user", "department", chains.leads["modern_logistics"])
    unknown_unit = {**PATROL_REPORT, "service_items": [
        {**PATROL_REPORT["service_items"][0], "responsible_unit": "nobody"}]}
    for error, fn, args in (  # refused, nothing emitted
            (Conflict, activities.submit_plan, (activity["activity_id"], {"summary": "坐诊方案"},
                                                staff, chains)),  # a sit-in files nothing
            (HttpError, activities.submit_plan, (patrol_digital, {"summary": "巡诊方案"},
                                                 Principal("kjj-user", "department", "kjj"),
                                                 chains)),  # not the chain's lead unit
            (NotFound, activities.submit_plan, (UNKNOWN_ACTIVITY, {"summary": "巡诊方案"}, staff,
                                                chains)),
            (ValidationError, activities.submit_plan, (patrol_digital, {"summary": ""}, staff,
                                                       chains)),
            (Conflict, activities.submit_report, (calendar, patrol_digital, PATROL_REPORT,
                                                  digital_lead, chains, departments)),  # early
            (FieldErrors, activities.submit_report, (calendar, patrol_logistics, unknown_unit,
                                                     staff, chains, departments)),
            (ValidationError, activities.submit_report, (calendar, patrol_logistics,
                                                         {**PATROL_REPORT, "policies_delivered": -1},
                                                         staff, chains, departments))):
        with pytest.raises(error):
            fn(supervision.runtime, *args)
    assert not supervision.new_messages()

    # 我陪群众走流程: staff walk a service process; each finding becomes a list item whose
    # owner is chased by its deadline (`item` clocks) until it is closed out - during the
    # scans below. Refused, nothing emitted: a 五看 score missing or out of range, an
    # unknown mode, an unknown owner, a deadline already passed.
    scores = {"accuracy": 4, "smoothness": 2, "proofs": 3, "experience": 3, "conduct": 5}
    walk = {"service_item": "企业开办一网通办", "mode": "accompanied", "lead_unit": "swj",
            "walked_on": "2025-03-03", "scores": scores, "summary": "陪同企业办理开办全流程",
            "findings": [
                {"list": "problem", "description": "线上线下材料要求不一致", "owner": "zjj",
                 "due_at": _local(2025, 3, 5, 18).isoformat()},
                {"list": "demand", "description": "希望提供帮办代办服务", "owner": "gxj",
                 "due_at": _local(2025, 3, 6, 18).isoformat()},
                {"list": "optimization", "description": "合并两个申请表单", "owner": "swj",
                 "due_at": _local(2025, 3, 20, 18).isoformat()}]}
    for bad, error in (
            ({**walk, "scores": {**scores, "conduct": 6}, "mode": "by_phone"}, ValidationError),
            ({**walk, "scores": {k: v for k, v in scores.items() if k != "proofs"}},
             ValidationError),
            ({**walk, "findings": [{**walk["findings"][0], "owner": "nobody",
                                    "due_at": (NOW - timedelta(hours=1)).isoformat()}]},
             FieldErrors)):
        with pytest.raises(error):
            walkthroughs.record(supervision.runtime, frozenset(departments), bad, STAFF)
    assert not supervision.new_messages()
    walked = walkthroughs.record(supervision.runtime, frozenset(departments), walk, STAFF)
    first_item, second_item, _ = (i["item_id"] for i in walked["items"])
    quick = walkthroughs.record(supervision.runtime, frozenset(departments), {
        "service_item": "不动产登记", "mode": "in_person", "lead_unit": "zrzyj",
        "walked_on": "2025-03-02", "scores": dict.fromkeys(scores, 5)}, STAFF)
    assert (quick["items"], quick["summary"]) == ([], "")
    to_others(collect(supervision))
    with pytest.raises(NotFound):
        walkthroughs.close_item(supervision.runtime, "WT-19990101-00000000-1",
                                {"resolution": "x"}, STAFF)

    # Staff reclassify E twice (category, then chain), then withdraw it: dispatch keeps
    # its copy current and withdraws the open assignment, so a later reply is refused.
    intake_uc.reclassify(intake.runtime, intake_ctx, lead_e["reg_no"],
                         {"category": "0301", "reason": "实为奖补资金兑付"}, STAFF)
    settle()
    intake_uc.reclassify(intake.runtime, intake_ctx, lead_e["reg_no"],
                         {"industry_chain": "modern_finance", "reason": "企业属金融链"}, STAFF)
    settle()
    dispatch_copy = _row(dispatch, DispatchAppeal, lead_e["appeal_id"])
    assert (dispatch_copy.category, dispatch_copy.industry_chain) == ("0301", "modern_finance")
    with pytest.raises(intake_uc.FieldErrors):  # unknown code: refused, nothing emitted
        intake_uc.reclassify(intake.runtime, intake_ctx, lead_e["reg_no"],
                             {"category": "tax", "reason": "x"}, STAFF)
    assert not intake.new_messages()
    intake_uc.withdraw(intake.runtime, lead_e["reg_no"], {"reason": "企业已自行解决"}, STAFF)
    assert settle() == {}
    assert _row(dispatch, DispatchAssignment, lead_e["assignment_id"]).state == "withdrawn"
    reply(lead_e, "sign", expect="refused")

    # Intake's other answers: duplicate, conflicting repeat, invalid, unknown source,
    # unknown activity, unknown category and chain.
    def inbound(body: Any, routing_key: str, expect: str) -> None:
        status = intake_uc.handle_inbound(intake.runtime, intake_ctx,
                                          _delivery(body, routing_key, INBOUND_EXCHANGE))
        assert status == expect
        collect(intake)

    first = {**example, "external_id": "A-1", "title": "留抵退税进度", "content": "申请退税至今未到账。"}
    inbound(first, "appeal.submit.hotline_12345", "duplicate")
    inbound({**first, "title": "changed"}, "appeal.submit.hotline_12345", "rejected")
    bad_enterprise = {**example["enterprise"], "uscc": "91110000600037341X"}  # wrong check digit
    bad = {**example, "external_id": "D-1", "enterprise": bad_enterprise}
    inbound(bad, "appeal.submit.hotline_12345", "rejected")
    inbound(b"\xff not json", "appeal.submit.hotline_12345", "rejected")
    inbound({**example, "source_system": "nobody"}, "appeal.submit.nobody", "rejected")
    inbound({**example, "external_id": "G-1", "activity_id": UNKNOWN_ACTIVITY},
            "appeal.submit.hotline_12345", "rejected")
    inbound({**example, "external_id": "H-1", "category": "tax", "industry_chain": "steel"},
            "appeal.submit.hotline_12345", "rejected")

    # 类题破解: similar appeals of one field, registered like any other, are suggested as
    # class problems by supervision's detection (default settings). The bureau confirms
    # two (a lead entity, units, a deadline: a `class` clock for the lead entity) and
    # dismisses one; refusals change nothing.
    def class_of(prefix: str, category: str, chain: str,
                 texts: list[tuple[str, str]]) -> dict[str, str]:
        """Submit similar appeals; reg_no -> appeal_id."""
        members = {}
        for n, (title, content) in enumerate(texts, start=1):
            assert submit(f"{prefix}-{n}", title, content, category=category,
                          industry_chain=chain)
            (registered,) = [json.loads(m["body"]) for m in sent
                             if m["routing_key"] == "appeal.registered"
                             and json.loads(m["body"])["data"]["external_id"] == f"{prefix}-{n}"]
            members[registered["data"]["reg_no"]] = registered["appeal_id"]
        return members

    power = class_of("P", "0402", "modern_logistics", POWER_APPEALS)
    hiring = class_of("R", "0404", "tech_services", HIRING_APPEALS)
    inspection = class_of("K", "0201", "health_medicine", INSPECTION_APPEALS)
    settings = ClusterSettings()
    suggested = classes.detect(supervision.runtime, settings)
    to_others(collect(supervision))
    by_members = {frozenset(c["reg_nos"]): c["class_id"] for c in suggested}
    assert set(by_members) == {frozenset(power), frozenset(hiring), frozenset(inspection)}
    assert classes.detect(supervision.runtime, settings) == [], "not suggested twice"
    power_id, hiring_id, inspection_id = (by_members[frozenset(members)]
                                          for members in (power, hiring, inspection))
    class_departments = frozenset(departments)
    for error, fn, args in (
            (FieldErrors, classes.confirm, (class_departments, power_id, {
                "lead_entity": "fgj", "units": ["nobody"],
                "deadline": _local(2025, 3, 6, 18).isoformat()})),
            (FieldErrors, classes.confirm, (class_departments, power_id, {
                "lead_entity": "fgj", "deadline": (NOW - timedelta(hours=1)).isoformat()})),
            (ValidationError, classes.confirm, (class_departments, power_id, {
                "lead_entity": "fgj", "deadline": "2025-03-06T18:00:00"})),
            (Conflict, classes.resolve, (power_id, {"measures": "尚未确认"})),
            (Conflict, classes.close, (power_id, {"promote": False})),
            (NotFound, classes.dismiss, ("LT-1999-9999", {"reason": "无此类题"}))):
        with pytest.raises(error):
            fn(supervision.runtime, *args, STAFF)
    assert not supervision.new_messages()
    confirmed = classes.confirm(supervision.runtime, class_departments, power_id, {
        "lead_entity": "fgj", "units": ["swtcj", "gxj"],
        "deadline": _local(2025, 3, 6, 18).isoformat(), "note": "冷链用电增容专项研判"}, STAFF)
    assert (confirmed["state"], confirmed["lead_entity"]) == ("confirmed", "fgj")
    classes.confirm(supervision.runtime, class_departments, inspection_id, {
        "lead_entity": "scjgj", "deadline": _local(2025, 3, 6, 12).isoformat()}, STAFF)
    with pytest.raises(Conflict):  # confirmed: no longer a suggestion to dismiss
        classes.dismiss(supervision.runtime, inspection_id, {"reason": "个案"}, STAFF)
    dismissed = classes.dismiss(supervision.runtime, hiring_id, {"reason": "个案较多，暂不成类"},
                                STAFF)
    assert (dismissed["state"], dismissed["note"]) == ("dismissed", "个案较多，暂不成类")
    to_others(collect(supervision))
    assert {p["class_id"] for p in classes.list_problems(supervision.runtime, "confirmed")} \
        == {power_id, inspection_id}

    # Supervision's deadline scan, its clock moved across working days (2025-03-03 is a
    # Monday; March 2025 has no holiday): reminders before the deadlines, notices after,
    # key supervision orders 5 working days after. Nothing outside working hours.
    def scan_at(moment: datetime) -> int:
        supervision.clock.moment = moment
        count = clocks.scan(supervision.runtime, calendar, WorkingHours())
        new = collect(supervision)
        assert count == len([m for m in new if m["exchange"] == DISPATCH_EXCHANGE])
        to_others(new)
        return count

    for closed_hours in (_local(2025, 3, 4, 8, 59), _local(2025, 3, 5, 17, 30),
                         _local(2025, 3, 8, 10)):  # before, after hours; a Saturday
        assert scan_at(closed_hours) == 0
    def answer(order: dict[str, Any], text: str) -> None:
        """The unit's written feedback on a key supervision order, at supervision's time."""
        dispatch.clock.moment = supervision.clock.moment
        reply({k: order[k] for k in ("assignment_id", "reg_no", "dept_code")}, "feedback",
              order_no=order["order_no"], feedback=text)
        dispatch.clock.moment = NOW

    def scan_orders(issued_on: int) -> list[dict[str, Any]]:
        """The scan's key supervision orders about assignments issued that March day."""
        bodies = [json.loads(m["body"]) for m in sent if m["exchange"] == DISPATCH_EXCHANGE]
        return [b for b in bodies if b["kind"] == "key_supervision_order"
                and b.get("deadline") in ("sign", "respond")
                and datetime.fromisoformat(b["sent_at"]).date() == date(2025, 3, issued_on)]

    for day in (4, 5, 10, 11, 17, 19):
        assert scan_at(_local(2025, 3, day, 9, 30)) > 0, day
        assert scan_at(_local(2025, 3, day, 15)) == 0, f"each notice once ({day})"
        if day == 10:  # chased the day before, the chain's lead files its plan late
            filed = activities.submit_plan(supervision.runtime, patrol_digital,
                                           {"summary": "走访软件园10家企业，宣讲数字经济政策"},
                                           digital_lead, chains)
            assert (filed["plan"]["status"], filed["report"]["status"]) == ("late", "pending")
            with pytest.raises(Conflict):
                activities.submit_plan(supervision.runtime, patrol_digital,
                                       {"summary": "再次报送"}, staff, chains)
            to_others(collect(supervision))
        if day == 11:  # the reports, one on time, one late; a list item closed late
            filed = activities.submit_report(supervision.runtime, calendar, patrol_digital,
                                             PATROL_REPORT, staff, chains, departments)
            assert filed["report"]["status"] == "on_time"
            activities.submit_report(supervision.runtime, calendar, patrol_logistics,
                                     {**PATROL_REPORT, "service_items": [],
                                      "class_problems": [], "summary": "走访物流园区企业8家"},
                                     logistics_lead, chains, departments)
            with pytest.raises(Conflict):
                activities.submit_report(supervision.runtime, calendar, patrol_logistics,
                                         PATROL_REPORT, staff, chains, departments)
            walkthroughs.close_item(supervision.runtime, second_item,
                                    {"resolution": "开设帮办代办窗口"}, STAFF)
            with pytest.raises(Conflict):
                walkthroughs.close_item(supervision.runtime, second_item,
                                        {"resolution": "再次销号"}, STAFF)
            to_others(collect(supervision))
        if day == 17:  # reminded of the feedback due tomorrow, a unit answers in time
            answer(scan_orders(11)[0], "已签收并办理，说明超期原因及整改措施")
        if day == 19:  # chased this morning, another answers late
            answer(scan_orders(11)[1], "超期签收系人员调整所致，已落实专人负责")
            # The overdue inspection class drew a key order on the 17th; its resolution is
            # the lead entity's written feedback (supervision_order.answered by supervision).
            classes.resolve(supervision.runtime, inspection_id,
                            {"measures": "统一检查标准，合并同类检查事项"}, STAFF)
            to_others(collect(supervision))
        if day == 5:
            # A list item closed out in time, the day it was due.
            walkthroughs.close_item(supervision.runtime, first_item,
                                    {"resolution": "统一了线上线下材料清单"}, STAFF)
            to_others(collect(supervision))
            # Reminded of the class's deadline, the lead entity reports its measures
            # (the clock is met); the bureau closes the class and every linked appeal
            # is annotated - intake puts that on the appeals' timelines.
            classes.resolve(supervision.runtime, power_id,
                            {"measures": "开辟冷链仓储用电增容绿色通道，报装压缩至5个工作日"},
                            STAFF)
            classes.close(supervision.runtime, power_id, {"promote": True, "note": "全区推广"},
                          STAFF)
            to_others(collect(supervision))
            with intake.store.read() as session:
                annotated = set(session.scalars(select(TimelineEntry.appeal_id).where(
                    TimelineEntry.event_type == "class_problem.annotated")))
            assert annotated == set(power.values())
    return sent


def _local(*parts: int) -> datetime:
    """A suite-local time (Settings().timezone)."""
    from zoneinfo import ZoneInfo

    return datetime(*parts, tzinfo=ZoneInfo(Settings().timezone))


STAFF = "wang"  # a staff member's token subject
# A chain patrol's report (链式巡诊开展情况报告) with its 附件3 service item list.
PATROL_REPORT = {
    "policies_delivered": 6, "enterprises_served": 12, "class_problems": ["数据中心用电报装慢"],
    "summary": "走访软件园企业12家，宣讲数字经济扶持政策",
    "service_items": [
        {"enterprise_name": "某软件公司", "contact_name": "王五", "contact_phone": "13912345678",
         "item": "高新技术企业认定辅导", "responsible_unit": "kjj", "status": "in_progress"},
        {"enterprise_name": "某数据服务公司", "item": "数据中心用电报装",
         "responsible_unit": "fgj", "status": "done", "reg_no": None,
         "remarks": "已协调供电部门"}]}
# Appeals of three classes (类题破解): each group shares a category and a chain.
POWER_APPEALS = [
    ("冷链仓库用电增容申请迟迟未批", "冷链仓库扩建后需要用电增容，申请提交一个月供电部门仍未答复。"),
    ("物流园区用电增容", "物流园区新增冷库设备，用电增容申请一直没有办理结果。"),
    ("仓储中心增容报装慢", "仓储中心申请用电增容报装，供电方案迟迟不出，影响设备投产。"),
    ("冷库扩容用电问题", "冷库扩容后用电负荷不够，增容申请排队太久。"),
]
HIRING_APPEALS = [
    ("研发人员招聘难", "企业研发团队招聘困难，希望协助对接高校人才招聘。"),
    ("技术人才招工难", "公司招工难，技术岗位长期招不到人，请帮助对接人才市场招聘。"),
    ("招聘渠道少", "科技企业招聘渠道少，研发岗位招人难，希望举办专场招聘会。"),
]
INSPECTION_APPEALS = [
    ("药店检查过多", "药店一个月内被执法检查四次，检查过多影响正常经营。"),
    ("医药企业重复检查", "医药企业同一事项被多个部门重复执法检查，希望减少检查频次。"),
    ("诊所执法检查频繁", "诊所近期执法检查频繁，每次检查内容相同，希望合并检查。"),
]
UNKNOWN_ACTIVITY = "sit_in-20990101-000000"


def _row(service: _Service, model: Any, key: str) -> Any:
    with service.store.read() as session:
        row = session.get(model, key)
        assert row is not None, (model, key)
        session.expunge(row)
        return row


@pytest.fixture(scope="module")
def recomputed(tmp_path_factory) -> dict[str, Any]:
    """Provisional deadlines counted again once the year's official calendar is loaded
    (`appeals calendar recompute`): what the services sent, with the calendars."""
    return _run_recompute(tmp_path_factory.mktemp("recompute"))


def _run_recompute(directory: Path) -> dict[str, Any]:
    """At the end of a year, deadlines reach into the next one, which has no official
    calendar data yet - Monday to Friday minus the statutory holidays, provisional: two
    appeals dispatched (one left open; one answered, then followed up unsatisfied: a key
    supervision order), a chain patrol early next year, the key chains' yearly patrols of
    next year. Then the year's official data is loaded (complete, with days off the law
    does not know) and dispatch and supervision count again - twice: only the first run
    changes and tells anything. The events go where SERVICE_QUEUES route them."""
    from appeals_common.calendar import (
        WorkingCalendar,
        YearOverride,
        parse_overrides,
        statutory_holidays,
    )
    from appeals_common.metrics import load_calendar
    from services.dispatch import recompute as dispatch_recompute
    from services.dispatch import usecases as dispatch_uc
    from services.dispatch.models import Assignment as DispatchAssignment
    from services.dispatch.models import KeyOrder as DispatchKeyOrder
    from services.intake import usecases as intake_uc
    from services.intake.models import TimelineEntry
    from services.supervision import activities
    from services.supervision import recompute as supervision_recompute
    from services.supervision import usecases as supervision_uc
    from tests.tools_time import first_uncovered_year

    timezone = Settings().timezone
    calendar = load_calendar(CONFIG, timezone)
    year = first_uncovered_year(calendar)
    intake, dispatch, supervision, departments, intake_ctx, ctx, chains = _wired(
        directory, calendar)
    sent: list[dict[str, Any]] = []

    def deliver(service: _Service) -> list[dict[str, Any]]:
        """What the service sent, its events delivered as SERVICE_QUEUES bind them."""
        new = service.new_messages()
        sent.extend(new)
        for event in _events(new):
            queues = bound_queues(EVENTS_EXCHANGE, event.routing_key)
            if "intake.events" in queues:
                intake_uc.apply_event(intake.runtime, event)
            if "dispatch.events" in queues:
                dispatch_uc.on_event(dispatch.runtime, ctx, event)
            if "supervision.events" in queues:
                supervision_uc.on_event(supervision.runtime, calendar, chains, event)
        return [json.loads(m["body"]) for m in new if m["exchange"] == DISPATCH_EXCHANGE]

    def settle() -> list[dict[str, Any]]:
        return [m for service in (intake, dispatch, supervision) for m in deliver(service)]

    def at(moment: datetime) -> None:
        for service in (intake, dispatch, supervision):
            service.clock.moment = moment

    example = MESSAGES["InboundAppeal"]["examples"][0]["payload"]

    def submit(external_id: str, title: str, content: str) -> dict[str, Any]:
        """A new appeal; its lead unit's assignment."""
        body = {**example, "external_id": external_id, "title": title, "content": content,
                "submitted_at": intake.clock.moment.isoformat()}
        assert intake_uc.handle_inbound(intake.runtime, intake_ctx, _delivery(
            body, f"appeal.submit.{body['source_system']}", INBOUND_EXCHANGE)) == "accepted"
        (lead,) = [m for m in settle() if m["kind"] == "assignment" and m["role"] == "lead"]
        return lead

    def reply(assignment: dict[str, Any], action: str, **fields: Any) -> None:
        body = {"schema_version": 1, "assignment_id": assignment["assignment_id"],
                "reg_no": assignment["reg_no"], "replied_at": dispatch.clock.moment.isoformat(),
                **fields}
        assert dispatch_uc.on_reply(dispatch.runtime, ctx, _delivery(
            body, f"dept.{assignment['dept_code']}.{action}", REPLIES_EXCHANGE)) == "accepted"
        settle()

    # The law's working days of next year: the official notice (fictitious) gives the
    # statutory holidays and, besides, the first two of them and the year's last one off.
    def law_days(day: date, step: int) -> Any:
        while True:
            if calendar.law_is_working_day(day):
                yield day
            day += timedelta(days=step)

    january = law_days(date(year, 1, 1), 1)
    first, second, _, fourth = (next(january) for _ in range(4))
    last = next(law_days(date(year, 12, 31), -1))
    official = WorkingCalendar({
        **parse_overrides((CONFIG / "calendar_overrides.yaml").read_text(encoding="utf-8")),
        year: YearOverride(complete=True,
                           holidays=statutory_holidays(year) | {first, second, last})},
        tz=timezone)

    # December: the deadlines counted now reach into next year.
    at(_local(year - 1, 12, 28, 10))
    now = intake.clock.moment.isoformat()
    open_lead = submit("Y-1", "研发费用加计扣除咨询", "研发费用加计扣除政策适用范围不清楚。")
    answered = submit("Y-2", "出口退税进度", "出口退税申请提交后一直没有到账。")
    assert open_lead["deadlines_provisional"] and answered["deadlines_provisional"]
    reply(answered, "sign")
    reply(answered, "respond", outcome="explained", reply="已说明办理进度。", contacted_at=now)
    supervision_uc.record_followup(supervision.runtime, calendar, answered["reg_no"],
                                   {"grade": "unsatisfied", "resolved": False,
                                    "comments": "退税仍未到账"}, STAFF)
    (order,) = settle()
    assert order["kind"] == "key_supervision_order" and order["deadlines_provisional"] is True
    patrol = intake_uc.register_activity(intake.runtime, intake_ctx, {
        "kind": "chain_patrol", "held_on": fourth.isoformat(), "title": "数字经济链式巡诊",
        "lead_unit": "kjj", "industry_chain": "digital_economy"}, STAFF)
    assert settle() == []
    # January: the key chains' yearly patrols (but the one with a patrol that year).
    at(_local(year, 1, 4, 10))
    assert activities.open_year_clocks(supervision.runtime, calendar, chains) == len(
        chains.leads) - 1

    # The official data is loaded: counted again, the units told, the events applied.
    at(_local(year, 1, 4, 11))
    changed = dispatch_recompute.recompute(dispatch.runtime, official, POLICY).view()
    assert changed["checked"] == changed["changed"] and changed["still_provisional"] == 0
    told = deliver(dispatch)
    changed = supervision_recompute.recompute(supervision.runtime, official).view()
    assert changed["checked"] >= changed["changed"] > 0 == changed["still_provisional"]
    told += deliver(supervision)
    assert told and {m["kind"] for m in told} == {"deadlines_changed"}
    # Dispatch moved the lead's respond_by the order had set and the order's feedback_by;
    # supervision its copy of the open appeal's respond_by; intake's timelines show it.
    order_due = official.add_working_days(datetime.fromisoformat(order["sent_at"]), 5).at
    lead_row = _row(dispatch, DispatchAssignment, answered["assignment_id"])
    assert (lead_row.respond_by, lead_row.respond_by_source) == (order_due, "key_order")
    assert _row(dispatch, DispatchKeyOrder, order["order_no"]).feedback_by == order_due
    assert datetime.fromisoformat(supervision_uc.get_clock(
        supervision.runtime, open_lead["reg_no"])["respond_by"]) == POLICY.for_assignment(
        official, datetime.fromisoformat(open_lead["sent_at"]), open_lead["urgency"],
        open_lead["category"]).respond_by
    with intake.store.read() as session:
        timelines = set(session.scalars(select(TimelineEntry.appeal_id).where(
            TimelineEntry.event_type == "deadline.recomputed")))
    assert timelines == {open_lead["appeal_id"], answered["appeal_id"]}
    # Once: a second run finds nothing provisional and tells nobody.
    for again in (dispatch_recompute.recompute(dispatch.runtime, official, POLICY),
                  supervision_recompute.recompute(supervision.runtime, official)):
        assert again.view() == {"checked": 0, "changed": 0, "still_provisional": 0}
    assert not any(service.new_messages() for service in (intake, dispatch, supervision))
    return {"sent": sent, "year": year, "calendar": calendar, "official": official,
            "order": order, "patrol": patrol}


def test_emitted_events_match_their_messages(emitted, recomputed) -> None:
    documented = event_messages()
    seen: dict[str, set[str]] = {}  # event type -> every data field it was seen with
    for m in [*emitted, *recomputed["sent"]]:
        if m["exchange"] != EVENTS_EXCHANGE:
            continue
        body = json.loads(m["body"])
        event_type = body["event_type"]
        assert m["routing_key"] == event_type and m["message_id"] == body["event_id"]
        assert m["content_type"] == "application/json"
        message = documented[event_type]
        assert not is_reserved(message), f"{event_type} is emitted but documented as reserved"
        assert not problems(message["payload"], body), (event_type, problems(message["payload"], body))
        data_props, data_required = merged(merged(message_payload(message))[0]["data"])
        assert data_required <= set(body["data"]) <= set(data_props), event_type
        seen.setdefault(event_type, set()).update(body["data"])
    not_reserved = {t for t, message in documented.items() if not is_reserved(message)}
    assert set(seen) == not_reserved, "documented as emitted but not emitted (or the reverse)"
    for event_type, keys in seen.items():  # each documented field is really sent, sometimes
        data_props, _ = merged(merged(message_payload(documented[event_type]))[0]["data"])
        assert keys == set(data_props), event_type
    # Optional fields are the ones the document says are not always there.
    dispatched_props, dispatched_required = merged(SCHEMAS["AppealDispatchedData"])
    assert set(dispatched_props) - dispatched_required == {"actor"}


def test_emitted_department_messages_match(emitted, recomputed) -> None:
    by_kind = department_messages()
    kinds = set()
    refused: list[tuple[bool, bool]] = []
    seen: dict[str, set[str]] = {}  # kind -> every field it was sent with
    for m in [*emitted, *recomputed["sent"]]:
        if m["exchange"] != DISPATCH_EXCHANGE:
            continue
        body = json.loads(m["body"])
        assert m["routing_key"] == f"dept.{body['dept_code']}" and m["message_id"] == body["message_id"]
        message = by_kind[body["kind"]]
        assert not is_reserved(message), body["kind"]
        assert not problems(message["payload"], body), (body["kind"], problems(message["payload"], body))
        kinds.add((body["kind"], body.get("status")))
        seen.setdefault(body["kind"], set()).update(body)
        if body["kind"] == "assignment":
            assert body["enterprise"]["uscc"] == USCC_COMPACT  # also when sent as USCC_LOOSE
        if body.get("status") == "refused":
            refused.append((bool(body["reg_no"]), body["assignment_id"] is not None))
    assert kinds >= {("assignment", None), ("reply_result", "accepted"), ("reply_result", "refused")}
    sent_kinds = {kind for kind, _ in kinds}
    assert sent_kinds == {kind for kind, m in by_kind.items() if not is_reserved(m)}, \
        "documented as sent but not sent (or the reverse)"
    for kind, keys in seen.items():  # each documented field is really sent, sometimes
        assert keys == set(merged(message_payload(by_kind[kind]))[0]), kind
    # A refused reply echoes reg_no/assignment_id when its body has them, else "" and null.
    assert sorted(set(refused)) == [(False, False), (True, True)]


def test_emitted_receipts_and_rejected_copies_match(emitted) -> None:
    statuses = []
    for m in emitted:
        if m["exchange"] == RECEIPTS_EXCHANGE:
            body = json.loads(m["body"])
            assert m["routing_key"] == f"receipt.{body['source_system']}"
            assert m["content_type"] == "application/json"
            assert not problems(MESSAGES["Receipt"]["payload"], body), problems(
                MESSAGES["Receipt"]["payload"], body)
            statuses.append(body["status"])
        elif m["routing_key"] == REJECTED_QUEUE:
            assert m["exchange"] == ""
            headers = MESSAGES["RejectedInbound"]["headers"]
            assert not problems(headers, m["headers"]), problems(headers, m["headers"])
            assert isinstance(json.loads(m["headers"]["x-errors"]), dict)
    assert sorted(set(statuses)) == ["accepted", "duplicate", "rejected"]
    # A reused external_id with different content: no reg_no/appeal_id, the original's
    # reg_no is named in errors.external_id, worded as in the documented example.
    receipts = [json.loads(m["body"]) for m in emitted if m["exchange"] == RECEIPTS_EXCHANGE]
    (original,) = [r for r in receipts if (r["external_id"], r["status"]) == ("A-1", "accepted")]
    (conflict,) = [r for r in receipts if (r["external_id"], r["status"]) == ("A-1", "rejected")]
    assert not {"reg_no", "appeal_id"} & set(conflict)
    example = next(e["payload"] for e in MESSAGES["Receipt"]["examples"]
                   if e["name"] == "rejected-reused-external-id")
    doc_reg_no = "WH-2025-000123"
    assert doc_reg_no in example["errors"]["external_id"][0]
    assert conflict["errors"] == {key: [m.replace(doc_reg_no, original["reg_no"]) for m in messages]
                                  for key, messages in example["errors"].items()}
    rejected_copies = [m for m in emitted if m["routing_key"] == REJECTED_QUEUE]
    # Six rejections, one of them from an unregistered source that gets no receipt.
    assert len(rejected_copies) == 6 and statuses.count("rejected") == 5
    # References intake does not know are refused field by field, worded as documented.
    (no_activity,) = [r for r in receipts if r["external_id"] == "G-1"]
    (no_codes,) = [r for r in receipts if r["external_id"] == "H-1"]
    example = next(e["payload"] for e in MESSAGES["Receipt"]["examples"]
                   if e["name"] == "rejected-unknown-reference")
    doc_activity = "sit_in-20250301-a1b2c3"
    assert no_activity["status"] == no_codes["status"] == "rejected"
    assert no_activity["errors"] == {"activity_id": [
        m.replace(doc_activity, UNKNOWN_ACTIVITY) for m in example["errors"]["activity_id"]]}
    assert no_codes["errors"]["category"] == example["errors"]["category"]
    assert set(no_codes["errors"]) == {"category", "industry_chain"}


def _event_data(emitted: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    bodies = [json.loads(m["body"]) for m in emitted if m["exchange"] == EVENTS_EXCHANGE]
    return [{**b["data"], "_appeal_id": b["appeal_id"]} for b in bodies
            if b["event_type"] == event_type]


def test_emitted_classification_covers_every_documented_rule(emitted) -> None:
    """The run registers appeals under every category and chain rule the document names."""
    registered = _event_data(emitted, "appeal.registered")
    assert all(r["category"] for r in registered), "category is always set"
    assert {r["category_rule"].split(":")[0] for r in registered} == {"given", "keyword", "default"}
    assert {r["chain_rule"].split(":")[0] for r in registered} == {
        "given", "keyword", "enterprise-history", "none"}
    assert {r["category"] for r in registered if r["category_rule"] == "default"} == {"99"}
    for r in registered:
        assert (r["industry_chain"] is None) == (r["chain_rule"] == "none"), r["reg_no"]
        if r["chain_rule"].startswith("enterprise-history:"):
            earlier = r["chain_rule"].split(":", 1)[1]
            assert any(e["reg_no"] == earlier and e["industry_chain"] == r["industry_chain"]
                       for e in registered)
    reg_nos = {r["reg_no"] for r in registered}
    flagged = [r for r in registered if r["possible_duplicate_of"]]
    assert flagged and all(r["possible_duplicate_of"] in reg_nos for r in flagged)


def test_emitted_staff_events_tell_consumers_enough(emitted) -> None:
    registered = _event_data(emitted, "appeal.registered")
    dispatched = {d["_appeal_id"] for d in _event_data(emitted, "appeal.dispatched")}
    # 当场办结: flagged on registration, followed by resolved_on_spot; not dispatched -
    # unless an unsatisfied follow-up reopens it (no unit to order: dispatch routes it).
    on_spots = [r for r in registered if r["resolved_on_spot"]]
    assert len(on_spots) == 2
    resolved = _event_data(emitted, "appeal.resolved_on_spot")
    assert [r["_appeal_id"] for r in resolved] == [r["_appeal_id"] for r in on_spots]
    reopened = {r["_appeal_id"]: r for r in _event_data(emitted, "appeal.reopened")}
    for on_spot, answer in zip(on_spots, resolved, strict=True):
        assert on_spot["source_system"] == "staff" and on_spot["registered_by"] == STAFF
        assert answer["actor"] == STAFF
        appeal_id = on_spot["_appeal_id"]
        events = [event_type for event_type, _ in _appeal_events(emitted, appeal_id)]
        if appeal_id in reopened:
            assert not {"order_no", "respond_by"} & set(reopened[appeal_id])
            # No order before dispatch (the scan may order its new units later).
            assert events[:events.index("appeal.dispatched")] == [
                "appeal.registered", "appeal.resolved_on_spot", "followup.recorded",
                "appeal.reopened"]
        else:
            assert appeal_id not in dispatched and events[-1] == "appeal.closed"
    assert all(r["_appeal_id"] in dispatched for r in registered if not r["resolved_on_spot"])
    # Activities: appeal_id null; an appeal taken at one names it.
    activities = _event_data(emitted, "activity.registered")
    assert all(a["_appeal_id"] is None for a in activities)
    (activity,) = [a for a in activities if a["kind"] == "sit_in"]
    assert [r["reg_no"] for r in registered if r["activity_id"] == activity["activity_id"]]
    # Reclassification keeps the codes and rules before; the second sees the first's rule.
    first, second = _event_data(emitted, "appeal.reclassified")
    assert first["reg_no"] == second["reg_no"] and first["category"] == second["category"]
    assert second["previous"]["category_rule"] == f"staff:{STAFF}"
    assert second["previous"]["industry_chain"] == first["industry_chain"]
    (withdrawn,) = _event_data(emitted, "appeal.withdrawn")
    assert withdrawn["reg_no"] == first["reg_no"] and withdrawn["actor"] == STAFF


def _dept_messages(emitted: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    bodies = [json.loads(m["body"]) for m in emitted if m["exchange"] == DISPATCH_EXCHANGE]
    return [b for b in bodies if b["kind"] == kind]


def _appeal_events(emitted: list[dict[str, Any]], appeal_id: str) -> list[tuple[str, dict]]:
    bodies = [json.loads(m["body"]) for m in emitted if m["exchange"] == EVENTS_EXCHANGE]
    return [(b["event_type"], b["data"]) for b in bodies if b["appeal_id"] == appeal_id]


def test_emitted_return_decisions_follow_the_documented_flow(emitted) -> None:
    """退单 -> the bureau's decision -> re-dispatch without the unit -> 会商 -> the bureau's
    choice, as the appeals.dispatch channel describes it."""
    from services.dispatch.bureau import MAX_RETURNS_BEFORE_JOINT_DECISION

    decided = _event_data(emitted, "assignment.return_decided")
    assert {(d["role"], d["accepted"]) for d in decided} == {
        ("lead", False), ("lead", True), ("co", True)}
    assert all(d["actor"] == STAFF for d in decided)
    # The unit is told, with the same decision and reason.
    told = {(t["assignment_id"], t["dept_code"], t["accepted"], t["reason"])
            for t in _dept_messages(emitted, "return_decision")}
    assert told == {(d["assignment_id"], d["dept_code"], d["accepted"], d["reason"])
                    for d in decided}

    # Appeal C: two accepted lead returns, then 会商, then the bureau's units.
    (joint,) = _event_data(emitted, "appeal.joint_decision_required")
    flow = [(t, d) for t, d in _appeal_events(emitted, joint["_appeal_id"])
            if t in ("appeal.dispatched", "assignment.return_decided",
                     "appeal.joint_decision_required")]
    assert [t for t, _ in flow] == [
        "appeal.dispatched", "assignment.return_decided", "appeal.dispatched",
        "assignment.return_decided", "appeal.joint_decision_required", "appeal.dispatched"]
    first, return_1, second, return_2, joint_data, chosen = (d for _, d in flow)
    assert "actor" not in first and second["actor"] == STAFF
    assert return_1["dept_code"] == first["units"]["lead"] and return_1["accepted"]
    assert return_1["dept_code"] not in [second["units"]["lead"], *second["units"]["co"]]
    assert return_2["dept_code"] == second["units"]["lead"] and return_2["accepted"]
    assert joint_data["returned_by"] == sorted({return_1["dept_code"], return_2["dept_code"]})
    assert len(joint_data["returned_by"]) == MAX_RETURNS_BEFORE_JOINT_DECISION
    assert joint_data["reason"] == f"returned by {MAX_RETURNS_BEFORE_JOINT_DECISION} units"
    assert chosen["rule"] == f"bureau:{STAFF}" and chosen["actor"] == STAFF
    # The document states the limit where it describes the flow.
    limit = f"{MAX_RETURNS_BEFORE_JOINT_DECISION} units' returns"
    assert limit in " ".join(MESSAGES["appeal.joint_decision_required"]["description"].split())
    assert f"makes {MAX_RETURNS_BEFORE_JOINT_DECISION} units of the appeal whose returns" in \
        " ".join(DOC["channels"]["appeals.dispatch/dept.{dept_code}"]["description"].split())


def test_emitted_reassignments_tell_the_units(emitted) -> None:
    events = _event_data(emitted, "assignment.reassigned")
    messages = _dept_messages(emitted, "reassigned")
    assert sorted((e["assignment_id"], e["dept_code"], e["reason"], json.dumps(e["new_units"]))
                  for e in events) == sorted(
        (m["assignment_id"], m["dept_code"], m["reason"], json.dumps(m["new_units"]))
        for m in messages)
    (withdrawal,) = [e for e in events if e["reason"].startswith("诉求已撤回: ")]
    (withdrawn,) = _event_data(emitted, "appeal.withdrawn")
    assert withdrawal["new_units"] is None and withdrawal["actor"] == withdrawn["actor"]
    (override,) = [e for e in events if e["reason"].startswith("局改派: ")]
    assert override["actor"] == STAFF
    # new_units are the units of the dispatch that follows.
    after = [d for t, d in _appeal_events(emitted, override["_appeal_id"])
             if t == "appeal.dispatched"][-1]
    assert override["new_units"] == after["units"] and after["rule"] == f"bureau:{STAFF}"


def test_emitted_extension_decisions_stay_within_the_category_limit(emitted) -> None:
    from appeals_common.metrics import load_calendar

    calendar = load_calendar(CONFIG, Settings().timezone)
    requested = {r["extension_id"]: r for r in _event_data(emitted, "extension.requested")}
    decided = _event_data(emitted, "extension.decided")
    assert {d["approved"] for d in decided} == {True, False}
    # A request left undecided lapsed (the unit responded) or was cancelled (the
    # assignment taken back): no event says so, the unit's next event does.
    undecided = set(requested) - {d["extension_id"] for d in decided}
    ended_by = set()
    for extension_id in undecided:
        r = requested[extension_id]
        about = [(t, data) for t, data in _appeal_events(emitted, r["_appeal_id"])
                 if data.get("assignment_id") == r["assignment_id"]]
        at = next(i for i, (t, data) in enumerate(about)
                  if t == "extension.requested" and data["extension_id"] == extension_id)
        ended_by.add(next(t for t, data in about[at + 1:] if t in (
            "appeal.responded", "assignment.contributed", "assignment.reassigned")
            or (t == "assignment.return_decided" and data["accepted"])))
    # Lapsed (responded), cancelled (taken back, or the unit's return accepted).
    assert ended_by == {"appeal.responded", "assignment.reassigned",
                        "assignment.return_decided"}
    registered = {r["_appeal_id"]: r for r in _event_data(emitted, "appeal.registered")}
    views = {a["assignment_id"]: a for d in _event_data(emitted, "appeal.dispatched")
             for a in d["assignments"]}
    respond_by = {}  # assignment -> its respond-by after each decision
    for d in decided:
        r = requested[d["extension_id"]]
        assert (d["assignment_id"], d["reg_no"], d["dept_code"]) == (
            r["assignment_id"], r["reg_no"], r["dept_code"])
        view, appeal = views[d["assignment_id"]], registered[d["_appeal_id"]]
        latest = POLICY.for_assignment(calendar, datetime.fromisoformat(view["assigned_at"]),
                                       appeal["urgency"], appeal["category"]).latest_respond_by
        new = datetime.fromisoformat(d["respond_by"])
        before = respond_by.get(d["assignment_id"], datetime.fromisoformat(view["respond_by"]))
        if d["approved"]:
            assert before < new <= latest
        else:
            assert new == before
        respond_by[d["assignment_id"]] = new
    told = {(t["extension_id"], t["approved"], t["respond_by"])
            for t in _dept_messages(emitted, "extension_decision")}
    assert told == {(d["extension_id"], d["approved"], d["respond_by"]) for d in decided}


def _event_bodies(emitted: list[dict[str, Any]], *event_types: str) -> list[dict[str, Any]]:
    bodies = [json.loads(m["body"]) for m in emitted if m["exchange"] == EVENTS_EXCHANGE]
    return [b for b in bodies if not event_types or b["event_type"] in event_types]


SCAN_EVENTS = {"reminder": ("appeal.reminded",),
               "supervision_notice": ("appeal.overdue", "appeal.supervised"),
               "key_supervision_order": ("supervision_order.issued",)}


def test_emitted_deadline_notices_follow_the_clocks(emitted) -> None:
    """The scan's reminders, notices and orders about assignments' deadlines (driven
    across working days): each at its working moment, once per deadline, never about a
    deadline met or cancelled before (an appeal's closure cancels them too), each with
    the events the document names carrying the message's fields."""
    from appeals_common.metrics import load_calendar
    from services.supervision.escalation import (
        KEY_ORDER_AFTER_WORKING_DAYS,
        WorkingHours,
        in_working_hours,
    )

    calendar = load_calendar(CONFIG, Settings().timezone)
    notices = [m for kind in SCAN_EVENTS for m in _dept_messages(emitted, kind)
               if m.get("deadline") in ("sign", "respond")]  # a follow-up's order has none
    assert {(m["kind"], m["deadline"]) for m in notices} == {
        (kind, deadline) for kind in SCAN_EVENTS for deadline in ("sign", "respond")}
    keys = [(m["assignment_id"], m["deadline"], m["kind"]) for m in notices]
    assert len(keys) == len(set(keys)), "each notice once per deadline"

    views = {a["assignment_id"]: a for d in _event_data(emitted, "appeal.dispatched")
             for a in d["assignments"]}
    appeal_of = {a["assignment_id"]: d["_appeal_id"]
                 for d in _event_data(emitted, "appeal.dispatched") for a in d["assignments"]}
    # When each assignment's deadline stopped running (met or cancelled), if it did.
    stopped: dict[tuple[str, str], datetime] = {}
    ended_appeals = {b["appeal_id"]: datetime.fromisoformat(b["occurred_at"])
                     for b in _event_bodies(emitted, "appeal.withdrawn", "appeal.closed")}
    for b in _event_bodies(emitted):
        data, at = b["data"], datetime.fromisoformat(b["occurred_at"])
        stops = {"assignment.signed": ("sign",), "appeal.responded": ("respond",),
                 "assignment.reassigned": ("sign", "respond")}.get(b["event_type"], ())
        if b["event_type"] == "assignment.return_decided" and data["accepted"]:
            stops = ("sign", "respond")
        for deadline in stops:
            stopped.setdefault((data["assignment_id"], deadline), at)
    # The run closes an appeal while one of its units had not signed (its clock is
    # cancelled then, and nothing is sent about it afterwards).
    unsigned_at_closure = [a for a, appeal_id in appeal_of.items()
                           if ended_appeals.get(appeal_id) and (a, "sign") not in stopped
                           and appeal_id in {b["appeal_id"] for b in
                                             _event_bodies(emitted, "appeal.closed")}]
    assert unsigned_at_closure, "a closure with a unit's clock still open"

    for m in notices:
        sent_at, due_at = (datetime.fromisoformat(m[k]) for k in ("sent_at", "due_at"))
        sent_day, due_day = calendar.local_date(sent_at), calendar.local_date(due_at)
        view = views[m["assignment_id"]]
        assert (view["dept_code"], view["assignment_id"]) == (m["dept_code"], m["assignment_id"])
        if m["deadline"] == "sign":
            assert due_at == datetime.fromisoformat(view["sign_by"])
        else:
            assert view["role"] == "lead"
        assert in_working_hours(sent_at, calendar, WorkingHours()), m
        assert not stopped.get((m["assignment_id"], m["deadline"]), sent_at) < sent_at, m
        assert not ended_appeals.get(appeal_of[m["assignment_id"]], sent_at) < sent_at, m
        overdue = calendar.working_days_between(due_day, sent_day) if sent_at > due_at else 0
        assert m["working_days_overdue"] == overdue, m
        if m["kind"] == "reminder":
            assert sent_at <= due_at and sent_day >= calendar.previous_working_day(due_day)
        elif m["kind"] == "supervision_notice":
            assert sent_at > due_at and sent_day >= calendar.next_working_day(due_day)
        else:
            assert sent_at > due_at and overdue >= KEY_ORDER_AFTER_WORKING_DAYS
            # Unique per unit and deadline: the unit and the minute of issue are in it.
            assert m["order_no"] == \
                f"ZD-{m['reg_no']}-{m['dept_code']}-{m['deadline']}-{sent_at:%Y%m%d%H%M}"
            assert m["feedback_required"] is True
    orders = [m["order_no"] for m in notices if m["kind"] == "key_supervision_order"]
    assert len(orders) == len(set(orders))
    assert max(m["working_days_overdue"] for m in notices
               if m["kind"] == "key_supervision_order") > KEY_ORDER_AFTER_WORKING_DAYS, \
        "a scan after days without one still sends the order"

    # Each message goes with its events, which carry reg_no, assignment_id, dept_code and
    # the message's own fields (appeal.overdue: the deadline and when it was due), and
    # the appeal's id.
    common = set(merged(SCHEMAS["DepartmentMessageCommon"])[0]) - {"reg_no", "assignment_id",
                                                                    "dept_code"}
    for kind, event_types in SCAN_EVENTS.items():
        for event_type in event_types:
            events = [b for b in _event_bodies(emitted, event_type)
                      if b["data"].get("deadline") in ("sign", "respond")]
            expected = []
            for m in notices:
                if m["kind"] == kind:
                    data = {k: v for k, v in m.items() if k not in common}
                    if event_type == "appeal.overdue":
                        del data["working_days_overdue"]
                    expected.append(data)
            assert sorted(json.dumps(b["data"], sort_keys=True) for b in events) == sorted(
                json.dumps(d, sort_keys=True) for d in expected), event_type
            assert all(b["producer"] == "supervision" and b["correlation_id"] is None
                       for b in events)
            assert all(b["appeal_id"] == appeal_of[b["data"]["assignment_id"]]
                       for b in events), event_type


def test_emitted_class_problems_follow_their_flow(emitted) -> None:
    """类题破解 as the run drives it: three groups of similar appeals suggested (appeal_id
    null, no actor), two confirmed, one dismissed; the `class` clocks' notices go to the
    lead entity with the class id as reg_no and assignment_id, their events with appeal_id
    null; the class resolved after its reminder is not chased again, and its closure
    annotates every linked appeal (with that appeal's id)."""
    bodies = _event_bodies(emitted)
    class_events = [b for b in bodies if b["event_type"].startswith("class_problem.")]
    assert all(b["producer"] == "supervision" and b["correlation_id"] is None
               for b in class_events)
    assert all((b["appeal_id"] is None) == (b["event_type"] != "class_problem.annotated")
               for b in class_events)
    for b in class_events:  # each decision's state is its event's; only staff decide
        kind = b["event_type"].split(".", 1)[1]
        if kind != "annotated":
            assert b["data"]["state"] == kind
            assert ("actor" in b["data"]) == (kind != "suggested")
    suggested = [b["data"] for b in class_events if b["event_type"] == "class_problem.suggested"]
    registered = {d["reg_no"]: d for d in _event_data(emitted, "appeal.registered")}
    groups = {}
    for texts in (POWER_APPEALS, HIRING_APPEALS, INSPECTION_APPEALS):
        titles = {title for title, _ in texts}
        groups[frozenset(r for r, d in registered.items() if d["title"] in titles)] = texts
    assert {frozenset(c["reg_nos"]) for c in suggested} == set(groups)
    for c in suggested:
        members = [registered[r] for r in c["reg_nos"]]
        assert c["reg_nos"] == sorted(c["reg_nos"]) and c["keywords"]
        assert c["category"] == members[0]["category"]
        assert c["industry_chain"] == members[0]["industry_chain"]
        assert (c["lead_entity"], c["units"], c["deadline"], c["measures"], c["promote"],
                c["note"]) == (None, [], None, None, None, None)
        assert 0 < c["score"] <= 1
    class_ids = [c["class_id"] for c in suggested]
    year = datetime.fromisoformat(next(b["occurred_at"] for b in class_events)).year
    assert sorted(class_ids) == [f"LT-{year}-{n:04d}" for n in range(1, len(suggested) + 1)]

    def flow(class_id: str) -> list[tuple[str, dict[str, Any]]]:
        return [(b["event_type"].split(".", 1)[1], b["data"]) for b in class_events
                if b["data"]["class_id"] == class_id]

    flows = {c["class_id"]: flow(c["class_id"]) for c in suggested}
    (closed_id,) = [i for i, f in flows.items() if "closed" in dict(f)]
    (dismissed_id,) = [i for i, f in flows.items() if "dismissed" in dict(f)]
    (open_id,) = set(flows) - {closed_id, dismissed_id}
    members = {c["class_id"]: c["reg_nos"] for c in suggested}
    assert [k for k, _ in flows[closed_id]] == [
        "suggested", "confirmed", "resolved", "closed", *["annotated"] * len(members[closed_id])]
    assert [k for k, _ in flows[dismissed_id]] == ["suggested", "dismissed"]
    # The overdue one is resolved (its key order answered by the measures), not closed.
    assert [k for k, _ in flows[open_id]] == ["suggested", "confirmed", "resolved"]
    assert dict(flows[dismissed_id])["dismissed"]["note"]
    closed = dict(flows[closed_id])["closed"]
    assert closed["promote"] is True and closed["measures"] and closed["note"] == "全区推广"
    annotations = [b for b in class_events if b["event_type"] == "class_problem.annotated"]
    assert sorted(a["data"]["reg_no"] for a in annotations) == members[closed_id]
    for a in annotations:
        assert a["appeal_id"] == registered[a["data"]["reg_no"]]["_appeal_id"]
        assert a["data"] == {"reg_no": a["data"]["reg_no"], "class_id": closed_id,
                             "measures": closed["measures"], "promote": True,
                             "actor": closed["actor"]}

    # The `class` clocks: notices to the lead entity, about the class (no appeal).
    confirmed = {i: dict(f)["confirmed"] for i, f in flows.items() if "confirmed" in dict(f)}
    resolved_at = next(datetime.fromisoformat(b["occurred_at"]) for b in class_events
                       if b["event_type"] == "class_problem.resolved")
    notices = [m for kind in SCAN_EVENTS for m in _dept_messages(emitted, kind)
               if m.get("deadline") == "class"]
    assert {(m["reg_no"], m["kind"]) for m in notices} == {
        (closed_id, "reminder"), (open_id, "reminder"), (open_id, "supervision_notice"),
        (open_id, "key_supervision_order")}, "the resolved class is not chased again"
    for m in notices:
        c = confirmed[m["reg_no"]]
        assert (m["assignment_id"], m["dept_code"]) == (m["reg_no"], c["lead_entity"])
        assert datetime.fromisoformat(m["due_at"]) == datetime.fromisoformat(c["deadline"])
        sent_at = datetime.fromisoformat(m["sent_at"])
        if m["reg_no"] == closed_id:
            assert sent_at < resolved_at
        if m["kind"] == "key_supervision_order":
            assert m["order_no"] == f"ZD-{m['reg_no']}-{m['dept_code']}-class-{sent_at:%Y%m%d%H%M}"
    for kind, event_types in SCAN_EVENTS.items():
        for event_type in event_types:
            events = [b for b in _event_bodies(emitted, event_type)
                      if b["data"].get("deadline") == "class"]
            assert len(events) == len([m for m in notices if m["kind"] == kind]), event_type
            assert all(b["appeal_id"] is None and b["data"]["reg_no"] in confirmed
                       for b in events), event_type


def test_emitted_followup_order_and_closure(emitted) -> None:
    """An unsatisfied follow-up of a lead's answer: a key supervision order to that unit,
    supervision_order.issued and appeal.reopened agreeing on order_no and respond_by; the
    lead answers again and the bureau closes the appeal (enterprise unreachable)."""
    from appeals_common.metrics import load_calendar
    from services.supervision.usecases import REOPEN_WORKING_DAYS

    calendar = load_calendar(CONFIG, Settings().timezone)
    (order,) = [m for m in _dept_messages(emitted, "key_supervision_order") if "reasons" in m]
    (issued,) = [b for b in _event_bodies(emitted, "supervision_order.issued")
                 if "actor" in b["data"]]
    appeal_id = issued["appeal_id"]
    flow = _event_bodies(emitted)
    flow = [b for b in flow if b["appeal_id"] == appeal_id]
    types = [b["event_type"] for b in flow]
    at = types.index("supervision_order.issued")
    assert types[at - 1:at + 2] == ["followup.recorded", "supervision_order.issued",
                                    "appeal.reopened"]
    followup, _, reopened = flow[at - 1:at + 2]
    answered = [b for b in flow[:at] if b["event_type"] == "appeal.responded"][-1]["data"]
    assert (order["dept_code"], order["assignment_id"]) == (answered["dept_code"],
                                                            answered["assignment_id"])
    assert issued["data"] == {"reg_no": order["reg_no"], "actor": STAFF,
                              **{k: order[k] for k in ("dept_code", "assignment_id",
                                                       "order_no", "reasons", "grade",
                                                       "respond_by", "feedback_required",
                                                       "feedback_by", "deadlines_provisional")}}
    # The written feedback is due with the new answer.
    assert order["feedback_by"] == order["respond_by"]
    assert order["reasons"] == followup["data"]["comments"]
    assert order["grade"] == followup["data"]["grade"] == reopened["data"]["grade"]
    assert (reopened["data"]["order_no"], reopened["data"]["respond_by"]) == (
        order["order_no"], order["respond_by"])
    assert datetime.fromisoformat(order["respond_by"]) == calendar.add_working_days(
        datetime.fromisoformat(followup["occurred_at"]), REOPEN_WORKING_DAYS).at
    # The lead answers again, then the bureau closes it: the enterprise is unreachable.
    after = types[at + 2:]
    assert after.index("appeal.responded") < after.index("appeal.closed")
    (closed,) = [b["data"] for b in flow if b["event_type"] == "appeal.closed"]
    assert closed["reason"] == "enterprise_unreachable" and closed["actor"] == STAFF
    assert closed["contact_attempts"] >= 3 and closed["note"]
    reasons = {d["reason"] for d in _event_data(emitted, "appeal.closed")}
    assert reasons == {"satisfied_followup", "enterprise_unreachable"}


def _supervision_notices(emitted: list[dict[str, Any]], *deadlines: str) -> list[dict]:
    """Supervision's reminders, notices and orders about the given kinds of deadline."""
    return [m for kind in SCAN_EVENTS for m in _dept_messages(emitted, kind)
            if m.get("deadline") in deadlines]


def _check_notice_timing(m: dict[str, Any], calendar: Any) -> None:
    """A reminder before its deadline (from the working day before, or 20 working days
    before for a yearly patrol), a supervision notice from the working day after it."""
    from services.supervision.clocks import REMIND_WORKING_DAYS

    sent_at, due_at = (datetime.fromisoformat(m[k]) for k in ("sent_at", "due_at"))
    sent_day, due_day = calendar.local_date(sent_at), calendar.local_date(due_at)
    if m["kind"] == "reminder":
        remind_from = due_day
        for _ in range(REMIND_WORKING_DAYS.get(m["deadline"], 1)):
            remind_from = calendar.previous_working_day(remind_from)
        assert sent_at <= due_at and sent_day >= remind_from, m
        assert m["working_days_overdue"] == 0
    else:
        assert m["kind"] == "supervision_notice", m
        assert sent_at > due_at and sent_day >= calendar.next_working_day(due_day), m
        assert m["working_days_overdue"] == calendar.working_days_between(due_day, sent_day)


def _check_notice_events(emitted: list[dict[str, Any]], m: dict[str, Any],
                         appeal_id: str | None) -> None:
    """The events a notice goes with carry its fields and the given appeal_id."""
    event_types = SCAN_EVENTS[m["kind"]]
    found = [b for b in _event_bodies(emitted, *event_types)
             if (b["data"]["assignment_id"], b["data"]["deadline"], b["event_type"]) in
             {(m["assignment_id"], m["deadline"], t) for t in event_types}
             and abs(datetime.fromisoformat(b["occurred_at"])
                     - datetime.fromisoformat(m["sent_at"])) < timedelta(seconds=1)]
    assert sorted(b["event_type"] for b in found) == sorted(event_types), m
    assert all(b["appeal_id"] == appeal_id and b["producer"] == "supervision" for b in found), m


def test_emitted_written_feedback_follows_the_orders(emitted) -> None:
    """书面反馈: every key supervision order says when its written feedback is due; units
    answer with `feedback` replies - accepted once per order, on time or late, refused
    otherwise - and supervision reminds and chases the answers still owed, about the
    order's appeal and never with another order."""
    from appeals_common.metrics import load_calendar
    from services.supervision.clocks import KEY_ORDER_FEEDBACK_WORKING_DAYS

    calendar = load_calendar(CONFIG, Settings().timezone)
    orders = {m["order_no"]: m for m in _dept_messages(emitted, "key_supervision_order")}
    for m in orders.values():
        sent_at = datetime.fromisoformat(m["sent_at"])
        due = calendar.add_working_days(sent_at, KEY_ORDER_FEEDBACK_WORKING_DAYS).at \
            if "deadline" in m else datetime.fromisoformat(m["respond_by"])
        assert datetime.fromisoformat(m["feedback_by"]) == due, m
    issued = {b["data"]["order_no"]: b for b in _event_bodies(emitted, "supervision_order.issued")}
    assert set(issued) == set(orders)
    for order_no, b in issued.items():
        assert {k: b["data"][k] for k in ("reg_no", "assignment_id", "dept_code", "feedback_by")} \
            == {k: orders[order_no][k] for k in ("reg_no", "assignment_id", "dept_code",
                                                  "feedback_by")}

    answered = _event_bodies(emitted, "supervision_order.answered")
    assert len({b["data"]["order_no"] for b in answered}) == len(answered), "once per order"
    assert {b["data"]["on_time"] for b in answered} == {True, False}
    assert {"deadline" in orders[b["data"]["order_no"]] for b in answered} == {True, False}, \
        "orders of the scan and after a follow-up are answered"
    results = {r["reply_message_id"]: r for r in _dept_messages(emitted, "reply_result")}
    # A class problem's order is answered by supervision when the class is resolved.
    (by_class,) = [b for b in answered if b["producer"] == "supervision"]
    class_order = orders[by_class["data"]["order_no"]]
    assert class_order["deadline"] == "class" and by_class["appeal_id"] is None
    assert by_class["data"]["reg_no"] == class_order["reg_no"] == by_class["data"]["assignment_id"]
    assert by_class["data"]["feedback"] == "统一检查标准，合并同类检查事项"
    answered = [b for b in answered if b is not by_class]
    for b in answered:
        data, order = b["data"], orders[b["data"]["order_no"]]
        assert b["producer"] == "dispatch" and b["appeal_id"] == issued[order["order_no"]][
            "appeal_id"] is not None
        assert (data["reg_no"], data["assignment_id"], data["dept_code"]) == (
            order["reg_no"], order["assignment_id"], order["dept_code"])
        assert data["actor"] == f"dept:{order['dept_code']}" and data["feedback"]
        assert data["on_time"] == (datetime.fromisoformat(data["answered_at"])
                                   <= datetime.fromisoformat(order["feedback_by"]))
        result = results[b["correlation_id"]]  # the reply it came from was accepted
        assert (result["action"], result["status"], result["assignment_id"]) == (
            "feedback", "accepted", order["assignment_id"])
    refused = [r for r in results.values() if r["action"] == "feedback" and r["status"] == "refused"]
    assert len(refused) == 3 and all(set(r["errors"]) == {"order_no"} for r in refused)

    # The feedback still owed: reminded, then chased (never ordered), about the order's
    # appeal; nothing once answered.
    answered_at = {b["data"]["order_no"]: datetime.fromisoformat(b["occurred_at"])
                   for b in answered}
    notices = _supervision_notices(emitted, "feedback")
    assert {m["kind"] for m in notices} == {"reminder", "supervision_notice"}
    keys = [(m["assignment_id"], m["kind"]) for m in notices]
    assert len(keys) == len(set(keys)), "each notice once per order"
    for m in notices:
        order = orders[m["assignment_id"]]
        assert (m["reg_no"], m["dept_code"]) == (order["reg_no"], order["dept_code"])
        assert datetime.fromisoformat(m["due_at"]) == datetime.fromisoformat(order["feedback_by"])
        assert not answered_at.get(order["order_no"], datetime.fromisoformat(m["sent_at"])) < \
            datetime.fromisoformat(m["sent_at"]), m
        _check_notice_timing(m, calendar)
        _check_notice_events(emitted, m, issued[order["order_no"]]["appeal_id"])
    last_scan = _local(2025, 3, 19, 9, 30)  # chased: every answer due before it, still owed
    assert {m["assignment_id"] for m in notices if m["kind"] == "supervision_notice"} == {
        o for o, m in orders.items() if datetime.fromisoformat(m["feedback_by"]) < last_scan
        and answered_at.get(o, last_scan) >= last_scan}


def test_emitted_walkthroughs_and_their_list_items(emitted) -> None:
    """我陪群众走流程: a walkthrough's findings become list items (ids after the
    walkthrough's), each owner chased by the item's deadline until it is closed out -
    on time or late; none of it is about an appeal."""
    from appeals_common.metrics import load_calendar

    calendar = load_calendar(CONFIG, Settings().timezone)
    recorded = _event_bodies(emitted, "walkthrough.recorded")
    closed = _event_bodies(emitted, "walkthrough_item.closed")
    assert all(b["producer"] == "supervision" and b["appeal_id"] is None
               and b["correlation_id"] is None and b["data"]["actor"] == STAFF
               for b in recorded + closed)
    assert sorted(len(b["data"]["items"]) for b in recorded) == [0, 3]
    items = {}
    for b in recorded:
        w = b["data"]
        assert [i["item_id"] for i in w["items"]] == [
            f"{w['walkthrough_id']}-{n}" for n in range(1, len(w["items"]) + 1)]
        items.update({i["item_id"]: {**i, "walkthrough_id": w["walkthrough_id"]}
                      for i in w["items"]})
    assert [i["list"] for i in items.values()] == ["problem", "demand", "optimization"]
    closed_at = {}
    for b in closed:
        c, item = b["data"], items[b["data"]["item_id"]]
        assert (c["walkthrough_id"], c["list"], c["owner"]) == (
            item["walkthrough_id"], item["list"], item["owner"])
        assert c["closed_at"] == b["occurred_at"] and c["resolution"]
        assert c["on_time"] == (datetime.fromisoformat(c["closed_at"])
                                <= datetime.fromisoformat(item["due_at"]))
        closed_at[c["item_id"]] = datetime.fromisoformat(c["closed_at"])
    assert len(closed_at) == len(closed) == 2 and {b["data"]["on_time"] for b in closed} == {
        True, False}
    notices = _supervision_notices(emitted, "item")
    assert {m["kind"] for m in notices} == {"reminder", "supervision_notice"}
    assert {m["reg_no"] for m in notices} == set(items), "every item chased until closed"
    for m in notices:
        item = items[m["reg_no"]]
        assert (m["assignment_id"], m["dept_code"]) == (m["reg_no"], item["owner"])
        assert datetime.fromisoformat(m["due_at"]) == datetime.fromisoformat(item["due_at"])
        sent_at = datetime.fromisoformat(m["sent_at"])
        assert not closed_at.get(m["reg_no"], sent_at) < sent_at, m
        _check_notice_timing(m, calendar)
        _check_notice_events(emitted, m, None)


def test_emitted_patrol_obligations_go_to_the_chain_leads(emitted) -> None:
    """附件1: a chain patrol's plan and report are timed from its day and chased to the
    lead unit of its chain until filed (on time or late, with the 附件3 list); each key
    chain without a patrol in a year is reminded 20 working days before the year's last
    working day and chased after it. None of it is about an appeal."""
    from appeals_common.activity_schedule import patrol_year_due, plan_due, report_due
    from appeals_common.metrics import load_calendar
    from appeals_common.schemas import PatrolReportSchema

    calendar = load_calendar(CONFIG, Settings().timezone)
    chains = load_industry_chains(CONFIG, load_departments(CONFIG))
    patrols = {a["activity_id"]: a for a in _event_data(emitted, "activity.registered")
               if a["kind"] == "chain_patrol"}
    assert len(patrols) == 2
    assert any(a["lead_unit"] != chains[a["industry_chain"]].lead for a in patrols.values())
    plans = _event_bodies(emitted, "activity.plan_submitted")
    reports = _event_bodies(emitted, "activity.report_submitted")
    filed = {}
    for b in plans + reports:
        data, name = b["data"], b["event_type"].split(".")[1].split("_")[0]
        patrol = patrols[data["activity_id"]]
        assert b["producer"] == "supervision" and b["appeal_id"] is None
        assert {k: data[k] for k in ("industry_chain", "lead_unit", "held_on")} == {
            k: patrol[k] for k in ("industry_chain", "lead_unit", "held_on")}
        due = (plan_due if name == "plan" else report_due)(
            calendar, date.fromisoformat(patrol["held_on"]))
        assert datetime.fromisoformat(data[f"{name}_due_at"]) == due
        assert data["submitted_at"] == b["occurred_at"]
        assert data["on_time"] == (datetime.fromisoformat(data["submitted_at"]) <= due)
        assert data["actor"] in (STAFF, f"{chains[patrol['industry_chain']].lead}-user")
        filed[data["activity_id"], name] = datetime.fromisoformat(data["submitted_at"])
    assert [b["data"]["on_time"] for b in plans] == [False]
    assert sorted(b["data"]["on_time"] for b in reports) == [False, True]
    for b in reports:  # as filed, with the defaults of the 附件3 rows filled in
        data = b["data"]
        loaded = PatrolReportSchema().load({k: data[k] for k in PATROL_REPORT})
        assert {k: data[k] for k in PATROL_REPORT} == loaded
    (digital,) = [b["data"] for b in reports if b["data"]["service_items"]]
    assert digital["service_items"] == PatrolReportSchema().load(PATROL_REPORT)["service_items"]
    assert digital["service_items"][1]["contact_phone"] is None

    notices = _supervision_notices(emitted, "plan", "report")
    assert {(m["kind"], m["deadline"]) for m in notices} == {
        ("reminder", "plan"), ("supervision_notice", "plan"), ("supervision_notice", "report")}
    for m in notices:
        patrol = patrols[m["reg_no"]]
        assert (m["assignment_id"], m["dept_code"]) == (
            m["reg_no"], chains[patrol["industry_chain"]].lead)
        due = (plan_due if m["deadline"] == "plan" else report_due)(
            calendar, date.fromisoformat(patrol["held_on"]))
        assert datetime.fromisoformat(m["due_at"]) == due
        sent_at = datetime.fromisoformat(m["sent_at"])
        assert not filed.get((m["reg_no"], m["deadline"]), sent_at) < sent_at, m
        _check_notice_timing(m, calendar)
        _check_notice_events(emitted, m, None)

    yearly = _supervision_notices(emitted, "patrol")
    assert sorted((m["reg_no"], m["kind"]) for m in yearly) == sorted(
        (f"patrol-{chain}-2024", kind) for chain in chains
        for kind in ("reminder", "supervision_notice"))
    for m in yearly:
        chain = m["reg_no"].removeprefix("patrol-").removesuffix("-2024")
        assert (m["assignment_id"], m["dept_code"]) == (m["reg_no"], chains[chain].lead)
        assert datetime.fromisoformat(m["due_at"]) == patrol_year_due(calendar, 2024)
        _check_notice_timing(m, calendar)
        _check_notice_events(emitted, m, None)


def test_emitted_notices_cover_every_duty(emitted) -> None:
    """The run chases every kind of duty supervision's clocks time, and only a unit's
    work on an appeal or a class escalates to a key supervision order."""
    from services.supervision.clocks import APPEAL_KINDS, CLOCK_KINDS, ORDER_KINDS, REMIND_ONLY_KINDS

    sent = {(m["kind"], m["deadline"]) for m in _supervision_notices(emitted, *CLOCK_KINDS)}
    # (No scan of the run falls in a report's reminder window: reports are chased after.)
    assert sent == {("reminder", kind) for kind in CLOCK_KINDS - {"report"}} | {
        ("supervision_notice", kind) for kind in CLOCK_KINDS - REMIND_ONLY_KINDS} | {
        ("key_supervision_order", kind) for kind in ORDER_KINDS}
    appeals = {d["_appeal_id"] for d in _event_data(emitted, "appeal.registered")}
    for b in _event_bodies(emitted, *{t for types in SCAN_EVENTS.values() for t in types}):
        if b["data"].get("deadline"):  # about a registered appeal, or about no appeal at all
            about_appeal = b["data"]["deadline"] in APPEAL_KINDS
            assert (b["appeal_id"] in appeals if about_appeal else b["appeal_id"] is None), b


def test_recomputed_deadlines_are_told_once(recomputed) -> None:
    """`appeals calendar recompute` (see _run_recompute): each unit whose provisional dates
    moved is told once, with the dates the official calendar gives and those they replace,
    and `deadline.recomputed` goes with it - alone only for the limit of an extension."""
    from appeals_common.activity_schedule import patrol_year_due, plan_due
    from services.supervision.usecases import REOPEN_WORKING_DAYS

    sent, year, order, patrol = (recomputed[k] for k in ("sent", "year", "order", "patrol"))
    calendar, official = recomputed["calendar"], recomputed["official"]
    told = _dept_messages(sent, "deadlines_changed")
    events = _event_bodies(sent, "deadline.recomputed")
    appeal_ids = {d["reg_no"]: d["_appeal_id"] for d in _event_data(sent, "appeal.registered")}
    assignments = {m["assignment_id"]: m for m in _dept_messages(sent, "assignment")}
    assert {m["duty"] for m in told} == DUTIES
    keys = [(m["assignment_id"], m["duty"], name) for m in told for name in m["deadlines"]]
    assert len(keys) == len(set(keys)), "each change told once"
    for m in told:
        assert m["reason"] == "calendar" and m["deadlines_provisional"] is False, m
        assert set(m["deadlines"]) == set(m["previous"]), m
        new, old = ({n: datetime.fromisoformat(v) for n, v in m[k].items()}
                    for k in ("deadlines", "previous"))
        assert all(new[n] != old[n] for n in new), m
        # Its event: the message's fields, `actor` calendar, the appeal's id.
        (event,) = [e for e in events if (e["data"]["assignment_id"], e["data"]["duty"]) == (
            m["assignment_id"], m["duty"]) and set(m["deadlines"]) <= set(e["data"]["deadlines"])]
        data = event["data"]
        assert {k: data.get(k) for k in ("reg_no", "dept_code", "deadlines_provisional",
                                          "order_no")} == {
            k: m.get(k) for k in ("reg_no", "dept_code", "deadlines_provisional", "order_no")}
        for k in ("deadlines", "previous"):
            assert {n: data[k][n] for n in m[k]} == m[k], m
        assert data["actor"] == "calendar" and event["correlation_id"] is None
        by_dispatch = m["duty"] == "assignment"
        assert (event["producer"], "role" in data) == (
            ("dispatch", True) if by_dispatch else ("supervision", False)), m
        assert event["appeal_id"] == (appeal_ids[m["reg_no"]] if m["duty"] in (
            "assignment", "key_order") else None), m
        # The dates are the official calendar's, in place of the provisional ones.
        if by_dispatch:
            a = assignments[m["assignment_id"]]
            fresh = POLICY.for_assignment(official, datetime.fromisoformat(a["sent_at"]),
                                          a["urgency"], a["category"])
            assert data["role"] == a["role"] and not fresh.provisional
            for n in new:
                assert (new[n], old[n]) == (getattr(fresh, n), datetime.fromisoformat(a[n])), n
        elif m["duty"] == "key_order":
            ((name, due),) = new.items()
            assert (m["reg_no"], m["assignment_id"], m["dept_code"]) == (
                order["reg_no"], order["assignment_id"], order["dept_code"])
            assert ("order_no" in m) == (name == "feedback_by")
            assert due == official.add_working_days(datetime.fromisoformat(order["sent_at"]),
                                                    REOPEN_WORKING_DAYS).at
            assert old[name] == datetime.fromisoformat(order[name])
        elif m["duty"] == "activity":
            held_on = date.fromisoformat(patrol["held_on"])
            assert m["reg_no"] == m["assignment_id"] == patrol["activity_id"]
            assert (new, old) == ({"plan_due_at": plan_due(official, held_on)},
                                  {"plan_due_at": plan_due(calendar, held_on)})
        else:
            assert re.fullmatch(rf"patrol-[a-z_]+-{year}", m["reg_no"])
            assert m["reg_no"] == m["assignment_id"] and m["reg_no"] != \
                f"patrol-{patrol['industry_chain']}-{year}"
            assert (new, old) == ({"patrol_due_at": patrol_year_due(official, year)},
                                  {"patrol_due_at": patrol_year_due(calendar, year)})
    # Every event goes with a message - but a change of the limit an extension may reach.
    told_keys = {(m["assignment_id"], m["duty"], frozenset(m["deadlines"])) for m in told}
    alone = []
    for e in events:
        data = e["data"]
        names = frozenset(data["deadlines"]) - {"latest_respond_by"}
        if (data["assignment_id"], data["duty"], names) not in told_keys:
            assert not names and e["producer"] == "dispatch", e
            alone.append(data)
    assert len(events) == len(told) + len(alone) and alone, "a change no unit is told of"


def test_retry_and_dead_letter_headers_match() -> None:
    from appeals_common.nameko_ext import ReliableConsumer, Unprocessable

    published: list[dict[str, Any]] = []
    consumer = ReliableConsumer("dispatch.replies")
    consumer.container = SimpleNamespace(service_name="dispatch")
    consumer.settings = Settings()
    consumer._publisher = SimpleNamespace(publish_batch=published.extend)
    delays = Settings().retry_delays_ms
    delivery = _delivery({"x": 1}, "dept.swj.sign", REPLIES_EXCHANGE)
    for attempt in range(1, len(delays) + 2):
        delivery = delivery.__class__(**{**delivery.__dict__, "attempt": attempt,
                                         "headers": published[-1]["headers"] if published else {}})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            consumer._park(delivery, sys.exc_info())
    try:
        raise Unprocessable("no such department")
    except Unprocessable:
        consumer._park(_delivery({"x": 2}, "dept.nobody.sign", REPLIES_EXCHANGE), sys.exc_info())

    *retries, dead, unprocessable = published
    assert [r["exchange"] for r in retries] == [retry_exchange(d) for d in delays]
    for r in retries:
        assert r["exchange"] in DOC["channels"] and r["routing_key"] == "dispatch.replies"
        assert not problems(MESSAGES["ParkedForRetry"]["headers"], r["headers"], closed=False)
        assert set(r["headers"]) <= set(merged(MESSAGES["ParkedForRetry"]["headers"])[0])
    for d in (dead, unprocessable):
        assert (d["exchange"], d["routing_key"]) == ("", dead_letter_queue("dispatch.replies"))
        headers = MESSAGES["DeadLetter"]["headers"]
        assert not problems(headers, d["headers"]), problems(headers, d["headers"])
    assert dead["headers"]["x-attempts"] == len(delays) + 1
    assert unprocessable["headers"]["x-attempts"] == 1
