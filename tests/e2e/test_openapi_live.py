"""docs/openapi.yaml against the running suite: every HTTP operation of the four services
is called, and every JSON body that comes back is validated against the schema the
document gives for that operation and status (formats checked; fields the document does
not name are refused, so an undocumented field fails here too)."""

from __future__ import annotations

import copy
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import jwt
import pytest
import requests
import yaml

pytestmark = pytest.mark.e2e

SPEC_PATH = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
HTTP_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
SERVICES = ("intake", "dispatch", "supervision", "reporting")
USCC = "91110000600037341L"
PHONE = "13800138000"

# (METHOD, path template, status) of every checked response, for the coverage test last.
SEEN: set[tuple[str, str, int]] = set()


# --- the document -------------------------------------------------------------------------

def _deref(spec: dict, node: Any) -> Any:
    """The schema with every local $ref replaced by its target (siblings kept)."""
    if isinstance(node, list):
        return [_deref(spec, item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    while "$ref" in node:
        target: Any = spec
        for part in node.pop("$ref").removeprefix("#/").split("/"):
            target = target[part]
        node = {**target, **node}
    return {key: _deref(spec, value) for key, value in node.items()}


def _closed(schema: Any) -> Any:
    """Refuse undocumented fields: objects with `properties` and no `additionalProperties`
    get `additionalProperties: false` (free-form objects such as a timeline entry's
    `detail` stay open)."""
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    schema = {key: _closed(value) for key, value in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema:
        schema["additionalProperties"] = False
    return schema


class Api:
    """Calls the suite and checks each answer against the document."""

    def __init__(self, spec: dict, urls: dict[str, str], token: Any) -> None:
        self.spec = spec
        self.urls = urls
        self.token = token

    def operation(self, method: str, template: str) -> dict:
        item = self.spec["paths"].get(template)
        assert item is not None and method.lower() in item, f"{method} {template} not documented"
        return item[method.lower()]

    def served_by(self, template: str) -> set[str]:
        return {server["description"] for server in self.spec["paths"][template]["servers"]}

    def headers(self, role: str | None, dept: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, dept)}"} if role else {}

    def call(self, method: str, service: str, template: str, status: int, *,
             role: str | None = "bureau_staff", dept: str | None = None,
             headers: dict[str, str] | None = None, params: dict | None = None,
             json: Any = None, data: bytes | None = None, **path: str) -> Any:
        assert service in self.served_by(template), f"{template} is not documented on {service}"
        url = self.urls[service] + template.format(**path)
        resp = requests.request(method, url, params=params, json=json, data=data, timeout=15,
                                headers=headers if headers is not None else self.headers(role, dept))
        return self.check(resp, method, template, status)

    def check(self, resp: requests.Response, method: str, template: str, status: int) -> Any:
        assert resp.status_code == status, \
            f"{method} {template}: {resp.status_code} (expected {status}): {resp.text[:500]}"
        responses = self.operation(method, template)["responses"]
        assert str(status) in responses, f"{method} {template}: status {status} not documented"
        content = _deref(self.spec, responses[str(status)])["content"]
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        assert media_type in content, f"{method} {template} {status}: {media_type} not documented"
        SEEN.add((method, template, status))
        if media_type != "application/json":
            return resp.text
        body = resp.json()
        schema = _closed(_deref(self.spec, content[media_type]["schema"]))
        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
        problems = [f"{'/'.join(map(str, e.absolute_path)) or '<body>'}: {e.message}"
                    for e in validator.iter_errors(body)]
        assert not problems, f"{method} {template} {status} does not match the document:\n" + \
            "\n".join(problems) + f"\nbody: {body}"
        return body


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def api(spec, urls, token) -> Api:
    return Api(spec, urls, token)


def poll(fn, timeout: float = 20.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(interval)


def appeal(tag: str, **overrides: Any) -> dict[str, Any]:
    """A staff registration routed to zjj (lead) and zrzyj (co) by its 施工许可 keyword."""
    body = {
        "channel": "sit_in",
        "enterprise": {"name": f"昆明五华{tag}科技有限公司", "uscc": USCC,
                       "contact_name": "张三", "contact_phone": PHONE},
        "title": "施工许可办理进度慢",
        "content": f"我公司施工许可申请已提交两周，尚无答复。({tag})",
        "external_id": f"openapi-{tag}",
    }
    body.update(overrides)
    return body


def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def dispatched(api) -> dict:
    """An appeal registered by staff and dispatched (as intake sees it)."""
    tag = unique()
    created = api.call("POST", "intake", "/appeals", 201, json=appeal(tag, urgency="urgent"))
    _intake_state(api, created["reg_no"], "dispatched")
    return {**created, "tag": tag}


def _intake_state(api: Api, reg_no: str, state: str) -> None:
    poll(lambda: requests.get(f"{api.urls['intake']}/appeals/{reg_no}", timeout=15,
                              headers=api.headers("bureau_staff")).json()["state"] == state)


# --- operations: /health, /metrics ----------------------------------------------------------

@pytest.mark.parametrize("service", SERVICES)
def test_health_and_metrics(api, service):
    health = api.call("GET", service, "/health", 200, role=None)
    assert health == {"status": "ok", "service": service}
    metrics = api.call("GET", service, "/metrics", 200, role=None)
    assert "# TYPE" in metrics


# --- authentication and roles ---------------------------------------------------------------

def test_no_or_bad_token_is_401(api):
    body = appeal(unique())
    missing = api.call("POST", "intake", "/appeals", 401, role=None, json=body)
    assert missing["error"] == "missing bearer token"
    forged = jwt.encode({"sub": "x", "role": "bureau_admin", "iss": "appeals-suite",
                         "exp": datetime.now(UTC) + timedelta(hours=1)},
                        "not-the-secret-0123456789-0123456789", algorithm="HS256")
    bad = api.call("GET", "intake", "/appeals", 401, headers={"Authorization": f"Bearer {forged}"})
    assert bad["error"].startswith("invalid token")
    api.call("GET", "dispatch", "/assignments", 401, headers={"Authorization": "Basic eDp5"})
    api.call("GET", "reporting", "/reports/summary", 401, role=None)
    api.call("GET", "supervision", "/appeals/{reg_no}/clock", 401, role=None, reg_no="WH-1")


def test_roles_outside_x_roles_are_403(api):
    denied = api.call("POST", "intake", "/appeals", 403, role="viewer", json=appeal(unique()))
    assert "viewer" in denied["error"]
    api.call("GET", "intake", "/appeals", 403, role="department", dept="zjj")
    api.call("POST", "intake", "/activities", 403, role="department", dept="zjj", json={})
    api.call("GET", "reporting", "/reports/summary", 403, role="department", dept="zjj")
    api.call("GET", "supervision", "/appeals/{reg_no}/clock", 403, role="department",
             dept="zjj", reg_no="WH-1")
    api.call("POST", "supervision", "/appeals/{reg_no}/followups", 403, role="viewer",
             json={"grade": "satisfied", "resolved": True}, reg_no="WH-1")


# --- intake ---------------------------------------------------------------------------------

def test_register_and_harmless_repeat(api):
    body = appeal(unique())
    created = api.call("POST", "intake", "/appeals", 201, role="bureau_admin", json=body)
    assert created["duplicate"] is False and created["state"] == "registered"
    again = api.call("POST", "intake", "/appeals", 200, json=body)
    assert again["duplicate"] is True and again["reg_no"] == created["reg_no"]


def test_register_conflicting_repeat_is_409(api):
    """The same external_id with different content: 409 naming the original reg_no."""
    body = appeal(unique())
    created = api.call("POST", "intake", "/appeals", 201, json=body)
    conflict = api.call("POST", "intake", "/appeals", 409,
                        json={**body, "content": body["content"] + "（补充）"})
    assert created["reg_no"] in conflict["errors"]["external_id"][0]


def test_register_refuses_invalid_input(api):
    bad = api.call("POST", "intake", "/appeals", 422,
                   json=appeal(unique(), channel="fax", surprise=True,
                               enterprise={"name": "x", "uscc": "91110000600037341X",
                                           "contact_name": "张三", "contact_phone": "123"}))
    assert {"channel", "surprise", "enterprise.uscc", "enterprise.contact_phone"} \
        <= set(bad["errors"])
    unknown = api.call("POST", "intake", "/appeals", 422,
                       json=appeal(unique(), category="9999", activity_id="no-such-activity"))
    assert {"category", "activity_id"} <= set(unknown["errors"])
    api.call("POST", "intake", "/appeals", 400, data=b"{not json",
             headers={**api.headers("bureau_staff"), "Content-Type": "application/json"})
    api.call("POST", "intake", "/appeals", 413, data=b" " * (300 * 1024),
             headers={**api.headers("bureau_staff"), "Content-Type": "application/json"})


def test_register_on_spot(api):
    body = appeal(unique(), answer="已当场答复办理流程", external_id=None)
    resolved = api.call("POST", "intake", "/appeals/on-spot", 201, json=body)
    assert resolved["state"] == "resolved_on_spot"
    detail = api.call("GET", "intake", "/appeals/{reg_no}", 200, reg_no=resolved["reg_no"])
    assert detail["answer"] == body["answer"] and detail["units"] == []
    assert [e["event"] for e in detail["timeline"]] == ["appeal.registered",
                                                        "appeal.resolved_on_spot"]
    missing = api.call("POST", "intake", "/appeals/on-spot", 422, json=appeal(unique()))
    assert "answer" in missing["errors"]


def test_get_appeal_by_role(api, dispatched):
    reg_no = dispatched["reg_no"]
    staff = api.call("GET", "intake", "/appeals/{reg_no}", 200, reg_no=reg_no)
    assert staff["units"] == {"lead": "zjj", "co": ["zrzyj"]}
    assert staff["enterprise"]["contact_phone"] == PHONE
    assert [e["event"] for e in staff["timeline"]][:2] == ["appeal.registered",
                                                           "appeal.dispatched"]
    viewer = api.call("GET", "intake", "/appeals/{reg_no}", 200, role="viewer", reg_no=reg_no)
    assert viewer["enterprise"]["contact_phone"] == "138****8000"
    for dept in ("zjj", "zrzyj"):
        api.call("GET", "intake", "/appeals/{reg_no}", 200, role="department", dept=dept,
                 reg_no=reg_no)
    api.call("GET", "intake", "/appeals/{reg_no}", 404, role="department", dept="jrb",
             reg_no=reg_no)
    gone = api.call("GET", "intake", "/appeals/{reg_no}", 404, reg_no="WH-1999-999999")
    assert gone["error"] == "no appeal WH-1999-999999"


def test_search(api, dispatched):
    name = f"昆明五华{dispatched['tag']}科技有限公司"
    page = api.call("GET", "intake", "/appeals", 200, role="viewer", params={"q": name})
    assert [item["reg_no"] for item in page["items"]] == [dispatched["reg_no"]]
    assert (page["page"], page["page_size"], page["total"]) == (1, 20, 1)
    narrowed = api.call("GET", "intake", "/appeals", 200, params={
        "uscc": USCC.lower(), "channel": "sit_in", "state": "dispatched",
        "from": "2000-01-01T00:00:00+08:00", "to": "2100-01-01T00:00:00+08:00",
        "page": "1", "page_size": "5"})
    assert narrowed["page_size"] == 5 and len(narrowed["items"]) <= 5
    assert all(item["state"] == "dispatched" for item in narrowed["items"])
    bad = api.call("GET", "intake", "/appeals", 422, params={
        "from": "2026-01-01T00:00:00", "page_size": "0", "colour": "red"})
    assert {"from", "page_size", "colour"} <= set(bad["errors"])


def test_reclassify(api, dispatched):
    reg_no = dispatched["reg_no"]
    changed = api.call("POST", "intake", "/appeals/{reg_no}/classification", 200, reg_no=reg_no,
                       json={"category": "0102", "industry_chain": "digital_economy",
                             "reason": "工程建设项目审批"})
    assert (changed["category"], changed["industry_chain"]) == ("0102", "digital_economy")
    unknown = api.call("POST", "intake", "/appeals/{reg_no}/classification", 422, reg_no=reg_no,
                       json={"category": "9999", "reason": "x"})
    assert "category" in unknown["errors"]
    nothing = api.call("POST", "intake", "/appeals/{reg_no}/classification", 422, reg_no=reg_no,
                       json={"reason": "x"})
    assert "_schema" in nothing["errors"]
    api.call("POST", "intake", "/appeals/{reg_no}/classification", 404, reg_no="WH-1999-999999",
             json={"category": "0102", "reason": "x"})
    api.call("POST", "intake", "/appeals/{reg_no}/classification", 403, role="viewer",
             reg_no=reg_no, json={"category": "0102", "reason": "x"})


def test_withdraw(api):
    created = api.call("POST", "intake", "/appeals", 201, json=appeal(unique()))
    reg_no = created["reg_no"]
    # Withdraw once dispatched: a withdrawal racing the dispatch is a separate matter.
    _intake_state(api, reg_no, "dispatched")
    api.call("POST", "intake", "/appeals/{reg_no}/withdrawal", 422, reg_no=reg_no, json={})
    withdrawn = api.call("POST", "intake", "/appeals/{reg_no}/withdrawal", 200, reg_no=reg_no,
                         json={"reason": "企业自行解决"})
    assert withdrawn["state"] == "withdrawn"
    again = api.call("POST", "intake", "/appeals/{reg_no}/withdrawal", 409, reg_no=reg_no,
                     json={"reason": "再次撤回"})
    assert "withdrawn" in again["error"]
    api.call("POST", "intake", "/appeals/{reg_no}/classification", 409, reg_no=reg_no,
             json={"category": "0102", "reason": "x"})
    api.call("POST", "intake", "/appeals/{reg_no}/withdrawal", 404, reg_no="WH-1999-999999",
             json={"reason": "x"})
    detail = api.call("GET", "intake", "/appeals/{reg_no}", 200, reg_no=reg_no)
    assert detail["withdrawn_reason"] == "企业自行解决"


def test_activities(api):
    activity_id = f"sit-in-{unique()}"
    body = {"activity_id": activity_id, "kind": "sit_in", "held_on": "2026-11-27",
            "title": "局长坐诊（住建专场）", "lead_unit": "zjj",
            "industry_chain": "construction_realestate"}
    created = api.call("POST", "intake", "/activities", 201, role="bureau_admin", json=body)
    assert created == body
    api.call("POST", "intake", "/activities", 409, json=body)
    made_up = api.call("POST", "intake", "/activities", 201, json={
        "kind": "door_visit", "held_on": "2026-11-28", "title": "上门问诊", "lead_unit": "jrb"})
    assert made_up["activity_id"].startswith("door_visit-20261128-")
    unknown = api.call("POST", "intake", "/activities", 422, json={
        **body, "activity_id": None, "lead_unit": "nobody", "industry_chain": "space"})
    assert {"lead_unit", "industry_chain"} <= set(unknown["errors"])
    listed = api.call("GET", "intake", "/activities", 200, role="department", dept="jrb")
    assert {activity_id, made_up["activity_id"]} <= {a["activity_id"] for a in listed}
    taken = api.call("POST", "intake", "/appeals", 201,
                     json=appeal(unique(), activity_id=activity_id))
    detail = api.call("GET", "intake", "/appeals/{reg_no}", 200, role="viewer",
                      reg_no=taken["reg_no"])
    assert detail["activity_id"] == activity_id


# --- dispatch -------------------------------------------------------------------------------

def test_assignments(api, dispatched):
    reg_no = dispatched["reg_no"]
    both = api.call("GET", "dispatch", "/assignments", 200, role="viewer",
                    params={"reg_no": reg_no})
    assert {(a["dept_code"], a["role"], a["state"]) for a in both} == \
        {("zjj", "lead", "assigned"), ("zrzyj", "co", "assigned")}
    own = api.call("GET", "dispatch", "/assignments", 200, role="department", dept="zrzyj",
                   params={"reg_no": reg_no, "dept": "zjj"})
    assert [a["dept_code"] for a in own] == ["zrzyj"]
    everything = api.call("GET", "dispatch", "/assignments", 200, role="bureau_admin")
    assert reg_no in {a["reg_no"] for a in everything}


# --- supervision ----------------------------------------------------------------------------

def _clock_in_state(api: Api, reg_no: str, state: str) -> None:
    poll(lambda: (r := requests.get(f"{api.urls['supervision']}/appeals/{reg_no}/clock",
                                    headers=api.headers("bureau_staff"), timeout=15)
                  ).status_code == 200 and r.json()["state"] == state)


def test_clock(api, dispatched):
    """The clock's times are RFC 3339 like every other time of the API (format-checked)."""
    reg_no = dispatched["reg_no"]
    _clock_in_state(api, reg_no, "dispatched")
    clock = api.call("GET", "supervision", "/appeals/{reg_no}/clock", 200, role="viewer",
                     reg_no=reg_no)
    assert clock["lead_dept"] == "zjj" and clock["respond_by"] is not None
    assert clock["closed_at"] is None


def test_clock_of_unknown_appeal_is_404(api):
    gone = api.call("GET", "supervision", "/appeals/{reg_no}/clock", 404, reg_no="WH-1999-999999")
    assert gone["error"] == "no appeal WH-1999-999999"


def test_followups(api, dispatched):
    reg_no = dispatched["reg_no"]
    _clock_in_state(api, reg_no, "dispatched")
    early = api.call("POST", "supervision", "/appeals/{reg_no}/followups", 409, reg_no=reg_no,
                     json={"grade": "satisfied", "resolved": True})
    assert "dispatched" in early["error"]
    bad = api.call("POST", "supervision", "/appeals/{reg_no}/followups", 422, reg_no=reg_no,
                   json={"grade": "great", "resolved": "perhaps", "contact_attempts": 0})
    assert {"grade", "resolved", "contact_attempts"} <= set(bad["errors"])
    api.call("POST", "supervision", "/appeals/{reg_no}/followups", 404, reg_no="WH-1999-999999",
             json={"grade": "satisfied", "resolved": True})

    on_spot = api.call("POST", "intake", "/appeals/on-spot", 201,
                       json=appeal(unique(), answer="已当场答复"))
    _clock_in_state(api, on_spot["reg_no"], "resolved_on_spot")
    closed = api.call("POST", "supervision", "/appeals/{reg_no}/followups", 201,
                      role="bureau_admin", reg_no=on_spot["reg_no"],
                      json={"grade": "very_satisfied", "resolved": True, "comments": "满意",
                            "contact_attempts": 2})
    assert closed == {"reg_no": on_spot["reg_no"], "state": "closed", "grade": "very_satisfied"}
    _clock_in_state(api, on_spot["reg_no"], "closed")
    # Closed is final: withdrawing it now is a conflict on intake's side too.
    _intake_state(api, on_spot["reg_no"], "closed")
    api.call("POST", "intake", "/appeals/{reg_no}/withdrawal", 409, reg_no=on_spot["reg_no"],
             json={"reason": "x"})


# --- reporting ------------------------------------------------------------------------------

def test_summary(api, dispatched):
    summary = poll(lambda: (s := api.call("GET", "reporting", "/reports/summary", 200,
                                          role="viewer"))["registered"] >= 1 and s)
    assert summary["registered"] == sum(summary["by_state"].values())
    window = api.call("GET", "reporting", "/reports/summary", 200, params={
        "from": "2000-01-01T00:00:00+08:00", "to": "2100-01-01T00:00:00Z"})
    assert window["registered"] >= 1
    empty = api.call("GET", "reporting", "/reports/summary", 200, role="bureau_admin",
                     params={"to": "2000-01-01T00:00:00+08:00"})
    assert empty["registered"] == 0 and empty["solve_rate"] is None
    naive = api.call("GET", "reporting", "/reports/summary", 400,
                     params={"from": "2026-01-01T00:00:00"})
    assert "offset" in naive["error"]
    api.call("GET", "reporting", "/reports/summary", 400, params={"to": "yesterday"})


def test_closed_schema_helper_refuses_undocumented_fields(spec):
    """The strictness the checks above rely on."""
    schema = _closed(_deref(spec, {"$ref": "#/components/schemas/Activity"}))
    body = {"activity_id": "a", "kind": "sit_in", "held_on": "2026-11-27", "title": "t",
            "lead_unit": "zjj", "industry_chain": None}
    jsonschema.Draft202012Validator(schema).validate(body)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate({**copy.deepcopy(body), "extra": 1})


# --- last: every operation was seen succeeding, and every error class at least once ---------

def test_zz_every_documented_operation_was_exercised(spec, request):
    module = sys.modules[__name__]
    ran = {item.name.split("[")[0] for item in request.session.items if item.module is module}
    defined = {name for name in dir(module) if name.startswith("test_")}
    if ran != defined or request.session.testsfailed:
        pytest.skip("only meaningful when the whole module ran and passed")
    documented = {(method.upper(), path) for path, item in spec["paths"].items()
                  for method in item if method in HTTP_METHODS}
    succeeded = {(m, p) for m, p, status in SEEN if status < 300}
    assert documented - succeeded == set(), "never called successfully"
    assert {401, 403, 404, 409, 413, 422, 400} <= {status for _, _, status in SEEN}
