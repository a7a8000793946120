"""docs/openapi.yaml stays true to the code. No network, no broker, no database.

* the document is valid OpenAPI 3.1;
* its operations are exactly the nameko @http entrypoints of the four service classes,
  each on the service (port) that serves it, with the roles its `api(...)` decorator
  allows;
* its request bodies mirror the marshmallow schemas the use cases load (field names
  with data_key, required, nullability, defaults, lengths, enums, ranges, patterns),
  and agree with them on sample bodies; the query parameters of GET /appeals are
  SearchSchema's fields;
* supervision's vocabularies (walkthrough modes, lists and 五看 standards, key order
  causes, clock kinds) are the code's, and GET /activity-obligations has the shape
  `appeals_common.activity_schedule.compliance` gives.
"""

from __future__ import annotations

import copy
import inspect
import re
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from marshmallow import RAISE, Schema, ValidationError, fields, missing, validate
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from appeals_common.lifecycle import ASSIGNMENT_STATES
from appeals_common.reference import RETURN_REASONS, ROLES
from appeals_common.schemas import (
    ActivitySchema,
    ExtensionDecisionSchema,
    FollowupSchema,
    ItemClosureSchema,
    OnSpotAppealSchema,
    OverrideSchema,
    PatrolPlanSchema,
    PatrolReportSchema,
    ReclassifySchema,
    ReturnDecisionSchema,
    SearchSchema,
    StaffAppealSchema,
    UnreachableClosureSchema,
    WalkthroughSchema,
    WithdrawSchema,
)
from appeals_common.settings import DEFAULT_HTTP_PORTS

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # eventlet's deprecation notice, through nameko
    from nameko.web.handlers import HttpRequestHandler

    from services.dispatch.service import DispatchService
    from services.intake.service import IntakeService
    from services.reporting.service import ReportingService
    from services.supervision.class_problem_usecases import (
        CloseSchema,
        ConfirmSchema,
        DismissSchema,
        ResolveSchema,
    )
    from services.supervision.service import SupervisionService

SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
SERVICE_CLASSES = {"intake": IntakeService, "dispatch": DispatchService,
                   "supervision": SupervisionService, "reporting": ReportingService}
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
SPEC_URI = "urn:appeals:openapi"

# Request body of each operation -> the marshmallow schema its use case loads.
REQUEST_SCHEMAS: dict[tuple[str, str], type[Schema]] = {
    ("POST", "/appeals"): StaffAppealSchema,
    ("POST", "/appeals/on-spot"): OnSpotAppealSchema,
    ("POST", "/appeals/{reg_no}/classification"): ReclassifySchema,
    ("POST", "/appeals/{reg_no}/withdrawal"): WithdrawSchema,
    ("POST", "/activities"): ActivitySchema,
    ("POST", "/appeals/{reg_no}/followups"): FollowupSchema,
    ("POST", "/assignments/{assignment_id}/return-decision"): ReturnDecisionSchema,
    ("POST", "/extensions/{extension_id}/decision"): ExtensionDecisionSchema,
    ("POST", "/appeals/{reg_no}/dispatch"): OverrideSchema,
    ("POST", "/appeals/{reg_no}/closure"): UnreachableClosureSchema,
    ("POST", "/class-problems/{class_id}/confirmation"): ConfirmSchema,
    ("POST", "/class-problems/{class_id}/resolution"): ResolveSchema,
    ("POST", "/class-problems/{class_id}/closure"): CloseSchema,
    ("POST", "/class-problems/{class_id}/dismissal"): DismissSchema,
    ("POST", "/walkthroughs"): WalkthroughSchema,
    ("POST", "/list-items/{item_id}/closure"): ItemClosureSchema,
    ("POST", "/activities/{activity_id}/plan"): PatrolPlanSchema,
    ("POST", "/activities/{activity_id}/report"): PatrolReportSchema,
}

# Operations with a path parameter that never answer 404: an unknown appeal simply has
# no deadline clocks (supervision's `list_clocks` gives an empty list).
NO_404 = {("GET", "/appeals/{reg_no}/deadlines")}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))


# --- helpers --------------------------------------------------------------------------------

def werkzeug_to_openapi(rule: str) -> str:
    """`/appeals/<string:reg_no>/clock` -> `/appeals/{reg_no}/clock`."""
    return re.sub(r"<(?:[^<>:]+:)?([^<>:]+)>", r"{\1}", rule)


def http_entrypoints(cls: type) -> dict[tuple[str, str], Any]:
    """(METHOD, OpenAPI path) -> the method, for every nameko @http entrypoint of `cls`
    (inherited ones, /health and /metrics, included)."""
    found: dict[tuple[str, str], Any] = {}
    for _, fn in inspect.getmembers(cls, inspect.isfunction):
        for entrypoint in getattr(fn, "nameko_entrypoints", ()):
            if isinstance(entrypoint, HttpRequestHandler):
                for method in entrypoint.method.split(","):
                    found[(method.strip().upper(), werkzeug_to_openapi(entrypoint.url))] = fn
    return found


def code_routes() -> dict[tuple[str, str], dict[str, Any]]:
    """(METHOD, path) -> {service name -> method} over the four services."""
    routes: dict[tuple[str, str], dict[str, Any]] = {}
    for service, cls in SERVICE_CLASSES.items():
        for key, fn in http_entrypoints(cls).items():
            routes.setdefault(key, {})[service] = fn
    return routes


def operations(spec: dict) -> dict[tuple[str, str], dict]:
    return {(method.upper(), path): op for path, item in spec["paths"].items()
            for method, op in item.items() if method in HTTP_METHODS}


def server_services(spec: dict, path: str, op: dict) -> set[str]:
    """The services an operation is served by: its nearest `servers`, named by
    description, each on that service's default port."""
    servers = op.get("servers") or spec["paths"][path].get("servers") or spec["servers"]
    services = set()
    for server in servers:
        url = server["url"]
        for name, var in (server.get("variables") or {}).items():
            url = url.replace("{" + name + "}", var["default"])
        service = server["description"]
        assert urlsplit(url).port == DEFAULT_HTTP_PORTS[service], (path, server)
        services.add(service)
    return services


def api_roles(fn: Any) -> tuple[str, ...] | None:
    """The roles given to `appeals_common.http.api(...)` on an entrypoint, or None when the
    entrypoint is not wrapped by it (no authentication)."""
    if not hasattr(fn, "__wrapped__"):
        return None
    return inspect.getclosurevars(fn).nonlocals.get("roles")


def deref(spec: dict, node: dict) -> dict:
    """Follow local $refs; sibling keywords of a $ref (e.g. `default`) are kept."""
    node = dict(node)
    while "$ref" in node:
        ref = node.pop("$ref")
        assert ref.startswith("#/"), ref
        target: Any = spec
        for part in ref[2:].split("/"):
            target = target[part]
        node = {**target, **node}
    return node


def types_of(schema: dict) -> set[str]:
    declared = schema.get("type")
    if declared is None and "anyOf" in schema:
        return set().union(*(types_of(s) for s in schema["anyOf"]))
    if declared is None and "const" in schema:
        return {"string"}
    return {declared} if isinstance(declared, str) else set(declared or ())


JSON_TYPES: list[tuple[type, str, str | None]] = [  # most specific first
    (fields.Nested, "object", None),
    (fields.Dict, "object", None),
    (fields.List, "array", None),
    (fields.Boolean, "boolean", None),
    (fields.Integer, "integer", None),
    (fields.DateTime, "string", "date-time"),
    (fields.Date, "string", "date"),
    (fields.Url, "string", "uri"),
    (fields.String, "string", None),
]


def compare_field(spec: dict, where: str, field: fields.Field, doc: dict,
                  check_null: bool = True) -> None:
    doc = deref(spec, doc)
    json_type, fmt = next((t, f) for cls, t, f in JSON_TYPES if isinstance(field, cls))
    types = types_of(doc)
    assert types - {"null"} == {json_type}, f"{where}: type {types}, field is {json_type}"
    if fmt:
        assert doc.get("format") == fmt, f"{where}: format {doc.get('format')!r}, expected {fmt}"
    if check_null:
        assert ("null" in types) == field.allow_none, f"{where}: nullable {field.allow_none}"
        default = field.load_default
        if default is not missing:
            expected = default() if callable(default) else default
            assert doc.get("default", missing) == expected, f"{where}: default"
    for validator in field.validators:
        if isinstance(validator, validate.URL):
            assert set(validator.schemes or ()) == {"https"}, f"{where}: schemes"
            assert doc.get("pattern") == "^https://", f"{where}: only https URLs are accepted"
        elif isinstance(validator, validate.Length):
            low, high = ("minItems", "maxItems") if json_type == "array" else \
                ("minLength", "maxLength")
            assert doc.get(low) == validator.min, f"{where}: {low}"
            assert doc.get(high) == validator.max, f"{where}: {high}"
        elif isinstance(validator, validate.OneOf):
            assert set(doc.get("enum", ())) - {None} == set(validator.choices), f"{where}: enum"
        elif isinstance(validator, validate.Range):
            assert doc.get("minimum") == validator.min, f"{where}: minimum"
            assert doc.get("maximum") == validator.max, f"{where}: maximum"
        elif isinstance(validator, validate.Regexp):
            assert doc.get("pattern") == validator.regex.pattern, f"{where}: pattern"
        elif isinstance(validator, validate.Equal):
            assert doc.get("const") == validator.comparable, f"{where}: const"
    if isinstance(field, fields.Nested):
        compare_schema(spec, where, field.schema, doc)
    if isinstance(field, fields.List):
        compare_field(spec, f"{where}[]", field.inner, doc["items"])
    if isinstance(field, fields.Dict):
        # Keys from a fixed list: each one a property; otherwise additionalProperties.
        keys = next((list(v.choices) for v in field.key_field.validators
                     if isinstance(v, validate.OneOf)), None) if field.key_field else None
        if keys is None:
            compare_field(spec, f"{where}{{}}", field.value_field, doc["additionalProperties"])
        else:
            assert set(doc.get("properties", {})) == set(keys), f"{where}: keys"
            assert doc.get("additionalProperties") is False, f"{where}: only those keys"
            for key in keys:
                compare_field(spec, f"{where}.{key}", field.value_field, doc["properties"][key])


def compare_schema(spec: dict, where: str, schema: Schema, doc: dict) -> None:
    doc = deref(spec, doc)
    load_fields = {field.data_key or name: field for name, field in schema.load_fields.items()}
    assert set(doc.get("properties", {})) == set(load_fields), f"{where}: properties"
    required = {key for key, field in load_fields.items() if field.required}
    assert set(doc.get("required", ())) == required, f"{where}: required"
    strict = schema.unknown == RAISE
    assert (doc.get("additionalProperties") is False) == strict, \
        f"{where}: additionalProperties must be false iff unknown fields are refused"
    for key, field in load_fields.items():
        compare_field(spec, f"{where}.{key}", field, doc["properties"][key])


def body_schema(spec: dict, method: str, path: str) -> dict:
    op = operations(spec)[(method, path)]
    return op["requestBody"]["content"]["application/json"]["schema"]


def validator_for_ref(spec: dict, ref: str) -> jsonschema.protocols.Validator:
    registry = Registry().with_resource(SPEC_URI, Resource.from_contents(
        spec, default_specification=DRAFT202012))
    cls = jsonschema.validators.validator_for({}, default=jsonschema.Draft202012Validator)
    return cls({"$ref": SPEC_URI + ref}, registry=registry)


# --- (1) the document ------------------------------------------------------------------------

def test_document_is_valid_openapi_3_1(spec):
    assert spec["openapi"].startswith("3.1")
    validate_spec(spec)


def test_operation_ids_are_unique(spec):
    ids = [op["operationId"] for op in operations(spec).values()]
    assert len(ids) == len(set(ids))


# --- (2) the routes --------------------------------------------------------------------------

def test_operations_are_exactly_the_http_entrypoints(spec):
    documented = set(operations(spec))
    in_code = set(code_routes())
    assert documented - in_code == set(), "documented but not served"
    assert in_code - documented == set(), "served but not documented"


def test_each_operation_names_the_services_serving_it(spec):
    routes = code_routes()
    for (method, path), op in operations(spec).items():
        assert server_services(spec, path, op) == set(routes[(method, path)]), (method, path)


def test_found_every_service_route():
    """The introspection itself sees what the services declare (guards the test above)."""
    routes = code_routes()
    assert ("GET", "/appeals/{reg_no}/clock") in routes
    assert set(routes[("GET", "/health")]) == set(SERVICE_CLASSES)
    assert set(routes[("GET", "/metrics")]) == set(SERVICE_CLASSES)
    assert set(routes[("POST", "/appeals/{reg_no}/dispatch")]) == {"dispatch"}
    for path in ("/appeals/{reg_no}/closure", "/appeals/{reg_no}/deadlines"):
        (method,) = [m for m, p in routes if p == path]
        assert set(routes[(method, path)]) == {"supervision"}, path
    class_routes = {key for key in routes if key[1].startswith("/class-problems")}
    assert class_routes == {
        ("POST", "/class-problems/detection"), ("GET", "/class-problems"),
        *(("POST", f"/class-problems/{{class_id}}/{step}")
          for step in ("confirmation", "resolution", "closure", "dismissal"))}
    assert all(set(routes[key]) == {"supervision"} for key in class_routes)
    supervision_routes = {key for key, served in routes.items() if set(served) == {"supervision"}}
    assert supervision_routes == class_routes | {
        ("POST", "/appeals/{reg_no}/followups"), ("POST", "/appeals/{reg_no}/closure"),
        ("GET", "/appeals/{reg_no}/clock"), ("GET", "/appeals/{reg_no}/deadlines"),
        ("GET", "/supervision-orders"),
        ("POST", "/walkthroughs"), ("GET", "/walkthroughs"),
        ("GET", "/walkthroughs/{walkthrough_id}"),
        ("GET", "/list-items"), ("POST", "/list-items/{item_id}/closure"),
        ("POST", "/activities/{activity_id}/plan"), ("POST", "/activities/{activity_id}/report"),
        ("GET", "/activity-obligations")}
    # Reporting's routes are counted apart (its exports come and go with that service).
    reporting_only = {key for key, served in routes.items() if set(served) == {"reporting"}}
    assert len(routes) - len(reporting_only) == 34


def test_roles_and_security_match_the_api_decorator(spec):
    routes = code_routes()
    for key, op in operations(spec).items():
        roles = {api_roles(fn) for fn in routes[key].values()}
        assert len(roles) == 1, f"{key}: served with different roles {roles}"
        (allowed,) = roles
        if allowed is None:  # not authenticated: /health, /metrics
            assert op.get("security") == [], f"{key}: needs no token"
            assert "x-roles" not in op
            continue
        assert op.get("security", spec["security"]) == [{"bearerAuth": []}], key
        assert set(op["x-roles"]) == set(allowed), f"{key}: x-roles vs api{allowed}"
        assert set(op["x-roles"]) <= set(ROLES)
        for role in allowed:
            assert role in op["description"], f"{key}: description should name role {role}"
        assert {"401", "403"} <= set(op["responses"]), f"{key}: 401/403 documented"


def test_path_parameters_are_declared(spec):
    for path, item in spec["paths"].items():
        names = set(re.findall(r"{([^}]+)}", path))
        for method in (m for m in item if m in HTTP_METHODS):
            declared = {deref(spec, p)["name"] for p in
                        [*item.get("parameters", ()), *item[method].get("parameters", ())]
                        if deref(spec, p)["in"] == "path"}
            assert declared == names, (method, path)
            if names and (method.upper(), path) not in NO_404:
                assert "404" in item[method]["responses"], (method, path)
            elif names:
                assert "404" not in item[method]["responses"], (method, path)


def test_error_responses_have_their_body_shapes(spec):
    for (method, path), op in operations(spec).items():
        for status, response in op["responses"].items():
            response = deref(spec, response)
            if status.startswith(("4", "5")) and path != "/health":
                schema = deref(spec, response["content"]["application/json"]["schema"])
                assert "error" in schema["required"], (method, path, status)
            if status == "422":
                assert schema["properties"]["error"]["const"] == "invalid input"
                assert "errors" in schema["required"]


# --- (3) request bodies and query parameters -------------------------------------------------

@pytest.mark.parametrize("key", list(REQUEST_SCHEMAS), ids=lambda k: f"{k[0]} {k[1]}")
def test_request_body_mirrors_the_marshmallow_schema(spec, key):
    method, path = key
    op = operations(spec)[key]
    assert op["requestBody"]["required"] is True
    assert set(op["requestBody"]["content"]) == {"application/json"}
    compare_schema(spec, f"{method} {path}", REQUEST_SCHEMAS[key](), body_schema(spec, *key))
    for status in ("400", "413", "422"):
        assert status in op["responses"], f"{key}: a JSON body can be refused with {status}"


def test_only_the_documented_operations_take_a_body(spec):
    with_body = {key for key, op in operations(spec).items() if "requestBody" in op}
    assert with_body == set(REQUEST_SCHEMAS)


def test_search_parameters_are_the_search_schema(spec):
    op = operations(spec)[("GET", "/appeals")]
    params = {p["name"]: p for p in map(lambda p: deref(spec, p), op["parameters"])
              if p["in"] == "query"}
    schema = SearchSchema()
    load_fields = {field.data_key or name: field for name, field in schema.load_fields.items()}
    assert set(params) == set(load_fields)
    assert {"from", "to"} <= set(params)
    for name, field in load_fields.items():
        assert params[name].get("required", False) == field.required, name
        compare_field(spec, f"GET /appeals?{name}", field, params[name]["schema"],
                      check_null=False)
        default = field.load_default
        if default not in (missing, None):
            assert params[name]["schema"].get("default") == default, name


BASE_APPEAL = {
    "channel": "sit_in",
    "enterprise": {"name": "某某科技有限公司", "uscc": "91110000600037341L",
                   "contact_name": "张三", "contact_phone": "13800138000"},
    "title": "施工许可办理进度慢", "content": "我公司施工许可申请已提交两周，尚无答复。",
}


def _with(base: dict, **changes: Any) -> dict:
    body = copy.deepcopy(base)
    for key, value in changes.items():
        if value is missing:
            body.pop(key, None)
        else:
            body[key] = value
    return body


WALKTHROUGH = {
    "service_item": "企业开办一网通办", "mode": "accompanied", "lead_unit": "swj",
    "walked_on": "2026-11-26", "summary": "陪同企业办理开办全流程",
    "scores": {"accuracy": 4, "smoothness": 2, "proofs": 3, "experience": 3, "conduct": 5},
    "findings": [{"list": "problem", "description": "线上线下材料要求不一致", "owner": "zjj",
                  "due_at": "2026-12-04T17:00:00+08:00"}],
}
PATROL_REPORT = {
    "policies_delivered": 6, "enterprises_served": 12, "class_problems": ["数据中心用电报装慢"],
    "summary": "走访软件园企业12家",
    "service_items": [{"enterprise_name": "某软件公司", "contact_name": "王五",
                       "contact_phone": "13912345678", "item": "高新技术企业认定辅导",
                       "responsible_unit": "gxj", "status": "in_progress"}],
}

AGREEMENT_CASES: list[tuple[str, type[Schema], dict]] = [
    ("StaffAppeal", StaffAppealSchema, BASE_APPEAL),
    ("StaffAppeal", StaffAppealSchema, _with(BASE_APPEAL, category=None, external_id="x-1",
                                             urgency="urgent")),
    ("StaffAppeal", StaffAppealSchema, _with(BASE_APPEAL, title=missing)),
    ("StaffAppeal", StaffAppealSchema, _with(BASE_APPEAL, title="")),
    ("StaffAppeal", StaffAppealSchema, _with(BASE_APPEAL, title="题" * 201)),
    ("StaffAppeal", StaffAppealSchema, _with(BASE_APPEAL, channel="fax")),
    ("StaffAppeal", StaffAppealSchema, _with(BASE_APPEAL, urgency=None)),
    ("StaffAppeal", StaffAppealSchema, _with(BASE_APPEAL, surprise=1)),
    ("StaffAppeal", StaffAppealSchema, _with(BASE_APPEAL, external_id="")),
    ("StaffAppeal", StaffAppealSchema, _with(BASE_APPEAL, answer="已答复")),
    ("StaffAppeal", StaffAppealSchema, _with(BASE_APPEAL, attachments=[
        {"name": "a.pdf", "url": "https://files.example.cn/a.pdf"}])),
    ("StaffAppeal", StaffAppealSchema, _with(BASE_APPEAL, attachments=[
        {"name": "a.pdf", "url": "http://files.example.cn/a.pdf"}])),
    ("StaffAppeal", StaffAppealSchema, _with(BASE_APPEAL, attachments=[
        {"name": "a.pdf", "url": "https://files.example.cn/a.pdf"}] * 21)),
    ("StaffAppeal", StaffAppealSchema, _with(BASE_APPEAL, enterprise={
        **BASE_APPEAL["enterprise"], "contact_name": "名" * 51})),
    ("OnSpotAppeal", OnSpotAppealSchema, _with(BASE_APPEAL, answer="已当场答复")),
    ("OnSpotAppeal", OnSpotAppealSchema, BASE_APPEAL),
    ("OnSpotAppeal", OnSpotAppealSchema, _with(BASE_APPEAL, answer="")),
    ("Reclassify", ReclassifySchema, {"category": "0102", "reason": "纠正"}),
    ("Reclassify", ReclassifySchema, {"industry_chain": "digital_economy", "reason": "纠正"}),
    ("Reclassify", ReclassifySchema, {"category": "0102", "industry_chain": None,
                                      "reason": "纠正"}),
    ("Reclassify", ReclassifySchema, {"reason": "纠正"}),
    ("Reclassify", ReclassifySchema, {"category": None, "industry_chain": None,
                                      "reason": "纠正"}),
    ("Reclassify", ReclassifySchema, {"category": "0102"}),
    ("Reclassify", ReclassifySchema, {"category": "c" * 65, "reason": "纠正"}),
    ("Withdraw", WithdrawSchema, {"reason": "企业自行解决"}),
    ("Withdraw", WithdrawSchema, {"reason": ""}),
    ("Withdraw", WithdrawSchema, {}),
    ("Withdraw", WithdrawSchema, {"reason": "r", "actor": "x"}),
    ("ActivityInput", ActivitySchema, {"kind": "sit_in", "held_on": "2026-11-27",
                                       "title": "局长坐诊", "lead_unit": "zjj"}),
    ("ActivityInput", ActivitySchema, {"kind": "sit_in", "held_on": "2026-11-27",
                                       "title": "局长坐诊", "lead_unit": "zjj",
                                       "activity_id": "sit-in-2026", "industry_chain": None}),
    ("ActivityInput", ActivitySchema, {"kind": "sit_in", "held_on": "2026-11-27",
                                       "title": "局长坐诊", "lead_unit": "ZJJ"}),
    ("ActivityInput", ActivitySchema, {"kind": "webinar", "held_on": "2026-11-27",
                                       "title": "局长坐诊", "lead_unit": "zjj"}),
    ("ActivityInput", ActivitySchema, {"kind": "sit_in", "title": "局长坐诊",
                                       "lead_unit": "zjj"}),
    ("Followup", FollowupSchema, {"grade": "satisfied", "resolved": True}),
    ("Followup", FollowupSchema, {"grade": "unsatisfied", "resolved": False,
                                  "comments": "", "contact_attempts": 20}),
    ("Followup", FollowupSchema, {"grade": "satisfied", "resolved": True,
                                  "contact_attempts": 0}),
    ("Followup", FollowupSchema, {"grade": "satisfied", "resolved": True,
                                  "contact_attempts": 21}),
    ("Followup", FollowupSchema, {"grade": "great", "resolved": True}),
    ("Followup", FollowupSchema, {"grade": "satisfied"}),
    ("Followup", FollowupSchema, {"grade": "satisfied", "resolved": True, "comments": None}),
    ("ReturnDecision", ReturnDecisionSchema, {"accept": True, "reason": "同意退单"}),
    ("ReturnDecision", ReturnDecisionSchema, {"accept": False, "reason": "属于本单位职责"}),
    ("ReturnDecision", ReturnDecisionSchema, {"accept": "maybe", "reason": "x"}),
    ("ReturnDecision", ReturnDecisionSchema, {"accept": None, "reason": "x"}),
    ("ReturnDecision", ReturnDecisionSchema, {"accept": True}),
    ("ReturnDecision", ReturnDecisionSchema, {"accept": True, "reason": ""}),
    ("ReturnDecision", ReturnDecisionSchema, {"accept": True, "reason": "理" * 1001}),
    ("ReturnDecision", ReturnDecisionSchema, {"accept": True, "reason": "x", "actor": "me"}),
    ("ExtensionDecision", ExtensionDecisionSchema, {"approve": False, "reason": "按期办理"}),
    ("ExtensionDecision", ExtensionDecisionSchema, {"approve": True, "reason": "同意"}),
    ("ExtensionDecision", ExtensionDecisionSchema, {"approve": True, "reason": "同意",
                                                    "respond_by": None}),
    ("ExtensionDecision", ExtensionDecisionSchema, {"approve": True, "reason": "同意",
                                                    "respond_by": "2026-12-04T23:59:59+08:00"}),
    ("ExtensionDecision", ExtensionDecisionSchema, {"approve": True, "reason": "同意",
                                                    "respond_by": 20261204}),
    ("ExtensionDecision", ExtensionDecisionSchema, {"reason": "同意"}),
    ("ExtensionDecision", ExtensionDecisionSchema, {"approve": True, "reason": "同意",
                                                    "requested_until": None}),
    ("Override", OverrideSchema, {"lead": "czj", "reason": "改派"}),
    ("Override", OverrideSchema, {"lead": "czj", "co": ["swj", "zjj"], "reason": "会商决定"}),
    ("Override", OverrideSchema, {"lead": "czj", "co": [], "reason": "改派"}),
    ("Override", OverrideSchema, {"lead": "CZJ", "reason": "改派"}),
    ("Override", OverrideSchema, {"lead": "czj", "co": ["s w j"], "reason": "改派"}),
    ("Override", OverrideSchema, {"lead": "czj", "co": [f"u{i}" for i in range(11)],
                                  "reason": "改派"}),
    ("Override", OverrideSchema, {"lead": "czj", "co": None, "reason": "改派"}),
    ("Override", OverrideSchema, {"lead": "czj"}),
    ("Override", OverrideSchema, {"co": ["swj"], "reason": "改派"}),
    ("Override", OverrideSchema, {"lead": "czj", "reason": "改派", "rule": "x"}),
    ("UnreachableClosure", UnreachableClosureSchema, {"contact_attempts": 3,
                                                      "reason": "三次电话均无人接听"}),
    ("UnreachableClosure", UnreachableClosureSchema, {"contact_attempts": 50, "reason": "r"}),
    ("UnreachableClosure", UnreachableClosureSchema, {"contact_attempts": 2, "reason": "r"}),
    ("UnreachableClosure", UnreachableClosureSchema, {"contact_attempts": 51, "reason": "r"}),
    ("UnreachableClosure", UnreachableClosureSchema, {"contact_attempts": None, "reason": "r"}),
    ("UnreachableClosure", UnreachableClosureSchema, {"reason": "r"}),
    ("UnreachableClosure", UnreachableClosureSchema, {"contact_attempts": 3}),
    ("UnreachableClosure", UnreachableClosureSchema, {"contact_attempts": 3, "reason": ""}),
    ("UnreachableClosure", UnreachableClosureSchema, {"contact_attempts": 3,
                                                      "reason": "理" * 1001}),
    ("UnreachableClosure", UnreachableClosureSchema, {"contact_attempts": 3, "reason": "r",
                                                      "grade": "unsatisfied"}),
    # contact_attempts is a strict integer: no strings, booleans or fractions.
    ("UnreachableClosure", UnreachableClosureSchema, {"contact_attempts": "3", "reason": "r"}),
    ("UnreachableClosure", UnreachableClosureSchema, {"contact_attempts": 3.5, "reason": "r"}),
    ("UnreachableClosure", UnreachableClosureSchema, {"contact_attempts": True, "reason": "r"}),
    ("Followup", FollowupSchema, {"grade": "satisfied", "resolved": True,
                                  "contact_attempts": "2"}),
    ("Followup", FollowupSchema, {"grade": "satisfied", "resolved": True,
                                  "contact_attempts": False}),
    ("ClassConfirmation", ConfirmSchema, {"lead_entity": "fgj",
                                          "deadline": "2026-12-18T18:00:00+08:00"}),
    ("ClassConfirmation", ConfirmSchema, {"lead_entity": "fgj", "units": ["swtcj", "gxj"],
                                          "deadline": "2026-12-18T10:00:00Z", "note": "研判"}),
    ("ClassConfirmation", ConfirmSchema, {"lead_entity": "fgj", "units": [],
                                          "deadline": "2026-12-18T18:00:00+08:00",
                                          "note": ""}),
    ("ClassConfirmation", ConfirmSchema, {"lead_entity": "FGJ",
                                          "deadline": "2026-12-18T18:00:00+08:00"}),
    ("ClassConfirmation", ConfirmSchema, {"lead_entity": "fgj", "units": ["s w"],
                                          "deadline": "2026-12-18T18:00:00+08:00"}),
    ("ClassConfirmation", ConfirmSchema, {"lead_entity": "fgj",
                                          "units": [f"u{i}" for i in range(21)],
                                          "deadline": "2026-12-18T18:00:00+08:00"}),
    ("ClassConfirmation", ConfirmSchema, {"lead_entity": "fgj", "units": None,
                                          "deadline": "2026-12-18T18:00:00+08:00"}),
    ("ClassConfirmation", ConfirmSchema, {"lead_entity": "fgj"}),
    ("ClassConfirmation", ConfirmSchema, {"deadline": "2026-12-18T18:00:00+08:00"}),
    ("ClassConfirmation", ConfirmSchema, {"lead_entity": "fgj", "deadline": None}),
    ("ClassConfirmation", ConfirmSchema, {"lead_entity": "fgj", "deadline": 20261218}),
    ("ClassConfirmation", ConfirmSchema, {"lead_entity": "fgj",
                                          "deadline": "2026-12-18T18:00:00+08:00",
                                          "note": "注" * 2001}),
    ("ClassConfirmation", ConfirmSchema, {"lead_entity": "fgj",
                                          "deadline": "2026-12-18T18:00:00+08:00",
                                          "state": "confirmed"}),
    ("ClassResolution", ResolveSchema, {"measures": "推行告知承诺制"}),
    ("ClassResolution", ResolveSchema, {"measures": ""}),
    ("ClassResolution", ResolveSchema, {"measures": "措" * 5001}),
    ("ClassResolution", ResolveSchema, {}),
    ("ClassResolution", ResolveSchema, {"measures": "x", "promote": True}),
    ("ClassClosure", CloseSchema, {"promote": True}),
    ("ClassClosure", CloseSchema, {"promote": False, "note": "不具推广价值"}),
    ("ClassClosure", CloseSchema, {"promote": "maybe"}),
    ("ClassClosure", CloseSchema, {"promote": None}),
    ("ClassClosure", CloseSchema, {"note": "全区推广"}),
    ("ClassClosure", CloseSchema, {"promote": True, "note": None}),
    ("ClassClosure", CloseSchema, {"promote": True, "measures": "x"}),
    ("ClassDismissal", DismissSchema, {"reason": "个案，不成类"}),
    ("ClassDismissal", DismissSchema, {"reason": ""}),
    ("ClassDismissal", DismissSchema, {"reason": "理" * 1001}),
    ("ClassDismissal", DismissSchema, {}),
    ("ClassDismissal", DismissSchema, {"reason": "x", "actor": "me"}),
    ("Walkthrough", WalkthroughSchema, WALKTHROUGH),
    ("Walkthrough", WalkthroughSchema, _with(WALKTHROUGH, summary=missing, findings=[])),
    ("Walkthrough", WalkthroughSchema, _with(WALKTHROUGH, findings=missing)),
    ("Walkthrough", WalkthroughSchema, _with(WALKTHROUGH, scores={**WALKTHROUGH["scores"],
                                                                  "conduct": 6})),
    ("Walkthrough", WalkthroughSchema, _with(WALKTHROUGH, scores={**WALKTHROUGH["scores"],
                                                                  "conduct": "5"})),
    ("Walkthrough", WalkthroughSchema, _with(WALKTHROUGH, scores={
        k: v for k, v in WALKTHROUGH["scores"].items() if k != "proofs"})),
    ("Walkthrough", WalkthroughSchema, _with(WALKTHROUGH, scores={**WALKTHROUGH["scores"],
                                                                  "speed": 3})),
    ("Walkthrough", WalkthroughSchema, _with(WALKTHROUGH, mode="by_phone")),
    ("Walkthrough", WalkthroughSchema, _with(WALKTHROUGH, lead_unit="SWJ")),
    ("Walkthrough", WalkthroughSchema, _with(WALKTHROUGH, walked_on=20261126)),
    ("Walkthrough", WalkthroughSchema, _with(WALKTHROUGH, service_item="")),
    ("Walkthrough", WalkthroughSchema, _with(WALKTHROUGH, summary=None)),
    ("Walkthrough", WalkthroughSchema, _with(WALKTHROUGH, findings=[
        {**WALKTHROUGH["findings"][0], "list": "wishes"}])),
    ("Walkthrough", WalkthroughSchema, _with(WALKTHROUGH, findings=[
        {**WALKTHROUGH["findings"][0], "due_at": None}])),
    ("Walkthrough", WalkthroughSchema, _with(WALKTHROUGH, findings=[
        {k: v for k, v in WALKTHROUGH["findings"][0].items() if k != "owner"}])),
    ("Walkthrough", WalkthroughSchema, _with(WALKTHROUGH, findings=[
        WALKTHROUGH["findings"][0]] * 101)),
    ("Walkthrough", WalkthroughSchema, _with(WALKTHROUGH, state="open")),
    ("ItemClosure", ItemClosureSchema, {"resolution": "统一了材料清单"}),
    ("ItemClosure", ItemClosureSchema, {"resolution": ""}),
    ("ItemClosure", ItemClosureSchema, {"resolution": "办" * 2001}),
    ("ItemClosure", ItemClosureSchema, {}),
    ("ItemClosure", ItemClosureSchema, {"resolution": "x", "state": "closed"}),
    ("PatrolPlan", PatrolPlanSchema, {"summary": "走访软件园10家企业"}),
    ("PatrolPlan", PatrolPlanSchema, {"summary": ""}),
    ("PatrolPlan", PatrolPlanSchema, {"summary": None}),
    ("PatrolPlan", PatrolPlanSchema, {"summary": "x", "held_on": "2026-12-17"}),
    ("PatrolReport", PatrolReportSchema, PATROL_REPORT),
    ("PatrolReport", PatrolReportSchema, _with(PATROL_REPORT, class_problems=missing,
                                               service_items=missing)),
    ("PatrolReport", PatrolReportSchema, _with(PATROL_REPORT, policies_delivered=-1)),
    ("PatrolReport", PatrolReportSchema, _with(PATROL_REPORT, enterprises_served=100_001)),
    ("PatrolReport", PatrolReportSchema, _with(PATROL_REPORT, enterprises_served="12")),
    ("PatrolReport", PatrolReportSchema, _with(PATROL_REPORT, summary=missing)),
    ("PatrolReport", PatrolReportSchema, _with(PATROL_REPORT, class_problems=[""])),
    ("PatrolReport", PatrolReportSchema, _with(PATROL_REPORT, service_items=[
        {**PATROL_REPORT["service_items"][0], "status": "lost"}])),
    ("PatrolReport", PatrolReportSchema, _with(PATROL_REPORT, service_items=[
        {**PATROL_REPORT["service_items"][0], "contact_phone": None, "reg_no": None,
         "contact_name": "", "remarks": ""}])),
    ("PatrolReport", PatrolReportSchema, _with(PATROL_REPORT, service_items=[
        {**PATROL_REPORT["service_items"][0], "responsible_unit": "GXJ"}])),
    ("PatrolReport", PatrolReportSchema, _with(PATROL_REPORT, service_items=[
        {**PATROL_REPORT["service_items"][0], "reg_no": "W" * 33}])),
    ("PatrolReport", PatrolReportSchema, _with(PATROL_REPORT, service_items=[
        {k: v for k, v in PATROL_REPORT["service_items"][0].items() if k != "item"}])),
    ("PatrolReport", PatrolReportSchema, _with(PATROL_REPORT, activity_id="x")),
]


@pytest.mark.parametrize(("component", "schema_cls", "body"), AGREEMENT_CASES,
                         ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(AGREEMENT_CASES)])
def test_document_and_marshmallow_agree_on_sample_bodies(spec, component, schema_cls, body):
    try:
        schema_cls().load(copy.deepcopy(body))
        marshmallow_ok = True
    except ValidationError:
        marshmallow_ok = False
    doc_errors = list(validator_for_ref(spec, f"#/components/schemas/{component}")
                      .iter_errors(body))
    assert (not doc_errors) == marshmallow_ok, (marshmallow_ok, [e.message for e in doc_errors])


def test_request_components_are_the_ones_referenced(spec):
    expected = {("POST", "/appeals"): "StaffAppeal", ("POST", "/appeals/on-spot"): "OnSpotAppeal",
                ("POST", "/appeals/{reg_no}/classification"): "Reclassify",
                ("POST", "/appeals/{reg_no}/withdrawal"): "Withdraw",
                ("POST", "/activities"): "ActivityInput",
                ("POST", "/appeals/{reg_no}/followups"): "Followup",
                ("POST", "/assignments/{assignment_id}/return-decision"): "ReturnDecision",
                ("POST", "/extensions/{extension_id}/decision"): "ExtensionDecision",
                ("POST", "/appeals/{reg_no}/dispatch"): "Override",
                ("POST", "/appeals/{reg_no}/closure"): "UnreachableClosure",
                ("POST", "/class-problems/{class_id}/confirmation"): "ClassConfirmation",
                ("POST", "/class-problems/{class_id}/resolution"): "ClassResolution",
                ("POST", "/class-problems/{class_id}/closure"): "ClassClosure",
                ("POST", "/class-problems/{class_id}/dismissal"): "ClassDismissal",
                ("POST", "/walkthroughs"): "Walkthrough",
                ("POST", "/list-items/{item_id}/closure"): "ItemClosure",
                ("POST", "/activities/{activity_id}/plan"): "PatrolPlan",
                ("POST", "/activities/{activity_id}/report"): "PatrolReport"}
    for key, name in expected.items():
        assert body_schema(spec, *key) == {"$ref": f"#/components/schemas/{name}"}


def test_dispatch_vocabularies_are_the_code_lists(spec):
    schemas = spec["components"]["schemas"]
    assert schemas["ReturnReasonCode"]["enum"] == list(RETURN_REASONS)
    for code, meaning in RETURN_REASONS.items():
        assert f"{code} {meaning}" in " ".join(schemas["ReturnReasonCode"]["description"].split())
    assert schemas["AssignmentState"]["enum"] == list(ASSIGNMENT_STATES)
    assert deref(spec, schemas["Assignment"]["properties"]["return_reason_code"]["anyOf"][0]) \
        == schemas["ReturnReasonCode"]
    # A rejected return puts the assignment back where it was (the transitions used).
    from appeals_common.lifecycle import ASSIGNMENT_TRANSITIONS

    back_to = {ASSIGNMENT_TRANSITIONS[action][1] for action in ("reject_return",
                                                                 "reject_return_signed")}
    withdrawn = ASSIGNMENT_TRANSITIONS["withdraw"][1]
    assert set(schemas["ReturnDecisionResult"]["properties"]["state"]["enum"]) == \
        back_to | {withdrawn}


def test_deadlines_are_supervision_clocks(spec):
    """GET /appeals/{reg_no}/deadlines lists supervision's clocks with the notice times
    its scan records (services.supervision.clocks)."""
    from services.supervision.clocks import SENT_COLUMN
    from services.supervision.escalation import NOTICE, ORDER, REMINDER

    deadline = spec["components"]["schemas"]["Deadline"]
    assert {SENT_COLUMN[REMINDER], SENT_COLUMN[NOTICE], SENT_COLUMN[ORDER]} == \
        set(SENT_COLUMN.values()) == {"reminder_at", "notice_at", "order_at"}
    assert set(deadline["properties"]) == {"assignment_id", "dept_code", "kind", "due_at",
                                           "state", *SENT_COLUMN.values()}
    assert set(deadline["required"]) == set(deadline["properties"])
    # Whatever supervision's clocks time: an appeal's deadlines and the other duties.
    from services.supervision.clocks import CLOCK_KINDS

    kinds = deadline["properties"]["kind"]["enum"]
    assert len(kinds) == len(CLOCK_KINDS) and set(kinds) == CLOCK_KINDS


def test_integer_fractions_are_refused_though_json_schema_counts_them(spec):
    """`contact_attempts` is a strict marshmallow Integer: `3.0` is refused, which JSON
    Schema (where 3.0 is an integer) cannot say - the document says it in words."""
    for component, schema_cls, body, field in (
            ("UnreachableClosure", UnreachableClosureSchema,
             {"contact_attempts": 3.0, "reason": "r"}, "contact_attempts"),
            ("Followup", FollowupSchema,
             {"grade": "satisfied", "resolved": True, "contact_attempts": 2.0},
             "contact_attempts")):
        with pytest.raises(ValidationError) as refused:
            schema_cls().load(body)
        assert field in refused.value.messages
        assert not list(validator_for_ref(spec, f"#/components/schemas/{component}")
                        .iter_errors(body))
        description = spec["components"]["schemas"][component]["properties"][field][
            "description"]
        assert "JSON integer" in description and ".0" in description


def test_class_problems_are_supervision_s(spec):
    """类题破解: the response is the class as the use cases show it, its states are the
    code's and the clock the confirmation opens is listed under the class id."""
    from services.supervision.class_problem_usecases import HOLDING_STATES

    schemas = spec["components"]["schemas"]
    states = schemas["ClassProblemState"]["enum"]
    assert set(HOLDING_STATES) < set(states)
    assert set(states) - set(HOLDING_STATES) == {"dismissed"}
    problem = schemas["ClassProblem"]
    assert set(problem["required"]) == set(problem["properties"]) == {
        "class_id", "state", "industry_chain", "category", "keywords", "score", "reg_nos",
        "lead_entity", "units", "deadline", "measures", "promote", "note"}
    assert problem["properties"]["units"]["maxItems"] == next(
        v.max for v in ConfirmSchema().fields["units"].validators)
    for step in ("confirmation", "resolution", "closure", "dismissal"):
        op = operations(spec)[("POST", f"/class-problems/{{class_id}}/{step}")]
        assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ClassProblem"}
    assert "class" in schemas["Deadline"]["properties"]["kind"]["enum"]
    assert "format" not in schemas["Deadline"]["properties"]["assignment_id"]


def test_supervision_vocabularies_are_the_code_lists(spec):
    """我陪群众走流程, 附件3 and the key orders: the document's lists are the code's."""
    from appeals_common.reference import (
        FIVE_CHECKS,
        SERVICE_ITEM_STATUSES,
        WALKTHROUGH_LISTS,
        WALKTHROUGH_MODES,
    )
    from services.supervision.clocks import ORDER_KINDS
    from services.supervision.walkthroughs import ITEM_STATES

    schemas = spec["components"]["schemas"]
    for name, vocabulary in (("WalkthroughMode", WALKTHROUGH_MODES),
                             ("WalkthroughList", WALKTHROUGH_LISTS),
                             ("ServiceItemStatus", SERVICE_ITEM_STATUSES)):
        assert schemas[name]["enum"] == list(vocabulary), name
        for code, meaning in vocabulary.items():  # each code with its Chinese name
            assert f"{code} {meaning}" in schemas[name]["description"], (name, code)
    scores = schemas["FiveCheckScores"]
    assert list(scores["properties"]) == scores["required"] == list(FIVE_CHECKS)
    for code, meaning in FIVE_CHECKS.items():
        assert f"{code} {meaning}" in " ".join(scores["description"].split()), code
    assert schemas["ListItemState"]["enum"] == list(ITEM_STATES)
    causes = schemas["KeyOrder"]["properties"]["cause"]["enum"]
    assert set(causes) == {"unsatisfied_followup"} | {f"overdue_{k}" for k in ORDER_KINDS}
    assert set(schemas["KeyOrder"]["required"]) == set(schemas["KeyOrder"]["properties"])


def test_activity_obligations_are_the_schedule_s(spec):
    """GET /activity-obligations is `activity_schedule.compliance` plus the activities:
    every field it gives is documented (and no other), and a sample validates."""
    from datetime import UTC, date, datetime

    from appeals_common.activity_schedule import SIT_IN_MONTHS, ActivityRecord, compliance
    from appeals_common.metrics import load_calendar
    from appeals_common.settings import Settings

    calendar = load_calendar(SPEC_PATH.parents[1] / "config", Settings().timezone)
    # A programme issued on 1 April 2025, seen on 1 October: March not applicable, June met,
    # September missed (its only sit-in outside the window), December pending.
    records = [
        ActivityRecord("sit_in-20250612-a1b2c3", "sit_in", date(2025, 6, 12)),
        ActivityRecord("sit_in-20250905-a1b2c3", "sit_in", date(2025, 9, 5)),
        ActivityRecord("chain_patrol-20250310-a1b2c3", "chain_patrol", date(2025, 3, 10),
                       "digital_economy", plan_submitted_at=datetime(2025, 3, 6, tzinfo=UTC)),
    ]
    result = compliance(calendar, 2025, {"digital_economy": "gxj", "modern_logistics": "fgj"},
                        records, datetime(2025, 10, 1, tzinfo=UTC), date(2025, 4, 1))
    assert [s["status"] for s in result["sit_ins"]] == ["not_applicable", "met", "missed",
                                                        "pending"]
    body = {**result, "activities": []}
    errors = [e.message for e in validator_for_ref(
        spec, "#/components/schemas/ActivityObligations").iter_errors(body)]
    assert not errors, errors
    doc = spec["components"]["schemas"]["ActivityObligations"]
    assert set(body) == set(doc["properties"]) == set(doc["required"])
    sit_in = doc["properties"]["sit_ins"]["items"]
    assert [s["month"] for s in result["sit_ins"]] == list(SIT_IN_MONTHS) == \
        sit_in["properties"]["month"]["enum"]
    assert {s["status"] for s in result["sit_ins"]} == set(
        spec["components"]["schemas"]["ObligationStatus"]["enum"])
    assert set(result["sit_ins"][1]) == set(sit_in["properties"])
    assert set(result["sit_ins"][1]["activities"][0]) == set(
        sit_in["properties"]["activities"]["items"]["properties"])
    chain = doc["properties"]["patrols"]["items"]
    (digital,) = [p for p in result["patrols"] if p["industry_chain"] == "digital_economy"]
    assert set(digital) == set(chain["properties"])
    assert set(digital["patrols"][0]) == set(chain["properties"]["patrols"]["items"]["properties"])
    assert (digital["patrols"][0]["plan"], digital["patrols"][0]["report"]) == ("late", "missing")
