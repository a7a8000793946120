"""RabbitMQ users and permissions generated from the registries (DESIGN §5, §9), and the
services' own PostgreSQL roles.

Every department gets a user `dept-<code>`, every source system a user `src-<name>`, every
service its own user `svc-<service>`, and one topology user (`appeals-topology`, for the
topology job and the operator's tools) may declare everything. Vhost permission regexes
match resource *names*: declaring needs configure on the resource, publishing write on
the exchange, consuming / basic.get read on the queue, and queue.bind write on the queue
and read on the exchange. Topic permissions then restrict the routing keys a user may
publish with (write) or bind with (read) on a topic exchange.

User (configure / write / read; topic permissions):

* `dept-<code>`: none / `appeals.replies` / `dispatch.<code>`; on `appeals.replies` it
  writes only `dept.<code>.<action>`.
* `src-<name>`: none / `appeals.inbound` / `receipts.<name>`; on `appeals.inbound` it
  writes only `appeal.submit.<name>`.
* `svc-intake`: `nameko-rpc`, `rpc-intake` / `appeals.events`, `appeals.receipts`,
  shared* / `intake.inbound`, `intake.events`, `rpc-intake`, `nameko-rpc`.
* `svc-dispatch`: `nameko-rpc`, `rpc-dispatch` / `appeals.events`, `appeals.dispatch`,
  shared* / `dispatch.events`, `dispatch.replies`, `rpc-dispatch`, `nameko-rpc`.
* `svc-supervision`: `nameko-rpc`, `rpc-supervision` / `appeals.events`,
  `appeals.dispatch`, shared* / `supervision.events`, `rpc-supervision`, `nameko-rpc`.
* `svc-reporting`: `nameko-rpc`, `rpc-reporting` / shared* / `reporting.events`,
  `rpc-reporting`, `nameko-rpc`.
* every `svc-<service>`, on `nameko-rpc`: writes only reply keys (UUIDs), binds only
  `<service>.*`.
* the topology user: everything / everything / everything; no topic restriction.

*shared: `appeals.retry.<ms>ms` (a failing message's delay), `amq.default` (the default
exchange: a dead letter goes to `<queue>.dlq` through it, and intake's copy of a rejected
message to `appeals.inbound.rejected`), and `nameko-rpc` + the service's own `rpc-<service>`
(nameko declares and binds its RPC queue itself and publishes replies to `nameko-rpc`).
A service user may publish to `nameko-rpc` only under a reply key (a UUID, nameko's reply
routing key), never `<service>.<method>`: RPC requests come only from the topology user.
Departments and sources have no right at all on `nameko-rpc` or the default exchange.

Two outputs from the same grants:

* `build_definitions`: a RabbitMQ definitions document (users with salted SHA-256 password
  hashes, vhost, permissions, topic permissions) an operator can import; it never holds
  `guest`;
* `apply_grants`: an idempotent apply through the management HTTP API, or, when the
  management plugin is off, through `rabbitmqctl` on this machine (definitions import on
  stdin, so no password ever appears on a command line). Applied through the management
  API to a broker that is not on this machine it also deletes `guest` (`--keep-guest`
  says otherwise).

Passwords come from a passwords file (YAML or JSON, user name to password, or a directory
with one file per user, as a mounted Kubernetes Secret), from the environment
(`APPEALS_PASSWORD_<NAME>`), or are generated and kept in a credentials file readable only
by its owner (mode 0600). They are never printed, and refused when they are placeholders,
shorter than 16 characters or the same for two users (the error names the users only).

PostgreSQL: `database_statements` / `apply_databases` make role `appeals_<service>` (login,
password stored as a SCRAM-SHA-256 verifier) owning database `appeals_<service>`, which no
other role may connect to.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from appeals_common.envelope import EVENTS_EXCHANGE
from appeals_common.registries import Department, SourceSystem
from appeals_common.settings import ROOT, SERVICES, placeholder_reason
from appeals_common.topology import (
    DISPATCH_EXCHANGE,
    INBOUND_EXCHANGE,
    RECEIPTS_EXCHANGE,
    REPLIES_EXCHANGE,
    SERVICE_QUEUES,
    dept_queue,
    receipts_queue,
)

HASHING_ALGORITHM = "rabbit_password_hashing_sha256"
DEFAULT_TOPOLOGY_USER = os.environ.get("APPEALS_TOPOLOGY_USER", "appeals-topology")
DEFAULT_CREDENTIALS_FILE = ROOT / "var" / "credentials.json"
DEFAULT_MANAGEMENT_URL = os.environ.get("APPEALS_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
BACKENDS = ("auto", "management", "rabbitmqctl")
GUEST = "guest"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

# nameko's RPC: each service declares `rpc-<service>` bound to this exchange with
# `<service>.*` and publishes its replies to it under the caller's reply key (a UUID).
RPC_EXCHANGE = "nameko-rpc"
RPC_REPLY_KEY = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
DEFAULT_EXCHANGE = "amq.default"  # the default exchange ("") as permissions name it
RETRY_EXCHANGES = r"appeals\.retry\.[0-9]+ms"  # any delay: APPEALS_RETRY_DELAYS_MS may change
# What each service publishes besides retries, dead letters and RPC replies (its outbox).
SERVICE_PUBLISHES: dict[str, tuple[str, ...]] = {
    "intake": (EVENTS_EXCHANGE, RECEIPTS_EXCHANGE),
    "dispatch": (EVENTS_EXCHANGE, DISPATCH_EXCHANGE),
    "supervision": (EVENTS_EXCHANGE, DISPATCH_EXCHANGE),
    "reporting": (),
}


class ProvisioningError(RuntimeError):
    """Users or permissions could not be generated or applied."""


# --------------------------------------------------------------------------- grants


@dataclass(frozen=True)
class TopicGrant:
    exchange: str
    write: str
    read: str = ""  # "" denies (RabbitMQ reads it as ^$): nobody binds through these


@dataclass(frozen=True)
class UserGrant:
    name: str
    kind: str  # "topology" | "service" | "department" | "source"
    configure: str
    write: str
    read: str
    topics: tuple[TopicGrant, ...] = ()
    tags: tuple[str, ...] = ()

    def permission(self, vhost: str) -> dict[str, str]:
        return {"user": self.name, "vhost": vhost, "configure": self.configure,
                "write": self.write, "read": self.read}

    def topic_permissions(self, vhost: str) -> list[dict[str, str]]:
        return [{"user": self.name, "vhost": vhost, "exchange": t.exchange,
                 "write": t.write, "read": t.read} for t in self.topics]


def regex_literal(text: str) -> str:
    """`text` as a regex matching exactly itself (PCRE and Python alike): every character
    other than a letter, a digit or `_` is escaped, so `.` in names never matches any
    character."""
    return "".join(c if c.isalnum() or c == "_" else "\\" + c for c in text)


def exactly(name: str) -> str:
    return f"^{regex_literal(name)}$"


def any_of(*alternatives: str) -> str:
    """A regex matching exactly one of `alternatives` (each already a regex)."""
    return "^(" + "|".join(alternatives) + ")$"


def dept_user(code: str, prefix: str = "") -> str:
    return f"{prefix}dept-{code}"


def source_user(name: str, prefix: str = "") -> str:
    return f"{prefix}src-{name}"


def service_user(service: str, prefix: str = "") -> str:
    return f"{prefix}svc-{service}"


def rpc_queue(service: str) -> str:
    return f"rpc-{service}"


def service_queues(service: str) -> list[str]:
    """The queues `service` consumes (topology.SERVICE_QUEUES, named `<service>.…`)."""
    return [q for q in SERVICE_QUEUES if q.split(".", 1)[0] == service]


def service_grant(service: str, prefix: str = "") -> UserGrant:
    """Exactly what one service does on the broker: consume its queues, publish its outbox
    to its exchanges, park failing messages (retry exchanges, `<queue>.dlq` through the
    default exchange), declare and consume its RPC queue and reply on `nameko-rpc`."""
    own_rpc = rpc_queue(service)
    return UserGrant(
        service_user(service, prefix), "service",
        configure=any_of(regex_literal(RPC_EXCHANGE), regex_literal(own_rpc)),
        write=any_of(*(regex_literal(e) for e in SERVICE_PUBLISHES[service]), RETRY_EXCHANGES,
                     regex_literal(DEFAULT_EXCHANGE), regex_literal(RPC_EXCHANGE),
                     regex_literal(own_rpc)),
        read=any_of(*(regex_literal(q) for q in service_queues(service)),
                    regex_literal(own_rpc), regex_literal(RPC_EXCHANGE)),
        # Replies only (never `<service>.<method>`: no RPC requests); binds only its own key.
        topics=(TopicGrant(RPC_EXCHANGE, RPC_REPLY_KEY, exactly(f"{service}.*")),))


def build_grants(departments: dict[str, Department] | list[str],
                 source_systems: dict[str, SourceSystem] | list[str],
                 prefix: str = "", topology_user: str = DEFAULT_TOPOLOGY_USER,
                 services: tuple[str, ...] = SERVICES) -> list[UserGrant]:
    """The users and what each may do, from the registries. `prefix` goes before every
    user name (tests use it to keep each run's users apart)."""
    if GUEST in (topology_user, f"{prefix}{topology_user}"):
        raise ProvisioningError("the topology user must not be guest")
    grants = [UserGrant(f"{prefix}{topology_user}", "topology", ".*", ".*", ".*")]
    grants += [service_grant(service, prefix) for service in services]
    for code in departments:
        grants.append(UserGrant(
            dept_user(code, prefix), "department", configure="",
            write=exactly(REPLIES_EXCHANGE), read=exactly(dept_queue(code)),
            topics=(TopicGrant(REPLIES_EXCHANGE, rf"^dept\.{regex_literal(code)}\.[a-z_]+$"),)))
    for name in source_systems:
        grants.append(UserGrant(
            source_user(name, prefix), "source", configure="",
            write=exactly(INBOUND_EXCHANGE), read=exactly(receipts_queue(name)),
            topics=(TopicGrant(INBOUND_EXCHANGE, rf"^appeal\.submit\.{regex_literal(name)}$"),)))
    names = [g.name for g in grants]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ProvisioningError(f"user names generated twice: {duplicates}")
    return grants


def grants_from_config(config_dir: Path, prefix: str = "",
                       topology_user: str = DEFAULT_TOPOLOGY_USER) -> list[UserGrant]:
    from appeals_common.registries import load_departments, load_source_systems

    return build_grants(load_departments(config_dir), load_source_systems(config_dir),
                        prefix, topology_user)


def select_grants(grants: list[UserGrant], patterns: str | None) -> list[UserGrant]:
    """Only the users matching one of the comma-separated shell patterns (`svc-*,dept-zjj`);
    all of them when `patterns` is empty. A pattern matching nobody is an error."""
    if not patterns:
        return grants
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    unmatched = [p for p in wanted if not any(fnmatch.fnmatchcase(g.name, p) for g in grants)]
    if unmatched:
        raise ProvisioningError(f"--users: no user matches {', '.join(unmatched)}")
    return [g for g in grants if any(fnmatch.fnmatchcase(g.name, p) for p in wanted)]


# --------------------------------------------------------------------------- passwords


def hash_password(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password)),
    with a random 4-byte salt."""
    salt = os.urandom(4) if salt is None else salt
    if len(salt) != 4:
        raise ValueError("the salt must be 4 bytes")
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode("utf-8")).digest()).decode()


def verify_password(password: str, password_hash: str) -> bool:
    try:
        raw = base64.b64decode(password_hash, validate=True)
    except (ValueError, TypeError):
        return False
    if len(raw) != 4 + hashlib.sha256().digest_size:
        return False
    salt, digest = raw[:4], raw[4:]
    return hmac.compare_digest(digest, hashlib.sha256(salt + password.encode("utf-8")).digest())


MIN_PASSWORD_LENGTH = 16
PASSWORD_ENV_PREFIX = "APPEALS_PASSWORD_"


def generate_password() -> str:
    while True:  # 256 bits; URL-safe, so it can go into an AMQP or PostgreSQL URL as it is
        password = secrets.token_urlsafe(32)
        if password_problem(password) is None:  # a random word like "dummy": draw again
            return password


def password_problem(password: str) -> str | None:
    if placeholder_reason(password):
        return "a placeholder"
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"shorter than {MIN_PASSWORD_LENGTH} characters"
    return None


def check_passwords(passwords: Mapping[str, str]) -> None:
    """Refuse placeholder, short or shared passwords, naming the users, never a password."""
    problems: dict[str, list[str]] = {}
    for user in sorted(passwords):
        problem = password_problem(passwords[user])
        if problem:
            problems.setdefault(problem, []).append(user)
    by_password: dict[str, list[str]] = {}
    for user in sorted(passwords):
        by_password.setdefault(passwords[user], []).append(user)
    shared = sorted(users for users in by_password.values() if len(users) > 1)
    if not problems and not shared:
        return
    parts = [f"{problem}: {', '.join(users)}" for problem, users in problems.items()]
    parts += [f"the same password for {', '.join(users)}" for users in shared]
    raise ProvisioningError("refusing these passwords (" + "; ".join(parts) + "): give every "
                            f"user its own random password of at least {MIN_PASSWORD_LENGTH} "
                            "characters, e.g. `openssl rand -hex 24`")


def password_env_name(user: str) -> str:
    """`APPEALS_PASSWORD_` and the user name in capitals, `-` and `.` as `_`:
    svc-intake -> APPEALS_PASSWORD_SVC_INTAKE, appeals_intake -> APPEALS_PASSWORD_APPEALS_INTAKE."""
    return PASSWORD_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", user).upper()


def passwords_from_env(users: list[str], env: Mapping[str, str] | None = None) -> Passwords:
    env = os.environ if env is None else env
    names = {u: password_env_name(u) for u in users}
    clashes = sorted({n for n in names.values() if list(names.values()).count(n) > 1})
    if clashes:
        raise ProvisioningError(f"user names that share an environment variable: {clashes}")
    missing = [names[u] for u in users if not env.get(names[u])]
    if missing:
        raise ProvisioningError(f"no password in the environment: set {', '.join(missing)}")
    passwords = {u: env[names[u]] for u in users}
    check_passwords(passwords)
    return Passwords(passwords, Path("<environment>"))


def load_passwords(path: Path) -> dict[str, str]:
    """A YAML or JSON mapping of user name to password, or a directory holding one file per
    user (named after it, the password its content: a Kubernetes Secret mounted as a volume)."""
    if Path(path).is_dir():
        return _load_password_dir(Path(path))
    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProvisioningError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ProvisioningError(f"{path}: not valid YAML or JSON: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ProvisioningError(f"{path}: expected a mapping of user name to password")
    for user, password in doc.items():
        if not isinstance(user, str) or not isinstance(password, str) or not password:
            # Never echo the value: it may be a password.
            raise ProvisioningError(
                f"{path}: entry {user!r} must map a user name to a non-empty string password "
                "(quote passwords that look like numbers)")
    return dict(doc)


def _load_password_dir(path: Path) -> dict[str, str]:
    passwords = {}
    for entry in sorted(path.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():  # a Secret's ..data links
            continue
        password = entry.read_text(encoding="utf-8").rstrip("\r\n")
        if not password:
            raise ProvisioningError(f"{path}: {entry.name} is empty")
        passwords[entry.name] = password
    return passwords


def write_credentials(path: Path, passwords: dict[str, str]) -> None:
    """Write atomically, readable and writable by the owner only (0600) from the start."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(dict(sorted(passwords.items())), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass
class Passwords:
    passwords: dict[str, str]
    source: Path
    generated: list[str] = field(default_factory=list)


def resolve_passwords(users: list[str], passwords_file: Path | None = None,
                      credentials_file: Path = DEFAULT_CREDENTIALS_FILE) -> Passwords:
    """Passwords for `users`. From `passwords_file` when given (every user must be in it);
    else from `credentials_file`, generating (and adding to that file) the missing ones, so
    running again keeps the passwords already handed out."""
    if passwords_file is not None:
        known = load_passwords(Path(passwords_file))
        missing = [u for u in users if u not in known]
        if missing:
            raise ProvisioningError(f"{passwords_file}: no password for {', '.join(missing)}")
        chosen = {u: known[u] for u in users}
        check_passwords(chosen)
        return Passwords(chosen, Path(passwords_file))
    credentials_file = Path(credentials_file)
    stored = load_passwords(credentials_file) if credentials_file.exists() else {}
    generated = [u for u in users if u not in stored]
    for user in generated:
        stored[user] = generate_password()
    if generated:
        write_credentials(credentials_file, stored)
    elif credentials_file.exists() and credentials_file.stat().st_mode & 0o077:
        credentials_file.chmod(0o600)
    chosen = {u: stored[u] for u in users}
    check_passwords(chosen)
    return Passwords(chosen, credentials_file, generated)


# --------------------------------------------------------------------------- definitions


def user_definition(grant: UserGrant, password: str | None) -> dict[str, Any]:
    # An empty hash means no password: the user cannot log in until one is set.
    return {"name": grant.name, "password_hash": hash_password(password) if password else "",
            "hashing_algorithm": HASHING_ALGORITHM, "tags": list(grant.tags), "limits": {}}


def build_definitions(grants: list[UserGrant], vhost: str,
                      passwords: dict[str, str] | None) -> dict[str, Any]:
    """A RabbitMQ definitions document (import with `rabbitmqctl import_definitions FILE`
    or the management UI). With `passwords=None` users get no password (an example that
    leaks nothing; set passwords with `rabbitmqctl change_password` or `appeals provision
    apply`). It has no `guest`; importing it does not delete one either: on a broker others
    can reach, `rabbitmqctl delete_user guest` (or `appeals provision apply`, which does)."""
    if passwords is not None:
        missing = [g.name for g in grants if not passwords.get(g.name)]
        if missing:
            raise ProvisioningError(f"no password for {', '.join(missing)}")
        check_passwords({g.name: passwords[g.name] for g in grants})
    if any(g.name == GUEST for g in grants):
        raise ProvisioningError("definitions never hold the guest user")
    return {
        "users": [user_definition(g, passwords[g.name] if passwords else None) for g in grants],
        "vhosts": [{"name": vhost}],
        "permissions": [g.permission(vhost) for g in grants],
        "topic_permissions": [tp for g in grants for tp in g.topic_permissions(vhost)],
    }


def vhost_from_uri(amqp_uri: str) -> str:
    path = urllib.parse.urlparse(amqp_uri).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


# --------------------------------------------------------------------------- broker state


@dataclass
class BrokerState:
    """What the broker has now, for the users and vhost we manage."""

    users: dict[str, dict[str, Any]]
    permissions: dict[str, dict[str, str]]  # user -> {configure, write, read}
    topic_permissions: dict[str, dict[str, dict[str, str]]]  # user -> exchange -> {write, read}


def _tags(value: Any) -> set[str]:
    if isinstance(value, str):
        return {t for t in value.split(",") if t}
    return set(value or ())


def _state_from(users: list[dict], permissions: list[dict], topic_permissions: list[dict],
                vhost: str) -> BrokerState:
    state = BrokerState({u["name"]: u for u in users}, {}, {})
    for p in permissions:
        if p.get("vhost") == vhost:
            state.permissions[p["user"]] = {k: p.get(k, "") for k in ("configure", "write", "read")}
    for t in topic_permissions:
        if t.get("vhost") == vhost:
            state.topic_permissions.setdefault(t["user"], {})[t["exchange"]] = {
                "write": t.get("write", ""), "read": t.get("read", "")}
    return state


class ManagementBackend:
    """The management HTTP API (rabbitmq_management plugin)."""

    name = "management API"

    def __init__(self, url: str = DEFAULT_MANAGEMENT_URL, timeout: float = 10) -> None:
        parsed = urllib.parse.urlparse(url)
        self.base = f"{parsed.scheme or 'http'}://{parsed.hostname}:{parsed.port or 15672}/api/"
        self.host = parsed.hostname or "localhost"
        self.user = urllib.parse.unquote(parsed.username or "guest")
        credentials = (f"{self.user}:"
                       f"{urllib.parse.unquote(parsed.password or 'guest')}")
        self.authorization = "Basic " + base64.b64encode(credentials.encode()).decode()
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(
            self.base + path, method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"content-type": "application/json", "authorization": self.authorization})
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def call(self, method: str, path: str, body: Any = None, ok_missing: bool = False) -> Any:
        try:
            return self.request(method, path, body)
        except urllib.error.HTTPError as exc:
            if ok_missing and exc.code == 404:
                return None
            detail = exc.read().decode("utf-8", "replace")[:300]
            raise ProvisioningError(
                f"management API {method} /api/{path}: HTTP {exc.code} {detail}") from None

    def is_local(self) -> bool:
        """The broker is on this machine (so `guest`, loopback-only by default, may stay)."""
        return self.host.lower() in LOCAL_HOSTS

    def available(self) -> bool:
        """False when nothing answers (plugin off); an answer that is an error (say wrong
        admin credentials) is raised, not taken for "unavailable"."""
        try:
            self.request("GET", "whoami")
            return True
        except urllib.error.HTTPError as exc:
            raise ProvisioningError(f"management API at {self.base}: HTTP {exc.code} {exc.reason}") from None
        except OSError:  # URLError, refused, timeout
            return False

    def vhost_exists(self, vhost: str) -> bool:
        return self.call("GET", f"vhosts/{_q(vhost)}", ok_missing=True) is not None

    def state(self, vhost: str) -> BrokerState:
        v = _q(vhost)
        return _state_from(self.call("GET", "users/"), self.call("GET", f"vhosts/{v}/permissions"),
                           self.call("GET", f"vhosts/{v}/topic-permissions"), vhost)

    def put_users(self, users: list[dict[str, Any]]) -> None:
        for user in users:
            self.call("PUT", f"users/{_q(user['name'])}", {
                "password_hash": user["password_hash"], "hashing_algorithm": user["hashing_algorithm"],
                "tags": ",".join(user["tags"])})

    def clear_topic_permissions(self, vhost: str, user: str, exchanges: list[str]) -> None:
        # The API clears all of a user's topic permissions on a vhost, never one exchange:
        # the caller puts back the ones it wants.
        self.call("DELETE", f"topic-permissions/{_q(vhost)}/{_q(user)}", ok_missing=True)

    def put_topic_permissions(self, vhost: str, topic_permissions: list[dict[str, str]]) -> None:
        for tp in topic_permissions:
            self.call("PUT", f"topic-permissions/{_q(vhost)}/{_q(tp['user'])}",
                      {"exchange": tp["exchange"], "write": tp["write"], "read": tp["read"]})

    def put_permissions(self, vhost: str, permissions: list[dict[str, str]]) -> None:
        for p in permissions:
            self.call("PUT", f"permissions/{_q(vhost)}/{_q(p['user'])}",
                      {k: p[k] for k in ("configure", "write", "read")})

    def delete_users(self, names: list[str]) -> None:
        for name in names:
            self.call("DELETE", f"users/{_q(name)}", ok_missing=True)


class RabbitmqctlBackend:
    """`rabbitmqctl` on the broker's machine, for when the management plugin is off.
    Changes go in as a definitions import on stdin: hashes only, nothing secret in argv."""

    name = "rabbitmqctl"
    user = None  # rabbitmqctl logs in as no RabbitMQ user

    def __init__(self, ctl: str | None = None) -> None:
        self.ctl = ctl or shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"

    def is_local(self) -> bool:
        return True  # rabbitmqctl talks to the node on this machine

    def available(self) -> bool:
        return os.access(self.ctl, os.X_OK)

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        try:
            done = subprocess.run([self.ctl, "-q", *args], input=stdin, capture_output=True,
                                  text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ProvisioningError(f"rabbitmqctl {args[0]}: {exc}") from None
        if check and done.returncode != 0:
            raise ProvisioningError(f"rabbitmqctl {args[0]} failed ({done.returncode}): "
                                    f"{(done.stderr or done.stdout).strip()[:500]}")
        return done.stdout

    def _export(self) -> dict[str, Any]:
        out = self.run("export_definitions", "-", "--format", "json")
        try:
            return json.loads(out)
        except json.JSONDecodeError:
            raise ProvisioningError("rabbitmqctl export_definitions did not print JSON") from None

    def _import(self, doc: dict[str, Any]) -> None:
        self.run("import_definitions", "--format", "json", stdin=json.dumps(doc))

    def vhost_exists(self, vhost: str) -> bool:
        out = self.run("list_vhosts", "--formatter", "json", "name")
        return any(v.get("name") == vhost for v in json.loads(out or "[]"))

    def state(self, vhost: str) -> BrokerState:
        doc = self._export()
        return _state_from(doc.get("users", []), doc.get("permissions", []),
                           doc.get("topic_permissions", []), vhost)

    def put_users(self, users: list[dict[str, Any]]) -> None:
        if users:
            self._import({"users": users})

    def clear_topic_permissions(self, vhost: str, user: str, exchanges: list[str]) -> None:
        for exchange in exchanges:
            self.run("clear_topic_permissions", "-p", vhost, user, exchange)

    def put_topic_permissions(self, vhost: str, topic_permissions: list[dict[str, str]]) -> None:
        if topic_permissions:
            self._import({"topic_permissions": topic_permissions})

    def put_permissions(self, vhost: str, permissions: list[dict[str, str]]) -> None:
        if permissions:
            self._import({"permissions": permissions})

    def delete_users(self, names: list[str]) -> None:
        for name in names:
            self.run("delete_user", name, check=False)


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def choose_backend(backend: str = "auto", management_url: str = DEFAULT_MANAGEMENT_URL,
                   ctl: str | None = None) -> ManagementBackend | RabbitmqctlBackend:
    """The management API when it answers, else rabbitmqctl (like `manage_vhost`)."""
    if backend not in BACKENDS:
        raise ProvisioningError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend in ("auto", "management"):
        api = ManagementBackend(management_url)
        if api.available():
            return api
        if backend == "management":
            raise ProvisioningError(f"management API at {api.base} does not answer "
                                    "(is the rabbitmq_management plugin enabled?)")
    local = RabbitmqctlBackend(ctl)
    if not local.available():
        raise ProvisioningError(
            f"management API at {ManagementBackend(management_url).base} does not answer and "
            f"{local.ctl} is not here: enable the plugin (rabbitmq-plugins enable "
            "rabbitmq_management) or run this on the broker's machine")
    return local


# --------------------------------------------------------------------------- apply


@dataclass
class ApplyReport:
    backend: str
    vhost: str
    users: dict[str, str] = field(default_factory=dict)  # name -> created|updated|unchanged
    permissions: dict[str, str] = field(default_factory=dict)  # name -> set|unchanged
    topic_permissions: dict[str, str] = field(default_factory=dict)  # name -> set|unchanged
    guest: str = "kept"  # removed | absent | kept (a broker on this machine, or --keep-guest)

    def changed(self) -> bool:
        return self.guest == "removed" or any(
            v != "unchanged" for d in (self.users, self.permissions, self.topic_permissions)
            for v in d.values())

    def lines(self) -> list[str]:
        out = []
        for name in self.users:
            out.append(f"{name:40} user {self.users[name]:9} permissions {self.permissions[name]:9} "
                       f"topic permissions {self.topic_permissions[name]}")
        counts = {s: list(self.users.values()).count(s) for s in ("created", "updated", "unchanged")}
        out.append(f"{len(self.users)} users on vhost {self.vhost!r} via {self.backend}: "
                   + ", ".join(f"{n} {s}" for s, n in counts.items()))
        out.append({"removed": "guest user removed",
                    "absent": "no guest user",
                    "kept": "guest user kept (broker on this machine, or --keep-guest)"}[self.guest])
        return out


def apply_grants(grants: list[UserGrant], vhost: str, passwords: dict[str, str],
                 backend: ManagementBackend | RabbitmqctlBackend | str = "auto",
                 management_url: str = DEFAULT_MANAGEMENT_URL,
                 remove_guest: bool | None = None) -> ApplyReport:
    """Create or update the users and set their permissions on `vhost`, touching only what
    differs. A user's topic permissions are set before its vhost permissions, so there is
    no moment when it may write to an exchange with any routing key.

    `remove_guest`: delete the `guest` user once the others are in place. By default
    (None) it is deleted when the broker is not on this machine (the management API at a
    host other than localhost): guest/guest is the first thing anyone tries."""
    api = choose_backend(backend, management_url) if isinstance(backend, str) else backend
    missing = [g.name for g in grants if not passwords.get(g.name)]
    if missing:
        raise ProvisioningError(f"no password for {', '.join(missing)}")
    check_passwords({g.name: passwords[g.name] for g in grants})
    if any(g.name == GUEST for g in grants):
        raise ProvisioningError("refusing to provision a user named guest")
    if remove_guest is None:
        remove_guest = not api.is_local()
    if remove_guest and api.user == GUEST:
        raise ProvisioningError(
            "the guest user is to be removed from this broker, but it is the admin user this "
            "connects as: create an administrator of your own (rabbitmqctl add_user, "
            "set_user_tags administrator) and give it in --management-url, or pass --keep-guest")
    if not api.vhost_exists(vhost):
        raise ProvisioningError(f"vhost {vhost!r} does not exist: create it first "
                                f"(rabbitmqctl add_vhost {vhost})")
    state = api.state(vhost)
    report = ApplyReport(api.name, vhost)

    users: list[dict[str, Any]] = []
    for g in grants:
        current = state.users.get(g.name)
        if current is None:
            report.users[g.name] = "created"
        elif (current.get("hashing_algorithm") == HASHING_ALGORITHM
              and verify_password(passwords[g.name], current.get("password_hash", ""))
              and _tags(current.get("tags")) == set(g.tags)):
            report.users[g.name] = "unchanged"
            continue
        else:
            report.users[g.name] = "updated"
        users.append(user_definition(g, passwords[g.name]))

    topics: list[dict[str, str]] = []
    stale: dict[str, list[str]] = {}  # user -> exchanges it should have no topic permission on
    for g in grants:
        have = state.topic_permissions.get(g.name, {})
        want = {t.exchange: {"write": t.write, "read": t.read} for t in g.topics}
        if have == want:
            report.topic_permissions[g.name] = "unchanged"
            continue
        report.topic_permissions[g.name] = "set"
        extra = sorted(set(have) - set(want))
        if extra:
            stale[g.name] = extra
        topics += [tp for tp in g.topic_permissions(vhost)
                   if extra or have.get(tp["exchange"]) != want[tp["exchange"]]]

    # The management API clears all of a user's topic permissions at once: until they are
    # back, a restricted user must not be able to write at all.
    locked = {g.name for g in grants
              if g.name in stale and g.topics and isinstance(api, ManagementBackend)}
    permissions: list[dict[str, str]] = []
    for g in grants:
        want_perm = g.permission(vhost)
        have_perm = state.permissions.get(g.name)
        if g.name not in locked and have_perm == {k: want_perm[k] for k in ("configure", "write", "read")}:
            report.permissions[g.name] = "unchanged"
        else:
            report.permissions[g.name] = "set"
            permissions.append(want_perm)

    api.put_users(users)
    api.put_permissions(vhost, [{**p, "write": ""} for p in permissions if p["user"] in locked])
    for user, exchanges in stale.items():
        api.clear_topic_permissions(vhost, user, exchanges)
    api.put_topic_permissions(vhost, topics)
    api.put_permissions(vhost, permissions)
    if GUEST not in state.users:
        report.guest = "absent"
    elif remove_guest:
        api.delete_users([GUEST])
        report.guest = "removed"
    return report


def delete_users(names: list[str], backend: str = "auto",
                 management_url: str = DEFAULT_MANAGEMENT_URL) -> None:
    choose_backend(backend, management_url).delete_users(names)


# --------------------------------------------------------------------------- PostgreSQL

DEFAULT_DATABASE_ADMIN_URL = os.environ.get("APPEALS_DATABASE_ADMIN_URL",
                                            "postgresql://postgres@127.0.0.1:5432/postgres")
SCRAM_ITERATIONS = 4096
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class DatabaseGrant:
    """A service's own PostgreSQL role, owning the service's own database (and nothing else)."""

    service: str
    role: str
    database: str


def database_grants(prefix: str = "", services: tuple[str, ...] = SERVICES) -> list[DatabaseGrant]:
    grants = [DatabaseGrant(s, f"{prefix}appeals_{s}", f"{prefix}appeals_{s}") for s in services]
    for g in grants:
        if not _IDENTIFIER.match(g.role):
            raise ProvisioningError(f"{g.role!r} is not a plain PostgreSQL name (a-z, 0-9, _)")
    return grants


def scram_sha256(password: str, salt: bytes | None = None,
                 iterations: int = SCRAM_ITERATIONS) -> str:
    """PostgreSQL's stored form of a password (what `password_encryption = scram-sha-256`
    keeps): `ALTER ROLE … PASSWORD '<this>'` sets the password without the server (or its
    statement log) ever seeing it."""
    salt = os.urandom(16) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return (f"SCRAM-SHA-256${iterations}:{b64(salt)}"
            f"${b64(hashlib.sha256(client_key).digest())}:{b64(server_key)}")


def _ownership_block(role: str) -> str:
    """Hand the role whatever the public schema already holds under another owner (tables a
    service created while it still connected as a superuser)."""
    return f"""DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT c.relname, c.relkind FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
             AND pg_get_userbyid(c.relowner) <> '{role}'
  LOOP
    EXECUTE format('ALTER %s public.%I OWNER TO {role}',
                   CASE r.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                                  WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END, r.relname);
  END LOOP;
  FOR r IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'public' AND c.relkind = 'S'
             AND pg_get_userbyid(c.relowner) <> '{role}'
             AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                             AND d.objid = c.oid AND d.deptype IN ('a', 'i'))
  LOOP
    EXECUTE format('ALTER SEQUENCE public.%I OWNER TO {role}', r.relname);
  END LOOP;
  FOR r IN SELECT t.typname, t.typtype FROM pg_type t
           JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd')
             AND pg_get_userbyid(t.typowner) <> '{role}'
  LOOP
    EXECUTE format('ALTER %s public.%I OWNER TO {role}',
                   CASE r.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, r.typname);
  END LOOP;
END $$"""


def database_sql(grants: list[DatabaseGrant], passwords: Mapping[str, str]) -> str:
    """The same as `apply_databases` as a psql script (`psql -v ON_ERROR_STOP=1 -f`), with
    SCRAM verifiers, never a password."""
    out = ["-- Each service's own role owning its own database (appeals provision database).",
           "\\set ON_ERROR_STOP on"]
    for g in grants:
        out += [
            f"-- {g.service}",
            f"SELECT 'CREATE ROLE {g.role} LOGIN' WHERE NOT EXISTS "
            f"(SELECT FROM pg_roles WHERE rolname = '{g.role}')\\gexec",
            f"ALTER ROLE {g.role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION "
            f"PASSWORD '{scram_sha256(passwords[g.role])}';",
            f"SELECT 'CREATE DATABASE {g.database} OWNER {g.role}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_database WHERE datname = '{g.database}')\\gexec",
            f"ALTER DATABASE {g.database} OWNER TO {g.role};",
            f"REVOKE ALL ON DATABASE {g.database} FROM PUBLIC;",
            f"\\connect {g.database}",
            f"ALTER SCHEMA public OWNER TO {g.role};",
            _ownership_block(g.role) + ";",
            "\\connect postgres",
        ]
    return "\n".join(out) + "\n"


@dataclass
class DatabaseReport:
    roles: dict[str, str] = field(default_factory=dict)  # role -> created|updated
    databases: dict[str, str] = field(default_factory=dict)  # database -> created|existing

    def lines(self) -> list[str]:
        return [f"{role:32} role {self.roles[role]:8} owns database {db} ({self.databases[db]}); "
                "no other role may connect to it"
                for role, db in zip(self.roles, self.databases, strict=True)]


def _dsn(url: str, database: str | None = None) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise ProvisioningError(f"database roles need PostgreSQL; the admin URL is "
                                f"{parsed.get_backend_name()}")
    parsed = parsed.set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def apply_databases(grants: list[DatabaseGrant], passwords: Mapping[str, str],
                    admin_url: str = DEFAULT_DATABASE_ADMIN_URL) -> DatabaseReport:
    """Create or update each role (login, the given password, no superuser rights) and its
    database, owned by it and closed to every other role (REVOKE ALL … FROM PUBLIC). Run as
    a superuser (or a role with CREATEROLE and CREATEDB). Idempotent."""
    import psycopg2

    missing = [g.role for g in grants if not passwords.get(g.role)]
    if missing:
        raise ProvisioningError(f"no password for {', '.join(missing)}")
    check_passwords({g.role: passwords[g.role] for g in grants})
    report = DatabaseReport()

    def connect(database: str | None = None) -> Any:
        try:
            conn = psycopg2.connect(_dsn(admin_url, database))
        except psycopg2.Error as exc:
            raise ProvisioningError(f"cannot connect to PostgreSQL as the admin: "
                                    f"{str(exc).strip().splitlines()[0]}") from None
        conn.autocommit = True
        return conn

    admin = connect()
    try:
        with admin.cursor() as cur:
            for g in grants:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (g.role,))
                exists = cur.fetchone() is not None
                if not exists:
                    cur.execute(f'CREATE ROLE "{g.role}" LOGIN')
                verifier = scram_sha256(passwords[g.role])
                cur.execute(f'ALTER ROLE "{g.role}" WITH LOGIN NOSUPERUSER NOCREATEDB '
                            f"NOCREATEROLE NOREPLICATION PASSWORD '{verifier}'")
                report.roles[g.role] = "updated" if exists else "created"
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (g.database,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{g.database}" OWNER "{g.role}"')
                    report.databases[g.database] = "created"
                else:
                    cur.execute(f'ALTER DATABASE "{g.database}" OWNER TO "{g.role}"')
                    report.databases[g.database] = "existing"
                cur.execute(f'REVOKE ALL ON DATABASE "{g.database}" FROM PUBLIC')
                own = connect(g.database)
                try:
                    with own.cursor() as inner:
                        inner.execute(f'ALTER SCHEMA public OWNER TO "{g.role}"')
                        inner.execute(_ownership_block(g.role))
                finally:
                    own.close()
    except psycopg2.Error as exc:
        raise ProvisioningError(f"PostgreSQL: {str(exc).strip().splitlines()[0]}") from None
    finally:
        admin.close()
    return report
