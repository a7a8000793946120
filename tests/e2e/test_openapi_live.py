"""docs/openapi.yaml against the running suite: every HTTP operation of the four services
is called, and every JSON body that comes back is validated against the schema the
document gives for that operation and status (formats checked; fields the document does
not name are refused, so an undocumented field fails here too). Departments answer over
the bus (tests/e2e/bus.py), as they do in production, where the bureau's decisions need
a reply first (a return, an extension request)."""

from __future__ import annotations

import copy
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import jwt
import pytest
import requests
import yaml

from tests.e2e import suite_time
from tests.e2e.bus import poll, reply_body
from tests.suite_fixtures import JWT_SECRET

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


def naive(moment: datetime) -> str:
    """``moment`` as local time without its UTC offset: the API must refuse it."""
    return moment.astimezone(suite_time.TZ).replace(tzinfo=None).isoformat(timespec="seconds")


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
    # Token lifetimes are wall-clock time, never the (shifted) business clock.
    forged = jwt.encode({"sub": "x", "role": "bureau_admin", "iss": "appeals-suite",
                         "exp": datetime.now(UTC) + timedelta(hours=1)},
                        "not-the-secret-0123456789-0123456789", algorithm="HS256")
    bad = api.call("GET", "intake", "/appeals", 401, headers={"Authorization": f"Bearer {forged}"})
    assert bad["error"].startswith("invalid token")
    api.call("GET", "dispatch", "/assignments", 401, headers={"Authorization": "Basic eDp5"})
    api.call("GET", "reporting", "/reports/summary", 401, role=None)
    api.call("GET", "supervision", "/appeals/{reg_no}/clock", 401, role=None, reg_no="WH-1")
    api.call("GET", "supervision", "/appeals/{reg_no}/deadlines", 401, role=None, reg_no="WH-1")
    api.call("GET", "supervision", "/class-problems", 401, role=None)
    api.call("POST", "supervision", "/class-problems/detection", 401, role=None)
    for template in ("/supervision-orders", "/walkthroughs", "/list-items",
                     "/activity-obligations"):
        api.call("GET", "supervision", template, 401, role=None)


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
    api.call("POST", "supervision", "/appeals/{reg_no}/closure", 403, role="viewer",
             json={"contact_attempts": 3, "reason": "x"}, reg_no="WH-1")
    api.call("GET", "supervision", "/appeals/{reg_no}/deadlines", 403, role="department",
             dept="zjj", reg_no="WH-1")
    api.call("POST", "supervision", "/class-problems/detection", 403, role="viewer")
    api.call("GET", "supervision", "/class-problems", 403, role="department", dept="zjj")
    # A department token must name a known department, or it would see every unit's share.
    unknown = api.call("GET", "dispatch", "/assignments", 403, role="department", dept="nosuch")
    assert "unknown department" in unknown["error"]
    claims = jwt.decode(api.token("department", "zjj"), JWT_SECRET, algorithms=["HS256"],
                        issuer="appeals-suite")
    no_dept = jwt.encode({k: v for k, v in claims.items() if k != "dept"}, JWT_SECRET,
                         algorithm="HS256")
    for service, template in (("dispatch", "/assignments"), ("supervision", "/list-items"),
                              ("supervision", "/supervision-orders")):
        refused = api.call("GET", service, template, 403,
                           headers={"Authorization": f"Bearer {no_dept}"})
        assert "names no department" in refused["error"]
    later = suite_time.iso(suite_time.at(suite_time.working_day_after(suite_time.today(), 10), 18))
    for step, body in (("confirmation", {"lead_entity": "fgj", "deadline": later}),
                       ("resolution", {"measures": "x"}), ("closure", {"promote": True}),
                       ("dismissal", {"reason": "x"})):
        api.call("POST", "supervision", f"/class-problems/{{class_id}}/{step}", 403,
                 role="viewer", class_id="LT-1999-9999", json=body)


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
    assert viewer["enterprise"]["contact_name"] == "张*"
    ids = {a["dept_code"]: a["assignment_id"] for e in staff["timeline"]
           if e["event"] == "appeal.dispatched" for a in e["detail"]["assignments"]}
    for dept, other in (("zjj", "zrzyj"), ("zrzyj", "zjj")):
        # Its share: its own assignment, never the other unit's id, nor the bureau's staff.
        share = api.call("GET", "intake", "/appeals/{reg_no}", 200, role="department",
                         dept=dept, reg_no=reg_no)
        assert share["enterprise"]["contact_phone"] == PHONE and "registered_by" not in share
        assert [e["event"] for e in share["timeline"]] == ["appeal.dispatched"]
        assert [a["assignment_id"] for a in share["timeline"][0]["detail"]["assignments"]] \
            == [ids[dept]]
        assert ids[other] not in str(share)
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
        "from": naive(suite_time.now()), "page_size": "0", "colour": "red"})
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
    # Held in the coming working days of the suite's calendar.
    held_on = suite_time.working_day_after(suite_time.today(), 1)
    visited_on = suite_time.working_day_after(held_on, 1)
    body = {"activity_id": activity_id, "kind": "sit_in", "held_on": held_on.isoformat(),
            "title": "局长坐诊（住建专场）", "lead_unit": "zjj",
            "industry_chain": "construction_realestate"}
    created = api.call("POST", "intake", "/activities", 201, role="bureau_admin", json=body)
    assert created == body
    api.call("POST", "intake", "/activities", 409, json=body)
    made_up = api.call("POST", "intake", "/activities", 201, json={
        "kind": "door_visit", "held_on": visited_on.isoformat(), "title": "上门问诊",
        "lead_unit": "jrb"})
    assert made_up["activity_id"].startswith(f"door_visit-{visited_on:%Y%m%d}-")
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
    first = api.call("GET", "dispatch", "/assignments", 200, params={"page": 1, "page_size": 1})
    second = api.call("GET", "dispatch", "/assignments", 200, params={"page": 2, "page_size": 1})
    assert len(first) == len(second) == 1 and first != second
    bad = api.call("GET", "dispatch", "/assignments", 422, params={"page": 0, "page_size": 501})
    assert set(bad["errors"]) == {"page", "page_size"}


def _assignments(api: Api, **params: str) -> list[dict]:
    return requests.get(f"{api.urls['dispatch']}/assignments", params=params, timeout=15,
                        headers=api.headers("bureau_staff")).json()


def _one_assignment(api: Api, reg_no: str, **params: str) -> dict:
    """The appeal's only assignment matching `params`, once dispatch has it."""
    found = poll(lambda: (rows := _assignments(api, reg_no=reg_no, **params)) and rows)
    (row,) = found
    return row



def test_return_decision(api, bus):
    """A unit returns its assignment over the bus; the bureau rejects one return and
    accepts another - the appeal is routed again without that unit."""
    created = api.call("POST", "intake", "/appeals", 201, json=appeal(unique()))
    reg_no = created["reg_no"]
    lead = _one_assignment(api, reg_no, state="assigned", dept="zjj")
    template = "/assignments/{assignment_id}/return-decision"
    not_yet = api.call("POST", "dispatch", template, 409, assignment_id=lead["assignment_id"],
                       json={"accept": True, "reason": "尚未退单"})
    assert "not waiting for a return decision" in not_yet["error"]

    bus.reply("zjj", "return", reply_body(lead, reason_code="wrong_unit",
                                          reason="应由自然资源局办理", suggested_unit="zrzyj"))
    poll(lambda: _assignments(api, reg_no=reg_no, state="returned"))
    (returned,) = api.call("GET", "dispatch", "/assignments", 200, role="viewer",
                           params={"reg_no": reg_no, "state": "returned"})
    assert (returned["assignment_id"], returned["return_reason_code"],
            returned["suggested_unit"]) == (lead["assignment_id"], "wrong_unit", "zrzyj")
    assert returned["rule"] == "construction-permit"

    bad = api.call("POST", "dispatch", template, 422, assignment_id=lead["assignment_id"],
                   json={"accept": "maybe", "surprise": 1})
    assert {"accept", "reason", "surprise"} <= set(bad["errors"])
    api.call("POST", "dispatch", template, 403, role="viewer",
             assignment_id=lead["assignment_id"], json={"accept": True, "reason": "x"})
    api.call("POST", "dispatch", template, 404, assignment_id=str(uuid.uuid4()),
             json={"accept": True, "reason": "x"})
    rejected = api.call("POST", "dispatch", template, 200, assignment_id=lead["assignment_id"],
                        json={"accept": False, "reason": "属于住建职责，请办理"})
    assert rejected == {"assignment_id": lead["assignment_id"], "state": "assigned",
                        "redispatched": False}

    bus.reply("zjj", "return", reply_body(lead, reason_code="not_our_duty", reason="非本单位职责"))
    poll(lambda: _assignments(api, reg_no=reg_no, state="returned"))
    accepted = api.call("POST", "dispatch", template, 200, role="bureau_admin",
                        assignment_id=lead["assignment_id"],
                        json={"accept": True, "reason": "同意退单"})
    assert accepted == {"assignment_id": lead["assignment_id"], "state": "withdrawn",
                        "redispatched": True}
    rows = api.call("GET", "dispatch", "/assignments", 200, params={"reg_no": reg_no})
    states = {(a["dept_code"], a["role"], a["state"]) for a in rows}
    assert {("zjj", "lead", "withdrawn"), ("zrzyj", "co", "withdrawn")} <= states
    (new_lead,) = [a for a in rows if a["state"] == "assigned" and a["role"] == "lead"]
    assert new_lead["dept_code"] != "zjj"
    api.call("POST", "dispatch", template, 409, assignment_id=lead["assignment_id"],
             json={"accept": False, "reason": "再次审核"})


def test_extension_decision(api, bus):
    """A signed unit asks for more time over the bus; the bureau approves it - never
    past the category's limit."""
    created = api.call("POST", "intake", "/appeals", 201, json=appeal(unique()))
    reg_no = created["reg_no"]
    lead = _one_assignment(api, reg_no, dept="zjj")
    bus.reply("zjj", "sign", reply_body(lead))
    _one_assignment(api, reg_no, dept="zjj", state="signed")
    respond_by = datetime.fromisoformat(lead["respond_by"])
    # One working day more, on the suite's calendar: after respond_by, in the future and
    # well within the category's longest time allowed.
    asked = suite_time.at(suite_time.working_day_after(respond_by, 1), 18)
    bus.reply("zjj", "extend", reply_body(lead, requested_until=asked.isoformat(),
                                          reason="需要现场核查"))

    def pending() -> list[dict]:
        listed = api.call("GET", "dispatch", "/extensions", 200, role="viewer",
                          params={"state": "requested"})
        return [e for e in listed if e["reg_no"] == reg_no]

    (ext,) = poll(pending)
    assert (ext["assignment_id"], ext["dept_code"], ext["state"]) == (
        lead["assignment_id"], "zjj", "requested")
    assert datetime.fromisoformat(ext["requested_until"]) == asked
    everything = api.call("GET", "dispatch", "/extensions", 200)
    assert ext["extension_id"] in {e["extension_id"] for e in everything}

    template = "/extensions/{extension_id}/decision"
    api.call("POST", "dispatch", template, 403, role="viewer", extension_id=ext["extension_id"],
             json={"approve": True, "reason": "同意"})
    api.call("POST", "dispatch", template, 404, extension_id=str(uuid.uuid4()),
             json={"approve": True, "reason": "同意"})
    bad = api.call("POST", "dispatch", template, 422, extension_id=ext["extension_id"],
                   json={"approve": "maybe", "reason": "x", "respond_by": naive(asked)})
    assert {"approve", "respond_by"} <= set(bad["errors"])
    too_long = api.call("POST", "dispatch", template, 422, extension_id=ext["extension_id"],
                        json={"approve": True, "reason": "同意",
                              "respond_by": (respond_by + timedelta(days=365)).isoformat()})
    assert "longest time allowed" in too_long["errors"]["respond_by"][0]
    approved = api.call("POST", "dispatch", template, 200, role="bureau_admin",
                        extension_id=ext["extension_id"],
                        json={"approve": True, "reason": "同意延期一天"})
    assert approved["approved"] is True and approved["actor"] == "e2e-bureau_admin"
    assert datetime.fromisoformat(approved["respond_by"]) == asked
    api.call("POST", "dispatch", template, 409, extension_id=ext["extension_id"],
             json={"approve": False, "reason": "重复审批"})
    (decided,) = [e for e in api.call("GET", "dispatch", "/extensions", 200,
                                      params={"state": "approved"}) if e["reg_no"] == reg_no]
    assert (decided["decided_by"], decided["decision_reason"]) == ("e2e-bureau_admin",
                                                                   "同意延期一天")
    now = _one_assignment(api, reg_no, dept="zjj")
    assert datetime.fromisoformat(now["respond_by"]) == asked
    # Another request, still waiting when the unit responds, lapses undecided.
    again = suite_time.at(suite_time.working_day_after(asked, 1), 18)
    bus.reply("zjj", "extend", reply_body(lead, requested_until=suite_time.iso(again),
                                          reason="仍需核查"))
    (waiting,) = poll(pending)
    bus.reply("zjj", "respond", reply_body(lead, outcome="solved", reply="已办结",
                                           contacted_at=suite_time.iso()))
    (lapsed,) = poll(lambda: [e for e in api.call("GET", "dispatch", "/extensions", 200,
                                                  params={"state": "lapsed"})
                              if e["reg_no"] == reg_no])
    assert lapsed["extension_id"] == waiting["extension_id"] and lapsed["decided_by"] is None
    api.call("POST", "dispatch", template, 409, extension_id=waiting["extension_id"],
             json={"approve": True, "reason": "同意"})


def test_override(api):
    """The bureau chooses the units itself: the open assignments are taken back."""
    created = api.call("POST", "intake", "/appeals", 201, json=appeal(unique()))
    reg_no = created["reg_no"]
    poll(lambda: len(_assignments(api, reg_no=reg_no)) == 2)
    template = "/appeals/{reg_no}/dispatch"
    api.call("POST", "dispatch", template, 403, role="viewer", reg_no=reg_no,
             json={"lead": "czj", "reason": "改派"})
    unknown = api.call("POST", "dispatch", template, 422, reg_no=reg_no,
                       json={"lead": "nobody", "reason": "改派"})
    assert "lead" in unknown["errors"]
    missing = api.call("POST", "dispatch", template, 422, reg_no=reg_no,
                       json={"lead": "czj", "co": ["ZJJ"]})
    assert {"reason", "co.0"} <= set(missing["errors"])
    api.call("POST", "dispatch", template, 404, reg_no="WH-1999-999999",
             json={"lead": "czj", "reason": "改派"})
    chosen = api.call("POST", "dispatch", template, 200, reg_no=reg_no,
                      json={"lead": "czj", "co": ["zjj", "czj"], "reason": "涉及财政奖补"})
    assert chosen == {"reg_no": reg_no, "units": {"lead": "czj", "co": ["zjj"]},
                      "rule": "bureau:e2e-bureau_staff"}
    rows = api.call("GET", "dispatch", "/assignments", 200, params={"reg_no": reg_no})
    assert {(a["dept_code"], a["role"], a["state"], a["rule"]) for a in rows} == {
        ("zjj", "lead", "withdrawn", "construction-permit"),
        ("zrzyj", "co", "withdrawn", "construction-permit"),
        ("czj", "lead", "assigned", "bureau:e2e-bureau_staff"),
        ("zjj", "co", "assigned", "bureau:e2e-bureau_staff")}
    # A withdrawn appeal can no longer be dispatched.
    api.call("POST", "intake", "/appeals/{reg_no}/withdrawal", 200, reg_no=reg_no,
             json={"reason": "企业自行解决"})
    poll(lambda: all(a["state"] == "withdrawn" for a in _assignments(api, reg_no=reg_no)))
    gone = api.call("POST", "dispatch", template, 409, reg_no=reg_no,
                    json={"lead": "czj", "reason": "改派"})
    assert "withdrawn" in gone["error"]


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


def test_closure_and_deadlines(api, bus):
    """The deadline clocks of a dispatched appeal, met as the lead unit signs and answers
    over the bus; the bureau closes the appeal for an unreachable enterprise - refused
    before the answer, accepted after."""
    created = api.call("POST", "intake", "/appeals", 201, json=appeal(unique()))
    reg_no = created["reg_no"]
    lead = _one_assignment(api, reg_no, dept="zjj")
    co = _one_assignment(api, reg_no, dept="zrzyj")
    _clock_in_state(api, reg_no, "dispatched")  # supervision opened the clocks then
    deadlines = "/appeals/{reg_no}/deadlines"
    opened = api.call("GET", "supervision", deadlines, 200, role="viewer", reg_no=reg_no)
    assert sorted((d["assignment_id"], d["kind"], d["state"]) for d in opened) == sorted([
        (lead["assignment_id"], "sign", "open"), (lead["assignment_id"], "respond", "open"),
        (co["assignment_id"], "sign", "open")])
    by_kind = {(d["dept_code"], d["kind"]): d for d in opened}
    assert datetime.fromisoformat(by_kind["zjj", "sign"]["due_at"]) == \
        datetime.fromisoformat(lead["sign_by"])
    assert datetime.fromisoformat(by_kind["zjj", "respond"]["due_at"]) == \
        datetime.fromisoformat(lead["respond_by"])
    # Nothing is overdue yet (a reminder may already be out, in working hours).
    assert all(d["notice_at"] is None and d["order_at"] is None for d in opened)
    assert api.call("GET", "supervision", deadlines, 200, reg_no="WH-1999-999999") == []

    closure = "/appeals/{reg_no}/closure"
    body = {"contact_attempts": 3, "reason": "三次电话均无人接听"}
    early = api.call("POST", "supervision", closure, 409, reg_no=reg_no, json=body)
    assert "closure refused" in early["error"] and "dispatched" in early["error"]
    bad = api.call("POST", "supervision", closure, 422, reg_no=reg_no,
                   json={"contact_attempts": 2, "surprise": 1})
    assert {"contact_attempts", "reason", "surprise"} <= set(bad["errors"])
    api.call("POST", "supervision", closure, 404, reg_no="WH-1999-999999", json=body)

    bus.reply("zjj", "sign", reply_body(lead))
    _one_assignment(api, reg_no, dept="zjj", state="signed")
    bus.reply("zjj", "respond", reply_body(lead, outcome="solved", reply="已办结并告知企业",
                                           contacted_at=suite_time.iso()))
    _clock_in_state(api, reg_no, "responded")
    answered = api.call("GET", "supervision", deadlines, 200, role="bureau_admin",
                        reg_no=reg_no)
    assert {(d["dept_code"], d["kind"]): d["state"] for d in answered} == {
        ("zjj", "sign"): "met", ("zjj", "respond"): "met", ("zrzyj", "sign"): "open"}

    closed = api.call("POST", "supervision", closure, 200, role="bureau_admin", reg_no=reg_no,
                      json={"contact_attempts": 5, "reason": "企业已搬离，电话停机"})
    assert closed == {"reg_no": reg_no, "state": "closed"}
    _clock_in_state(api, reg_no, "closed")
    again = api.call("POST", "supervision", closure, 409, reg_no=reg_no, json=body)
    assert "closed" in again["error"]
    _intake_state(api, reg_no, "closed")
    detail = api.call("GET", "intake", "/appeals/{reg_no}", 200, reg_no=reg_no)
    (entry,) = [e for e in detail["timeline"] if e["event"] == "appeal.closed"]
    assert entry["detail"]["reason"] == "enterprise_unreachable"
    assert (entry["detail"]["note"], entry["detail"]["contact_attempts"]) == (
        "企业已搬离，电话停机", 5)


def test_key_orders_and_written_feedback(api, bus):
    """An unsatisfied follow-up sends the lead unit a key supervision order: it owes
    written feedback by `feedback_by` (GET /supervision-orders, a `feedback` clock) and
    gives it with a `feedback` reply over the bus."""
    created = api.call("POST", "intake", "/appeals", 201, json=appeal(unique()))
    reg_no = created["reg_no"]
    lead = _one_assignment(api, reg_no, dept="zjj")
    bus.reply("zjj", "sign", reply_body(lead))
    _one_assignment(api, reg_no, dept="zjj", state="signed")
    bus.reply("zjj", "respond", reply_body(lead, outcome="explained", reply="已解释政策",
                                           contacted_at=suite_time.iso()))
    _clock_in_state(api, reg_no, "responded")
    reopened = api.call("POST", "supervision", "/appeals/{reg_no}/followups", 201, reg_no=reg_no,
                        json={"grade": "unsatisfied", "resolved": False, "comments": "仍未解决"})
    assert reopened["state"] == "reopened"

    orders = "/supervision-orders"
    # A department sees its own orders only, whatever `dept` it asks for.
    (order,) = [o for o in api.call("GET", "supervision", orders, 200, role="department",
                                    dept="zjj", params={"state": "open", "dept": "zrzyj"})
                if o["reg_no"] == reg_no]
    assert (order["dept_code"], order["assignment_id"], order["cause"], order["answered_at"],
            order["feedback"], order["late"]) == ("zjj", lead["assignment_id"],
                                                  "unsatisfied_followup", None, None, False)
    assert not [o for o in api.call("GET", "supervision", orders, 200, role="department",
                                    dept="zrzyj") if o["reg_no"] == reg_no]
    bad = api.call("GET", "supervision", orders, 422, params={"state": "closed"})
    assert "state" in bad["errors"]
    deadlines = "/appeals/{reg_no}/deadlines"
    (owed,) = [d for d in api.call("GET", "supervision", deadlines, 200, reg_no=reg_no)
               if d["kind"] == "feedback"]
    assert (owed["assignment_id"], owed["dept_code"], owed["state"]) == (
        order["order_no"], "zjj", "open")
    assert datetime.fromisoformat(owed["due_at"]) == datetime.fromisoformat(order["feedback_by"])

    bus.reply("zjj", "feedback", reply_body(lead, order_no=order["order_no"],
                                            feedback="已约谈企业，重新研究解决方案"))
    (answered,) = poll(lambda: [o for o in api.call(
        "GET", "supervision", orders, 200, role="viewer", params={"state": "answered",
                                                                   "dept": "zjj"})
        if o["order_no"] == order["order_no"]])
    assert (answered["feedback"], answered["late"]) == ("已约谈企业，重新研究解决方案", False)
    assert answered["answered_at"] is not None
    everything = api.call("GET", "supervision", orders, 200, role="bureau_admin")
    assert order["order_no"] in {o["order_no"] for o in everything}
    (met,) = [d for d in api.call("GET", "supervision", deadlines, 200, role="viewer",
                                  reg_no=reg_no) if d["kind"] == "feedback"]
    assert met["state"] == "met"


# --- supervision: 我陪群众走流程 and the 附件1 activity filings ----------------------------

FIVE_CHECKS = {"accuracy": 4, "smoothness": 2, "proofs": 3, "experience": 3, "conduct": 5}


def test_walkthroughs_and_list_items(api):
    """A walkthrough's findings become list items, each owner's to deal with by its
    deadline (an `item` clock) until the bureau closes it out."""
    today = suite_time.today()
    # Sent in UTC: the walkthrough's answer echoes them as sent, the item reads them as stored.
    due = suite_time.at(suite_time.working_day_after(today, 10), 18).astimezone(UTC)
    later = suite_time.at(suite_time.working_day_after(today, 15), 18).astimezone(UTC)
    past = suite_time.at(suite_time.working_day_before(today, 1), 18).astimezone(UTC)
    body = {"service_item": "企业开办一网通办", "mode": "accompanied", "lead_unit": "swj",
            "walked_on": suite_time.working_day_before(today, 1).isoformat(),
            "scores": FIVE_CHECKS, "summary": "陪同企业办理开办全流程",
            "findings": [
                {"list": "problem", "description": "线上线下材料要求不一致", "owner": "zjj",
                 "due_at": due.isoformat()},
                {"list": "optimization", "description": "合并两个申请表单", "owner": "gxj",
                 "due_at": later.isoformat()}]}
    walkthroughs = "/walkthroughs"
    api.call("POST", "supervision", walkthroughs, 403, role="viewer", json=body)
    bad = api.call("POST", "supervision", walkthroughs, 422,
                   json={**body, "mode": "by_phone", "scores": {"accuracy": 6}, "surprise": 1})
    assert {"mode", "surprise"} <= set(bad["errors"])
    assert any(key.startswith("scores") for key in bad["errors"])
    unknown = api.call("POST", "supervision", walkthroughs, 422, json={
        **body, "lead_unit": "nobody", "findings": [{**body["findings"][0], "owner": "nobody",
                                                     "due_at": past.isoformat()}]})
    assert {"lead_unit", "findings.0.owner", "findings.0.due_at"} <= set(unknown["errors"])
    api.call("POST", "supervision", walkthroughs, 400, data=b"{not json",
             headers={**api.headers("bureau_staff"), "Content-Type": "application/json"})
    walked = api.call("POST", "supervision", walkthroughs, 201, role="bureau_admin", json=body)
    walkthrough_id, items = walked["walkthrough_id"], walked["items"]
    assert [i["item_id"] for i in items] == [f"{walkthrough_id}-1", f"{walkthrough_id}-2"]
    assert [(i["list"], i["owner"], i["state"]) for i in items] == [
        ("problem", "zjj", "open"), ("optimization", "gxj", "open")]
    assert walked["recorded_by"] == "e2e-bureau_admin" and walked["scores"] == FIVE_CHECKS
    quick = api.call("POST", "supervision", walkthroughs, 201, json={
        "service_item": "不动产登记", "mode": "in_person", "lead_unit": "zrzyj",
        "walked_on": suite_time.working_day_before(today, 2).isoformat(),
        "scores": dict.fromkeys(FIVE_CHECKS, 5)})
    assert (quick["items"], quick["summary"]) == ([], "")
    listed = api.call("GET", "supervision", walkthroughs, 200, role="viewer")
    assert {walkthrough_id, quick["walkthrough_id"]} <= {w["walkthrough_id"] for w in listed}
    api.call("GET", "supervision", walkthroughs, 403, role="department", dept="zjj")
    one = "/walkthroughs/{walkthrough_id}"
    assert api.call("GET", "supervision", one, 200, role="viewer",
                    walkthrough_id=walkthrough_id)["items"] == items
    api.call("GET", "supervision", one, 404, walkthrough_id="WT-19990101-00000000")

    lists = "/list-items"
    mine = api.call("GET", "supervision", lists, 200, role="department", dept="zjj",
                    params={"owner": "gxj"})
    assert items[0]["item_id"] in {i["item_id"] for i in mine}
    assert all(i["owner"] == "zjj" for i in mine)
    problems = api.call("GET", "supervision", lists, 200, role="viewer",
                        params={"list": "problem", "state": "open"})
    assert items[0]["item_id"] in {i["item_id"] for i in problems}
    assert all((i["list"], i["state"]) == ("problem", "open") for i in problems)
    wrong = api.call("GET", "supervision", lists, 422, params={"list": "wishes", "state": "done"})
    assert {"list", "state"} <= set(wrong["errors"])

    closure = "/list-items/{item_id}/closure"
    item_id = items[0]["item_id"]
    api.call("POST", "supervision", closure, 403, role="department", dept="zjj",
             item_id=item_id, json={"resolution": "x"})
    api.call("POST", "supervision", closure, 422, item_id=item_id, json={"resolution": ""})
    api.call("POST", "supervision", closure, 404, item_id=f"{walkthrough_id}-9",
             json={"resolution": "x"})
    closed = api.call("POST", "supervision", closure, 200, item_id=item_id,
                      json={"resolution": "统一了线上线下材料清单"})
    assert (closed["state"], closed["resolution"], closed["overdue"]) == (
        "closed", "统一了线上线下材料清单", False)
    again = api.call("POST", "supervision", closure, 409, item_id=item_id,
                     json={"resolution": "再次销号"})
    assert "already closed" in again["error"]
    # The owner's clock, listed under the item's id: met.
    (clock,) = api.call("GET", "supervision", "/appeals/{reg_no}/deadlines", 200,
                        reg_no=item_id)
    assert (clock["assignment_id"], clock["dept_code"], clock["kind"], clock["state"]) == (
        item_id, "zjj", "item", "met")
    assert datetime.fromisoformat(clock["due_at"]) == due


PATROL_REPORT = {
    "policies_delivered": 6, "enterprises_served": 12, "class_problems": ["数据中心用电报装慢"],
    "summary": "走访软件园企业12家",
    "service_items": [{"enterprise_name": "某软件公司", "contact_name": "王五",
                       "contact_phone": "13912345678", "item": "高新技术企业认定辅导",
                       "responsible_unit": "gxj", "status": "in_progress"}]}


def test_patrol_filings_and_obligations(api):
    """附件1: a chain patrol registered at intake has its plan and report filed by its
    chain's lead unit (or the bureau); the year's obligations show where each stands."""
    today = suite_time.today()
    tag = unique()
    patrol_id, sit_in_id = f"chain_patrol-{tag}", f"sit_in-{tag}"
    api.call("POST", "intake", "/activities", 201, json={
        "activity_id": patrol_id, "kind": "chain_patrol", "held_on": today.isoformat(),
        "title": "数字经济链式巡诊", "lead_unit": "kjj", "industry_chain": "digital_economy"})
    api.call("POST", "intake", "/activities", 201, json={
        "activity_id": sit_in_id, "kind": "sit_in", "held_on": today.isoformat(),
        "title": "局长坐诊", "lead_unit": "zjj"})
    obligations = "/activity-obligations"

    def activities() -> dict[str, dict]:  # once supervision has both (over the bus)
        found = {a["activity_id"]: a for a in api.call(
            "GET", "supervision", obligations, 200, params={"year": str(today.year)})[
            "activities"]}
        return {patrol_id, sit_in_id} <= set(found) and found

    known = poll(activities)
    assert known[patrol_id]["plan"]["status"] == "missing"  # due 3 working days before
    assert known[patrol_id]["report"]["status"] == "pending"
    assert "plan" not in known[sit_in_id]

    plan, report = "/activities/{activity_id}/plan", "/activities/{activity_id}/report"
    api.call("POST", "supervision", plan, 403, role="viewer", activity_id=patrol_id,
             json={"summary": "x"})
    not_lead = api.call("POST", "supervision", plan, 403, role="department", dept="kjj",
                        activity_id=patrol_id, json={"summary": "巡诊方案"})
    assert "lead unit" in not_lead["error"]  # the chain's (gxj), not the activity's (kjj)
    api.call("POST", "supervision", plan, 422, activity_id=patrol_id, json={"summary": ""})
    api.call("POST", "supervision", plan, 404, activity_id="chain_patrol-19990101-000000",
             json={"summary": "x"})
    api.call("POST", "supervision", plan, 409, activity_id=sit_in_id, json={"summary": "x"})
    filed = api.call("POST", "supervision", plan, 200, role="department", dept="gxj",
                     activity_id=patrol_id, json={"summary": "走访软件园10家企业"})
    assert (filed["plan"]["status"], filed["plan"]["content"]) == ("late", "走访软件园10家企业")
    assert (filed["report"]["status"], filed["report"]["content"]) == ("pending", None)
    api.call("POST", "supervision", plan, 409, activity_id=patrol_id, json={"summary": "再报"})

    unknown = api.call("POST", "supervision", report, 422, activity_id=patrol_id, json={
        **PATROL_REPORT, "service_items": [{**PATROL_REPORT["service_items"][0],
                                            "responsible_unit": "nobody"}]})
    assert "service_items.0.responsible_unit" in unknown["errors"]
    reported = api.call("POST", "supervision", report, 200, role="bureau_admin",
                        activity_id=patrol_id, json=PATROL_REPORT)
    assert reported["report"]["status"] == "on_time"
    assert reported["report"]["content"]["service_items"][0]["reg_no"] is None
    api.call("POST", "supervision", report, 409, activity_id=patrol_id, json=PATROL_REPORT)

    year = api.call("GET", "supervision", obligations, 200, role="viewer")
    assert year["year"] == today.year and [s["month"] for s in year["sit_ins"]] == [3, 6, 9, 12]
    digital = next(p for p in year["patrols"] if p["industry_chain"] == "digital_economy")
    assert (digital["status"], digital["lead_unit"]) == ("met", "gxj")
    (mine,) = [p for p in digital["patrols"] if p["activity_id"] == patrol_id]
    assert (mine["plan"], mine["report"]) == ("late", "on_time")
    api.call("GET", "supervision", obligations, 422, params={"year": "1999"})
    api.call("GET", "supervision", obligations, 403, role="department", dept="gxj")
    # The chain lead's clocks, listed under the activity's id: both met.
    clocks = api.call("GET", "supervision", "/appeals/{reg_no}/deadlines", 200,
                      reg_no=patrol_id)
    assert sorted((c["kind"], c["dept_code"], c["state"]) for c in clocks) == [
        ("plan", "gxj", "met"), ("report", "gxj", "met")]


# --- supervision: class problems (类题破解) ------------------------------------------------
# Detection runs on demand over HTTP (its timer, every APPEALS_CLASS_DETECT_SECONDS, is an
# hour by default); supervision's clock is the real time here, so deadlines are real
# future times.

POWER = [  # category 0402 水电气暖, chain modern_logistics
    ("冷链仓库用电增容申请迟迟未批", "冷链仓库扩建后需要用电增容，申请提交一个月供电部门仍未答复。"),
    ("物流园区用电增容", "物流园区新增冷库设备，用电增容申请一直没有办理结果。"),
    ("仓储中心增容报装慢", "仓储中心申请用电增容报装，供电方案迟迟不出，影响设备投产。"),
    ("冷库扩容用电问题", "冷库扩容后用电负荷不够，增容申请排队太久。"),
]
HIRING = [  # category 0404 用工, chain tech_services
    ("研发人员招聘难", "企业研发团队招聘困难，希望协助对接高校人才招聘。"),
    ("技术人才招工难", "公司招工难，技术岗位长期招不到人，请帮助对接人才市场招聘。"),
    ("招聘渠道少", "科技企业招聘渠道少，研发岗位招人难，希望举办专场招聘会。"),
]


def _similar_appeals(api: Api, texts: list[tuple[str, str]], category: str,
                     chain: str) -> set[str]:
    """Register similar appeals; their reg_nos once supervision has them."""
    tag = unique()
    reg_nos = set()
    for n, (title, content) in enumerate(texts):
        created = api.call("POST", "intake", "/appeals", 201, json=appeal(
            f"{tag}-{n}", title=title, content=content, category=category,
            industry_chain=chain))
        reg_nos.add(created["reg_no"])
    for reg_no in reg_nos:  # supervision learns of appeals over the bus
        poll(lambda r=reg_no: requests.get(
            f"{api.urls['supervision']}/appeals/{r}/clock", timeout=15,
            headers=api.headers("bureau_staff")).status_code == 200)
    return reg_nos


def test_class_problems(api):
    """Similar appeals are suggested as class problems; one is confirmed (a `class`
    clock for its lead entity), resolved and closed - its appeals' timelines get the
    annotation - and the other dismissed; wrong states, unknown ids and bad bodies are
    refused."""
    power = _similar_appeals(api, POWER, "0402", "modern_logistics")
    hiring = _similar_appeals(api, HIRING, "0404", "tech_services")
    detection = "/class-problems/detection"
    found = api.call("POST", "supervision", detection, 200, role="bureau_admin")
    assert all(c["state"] == "suggested" and c["lead_entity"] is None for c in found)
    listed = api.call("GET", "supervision", "/class-problems", 200, role="viewer",
                      params={"state": "suggested"})
    by_members = {frozenset(c["reg_nos"]): c for c in listed}
    power_class, hiring_class = by_members[frozenset(power)], by_members[frozenset(hiring)]
    assert (power_class["category"], power_class["industry_chain"]) == ("0402",
                                                                       "modern_logistics")
    again = api.call("POST", "supervision", detection, 200)
    assert not {frozenset(c["reg_nos"]) for c in again} & set(by_members), \
        "an active class's appeals are not suggested again"
    everything = api.call("GET", "supervision", "/class-problems", 200)
    assert {power_class["class_id"], hiring_class["class_id"]} <= {
        c["class_id"] for c in everything}
    assert api.call("GET", "supervision", "/class-problems", 200,
                    params={"state": "no-such-state"}) == []

    class_id = power_class["class_id"]
    confirmation = "/class-problems/{class_id}/confirmation"
    resolution = "/class-problems/{class_id}/resolution"
    closure = "/class-problems/{class_id}/closure"
    dismissal = "/class-problems/{class_id}/dismissal"
    deadline = suite_time.at(suite_time.working_day_after(suite_time.today(), 20), 18)
    body = {"lead_entity": "fgj", "units": ["swtcj", "gxj"], "deadline": deadline.isoformat(),
            "note": "冷链用电增容专项研判"}
    unknown = api.call("POST", "supervision", confirmation, 422, class_id=class_id,
                       json={**body, "units": ["nobody"]})
    assert "nobody" in unknown["errors"]["units"][0]
    bad = api.call("POST", "supervision", confirmation, 422, class_id=class_id,
                   json={"lead_entity": "FGJ", "deadline": naive(deadline), "surprise": 1})
    assert {"lead_entity", "deadline", "surprise"} <= set(bad["errors"])
    past = api.call("POST", "supervision", confirmation, 422, class_id=class_id,
                    json={**body, "deadline": suite_time.iso(suite_time.now() - timedelta(days=1))})
    assert "deadline" in past["errors"]
    api.call("POST", "supervision", confirmation, 404, class_id="LT-1999-9999", json=body)
    api.call("POST", "supervision", confirmation, 400, class_id=class_id, data=b"{not json",
             headers={**api.headers("bureau_staff"), "Content-Type": "application/json"})
    not_yet = api.call("POST", "supervision", resolution, 409, class_id=class_id,
                       json={"measures": "尚未确认"})
    assert "suggested" in not_yet["error"]
    api.call("POST", "supervision", closure, 409, class_id=class_id, json={"promote": True})

    confirmed = api.call("POST", "supervision", confirmation, 200, role="bureau_admin",
                         class_id=class_id, json=body)
    assert (confirmed["state"], confirmed["lead_entity"], confirmed["units"],
            confirmed["note"]) == ("confirmed", "fgj", ["swtcj", "gxj"], body["note"])
    assert datetime.fromisoformat(confirmed["deadline"]) == deadline
    api.call("POST", "supervision", confirmation, 409, class_id=class_id, json=body)
    api.call("POST", "supervision", dismissal, 409, class_id=class_id, json={"reason": "个案"})
    # The lead entity's clock, listed under the class id (no appeal has that reg_no).
    (clock,) = api.call("GET", "supervision", "/appeals/{reg_no}/deadlines", 200,
                        role="viewer", reg_no=class_id)
    assert (clock["assignment_id"], clock["dept_code"], clock["kind"], clock["state"]) == (
        class_id, "fgj", "class", "open")
    assert datetime.fromisoformat(clock["due_at"]) == deadline
    api.call("GET", "supervision", "/appeals/{reg_no}/clock", 404, reg_no=class_id)

    empty = api.call("POST", "supervision", resolution, 422, class_id=class_id,
                     json={"measures": ""})
    assert "measures" in empty["errors"]
    measures = "开辟冷链仓储用电增容绿色通道，报装压缩至5个工作日"
    resolved = api.call("POST", "supervision", resolution, 200, class_id=class_id,
                        json={"measures": measures})
    assert (resolved["state"], resolved["measures"]) == ("resolved", measures)
    (clock,) = api.call("GET", "supervision", "/appeals/{reg_no}/deadlines", 200,
                        reg_no=class_id)
    assert clock["state"] == "met"
    missing = api.call("POST", "supervision", closure, 422, class_id=class_id,
                       json={"note": "全区推广"})
    assert "promote" in missing["errors"]
    closed = api.call("POST", "supervision", closure, 200, role="bureau_admin",
                      class_id=class_id, json={"promote": True, "note": "全区推广"})
    assert (closed["state"], closed["promote"], closed["note"], closed["measures"]) == (
        "closed", True, "全区推广", measures)
    api.call("POST", "supervision", closure, 409, class_id=class_id, json={"promote": False})
    assert class_id in {c["class_id"] for c in api.call(
        "GET", "supervision", "/class-problems", 200, params={"state": "closed"})}
    # Every linked appeal is annotated on its timeline (class_problem.annotated).
    for reg_no in power:
        def annotation(r: str = reg_no) -> list[dict]:
            detail = api.call("GET", "intake", "/appeals/{reg_no}", 200, reg_no=r)
            return [e for e in detail["timeline"] if e["event"] == "class_problem.annotated"]
        (entry,) = poll(annotation)
        assert entry["by"] == "e2e-bureau_admin"
        assert entry["detail"] == {"reg_no": reg_no, "class_id": class_id,
                                   "measures": measures, "promote": True,
                                   "actor": "e2e-bureau_admin"}

    # The other suggestion is dismissed; its appeals may be suggested again.
    other = hiring_class["class_id"]
    api.call("POST", "supervision", dismissal, 422, class_id=other, json={"reason": ""})
    api.call("POST", "supervision", dismissal, 404, class_id="LT-1999-9999",
             json={"reason": "个案"})
    dismissed = api.call("POST", "supervision", dismissal, 200, class_id=other,
                         json={"reason": "个案较多，暂不成类"})
    assert (dismissed["state"], dismissed["note"]) == ("dismissed", "个案较多，暂不成类")
    api.call("POST", "supervision", confirmation, 409, class_id=other, json=body)
    suggested_again = api.call("POST", "supervision", detection, 200)
    assert frozenset(hiring) in {frozenset(c["reg_nos"]) for c in suggested_again}


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
    offsetless = api.call("GET", "reporting", "/reports/summary", 400,
                          params={"from": naive(suite_time.now())})
    assert "offset" in offsetless["error"]
    api.call("GET", "reporting", "/reports/summary", 400, params={"to": "yesterday"})


def test_reports_and_exports(api):
    """Every report and export of reporting answers as documented (the figures themselves
    are checked in tests/unit/test_report_scenario.py and tests/e2e/test_reports_live.py)."""
    today = suite_time.today()
    quarter = str((today.month - 1) // 3 + 1)
    rates = "/reports/rates"
    by_dept = api.call("GET", "reporting", rates, 200, role="viewer", params={
        "period": "quarter", "year": str(today.year), "quarter": quarter,
        "group_by": "department"})
    assert (by_dept["period"]["kind"], by_dept["group_by"]) == ("quarter", "department")
    for params in ({"group_by": "channel"}, {"group_by": "industry_chain", "month": "1"},
                   {"group_by": "category", "year": str(today.year)},
                   {"group_by": "month", "from": f"{today.year}-01-01", "to": f"{today.year}-12-31"},
                   {}):
        api.call("GET", "reporting", rates, 200, role="bureau_admin", params=params)
    for params, field in (({"colour": "red"}, "colour"), ({"group_by": "weekday"}, "group_by"),
                          ({"period": "quarter", "quarter": "5"}, "quarter"),
                          ({"from": today.isoformat(),
                            "to": suite_time.working_day_before(today, 20).isoformat()}, "to")):
        refused = api.call("GET", "reporting", rates, 422, params=params)
        assert field in refused["errors"], refused
    api.call("GET", "reporting", rates, 403, role="department", dept="zjj")

    overdue = api.call("GET", "reporting", "/reports/overdue", 200, role="viewer",
                       params={"limit": "5"})
    assert overdue["total"] == sum(overdue["by_kind"].values()) and len(overdue["items"]) <= 5
    api.call("GET", "reporting", "/reports/overdue", 200, params={"kind": "sign", "dept": "zjj"})
    api.call("GET", "reporting", "/reports/overdue", 422, params={"dept": "nobody"})
    api.call("GET", "reporting", "/reports/class-problems", 200, role="viewer")
    api.call("GET", "reporting", "/reports/class-problems", 422, params={"state": "lost"})
    api.call("GET", "reporting", "/reports/walkthroughs", 200, params={"year": str(today.year)})
    api.call("GET", "reporting", "/reports/walkthroughs", 200, role="viewer")
    schedule = api.call("GET", "reporting", "/reports/activity-compliance", 200,
                        params={"year": str(today.year)})
    assert [s["month"] for s in schedule["sit_ins"]] == [3, 6, 9, 12]
    api.call("GET", "reporting", "/reports/activity-compliance", 422, params={"year": "1999"})

    patrol_id = f"chain_patrol-{unique()}"
    api.call("POST", "intake", "/activities", 201, json={
        "activity_id": patrol_id, "kind": "chain_patrol", "held_on": today.isoformat(),
        "title": "商贸消费链式巡诊", "lead_unit": "swtcj", "industry_chain": "trade_consumption"})
    export = "/exports/patrol-report/{activity_id}"
    poll(lambda: requests.get(f"{api.urls['reporting']}/exports/patrol-report/{patrol_id}",
                              headers=api.headers("viewer"), timeout=15).status_code == 200)
    api.call("GET", "reporting", export, 200, role="viewer", activity_id=patrol_id)
    api.call("GET", "reporting", export, 200, activity_id=patrol_id, params={"format": "csv"})
    api.call("GET", "reporting", export, 404, activity_id="no-such-activity")
    api.call("GET", "reporting", export, 422, activity_id=patrol_id, params={"format": "pdf"})
    api.call("GET", "reporting", "/exports/sitin-summary", 200, params={
        "year": str(today.year), "quarter": quarter, "format": "csv", "sheet": "1"})
    api.call("GET", "reporting", "/exports/sitin-summary", 422, params={"quarter": "0"})
    api.call("GET", "reporting", "/exports/annual-review", 200, role="viewer")
    api.call("GET", "reporting", "/exports/annual-review", 403, role="department", dept="zjj")


def test_closed_schema_helper_refuses_undocumented_fields(spec):
    """The strictness the checks above rely on."""
    schema = _closed(_deref(spec, {"$ref": "#/components/schemas/Activity"}))
    body = {"activity_id": "a", "kind": "sit_in", "held_on": suite_time.today().isoformat(),
            "title": "t", "lead_unit": "zjj", "industry_chain": None}
    jsonschema.Draft202012Validator(schema).validate(body)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate({**copy.deepcopy(body), "extra": 1})


# --- after the module: every operation was seen succeeding, and every error class -------

@pytest.fixture(scope="module", autouse=True)
def every_documented_operation_is_exercised(spec, request):
    """Checked when the module's tests are done, whatever order they ran in: only when all
    of them ran and passed (a partial run, `-k`, proves nothing either way)."""
    yield
    module = sys.modules[__name__]
    ran = {item.name.split("[")[0] for item in request.session.items if item.module is module}
    defined = {name for name in dir(module) if name.startswith("test_")}
    if ran != defined or request.session.testsfailed:
        return
    documented = {(method.upper(), path) for path, item in spec["paths"].items()
                  for method in item if method in HTTP_METHODS}
    succeeded = {(m, p) for m, p, status in SEEN if status < 300}
    assert documented - succeeded == set(), "never called successfully"
    assert {401, 403, 404, 409, 413, 422, 400} <= {status for _, _, status in SEEN}
