"""RabbitMQ users and permissions generated from the registries (DESIGN §5, permissions).

Every department gets a user `dept-<code>` and every source system a user `src-<name>`;
the suite's own services share one user with full rights on the vhost. Nobody else may
configure (declare, bind, delete) anything:

| user | configure | write (exchanges) | read (queues) | topic write |
|---|---|---|---|---|
| `dept-<code>` | none | `appeals.replies` | `dispatch.<code>` | `^dept\\.<code>\\.[a-z_]+$` |
| `src-<name>` | none | `appeals.inbound` | `receipts.<name>` | `^appeal\\.submit\\.<name>$` |
| suite user | all | all | all | (unrestricted) |

Vhost permission regexes match resource *names*: publishing needs write on the exchange,
consuming and basic.get need read on the queue, so each grant names exactly one exchange
and one queue. Topic permissions then restrict the routing keys a user may publish with.

Two outputs from the same grants:

* `build_definitions`: a RabbitMQ definitions document (users with salted SHA-256 password
  hashes, vhost, permissions, topic permissions) an operator can import;
* `apply_grants`: an idempotent apply through the management HTTP API, or, when the
  management plugin is off, through `rabbitmqctl` on this machine (definitions import on
  stdin, so no password ever appears on a command line).

Passwords come from a passwords file (YAML or JSON, user name to password) or are
generated and kept in a credentials file readable only by its owner (mode 0600). They
are never printed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from appeals_common.registries import Department, SourceSystem
from appeals_common.settings import ROOT
from appeals_common.topology import (
    INBOUND_EXCHANGE,
    REPLIES_EXCHANGE,
    dept_queue,
    receipts_queue,
)

HASHING_ALGORITHM = "rabbit_password_hashing_sha256"
DEFAULT_SUITE_USER = os.environ.get("APPEALS_SUITE_USER", "appeals-suite")
DEFAULT_CREDENTIALS_FILE = ROOT / "var" / "credentials.json"
DEFAULT_MANAGEMENT_URL = os.environ.get("APPEALS_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672")
BACKENDS = ("auto", "management", "rabbitmqctl")


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
    kind: str  # "suite" | "department" | "source"
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


def dept_user(code: str, prefix: str = "") -> str:
    return f"{prefix}dept-{code}"


def source_user(name: str, prefix: str = "") -> str:
    return f"{prefix}src-{name}"


def build_grants(departments: dict[str, Department] | list[str],
                 source_systems: dict[str, SourceSystem] | list[str],
                 prefix: str = "", suite_user: str = DEFAULT_SUITE_USER) -> list[UserGrant]:
    """The users and what each may do, from the registries. `prefix` goes before every
    user name (tests use it to keep each run's users apart)."""
    grants = [UserGrant(f"{prefix}{suite_user}", "suite", ".*", ".*", ".*")]
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
                       suite_user: str = DEFAULT_SUITE_USER) -> list[UserGrant]:
    from appeals_common.registries import load_departments, load_source_systems

    return build_grants(load_departments(config_dir), load_source_systems(config_dir),
                        prefix, suite_user)


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


def generate_password() -> str:
    return secrets.token_urlsafe(32)  # 256 bits


def load_passwords(path: Path) -> dict[str, str]:
    """A YAML or JSON mapping of user name to password."""
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
        return Passwords({u: known[u] for u in users}, Path(passwords_file))
    credentials_file = Path(credentials_file)
    stored = load_passwords(credentials_file) if credentials_file.exists() else {}
    generated = [u for u in users if u not in stored]
    for user in generated:
        stored[user] = generate_password()
    if generated:
        write_credentials(credentials_file, stored)
    elif credentials_file.exists() and credentials_file.stat().st_mode & 0o077:
        credentials_file.chmod(0o600)
    return Passwords({u: stored[u] for u in users}, credentials_file, generated)


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
    apply`)."""
    if passwords is not None:
        missing = [g.name for g in grants if not passwords.get(g.name)]
        if missing:
            raise ProvisioningError(f"no password for {', '.join(missing)}")
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
        credentials = (f"{urllib.parse.unquote(parsed.username or 'guest')}:"
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

    def __init__(self, ctl: str | None = None) -> None:
        self.ctl = ctl or shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"

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

    def changed(self) -> bool:
        return any(v != "unchanged" for d in (self.users, self.permissions, self.topic_permissions)
                   for v in d.values())

    def lines(self) -> list[str]:
        out = []
        for name in self.users:
            out.append(f"{name:40} user {self.users[name]:9} permissions {self.permissions[name]:9} "
                       f"topic permissions {self.topic_permissions[name]}")
        counts = {s: list(self.users.values()).count(s) for s in ("created", "updated", "unchanged")}
        out.append(f"{len(self.users)} users on vhost {self.vhost!r} via {self.backend}: "
                   + ", ".join(f"{n} {s}" for s, n in counts.items()))
        return out


def apply_grants(grants: list[UserGrant], vhost: str, passwords: dict[str, str],
                 backend: ManagementBackend | RabbitmqctlBackend | str = "auto",
                 management_url: str = DEFAULT_MANAGEMENT_URL) -> ApplyReport:
    """Create or update the users and set their permissions on `vhost`, touching only what
    differs. A user's topic permissions are set before its vhost permissions, so there is
    no moment when it may write to an exchange with any routing key."""
    api = choose_backend(backend, management_url) if isinstance(backend, str) else backend
    missing = [g.name for g in grants if not passwords.get(g.name)]
    if missing:
        raise ProvisioningError(f"no password for {', '.join(missing)}")
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
    return report


def delete_users(names: list[str], backend: str = "auto",
                 management_url: str = DEFAULT_MANAGEMENT_URL) -> None:
    choose_backend(backend, management_url).delete_users(names)
