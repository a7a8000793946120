"""The attacker over HTTP, written with plain `requests` and `jwt` against the running
suite: forged and overlong tokens, department tokens that name no department, reading
another unit's share, hostile bodies. Every attempt is refused and changes nothing."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
import requests

from appeals_common.settings import Settings
from tests.e2e.bus import appeal_body, poll

pytestmark = pytest.mark.e2e

PHONE = "13800138000"


def forged(secret: str, role: str = "bureau_admin", hours: float = 1, **claims) -> dict:
    now = int(time.time())
    token = jwt.encode({"sub": "mallory", "role": role, "iss": "appeals-suite", "iat": now,
                        "exp": now + int(hours * 3600), **claims}, secret, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def staff(token) -> dict[str, str]:
    return {"Authorization": f"Bearer {token('bureau_staff')}"}


def count(urls, staff) -> int:
    return requests.get(f"{urls['intake']}/appeals", headers=staff).json()["total"]


@pytest.mark.parametrize("secret", [
    Settings().jwt_secret,  # the built-in development value anyone can read in the repo
    "change-me", "CHANGE-ME-to-a-long-random-secret-of-at-least-32-bytes"])
def test_tokens_signed_with_a_default_or_placeholder_secret_are_refused(urls, staff, secret):
    before = count(urls, staff)
    body = {k: v for k, v in appeal_body().items()
            if k not in ("schema_version", "source_system", "submitted_at")}
    resp = requests.post(f"{urls['intake']}/appeals", json={**body, "channel": "sit_in"},
                         headers=forged(secret))
    assert resp.status_code == 401
    assert count(urls, staff) == before


def test_a_token_living_for_days_is_refused(urls, suite_env):
    resp = requests.get(f"{urls['dispatch']}/assignments",
                        headers=forged(suite_env["APPEALS_JWT_SECRET"], "viewer", hours=24 * 30))
    assert resp.status_code == 401 and "lifetime" in resp.json()["error"]


@pytest.mark.parametrize("claims", [{}, {"dept": "nosuch"}])
def test_a_department_token_must_name_a_known_department(urls, suite_env, claims):
    headers = forged(suite_env["APPEALS_JWT_SECRET"], "department", **claims)
    for service, path in (("dispatch", "/assignments"), ("supervision", "/list-items"),
                          ("supervision", "/supervision-orders")):
        resp = requests.get(f"{urls[service]}{path}", headers=headers)
        assert resp.status_code == 403, (service, path, resp.text)


def test_a_department_sees_only_its_share_of_an_appeal(bus, urls, token, staff):
    reg_no = bus.receipt(bus.submit(appeal_body(title="流动资金贷款审批慢",
                                                content=f"贷款无进展（{uuid.uuid4().hex}）")))["reg_no"]
    lead = bus.dept_message("jrb", "assignment", reg_no)
    co = bus.dept_message("czj", "assignment", reg_no)
    poll(lambda: requests.get(f"{urls['intake']}/appeals/{reg_no}", headers=staff)
         .json().get("state") == "dispatched")
    outsider = {"Authorization": f"Bearer {token('department', 'zjj')}"}
    assert requests.get(f"{urls['intake']}/appeals/{reg_no}", headers=outsider).status_code == 404
    co_unit = {"Authorization": f"Bearer {token('department', 'czj')}"}
    seen = requests.get(f"{urls['intake']}/appeals/{reg_no}", headers=co_unit)
    assert seen.status_code == 200
    assert lead["assignment_id"] not in seen.text  # enough to reply as the lead
    assert co["assignment_id"] in seen.text
    mine = requests.get(f"{urls['dispatch']}/assignments", headers=co_unit,
                        params={"reg_no": reg_no}).json()
    assert [a["assignment_id"] for a in mine] == [co["assignment_id"]]


def test_a_viewer_gets_phones_and_names_masked(bus, urls, token, staff):
    body = appeal_body(
        content=f"请联系张三，电话１３８００１３８０００ 或 138-0013-8000（{uuid.uuid4().hex}）")
    reg_no = bus.receipt(bus.submit(body))["reg_no"]
    viewer = {"Authorization": f"Bearer {token('viewer')}"}
    text = poll(lambda: (r := requests.get(f"{urls['intake']}/appeals/{reg_no}",
                                           headers=viewer)).status_code == 200 and r.text)
    for secret in (PHONE, "１３８００１３８０００", "138-0013-8000", "张三"):
        assert secret not in text, secret
    assert PHONE in requests.get(f"{urls['intake']}/appeals/{reg_no}", headers=staff).text


def test_nesting_a_hundred_thousand_deep_is_a_400_not_a_crash(urls, staff):
    before = count(urls, staff)
    deep = "[" * 100_000 + "]" * 100_000
    resp = requests.post(f"{urls['intake']}/appeals", data=deep.encode(),
                         headers={**staff, "Content-Type": "application/json"})
    assert resp.status_code == 400 and "nest" in resp.json()["error"]
    assert "Traceback" not in resp.text and "RecursionError" not in resp.text
    assert requests.get(f"{urls['intake']}/health").json()["status"] == "ok"
    assert count(urls, staff) == before


@pytest.mark.parametrize("char", ["\x00", "\u202e", "\x1b"])
def test_control_and_bidi_characters_are_refused_by_field(urls, staff, char):
    before = count(urls, staff)
    body = {k: v for k, v in appeal_body().items()
            if k not in ("schema_version", "source_system", "submitted_at")}
    resp = requests.post(f"{urls['intake']}/appeals", headers=staff,
                         json={**body, "channel": "sit_in", "title": f"退税{char}申请"})
    assert resp.status_code == 422 and list(resp.json()["errors"]) == ["title"]
    assert count(urls, staff) == before
