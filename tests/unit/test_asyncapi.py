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
            REPLY_SCHEMAS[action]().load(example["payload"])
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

def test_department_messages_match_the_code() -> None:
    by_kind = department_messages()
    assert list(by_kind) == choices(DepartmentMessageSchema().fields["kind"])
    common, common_required = merged(SCHEMAS["DepartmentMessageCommon"])
    assert set(common) == set(DepartmentMessageSchema().fields)
    assert common_required == required_fields(DepartmentMessageSchema())
    assert enum_of(common["kind"]) == list(by_kind)

    assignment, assignment_required = merged(message_payload(by_kind["assignment"]))
    assert set(AssignmentMessageSchema().fields) <= set(assignment)
    assert required_fields(AssignmentMessageSchema()) <= assignment_required
    assert {"sign_by", "return_by", "respond_by"} <= assignment_required
    assert f"{DeadlinePolicy().return_working_days} working days" in assignment["return_by"]["description"]
    # The example's deadlines are what the policy and calendar give for its sent_at.
    from appeals_common.metrics import load_calendar

    example = by_kind["assignment"]["examples"][0]["payload"]
    deadlines = DeadlinePolicy().for_assignment(
        load_calendar(CONFIG, Settings().timezone), datetime.fromisoformat(example["sent_at"]),
        example["urgency"])
    for name in ("sign_by", "return_by", "respond_by"):
        assert datetime.fromisoformat(example[name]) == getattr(deadlines, name), name
    assert example["deadlines_provisional"] == deadlines.provisional
    assert assignment["kind"]["const"] == "assignment"
    assert enum_of(assignment["role"]) == choices(AssignmentMessageSchema().fields["role"])
    reply_result, _ = merged(message_payload(by_kind["reply_result"]))
    assert set(ReplyResultMessageSchema().fields) <= set(reply_result)
    assert enum_of(reply_result["status"]) == choices(ReplyResultMessageSchema().fields["status"])
    for kind in ("reminder", "supervision_notice", "key_supervision_order", "reassigned"):
        assert is_reserved(by_kind[kind]), kind
        props, _ = merged(message_payload(by_kind[kind]))
        assert set(props) == set(DepartmentMessageSchema().fields), kind


# --- what the code really sends ------------------------------------------------------

NOW = datetime(2025, 3, 3, 2, 0, tzinfo=UTC)


def _delivery(body: Any, routing_key: str, exchange: str, message_id: str | None = None,
              content_type: str = "application/json"):
    from appeals_common.nameko_ext import Delivery

    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    return Delivery(body=raw, routing_key=routing_key, exchange=exchange,
                    message_id=message_id if message_id is not None else str(uuid.uuid4()),
                    content_type=content_type, headers={}, attempt=1)


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
        self.runtime = ServiceRuntime(name, Settings(), self.store, self.clock)
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
    on the spot, an activity (and an appeal taken at it), reclassify and withdraw.

    Timestamps make the real round trip through SQLite (`appeals_common.db.UtcDateTime`):
    deadlines stored at assignment are read back aware and compared with aware times."""
    return _run_appeals(tmp_path_factory.mktemp("asyncapi"))


def _run_appeals(directory: Path) -> list[dict[str, Any]]:
    from appeals_common.metrics import load_calendar
    from appeals_common.registries import load_routing_rules
    from services.dispatch import usecases as dispatch_uc
    from services.dispatch.models import Assignment as DispatchAssignment
    from services.dispatch.models import Base as DispatchBase
    from services.dispatch.models import DispatchAppeal
    from services.dispatch.routing import Router
    from services.intake import usecases as intake_uc
    from services.intake.classification import Classifier
    from services.intake.models import Base as IntakeBase
    from services.supervision import usecases as supervision_uc
    from services.supervision.models import Base as SupervisionBase

    intake = _Service("intake", IntakeBase, directory)
    dispatch = _Service("dispatch", DispatchBase, directory)
    supervision = _Service("supervision", SupervisionBase, directory)
    departments = load_departments(CONFIG)
    calendar = load_calendar(CONFIG, Settings().timezone)
    intake_ctx = intake_uc.IntakeContext(
        sources=frozenset(load_source_systems(CONFIG)), departments=frozenset(departments),
        classifier=Classifier(load_categories(CONFIG), load_industry_chains(CONFIG, departments)))
    ctx = dispatch_uc.DispatchContext(
        router=Router.from_config(load_routing_rules(CONFIG, departments)), calendar=calendar,
        policy=DeadlinePolicy(), departments=set(departments))
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
                supervision_uc.on_event(supervision.runtime, calendar, event)

    example = MESSAGES["InboundAppeal"]["examples"][0]["payload"]

    def settle() -> dict[tuple[str, str], dict[str, Any]]:
        """Deliver what intake sent, then what dispatch sent in answer; the assignments."""
        to_others(collect(intake))
        assignments = {}
        new = collect(dispatch)
        for m in new:
            if m["exchange"] == DISPATCH_EXCHANGE:
                assignment = json.loads(m["body"])
                assignments[assignment["role"], assignment["dept_code"]] = assignment
        to_others(new)
        collect(supervision)
        return assignments

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

    # Appeal A: the lead signs and responds; a satisfied follow-up closes it.
    a = submit("A-1", "留抵退税进度", "申请退税至今未到账。")
    (lead_a,) = a.values()
    reply(lead_a, "sign", operator="李四")
    reply(lead_a, "respond", outcome="solved", reply="已到账。", contacted_at=NOW.isoformat())
    supervision_uc.record_followup(supervision.runtime, lead_a["reg_no"],
                                   {"grade": "satisfied", "resolved": True}, "staff:wang")
    to_others(collect(supervision))

    # Appeal B: lead and co-unit; the co-unit contributes, the lead asks for more time,
    # responds, and an unsatisfied follow-up reopens it.
    # Its enterprise's USCC is sent with spaces, hyphens and lowercase (USCC_LOOSE).
    b = submit("B-1", "施工许可办理", "项目施工许可审批超时。", category=None, attachments=[],
               enterprise={**example["enterprise"], "uscc": USCC_LOOSE})
    lead_b = next(v for (role, _), v in b.items() if role == "lead")
    co_b = next(v for (role, _), v in b.items() if role == "co")
    reply(co_b, "sign")
    reply(co_b, "respond", outcome="explained", reply="已配合说明。", contacted_at=NOW.isoformat())
    reply(lead_b, "sign")
    reply(lead_b, "extend", requested_until=(NOW + timedelta(days=40)).isoformat(), reason="会商")
    reply(lead_b, "respond", outcome="not_solvable", reply="政策不支持。", contacted_at=NOW.isoformat())
    supervision_uc.record_followup(supervision.runtime, lead_b["reg_no"],
                                   {"grade": "unsatisfied", "resolved": False}, "staff:wang")
    to_others(collect(supervision))

    # Appeal C: returned by its lead; then refused replies.
    c = submit("C-1", "发票领用", "发票领用数量不够。", urgency="urgent")
    (lead_c,) = c.values()
    reply(lead_c, "return", reason_code="not_in_scope", reason="不属本单位职责", suggested_unit="scjgj")
    reply(lead_c, "sign", expect="refused", unexpected="field")
    status = dispatch_uc.on_reply(dispatch.runtime, ctx, _delivery(
        b"not json", f"dept.{lead_c['dept_code']}.approve", REPLIES_EXCHANGE))
    assert status == "refused"
    collect(dispatch)

    # Appeal E: its lead returns it after `return_by` - refused, naming when the window closed.
    e = submit("E-1", "留抵退税到账慢", "申请退税一直未到账。")
    (lead_e,) = e.values()
    return_by = datetime.fromisoformat(lead_e["return_by"])
    assert NOW < return_by < datetime.fromisoformat(lead_e["respond_by"])
    dispatch.clock.moment = return_by + timedelta(seconds=1)
    late = reply(lead_e, "return", expect="refused", reason_code="not_in_scope", reason="超期退单")
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
    assert _row(dispatch, DispatchAppeal, on_spot["appeal_id"]).state == "registered"
    supervision_uc.record_followup(supervision.runtime, on_spot["reg_no"],
                                   {"grade": "satisfied", "resolved": True}, STAFF)
    to_others(collect(supervision))

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
    return sent


STAFF = "wang"  # a staff member's token subject
UNKNOWN_ACTIVITY = "sit_in-20990101-000000"


def _row(service: _Service, model: Any, key: str) -> Any:
    with service.store.read() as session:
        row = session.get(model, key)
        assert row is not None, (model, key)
        session.expunge(row)
        return row


def test_emitted_events_match_their_messages(emitted) -> None:
    documented = event_messages()
    seen = set()
    for m in emitted:
        if m["exchange"] != EVENTS_EXCHANGE:
            continue
        body = json.loads(m["body"])
        event_type = body["event_type"]
        assert m["routing_key"] == event_type and m["message_id"] == body["event_id"]
        assert m["content_type"] == "application/json"
        message = documented[event_type]
        assert not is_reserved(message), f"{event_type} is emitted but documented as reserved"
        assert not problems(message["payload"], body), (event_type, problems(message["payload"], body))
        data_schema = merged(message_payload(message))[0]["data"]
        data_props, _ = merged(data_schema)
        assert set(body["data"]) == set(data_props), event_type
        seen.add(event_type)
    not_reserved = {t for t, message in documented.items() if not is_reserved(message)}
    assert seen == not_reserved, "documented as emitted but not emitted (or the reverse)"


def test_emitted_department_messages_match(emitted) -> None:
    by_kind = department_messages()
    kinds = set()
    refused: list[tuple[bool, bool]] = []
    for m in emitted:
        if m["exchange"] != DISPATCH_EXCHANGE:
            continue
        body = json.loads(m["body"])
        assert m["routing_key"] == f"dept.{body['dept_code']}" and m["message_id"] == body["message_id"]
        message = by_kind[body["kind"]]
        assert not is_reserved(message), body["kind"]
        assert not problems(message["payload"], body), (body["kind"], problems(message["payload"], body))
        kinds.add((body["kind"], body.get("status")))
        if body["kind"] == "assignment":
            assert body["enterprise"]["uscc"] == USCC_COMPACT  # also when sent as USCC_LOOSE
        if body.get("status") == "refused":
            refused.append((bool(body["reg_no"]), body["assignment_id"] is not None))
    assert kinds >= {("assignment", None), ("reply_result", "accepted"), ("reply_result", "refused")}
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
    # 当场办结: flagged on registration, followed by resolved_on_spot, never dispatched.
    (on_spot,) = [r for r in registered if r["resolved_on_spot"]]
    assert on_spot["source_system"] == "staff" and on_spot["registered_by"] == STAFF
    (resolved,) = _event_data(emitted, "appeal.resolved_on_spot")
    assert resolved["_appeal_id"] == on_spot["_appeal_id"] and resolved["actor"] == STAFF
    assert on_spot["_appeal_id"] not in dispatched
    assert all(r["_appeal_id"] in dispatched for r in registered if not r["resolved_on_spot"])
    # Activities: appeal_id null; an appeal taken at one names it.
    (activity,) = _event_data(emitted, "activity.registered")
    assert activity["_appeal_id"] is None
    assert [r["reg_no"] for r in registered if r["activity_id"] == activity["activity_id"]]
    # Reclassification keeps the codes and rules before; the second sees the first's rule.
    first, second = _event_data(emitted, "appeal.reclassified")
    assert first["reg_no"] == second["reg_no"] and first["category"] == second["category"]
    assert second["previous"]["category_rule"] == f"staff:{STAFF}"
    assert second["previous"]["industry_chain"] == first["industry_chain"]
    (withdrawn,) = _event_data(emitted, "appeal.withdrawn")
    assert withdrawn["reg_no"] == first["reg_no"] and withdrawn["actor"] == STAFF


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
