"""RabbitMQ users and permissions from the registries (DESIGN §5, §9), and the services'
own PostgreSQL roles.

The first tests check the generated definitions and the password rules without a broker.
The rest provision this run's users (prefixed with the run id) into the test vhost with
`appeals provision apply` and then try, with plain pika, what each user may and may not
do: departments and sources, each service's own user (in a vhost of their own, so their
messages reach no running service) and the topology user. Users are deleted at the end.
The last tests make each service's role and database on the real PostgreSQL.
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
    check_passwords,
    choose_backend,
    delete_users,
    generate_password,
    grants_from_config,
    hash_password,
    load_passwords,
    password_env_name,
    passwords_from_env,
    resolve_passwords,
    select_grants,
    verify_password,
    vhost_from_uri,
)
from appeals_common.registries import load_departments, load_source_systems
from appeals_common.settings import ROOT, SERVICES, load_settings
from appeals_common.topology import apply_topology, build_topology
from tests.conftest import RABBIT_HOST, RABBIT_MGMT, RUN_ID

CONFIG = ROOT / "config"
EXAMPLE = ROOT / "deploy" / "rabbitmq" / "definitions.example.json"
PREFIX = f"t{RUN_ID}-"
TOPOLOGY_USER = "appeals-topology"
SERVICE_USERS = {f"svc-{s}" for s in SERVICES}


def _strong() -> str:
    """A password the provisioning accepts, its own for each call."""
    return generate_password()


# ----------------------------------------------------------------- definitions, no broker


def _definitions(passwords: dict[str, str] | None = None, vhost: str = "appeals") -> dict[str, Any]:
    grants = grants_from_config(CONFIG)
    if passwords is None:
        passwords = {g.name: _strong() for g in grants}
    return build_definitions(grants, vhost, passwords)


def _by_user(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        out.setdefault(item["user"], []).append(item)
    return out


def test_definitions_have_one_user_per_department_source_and_service_and_the_topology_user():
    departments, sources = load_departments(CONFIG), load_source_systems(CONFIG)
    doc = _definitions()
    expected = {TOPOLOGY_USER} | SERVICE_USERS | {f"dept-{c}" for c in departments} \
        | {f"src-{n}" for n in sources}
    assert "guest" not in {u["name"] for u in doc["users"]}
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
    assert perms[TOPOLOGY_USER]["configure"] == perms[TOPOLOGY_USER]["write"] \
        == perms[TOPOLOGY_USER]["read"] == ".*"
    assert TOPOLOGY_USER not in topics
    # Only the topology user declares anything broadly; a service user only its RPC queue
    # and nameko's RPC exchange (nameko declares them itself).
    assert {u for u, p in perms.items() if p["configure"]} == {TOPOLOGY_USER} | SERVICE_USERS
    for service in SERVICES:
        assert perms[f"svc-{service}"]["configure"] == rf"^(nameko\-rpc|rpc\-{service})$"
    assert perms["svc-intake"] == {
        "user": "svc-intake", "vhost": "appeals", "configure": r"^(nameko\-rpc|rpc\-intake)$",
        "write": r"^(appeals\.events|appeals\.receipts|appeals\.retry\.[0-9]+ms|amq\.default|"
                 r"nameko\-rpc|rpc\-intake)$",
        "read": r"^(intake\.inbound|intake\.events|rpc\-intake|nameko\-rpc)$"}
    assert perms["svc-reporting"]["write"] == \
        r"^(appeals\.retry\.[0-9]+ms|amq\.default|nameko\-rpc|rpc\-reporting)$"
    assert topics["svc-dispatch"] == [{
        "user": "svc-dispatch", "vhost": "appeals", "exchange": "nameko-rpc",
        "write": r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        "read": r"^dispatch\.\*$"}]
    # Every department, source and service has exactly one topic permission.
    assert all(len(t) == 1 for t in topics.values())
    assert set(topics) == set(perms) - {TOPOLOGY_USER}


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
    passwords = {g.name: _strong() for g in grants_from_config(CONFIG)}
    doc = _definitions(passwords)
    users = {u["name"]: u for u in doc["users"]}
    for name, user in users.items():
        raw = base64.b64decode(user["password_hash"])
        assert len(raw) == 4 + 32  # 4-byte salt + SHA-256
        assert verify_password(passwords[name], user["password_hash"])
        assert not verify_password(passwords[name] + "x", user["password_hash"])
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


def test_passwords_file_yaml_or_json_or_a_directory(tmp_path: Path):
    y, j = _strong(), _strong()
    yml = tmp_path / "pw.yaml"
    yml.write_text(f"dept-zjj: '{y}'\nsrc-online_portal: other\n")
    assert resolve_passwords(["dept-zjj"], yml).passwords == {"dept-zjj": y}
    js = tmp_path / "pw.json"
    js.write_text(json.dumps({"dept-zjj": j}))
    assert load_passwords(js) == {"dept-zjj": j}
    # A Kubernetes Secret mounted as a volume: a file per key, its `..data` links hidden.
    secret = tmp_path / "secret"
    (secret / "..2026_12_04").mkdir(parents=True)
    (secret / "..2026_12_04" / "dept-zjj").write_text(y)
    (secret / "..data").symlink_to("..2026_12_04")
    (secret / "dept-zjj").symlink_to("..data/dept-zjj")
    (secret / "svc-intake").write_text(j + "\n")
    assert load_passwords(secret) == {"dept-zjj": y, "svc-intake": j}
    assert resolve_passwords(["svc-intake"], secret).passwords == {"svc-intake": j}
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
                     "--topology-user", "ops"]) == 0
    out = capsys.readouterr()
    doc = json.loads(out.out)
    passwords = json.loads(creds.read_text())
    assert {u["name"] for u in doc["users"]} == set(passwords)
    assert doc["vhosts"] == [{"name": "/"}] and "ops" in passwords and "guest" not in passwords
    for user in doc["users"]:
        assert verify_password(passwords[user["name"]], user["password_hash"])
    for password in passwords.values():
        assert password not in out.out and password not in out.err


def test_placeholder_short_and_shared_passwords_are_refused_naming_only_the_users(tmp_path):
    shared = _strong()
    passwords = {"svc-intake": "CHANGE-ME-svc-intake-0000", "dept-zjj": "Tr0ub4dor&3",
                 "dept-jrb": shared, "src-online_portal": shared, "svc-dispatch": _strong(),
                 "appeals_intake": "an-example-password-here", "dept-czj": "x" * 20}
    with pytest.raises(ProvisioningError) as exc:
        check_passwords(passwords)
    message = str(exc.value)
    assert "a placeholder: appeals_intake, dept-czj, svc-intake" in message
    assert "shorter than 16 characters: dept-zjj" in message
    assert "the same password for dept-jrb, src-online_portal" in message
    assert "svc-dispatch" not in message
    for password in passwords.values():
        assert password not in message
    check_passwords({"a": _strong(), "b": _strong()})
    # Wherever passwords come from: a file, the definitions, an apply (before any broker).
    pw_file = tmp_path / "pw.yaml"
    pw_file.write_text("".join(f"{u}: '{p}'\n" for u, p in passwords.items()))
    with pytest.raises(ProvisioningError, match="svc-intake"):
        resolve_passwords(["svc-intake", "svc-dispatch"], pw_file)
    grants = build_grants(["zjj"], [])
    weak = {g.name: "CHANGE-ME" for g in grants}
    with pytest.raises(ProvisioningError, match="placeholder"):
        build_definitions(grants, "/", weak)
    with pytest.raises(ProvisioningError, match="placeholder"):
        apply_grants(grants, "/", weak, backend=_FakeBroker())


def test_the_kubernetes_secret_placeholders_are_refused_until_edited():
    import yaml

    docs = list(yaml.safe_load_all((ROOT / "deploy/k8s/secret.yaml").read_text(encoding="utf-8")))
    passwords = next(d for d in docs if d["metadata"]["name"] == "appeals-passwords")["stringData"]
    assert len(set(passwords.values())) == len(passwords)  # each its own placeholder
    with pytest.raises(ProvisioningError) as exc:
        check_passwords(passwords)
    assert "svc-intake" in str(exc.value) and "appeals_reporting" in str(exc.value)


def test_passwords_from_the_environment(monkeypatch):
    assert password_env_name("svc-intake") == "APPEALS_PASSWORD_SVC_INTAKE"
    assert password_env_name("src-hotline_12345") == "APPEALS_PASSWORD_SRC_HOTLINE_12345"
    assert password_env_name("appeals_intake") == "APPEALS_PASSWORD_APPEALS_INTAKE"
    a, b = _strong(), _strong()
    env = {"APPEALS_PASSWORD_SVC_INTAKE": a, "APPEALS_PASSWORD_DEPT_ZJJ": b}
    assert passwords_from_env(["svc-intake", "dept-zjj"], env).passwords == {
        "svc-intake": a, "dept-zjj": b}
    with pytest.raises(ProvisioningError, match="set APPEALS_PASSWORD_DEPT_JRB"):
        passwords_from_env(["dept-zjj", "dept-jrb"], env)
    with pytest.raises(ProvisioningError, match="the same password for dept-zjj, svc-intake"):
        passwords_from_env(["svc-intake", "dept-zjj"], {**env, "APPEALS_PASSWORD_DEPT_ZJJ": a})


def test_users_can_be_selected_by_pattern():
    grants = grants_from_config(CONFIG)
    chosen = select_grants(grants, "appeals-topology, svc-*,dept-zjj")
    assert [g.name for g in chosen] == [TOPOLOGY_USER, *sorted(SERVICE_USERS, key=[
        f"svc-{s}" for s in SERVICES].index), "dept-zjj"]
    assert select_grants(grants, None) == grants
    with pytest.raises(ProvisioningError, match="no user matches dept-nobody"):
        select_grants(grants, "svc-*,dept-nobody")


def test_guest_is_never_provisioned_nor_in_the_definitions():
    with pytest.raises(ProvisioningError, match="guest"):
        build_grants([], [], topology_user="guest")
    doc = build_definitions(grants_from_config(CONFIG), "/", None)
    assert "guest" not in {u["name"] for u in doc["users"]}
    assert "guest" not in {p["user"] for p in doc["permissions"]}


class _FakeBroker:
    """A broker's state and what apply_grants asks of it, for the guest decision."""

    name = "fake"

    def __init__(self, local: bool = True, user: str = "admin", guest: bool = True) -> None:
        from appeals_common.provisioning import BrokerState

        self.local, self.user = local, user
        self.state_now = BrokerState({"guest": {"name": "guest"}} if guest else {}, {}, {})
        self.deleted: list[str] = []
        self.changed = False

    def is_local(self) -> bool:
        return self.local

    def vhost_exists(self, vhost: str) -> bool:
        return True

    def state(self, vhost: str) -> Any:
        return self.state_now

    def put_users(self, users: list) -> None:
        self.changed = self.changed or bool(users)

    def put_permissions(self, vhost: str, permissions: list) -> None:
        self.changed = self.changed or bool(permissions)

    def put_topic_permissions(self, vhost: str, topic_permissions: list) -> None:
        pass

    def clear_topic_permissions(self, vhost: str, user: str, exchanges: list) -> None:
        pass

    def delete_users(self, names: list[str]) -> None:
        self.deleted += names


@pytest.mark.parametrize(("local", "remove_guest", "had_guest", "outcome"), [
    (False, None, True, "removed"),   # a broker elsewhere: guest goes by default
    (False, None, False, "absent"),
    (True, None, True, "kept"),       # this machine: guest is loopback-only anyway
    (False, False, True, "kept"),     # --keep-guest
    (True, True, True, "removed"),    # --remove-guest
])
def test_guest_is_removed_from_a_broker_elsewhere(local, remove_guest, had_guest, outcome):
    grants = build_grants(["zjj"], [])
    broker = _FakeBroker(local=local, guest=had_guest)
    report = apply_grants(grants, "appeals", {g.name: _strong() for g in grants}, broker,
                          remove_guest=remove_guest)
    assert report.guest == outcome
    assert broker.deleted == (["guest"] if outcome == "removed" else [])
    assert any("guest" in line for line in report.lines())


def test_guest_removal_is_refused_when_guest_is_the_admin_connecting():
    grants = build_grants(["zjj"], [])
    broker = _FakeBroker(local=False, user="guest")
    with pytest.raises(ProvisioningError, match="create an administrator of your own"):
        apply_grants(grants, "appeals", {g.name: _strong() for g in grants}, broker)
    assert not broker.changed and broker.deleted == []
    assert not ManagementBackend("http://admin:pw@rabbitmq:15672").is_local()
    assert ManagementBackend("http://admin:pw@127.0.0.1:15672").is_local()
    assert ManagementBackend("http://localhost:15672").user == "guest"


def test_scram_verifier_matches_rfc_7677():
    """The verifier PostgreSQL stores, checked against RFC 7677's SCRAM-SHA-256 exchange
    (user "user", password "pencil"): the client proof and server signature it derives
    are the RFC's."""
    import hashlib
    import hmac

    from appeals_common.provisioning import scram_sha256

    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    verifier = scram_sha256("pencil", salt, 4096)
    head, keys = verifier.split("$", 1)[1].split("$")
    assert head == "4096:W22ZaJ0SNY7soEsUEjb6gQ=="
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    auth_message = (b"n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)"
                    b"hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,"
                    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key
    assert base64.b64encode(hmac.new(server_key, auth_message, hashlib.sha256).digest()) == \
        b"6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_database_script_holds_verifiers_not_passwords(tmp_path, capsys):
    from appeals_common.provisioning import database_grants, database_sql

    grants = database_grants()
    passwords = {g.role: _strong() for g in grants}
    script = database_sql(grants, passwords)
    for g in grants:
        assert f"ALTER DATABASE {g.database} OWNER TO {g.role};" in script
        assert f"REVOKE ALL ON DATABASE {g.database} FROM PUBLIC;" in script
        assert passwords[g.role] not in script
    assert script.count("PASSWORD 'SCRAM-SHA-256$4096:") == len(SERVICES)
    pw_file = tmp_path / "pw.json"
    pw_file.write_text(json.dumps(passwords))
    assert cli.main(["provision", "database", "--print-sql", "--passwords-file", str(pw_file)]) == 0
    out = capsys.readouterr().out
    assert "CREATE DATABASE appeals_intake OWNER appeals_intake" in out
    assert not any(p in out for p in passwords.values())


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


def test_topology_user_has_full_rights(provisioned, login):
    with login(TOPOLOGY_USER) as conn:
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
    first = {g.name: _strong() for g in grants}
    report = apply_grants(grants, vhost, first, api)
    assert set(report.users.values()) == {"created"}

    second = dict(first, **{user: _strong()})
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
    assert report.users == {**{f"{prefix}{u}": "unchanged" for u in {TOPOLOGY_USER} | SERVICE_USERS},
                            user: "updated"}
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
    passwords = {g.name: _strong() for g in grants}
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
        apply_grants(grants, f"{PREFIX}no-such-vhost", {g.name: _strong() for g in grants},
                     management_url=RABBIT_MGMT)


# ----------------------------------------------------------------- the services' own users
#
# In a vhost of their own (same users, same grants), so that what they publish reaches no
# service of this run. nameko's RPC exchange and each service's RPC queue are there as
# nameko declares them.

RPC_EXCHANGE = "nameko-rpc"


@pytest.fixture(scope="module")
def service_vhost(provisioned) -> Iterator[str]:
    from appeals_common.amqp_tools import manage_vhost

    name = f"appeals-perm-{RUN_ID}"
    manage_vhost("add", name, management_url=RABBIT_MGMT)
    uri = f"amqp://guest:guest@{RABBIT_HOST}:5672/{urllib.parse.quote(name, safe='')}"
    settings = load_settings()
    with blocking_channel(uri) as channel:
        apply_topology(channel, build_topology(
            load_departments(settings.config_dir), load_source_systems(settings.config_dir),
            settings.queue_type, settings.retry_delays_ms))
        channel.exchange_declare(RPC_EXCHANGE, exchange_type="topic", durable=True)
        for service in SERVICES:
            channel.queue_declare(f"rpc-{service}", durable=True)
            channel.queue_bind(f"rpc-{service}", RPC_EXCHANGE, routing_key=f"{service}.*")
    report = apply_grants(provisioned["grants"], name, provisioned["passwords"],
                          management_url=RABBIT_MGMT)
    assert report.guest == "kept"  # a broker on this machine: the tests' guest stays
    yield name
    manage_vhost("delete", name, management_url=RABBIT_MGMT)


@pytest.fixture
def login_to(provisioned, service_vhost):
    def make(name: str) -> contextlib.AbstractContextManager[pika.BlockingConnection]:
        user = PREFIX + name
        return _as_user(user, provisioned["passwords"][user], service_vhost)
    return make


def _guest_channel(vhost: str) -> contextlib.AbstractContextManager[Any]:
    return blocking_channel(f"amqp://guest:guest@{RABBIT_HOST}:5672/{urllib.parse.quote(vhost, safe='')}")


def _rpc_request(reply_to: str | None = None) -> pika.BasicProperties:
    return pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                message_id=uuid.uuid4().hex, correlation_id=str(uuid.uuid4()),
                                reply_to=reply_to or str(uuid.uuid4()))


@pytest.mark.parametrize("how", ["rpc_exchange", "default_exchange", "own_reply_queue"])
def test_a_department_cannot_call_the_services_rpc(login_to, service_vhost, how):
    body = b'{"args": ["WH-2026-000001"], "kwargs": {}}'
    with login_to("dept-zjj") as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            if how == "rpc_exchange":  # as nameko's ClusterRpcProxy would
                ch.basic_publish(RPC_EXCHANGE, "intake.get", body, _rpc_request())
            elif how == "default_exchange":  # straight into intake's RPC queue
                ch.basic_publish("", "rpc-intake", body, _rpc_request())
            else:  # a reply queue to hear the answer on
                ch.queue_declare(f"rpc.reply-{PREFIX}dept-{uuid.uuid4()}", exclusive=True)
        words = {"rpc_exchange": "access to exchange 'nameko-rpc'",
                 "default_exchange": "access to exchange 'amq.default'",
                 "own_reply_queue": "access to queue"}[how]
        _refused(exc, ch, words)
    with _guest_channel(service_vhost) as guest:
        assert guest.queue_declare("rpc-intake", passive=True).method.message_count == 0


def _dlq(queue: str) -> str:
    return f"{queue}.dlq"


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_user_can_do_what_its_service_does(login_to, service_vhost, service):
    from appeals_common.provisioning import SERVICE_PUBLISHES, service_queues

    settings = load_settings()
    queues = service_queues(service)
    assert queues
    with login_to(f"svc-{service}") as conn:
        ch = conn.channel()
        # nameko's RPC entrypoint: declare the exchange and the service's queue, bind, consume.
        ch.exchange_declare(RPC_EXCHANGE, exchange_type="topic", durable=True)
        ch.queue_declare(f"rpc-{service}", durable=True)
        ch.queue_bind(f"rpc-{service}", RPC_EXCHANGE, routing_key=f"{service}.*")
        ch.basic_consume(f"rpc-{service}", lambda *a: None)
        # Its consumers, and the dead-letter depth /metrics reads (a passive declare).
        for queue in queues:
            ch.basic_get(queue)
            ch.basic_consume(queue, lambda *a: None)
            assert ch.queue_declare(_dlq(queue), passive=True).method.message_count >= 0
        ch.confirm_delivery()
        # Its outbox, the retry delays and dead letters of its queues, an RPC reply.
        for exchange in SERVICE_PUBLISHES[service]:
            ch.basic_publish(exchange, "permission.probe", b"{}", _props())
        for delay in settings.retry_delays_ms:
            ch.basic_publish(f"appeals.retry.{delay}ms", queues[0], b"{}", _props())
        for queue in queues:
            ch.basic_publish("", _dlq(queue), b"{}", _props())
        ch.basic_publish(RPC_EXCHANGE, str(uuid.uuid4()), b'{"result": 1, "error": null}', _props())
        assert ch.is_open
    if service == "intake":  # a rejected message's raw copy
        with login_to("svc-intake") as conn:
            ch = conn.channel()
            ch.confirm_delivery()
            ch.basic_publish("", "appeals.inbound.rejected", b"{}", _props())


def _service_refusals() -> list[Any]:
    cases = []
    for service, other in zip(SERVICES, SERVICES[1:] + SERVICES[:1], strict=True):
        from appeals_common.provisioning import service_queues

        for action, arg in [
            ("read", service_queues(other)[0]),       # another service's queue
            ("read", "dispatch.zjj"),                  # a department's queue
            ("read", _dlq(service_queues(service)[0])),  # dead letters are the operator's
            ("declare_queue", f"rpc-{other}"),         # another service's RPC queue
            ("bind_rpc", "#"),                         # every RPC request to its own queue
            ("bind_rpc", f"{other}.*"),                # another service's RPC requests
            ("rpc_request", f"{other}.get"),           # calling another service
            ("rpc_request", f"{service}.get"),         # or itself
            ("publish", "appeals.replies"),            # posing as a department
            ("publish", "appeals.inbound"),            # posing as a source system
            ("declare_exchange", "appeals.events"),
            ("delete_queue", service_queues(service)[0]),
        ]:
            cases.append(pytest.param(service, action, arg, id=f"{service}-{action}-{arg}"))
    cases.append(pytest.param("reporting", "publish", "appeals.events",
                              id="reporting-publish-appeals.events"))
    cases.append(pytest.param("intake", "publish", "appeals.dispatch",
                              id="intake-publish-appeals.dispatch"))
    cases.append(pytest.param("dispatch", "publish", "appeals.receipts",
                              id="dispatch-publish-appeals.receipts"))
    return cases


@pytest.mark.parametrize(("service", "action", "arg"), _service_refusals())
def test_a_service_user_cannot_touch_what_is_not_its_services(login_to, service_vhost, service,
                                                               action, arg):
    with login_to(f"svc-{service}") as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as exc:
            if action == "read":
                ch.basic_get(arg)
            elif action == "declare_queue":
                ch.queue_declare(arg, durable=True)
            elif action == "bind_rpc":
                ch.queue_bind(f"rpc-{service}", RPC_EXCHANGE, routing_key=arg)
            elif action == "rpc_request":
                ch.basic_publish(RPC_EXCHANGE, arg, b'{"args": [], "kwargs": {}}', _rpc_request())
            elif action == "publish":
                ch.basic_publish(arg, "dept.zjj.sign", b"{}", _props())
            elif action == "declare_exchange":
                ch.exchange_declare(arg, exchange_type="topic", durable=True)
            else:
                ch.queue_delete(arg)
        expected = {"read": f"access to queue '{arg}'", "declare_queue": f"access to queue '{arg}'",
                    "delete_queue": f"access to queue '{arg}'",
                    "bind_rpc": f"access to topic '{arg}' in exchange 'nameko-rpc'",
                    "rpc_request": f"access to topic '{arg}' in exchange 'nameko-rpc'",
                    "publish": f"access to exchange '{arg}'",
                    "declare_exchange": f"access to exchange '{arg}'"}[action]
        _refused(exc, ch, expected)
    with _guest_channel(service_vhost) as guest:
        for s in SERVICES:
            assert guest.queue_declare(f"rpc-{s}", passive=True).method.message_count == 0


def test_the_topology_user_may_call_rpc(login_to, service_vhost):
    with login_to(TOPOLOGY_USER) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(RPC_EXCHANGE, "reporting.summary", b'{"args": [], "kwargs": {}}',
                         _rpc_request())
    with _guest_channel(service_vhost) as guest:
        assert guest.queue_declare("rpc-reporting", passive=True).method.message_count == 1
        guest.queue_purge("rpc-reporting")


def test_a_service_started_as_its_own_user_leaves_the_topology_to_the_topology_user(
        provisioned, service_vhost, monkeypatch, caplog):
    import logging

    from appeals_common.runner import _apply_topology

    user = f"{PREFIX}svc-intake"
    monkeypatch.setenv("APPEALS_AMQP_URI", f"amqp://{user}:{provisioned['passwords'][user]}@"
                       f"{RABBIT_HOST}:5672/{urllib.parse.quote(service_vhost, safe='')}")
    with caplog.at_level(logging.WARNING):
        _apply_topology("intake", logging.getLogger("test"))
    assert "may not declare the topology" in caplog.text


def test_guest_removal_is_refused_on_the_real_broker_when_guest_is_the_admin(provisioned, vhost):
    api = ManagementBackend(RABBIT_MGMT)
    if api.user != "guest":
        pytest.skip("the tests' management URL does not log in as guest")
    grants = build_grants([], [], prefix=f"{PREFIX}noguest-")
    with pytest.raises(ProvisioningError, match="guest"):
        apply_grants(grants, vhost, {g.name: _strong() for g in grants}, api, remove_guest=True)
    assert "guest" in api.state(vhost).users
    assert not set(api.state(vhost).users) & {g.name for g in grants}


# ----------------------------------------------------------------- PostgreSQL roles

@pytest.fixture(scope="module")
def service_databases(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """`appeals provision database` for this run's roles (t<run>_appeals_<service>), over a
    database left from before: intake's, created by the superuser with a table it owns."""
    import psycopg2
    from sqlalchemy.engine import make_url

    from appeals_common.provisioning import database_grants
    from tests.conftest import PG_BASE

    prefix = f"t{RUN_ID}_"
    grants = database_grants(prefix)
    admin_url = f"{PG_BASE}/postgres"

    def connect(database: str = "postgres") -> Any:
        url = make_url(admin_url).set(drivername="postgresql", database=database)
        conn = psycopg2.connect(url.render_as_string(hide_password=False))
        conn.autocommit = True
        return conn

    intake = grants[0]
    with contextlib.closing(connect()) as admin:
        admin.cursor().execute(f'CREATE DATABASE "{intake.database}"')
    legacy = connect(intake.database)
    legacy.cursor().execute("CREATE TABLE legacy (id serial PRIMARY KEY, note text)")
    legacy.close()
    passwords = {g.role: _strong() for g in grants}
    pw_file = tmp_path_factory.mktemp("db") / "passwords.json"
    pw_file.write_text(json.dumps(passwords))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["provision", "database", "--prefix", prefix, "--admin-url", admin_url,
                       "--passwords-file", str(pw_file)])
    try:
        yield {"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue(), "grants": grants,
               "passwords": passwords, "pw_file": pw_file, "admin_url": admin_url,
               "prefix": prefix, "connect": connect}
    finally:
        admin = connect()
        with admin.cursor() as cur:
            for g in grants:
                cur.execute(f'DROP DATABASE IF EXISTS "{g.database}" WITH (FORCE)')
            for g in grants:
                cur.execute(f'DROP ROLE IF EXISTS "{g.role}"')
        admin.close()


def _as_role(grant: Any, password: str, database: str | None = None) -> Any:
    import psycopg2
    from sqlalchemy.engine import make_url

    from tests.conftest import PG_BASE

    url = make_url(PG_BASE).set(drivername="postgresql", username=grant.role, password=password,
                                database=database or grant.database)
    return psycopg2.connect(url.render_as_string(hide_password=False))


def test_each_service_role_owns_its_own_database_and_nothing_more(service_databases):
    db = service_databases
    assert db["rc"] == 0, db["stderr"]
    for password in db["passwords"].values():
        assert password not in db["stdout"] + db["stderr"]
    with contextlib.closing(db["connect"]()) as admin, admin.cursor() as cur:
        for g in db["grants"]:
            assert g.role in db["stdout"]
            cur.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                        (g.database,))
            assert cur.fetchone() == (g.role,)
            cur.execute("SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolpassword "
                        "FROM pg_authid WHERE rolname = %s", (g.role,))
            login, superuser, createdb, createrole, stored = cur.fetchone()
            assert login and not (superuser or createdb or createrole)
            assert stored.startswith("SCRAM-SHA-256$4096:")  # never the password itself
            from appeals_common.provisioning import scram_sha256
            salt = base64.b64decode(stored.split("$")[1].split(":")[1])
            assert scram_sha256(db["passwords"][g.role], salt) == stored
            for other in db["grants"]:
                cur.execute("SELECT has_database_privilege(%s, %s, 'CONNECT')",
                            (other.role, g.database))
                assert cur.fetchone() == (other is g,), (other.role, g.database)


def test_a_service_role_cannot_connect_to_another_services_database(service_databases):
    import psycopg2

    intake, dispatch = service_databases["grants"][:2]
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        _as_role(dispatch, service_databases["passwords"][dispatch.role], intake.database)


def test_a_service_runs_as_its_role_and_takes_over_what_was_there(service_databases):
    from sqlalchemy import MetaData, text
    from sqlalchemy.engine import make_url

    from appeals_common.db import Store, reliability_tables
    from tests.conftest import PG_BASE

    intake = service_databases["grants"][0]
    with contextlib.closing(service_databases["connect"](intake.database)) as conn, \
            conn.cursor() as cur:
        cur.execute("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname IN "
                    "('legacy', 'legacy_id_seq')")
        assert [r[0] for r in cur.fetchall()] == [intake.role, intake.role]
    url = make_url(PG_BASE).set(username=intake.role, password=service_databases["passwords"][
        intake.role], database=intake.database).render_as_string(hide_password=False)
    metadata = MetaData()
    reliability_tables(metadata)
    store = Store(url.replace(intake.database, f"{service_databases['prefix']}appeals_{{service}}")
                  .replace("{service}", "intake"), metadata, producer="intake")
    try:
        store.create_schema()  # the database exists: the role need not create databases
        with store.engine.begin() as conn:
            conn.execute(text("INSERT INTO legacy (note) VALUES ('mine now')"))
            conn.execute(text("ALTER TABLE legacy ADD COLUMN IF NOT EXISTS more text"))
    finally:
        store.dispose()


def test_provisioning_the_databases_again_changes_nothing_and_refuses_weak_passwords(
        service_databases, tmp_path, capsys):
    db = service_databases
    assert cli.main(["provision", "database", "--prefix", db["prefix"], "--admin-url",
                     db["admin_url"], "--passwords-file", str(db["pw_file"])]) == 0
    out = capsys.readouterr().out
    assert out.count("role updated") == len(SERVICES) and "(existing)" in out
    weak = tmp_path / "weak.json"
    weak.write_text(json.dumps({g.role: "CHANGE-ME-" + g.role for g in db["grants"]}))
    assert cli.main(["provision", "database", "--prefix", db["prefix"], "--admin-url",
                     db["admin_url"], "--passwords-file", str(weak)]) == 1
    err = capsys.readouterr().err
    assert "a placeholder" in err and db["grants"][0].role in err and "CHANGE-ME-" not in err
    for g in db["grants"]:  # still the old passwords
        _as_role(g, db["passwords"][g.role]).close()
