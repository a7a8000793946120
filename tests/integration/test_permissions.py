"""RabbitMQ users and permissions from the registries (DESIGN §5, permissions).

The first tests check the generated definitions without a broker. The rest provision
this run's users (prefixed with the run id) into the test vhost with `appeals provision
apply` and then try, with plain pika, what each user may and may not do. Users are
deleted at the end.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import stat
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from appeals_common import cli
from appeals_common.amqp_tools import blocking_channel
from appeals_common.provisioning import (
    HASHING_ALGORITHM,
    ManagementBackend,
    ProvisioningError,
    RabbitmqctlBackend,
    apply_grants,
    build_definitions,
    build_grants,
    choose_backend,
    delete_users,
    grants_from_config,
    hash_password,
    load_passwords,
    resolve_passwords,
    verify_password,
    vhost_from_uri,
)
from appeals_common.registries import load_departments, load_source_systems
from appeals_common.settings import ROOT, load_settings
from appeals_common.topology import apply_topology, build_topology
from tests.conftest import RABBIT_HOST, RABBIT_MGMT, RUN_ID

CONFIG = ROOT / "config"
EXAMPLE = ROOT / "deploy" / "rabbitmq" / "definitions.example.json"
PREFIX = f"t{RUN_ID}-"


# ----------------------------------------------------------------- definitions, no broker


def _definitions(passwords: dict[str, str] | None = None, vhost: str = "appeals") -> dict[str, Any]:
    grants = grants_from_config(CONFIG)
    if passwords is None:
        passwords = {g.name: f"pw-{g.name}" for g in grants}
    return build_definitions(grants, vhost, passwords)


def _by_user(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        out.setdefault(item["user"], []).append(item)
    return out


def test_definitions_have_one_user_per_department_and_source_and_the_suite():
    departments, sources = load_departments(CONFIG), load_source_systems(CONFIG)
    doc = _definitions()
    expected = {"appeals-suite"} | {f"dept-{c}" for c in departments} | {f"src-{n}" for n in sources}
    assert {u["name"] for u in doc["users"]} == expected
    assert len(doc["users"]) == len(expected)
    assert doc["vhosts"] == [{"name": "appeals"}]
    assert {p["user"] for p in doc["permissions"]} == expected
    assert all(p["vhost"] == "appeals" for p in doc["permissions"] + doc["topic_permissions"])
    for user in doc["users"]:
        assert user["hashing_algorithm"] == HASHING_ALGORITHM
        assert user["tags"] == []


def test_definitions_permissions_follow_the_design():
    doc = _definitions()
    perms = {p["user"]: p for p in doc["permissions"]}
    topics = _by_user(doc["topic_permissions"])

    assert perms["dept-zjj"] == {"user": "dept-zjj", "vhost": "appeals", "configure": "",
                                 "write": r"^appeals\.replies$", "read": r"^dispatch\.zjj$"}
    assert topics["dept-zjj"] == [{"user": "dept-zjj", "vhost": "appeals", "exchange": "appeals.replies",
                                   "write": r"^dept\.zjj\.[a-z_]+$", "read": ""}]
    assert perms["src-hotline_12345"] == {
        "user": "src-hotline_12345", "vhost": "appeals", "configure": "",
        "write": r"^appeals\.inbound$", "read": r"^receipts\.hotline_12345$"}
    assert topics["src-hotline_12345"] == [{
        "user": "src-hotline_12345", "vhost": "appeals", "exchange": "appeals.inbound",
        "write": r"^appeal\.submit\.hotline_12345$", "read": ""}]
    assert perms["appeals-suite"]["configure"] == perms["appeals-suite"]["write"] \
        == perms["appeals-suite"]["read"] == ".*"
    assert "appeals-suite" not in topics
    # Nobody but the suite may declare, bind or delete anything.
    assert {u for u, p in perms.items() if p["configure"]} == {"appeals-suite"}
    # Every department and source has exactly one topic permission.
    assert all(len(t) == 1 for t in topics.values())
    assert set(topics) == set(perms) - {"appeals-suite"}


def test_permission_regexes_match_only_what_they_should():
    # PCRE and Python agree on these simple patterns.
    perms = {p["user"]: p for p in _definitions()["permissions"]}
    topics = {t["user"]: t for t in _definitions()["topic_permissions"]}
    dept_write = re.compile(topics["dept-zjj"]["write"])
    assert dept_write.search("dept.zjj.sign") and dept_write.search("dept.zjj.return")
    for key in ("dept.jrb.sign", "dept.zjjx.sign", "deptxzjjxsign", "dept.zjj.sign.more",
                "dept.zjj.", "dept.zjj", "xdept.zjj.sign", "dept.zjj.Sign"):
        assert not dept_write.search(key), key
    src_write = re.compile(topics["src-hotline_12345"]["write"])
    assert src_write.search("appeal.submit.hotline_12345")
    for key in ("appeal.submit.online_portal", "appeal.submit.hotline_12345.x",
                "appeal.submit.hotline_123456", "appealxsubmitxhotline_12345", "appeal.submit.*"):
        assert not src_write.search(key), key
    read = re.compile(perms["dept-zjj"]["read"])
    assert read.search("dispatch.zjj")
    for queue in ("dispatch.zjj.dlq", "dispatch.jrb", "dispatchxzjj", "dispatch.zj"):
        assert not read.search(queue), queue
    write = re.compile(perms["dept-zjj"]["write"])
    for exchange in ("appeals.replies.x", "appealsxreplies", "appeals.inbound", "amq.default"):
        assert not write.search(exchange), exchange


def test_password_hash_is_rabbitmq_salted_sha256_and_verifies():
    doc = _definitions({g.name: f"secret-{g.name}" for g in grants_from_config(CONFIG)})
    users = {u["name"]: u for u in doc["users"]}
    for name, user in users.items():
        raw = base64.b64decode(user["password_hash"])
        assert len(raw) == 4 + 32  # 4-byte salt + SHA-256
        assert verify_password(f"secret-{name}", user["password_hash"])
        assert not verify_password(f"secret-{name}x", user["password_hash"])
    # Salted: the same password hashes differently each time, and both verify.
    a, b = hash_password("same"), hash_password("same")
    assert a != b and verify_password("same", a) and verify_password("same", b)
    # The example from RabbitMQ's documentation (salt 908DC60A, password test12).
    documented = "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR"
    assert hash_password("test12", bytes.fromhex("908DC60A")) == documented


def test_definitions_without_passwords_and_the_checked_in_example():
    grants = grants_from_config(CONFIG)
    doc = build_definitions(grants, "/", None)
    assert all(u["password_hash"] == "" for u in doc["users"])
    assert json.loads(EXAMPLE.read_text(encoding="utf-8")) == doc, (
        "deploy/rabbitmq/definitions.example.json is out of date with the registries: regenerate it with "
        "`appeals provision definitions --no-passwords --vhost / > deploy/rabbitmq/definitions.example.json`")


def test_generated_passwords_are_kept_private_and_reused(tmp_path: Path):
    creds = tmp_path / "var" / "credentials.json"
    first = resolve_passwords(["a", "b"], credentials_file=creds)
    assert first.generated == ["a", "b"]
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert json.loads(creds.read_text()) == first.passwords
    assert all(len(p) >= 40 for p in first.passwords.values())
    assert first.passwords["a"] != first.passwords["b"]
    again = resolve_passwords(["a", "b", "c"], credentials_file=creds)
    assert again.generated == ["c"]
    assert again.passwords["a"] == first.passwords["a"] and again.passwords["b"] == first.passwords["b"]
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert [p.name for p in creds.parent.iterdir()] == ["credentials.json"]  # no temporary left


def test_passwords_file_yaml_or_json(tmp_path: Path):
    yml = tmp_path / "pw.yaml"
    yml.write_text("dept-zjj: 'y-secret'\nsrc-online_portal: other\n")
    assert resolve_passwords(["dept-zjj"], yml).passwords == {"dept-zjj": "y-secret"}
    js = tmp_path / "pw.json"
    js.write_text(json.dumps({"dept-zjj": "j-secret"}))
    assert load_passwords(js) == {"dept-zjj": "j-secret"}
    with pytest.raises(ProvisioningError, match="no password for dept-jrb"):
        resolve_passwords(["dept-zjj", "dept-jrb"], js)
    bad = tmp_path / "bad.yaml"
    bad.write_text("dept-zjj: 123456789\n")
    with pytest.raises(ProvisioningError) as exc:
        load_passwords(bad)
    assert "123456789" not in str(exc.value)  # never echo what may be a password
    assert not (tmp_path / "credentials.json").exists()


def test_cli_definitions_prints_hashes_not_passwords(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.delenv("APPEALS_AMQP_URI", raising=False)
    creds = tmp_path / "credentials.json"
    assert cli.main(["provision", "definitions", "--credentials-file", str(creds),
                     "--suite-user", "svc"]) == 0
    out = capsys.readouterr()
    doc = json.loads(out.out)
    passwords = json.loads(creds.read_text())
    assert {u["name"] for u in doc["users"]} == set(passwords)
    assert doc["vhosts"] == [{"name": "/"}] and "svc" in passwords
    for user in doc["users"]:
        assert verify_password(passwords[user["name"]], user["password_hash"])
    for password in passwords.values():
        assert password not in out.out and password not in out.err


# ----------------------------------------------------------------- the real broker

pytestmark = pytest.mark.integration


def _connect(user: str, password: str, vhost: str) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters(
        host=RABBIT_HOST, port=5672, virtual_host=vhost,
        credentials=pika.PlainCredentials(user, password), connection_attempts=1))


@contextlib.contextmanager
def _as_user(user: str, password: str, vhost: str) -> Iterator[pika.BlockingConnection]:
    conn = _connect(user, password, vhost)
    try:
        yield conn
    finally:
        if conn.is_open:
            conn.close()


def _refused(exc: pytest.ExceptionInfo, channel: Any, *words: str) -> None:
    assert exc.value.reply_code == 403, exc.value
    assert "ACCESS_REFUSED" in exc.value.reply_text
    for word in words:
        assert word in exc.value.reply_text, exc.value.reply_text
    assert channel.is_closed


def _props() -> pika.BasicProperties:
    return pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                message_id=uuid.uuid4().hex)


@pytest.fixture(scope="module")
def vhost(amqp_uri: str) -> str:
    return vhost_from_uri(amqp_uri)


@pytest.fixture(scope="module")
def cleanup_users() -> Iterator[list[str]]:
    """Users the tests create; all deleted at the end of the module."""
    names: list[str] = []
    yield names
    delete_users(names, management_url=RABBIT_MGMT)


@pytest.fixture(scope="module")
def provisioned(amqp_uri: str, vhost: str, tmp_path_factory, cleanup_users) -> dict[str, Any]:
    """The topology (as guest), then every user of the registries, prefixed with this
    run's id, provisioned into the test vhost with `appeals provision apply`."""
    settings = load_settings()
    topology = build_topology(load_departments(settings.config_dir),
                              load_source_systems(settings.config_dir), settings.queue_type,
                              settings.retry_delays_ms)
    with blocking_channel(amqp_uri) as channel:
        apply_topology(channel, topology)
    grants = grants_from_config(settings.config_dir, PREFIX)
    cleanup_users.extend(g.name for g in grants)
    creds = tmp_path_factory.mktemp("provision") / "credentials.json"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["provision", "apply", "--vhost", vhost, "--user-prefix", PREFIX,
                       "--credentials-file", str(creds), "--management-url", RABBIT_MGMT])
    assert rc == 0, err.getvalue()
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    passwords = json.loads(creds.read_text())
    return {"grants": grants, "passwords": passwords, "creds": creds,
            "stdout": out.getvalue(), "stderr": err.getvalue()}


@pytest.fixture
def login(provisioned, vhost):
    def make(name: str) -> contextlib.AbstractContextManager[pika.BlockingConnection]:
        user = PREFIX + name
        return _as_user(user, provisioned["passwords"][user], vhost)
    return make


@pytest.fixture
def guest(amqp_uri: str) -> Iterator[Any]:
    with blocking_channel(amqp_uri) as channel:
        yield channel


def _tap(guest_channel: Any, exchange: str, routing_key: str) -> str:
    """A private queue (guest's) that sees what is published under `routing_key`."""
    queue = guest_channel.queue_declare("", exclusive=True).method.queue
    guest_channel.queue_bind(queue, exchange, routing_key=routing_key)
    return queue


def _tapped(guest_channel: Any, queue: str, message_id: str, wait: float = 5.0) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        method, props, _ = guest_channel.basic_get(queue, auto_ack=True)
        if method is None:
            time.sleep(0.05)
        elif props.message_id == message_id:
            return True
    return False


def test_apply_reported_every_user_and_printed_no_password(provisioned):
    names = [g.name for g in provisioned["grants"]]
    assert set(provisioned["passwords"]) == set(names)
    assert f"{len(names)} users on vhost" in provisioned["stdout"]
    for name in names:
        assert name in provisioned["stdout"]
    for password in provisioned["passwords"].values():
        assert password not in provisioned["stdout"] and password not in provisioned["stderr"]


def test_department_consumes_its_own_queue(provisioned, login, guest):
    props = _props()
    guest.confirm_delivery()
    guest.basic_publish("appeals.dispatch", "dept.zjj", b'{"kind": "reminder"}', props)
    got: list[bytes] = []
    with login("dept-zjj") as conn:
        ch = conn.channel()

        def on_message(channel, method, properties, body):
            if properties.message_id == props.message_id:
                channel.basic_ack(method.delivery_tag)
                got.append(body)  # anything else goes back to the queue when we close

        ch.basic_consume("dispatch.zjj", on_message)
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
    assert got == [b'{"kind": "reminder"}']


@pytest.mark.parametrize("how", ["consume", "get"])
def test_department_cannot_read_another_departments_queue(provisioned, login, how):
    with login("dept-zjj") as conn:
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            if how == "consume":
                ch.basic_consume("dispatch.jrb", lambda *a: None)
            else:
                ch.basic_get("dispatch.jrb")
        _refused(exc, ch, "access to queue 'dispatch.jrb'")


def test_department_publishes_replies_under_its_own_code(provisioned, login, guest):
    tap = _tap(guest, "appeals.replies", "dept.zjj.sign")
    props = _props()
    with login("dept-zjj") as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("appeals.replies", "dept.zjj.sign", b'{"reg_no": "X"}', props)
        assert ch.is_open
    assert _tapped(guest, tap, props.message_id)


def test_department_cannot_publish_another_departments_replies(provisioned, login, guest):
    tap = _tap(guest, "appeals.replies", "dept.jrb.sign")
    props = _props()
    with login("dept-zjj") as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            ch.basic_publish("appeals.replies", "dept.jrb.sign", b"{}", props)
        _refused(exc, ch, "access to topic 'dept.jrb.sign' in exchange 'appeals.replies'")
        # Without confirms the refusal shows on the next operation of the channel.
        ch = conn.channel()
        ch.basic_publish("appeals.replies", "dept.jrb.sign", b"{}", _props())
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            ch.basic_qos(prefetch_count=1)
        _refused(exc, ch, "dept.jrb.sign")
        assert conn.is_open  # only the channel is closed
    assert not _tapped(guest, tap, props.message_id, wait=0.5)


@pytest.mark.parametrize("exchange,key", [
    ("appeals.inbound", "appeal.submit.hotline_12345"),  # another exchange
    ("appeals.dispatch", "dept.zjj"),  # cannot feed its own queue
    ("", "dispatch.zjj"),  # default exchange
])
def test_department_cannot_publish_elsewhere(provisioned, login, exchange, key):
    with login("dept-zjj") as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            ch.basic_publish(exchange, key, b"{}", _props())
        _refused(exc, ch, "access to exchange")


# (queue.purge needs only read on the queue: a department may empty its own queue, as it
# could by consuming it; that changes no topology.)
@pytest.mark.parametrize("action", ["declare_queue", "declare_server_named", "delete_own_queue",
                                    "bind_own_queue", "declare_exchange"])
def test_department_cannot_change_topology(provisioned, login, guest, action):
    with login("dept-zjj") as conn:
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            if action == "declare_queue":
                ch.queue_declare(f"{PREFIX}sneaky", durable=True)
            elif action == "declare_server_named":
                ch.queue_declare("", exclusive=True)
            elif action == "delete_own_queue":
                ch.queue_delete("dispatch.zjj")
            elif action == "bind_own_queue":  # to read other departments' messages
                ch.queue_bind("dispatch.zjj", "appeals.dispatch", routing_key="#")
            else:
                ch.exchange_declare(f"{PREFIX}sneaky", exchange_type="topic")
        assert exc.value.reply_code == 403, exc.value
        assert ch.is_closed
    guest.queue_declare("dispatch.zjj", passive=True)  # still there


def test_source_publishes_only_its_own_submissions(provisioned, login, guest):
    own = _tap(guest, "appeals.inbound", "appeal.submit.hotline_12345")
    other = _tap(guest, "appeals.inbound", "appeal.submit.online_portal")
    ok, forged = _props(), _props()
    with login("src-hotline_12345") as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish("appeals.inbound", "appeal.submit.hotline_12345", b'{"test": true}', ok)
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            ch.basic_publish("appeals.inbound", "appeal.submit.online_portal", b"{}", forged)
        _refused(exc, ch, "access to topic 'appeal.submit.online_portal' in exchange 'appeals.inbound'")
        ch = conn.channel()
        ch.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            ch.basic_publish("appeals.replies", "dept.zjj.sign", b"{}", _props())
        _refused(exc, ch, "access to exchange 'appeals.replies'")
    assert _tapped(guest, own, ok.message_id)
    assert not _tapped(guest, other, forged.message_id, wait=0.5)


def test_source_reads_only_its_own_receipts(provisioned, login, guest):
    props = _props()
    guest.confirm_delivery()
    guest.basic_publish("appeals.receipts", "receipt.hotline_12345", b'{"status": "accepted"}', props)
    with login("src-hotline_12345") as conn:
        ch = conn.channel()
        seen = False
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            method, properties, _ = ch.basic_get("receipts.hotline_12345")
            if method is None:
                time.sleep(0.05)
            elif properties.message_id == props.message_id:
                ch.basic_ack(method.delivery_tag)
                seen = True
        assert seen
        ch.basic_consume("receipts.hotline_12345", lambda *a: None)  # consuming works too
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            ch.basic_get("receipts.online_portal")
        _refused(exc, ch, "access to queue 'receipts.online_portal'")


@pytest.mark.parametrize("action", ["declare_exchange", "delete_exchange", "declare_queue"])
def test_source_cannot_change_topology(provisioned, login, guest, action):
    with login("src-hotline_12345") as conn:
        ch = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            if action == "declare_exchange":
                ch.exchange_declare(f"{PREFIX}sneaky", exchange_type="topic", durable=True)
            elif action == "delete_exchange":
                ch.exchange_delete("appeals.inbound")
            else:
                ch.queue_declare("receipts.hotline_12345.mine", durable=True)
        _refused(exc, ch, "access to")
    guest.exchange_declare("appeals.inbound", passive=True)


def test_suite_user_has_full_rights(provisioned, login):
    with login("appeals-suite") as conn:
        ch = conn.channel()
        name = f"{PREFIX}suite-scratch"
        ch.exchange_declare(name, exchange_type="topic", auto_delete=True)
        ch.queue_declare(name, exclusive=True)
        ch.queue_bind(name, name, routing_key="#")
        ch.confirm_delivery()
        ch.basic_publish(name, "any.key", b"{}")
        ch.basic_publish("appeals.replies", "dept.anyone.anything", b"{}")
        ch.exchange_delete(name)


def _backends() -> list[Any]:
    return [pytest.param("rabbitmqctl", id="rabbitmqctl"),
            pytest.param("management", id="management", marks=pytest.mark.skipif(
                not ManagementBackend(RABBIT_MGMT).available(),
                reason="rabbitmq_management plugin not enabled"))]


@pytest.mark.parametrize("backend", _backends())
def test_apply_again_changes_nothing(provisioned, vhost, backend):
    report = apply_grants(provisioned["grants"], vhost, provisioned["passwords"], backend,
                          management_url=RABBIT_MGMT)
    assert not report.changed(), report.lines()
    assert set(report.users.values()) == {"unchanged"}


@pytest.mark.parametrize("backend", _backends())
def test_apply_rotates_passwords_and_removes_stray_topic_permissions(vhost, provisioned, backend,
                                                                      cleanup_users, tmp_path):
    prefix = f"{PREFIX}{backend[:4]}-"
    grants = build_grants(["zjj"], [], prefix=prefix)
    user = f"{prefix}dept-zjj"
    cleanup_users.extend(g.name for g in grants)
    api = choose_backend(backend, RABBIT_MGMT)
    first = {g.name: f"first-{uuid.uuid4().hex}" for g in grants}
    report = apply_grants(grants, vhost, first, api)
    assert set(report.users.values()) == {"created"}

    second = dict(first, **{user: f"second-{uuid.uuid4().hex}"})
    pw_file = tmp_path / "passwords.yaml"
    pw_file.write_text("".join(f"{n}: '{p}'\n" for n, p in second.items()))
    assert resolve_passwords(list(second), pw_file).passwords == second
    # Someone widened the department's rights by hand.
    if isinstance(api, RabbitmqctlBackend):
        api.run("set_topic_permissions", "-p", vhost, user, "amq.topic", ".*", ".*")
    else:
        api.call("PUT", f"topic-permissions/{_quote(vhost)}/{_quote(user)}",
                 {"exchange": "amq.topic", "write": ".*", "read": ".*"})
    assert "amq.topic" in api.state(vhost).topic_permissions[user]
    report = apply_grants(grants, vhost, second, api)
    assert report.users == {f"{prefix}appeals-suite": "unchanged", user: "updated"}
    assert report.topic_permissions[user] == "set"
    state = api.state(vhost)
    assert set(state.topic_permissions[user]) == {"appeals.replies"}
    assert state.permissions[user]["write"] == r"^appeals\.replies$"
    with _as_user(user, second[user], vhost) as conn:
        conn.channel().basic_get("dispatch.zjj")
    with pytest.raises((pika.exceptions.ProbableAuthenticationError,
                        pika.exceptions.AuthenticationError)):
        _connect(user, first[user], vhost)


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def test_definitions_import_into_the_broker_and_the_hashes_log_in(vhost, provisioned, cleanup_users):
    prefix = f"{PREFIX}imp-"
    grants = build_grants(["zjj"], ["hotline_12345"], prefix=prefix)
    cleanup_users.extend(g.name for g in grants)
    passwords = {g.name: f"imported-{uuid.uuid4().hex}" for g in grants}
    doc = build_definitions(grants, vhost, passwords)
    api = choose_backend("auto", RABBIT_MGMT)
    if isinstance(api, ManagementBackend):
        api.call("POST", "definitions", doc)
    else:
        api.run("import_definitions", "--format", "json", stdin=json.dumps(doc))
    with _as_user(f"{prefix}dept-zjj", passwords[f"{prefix}dept-zjj"], vhost) as conn:
        ch = conn.channel()
        ch.basic_get("dispatch.zjj")
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            ch.basic_get("dispatch.jrb")
        _refused(exc, ch, "access to queue 'dispatch.jrb'")
    with _as_user(f"{prefix}src-hotline_12345", passwords[f"{prefix}src-hotline_12345"], vhost) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            ch.basic_publish("appeals.inbound", "appeal.submit.online_portal", b"{}")
        _refused(exc, ch, "access to topic 'appeal.submit.online_portal'")
    # Applying over the imported users finds them as they should be.
    report = apply_grants(grants, vhost, passwords, api)
    assert not report.changed(), report.lines()


def test_apply_refuses_a_missing_vhost(provisioned):
    grants = build_grants([], [], prefix=f"{PREFIX}none-")
    with pytest.raises(ProvisioningError, match="does not exist"):
        apply_grants(grants, f"{PREFIX}no-such-vhost", {g.name: "x" for g in grants},
                     management_url=RABBIT_MGMT)
