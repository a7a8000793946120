"""Settings from the environment: one place, read once per process."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from appeals_common.activity_schedule import PROGRAMME_ISSUED
from appeals_common.clock import OFFSET_ENV, Clock, make_clock, parse_offset
from appeals_common.identity import amqp_username

ROOT = Path(__file__).resolve().parent.parent

SERVICES = ("intake", "dispatch", "supervision", "reporting")
DEFAULT_HTTP_PORTS = {"intake": 8001, "dispatch": 8002, "supervision": 8003, "reporting": 8004}

# The JWT secret a development machine runs with when none is set. Services refuse to start
# with it (or any other weak secret) unless APPEALS_DEV_MODE says this is a development run.
DEV_JWT_SECRET = "insecure-development-secret-set-APPEALS_JWT_SECRET"
DEV_MODE_ENV = "APPEALS_DEV_MODE"
MIN_JWT_SECRET_BYTES = 32
# Tokens are for a working day, not a month: services refuse a longer-lived one.
DEFAULT_TOKEN_MAX_HOURS = 12.0
TOKEN_MAX_HOURS_ENV = "APPEALS_TOKEN_MAX_HOURS"


class SettingsError(ValueError):
    """A setting is missing or malformed."""


@dataclass(frozen=True)
class Settings:
    amqp_uri: str = "amqp://guest:guest@localhost:5672/"
    # `{service}` is replaced by the service name: each service owns its own database.
    database_url: str = "sqlite:///" + str(ROOT / "var" / "{service}.db")
    config_dir: Path = ROOT / "config"
    jwt_secret: str = DEV_JWT_SECRET
    # APPEALS_DEV_MODE=1: a development run, where a weak or missing JWT secret is accepted.
    dev_mode: bool = False
    # The longest lifetime (exp - iat) a bearer token may have.
    token_max_hours: float = DEFAULT_TOKEN_MAX_HOURS
    reg_no_prefix: str = "WH"
    timezone: str = "Asia/Shanghai"
    # When set, services read "now" from this file (ISO 8601): tests move time forward.
    clock_file: str | None = None
    # Real time shifted by this many seconds (a test knob: CI's year-end run).
    clock_offset_seconds: float = 0.0
    # Bus users are provisioned with this prefix (several suites on one broker, tests).
    bus_user_prefix: str = ""
    # Broker users besides the service's own whose messages carry trusted retry headers
    # (an operator's `appeals dead-letters replay` connecting as another suite user).
    trusted_bus_users: tuple[str, ...] = ()
    # The programme's issue date: activity obligations (附件1) start from it.
    programme_start: date = PROGRAMME_ISSUED
    http_host: str = "0.0.0.0"
    http_ports: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_HTTP_PORTS))
    max_workers: int = 20
    # Connections per service process (as many again may open under load). Four services
    # and their replicas share PostgreSQL's max_connections (100 by default).
    db_pool_size: int = 8
    queue_type: str = "classic"  # "quorum" on a RabbitMQ cluster
    relay_batch_size: int = 200
    relay_poll_seconds: float = 1.0
    # Published outbox rows are kept this long (for inspection), then deleted.
    outbox_retention_hours: int = 168
    # Delays before a failing message is tried again; after the last one it is dead-lettered.
    retry_delays_ms: tuple[int, ...] = (1000, 5000, 30000)

    def database_url_for(self, service: str) -> str:
        if "{service}" not in self.database_url:
            raise SettingsError(
                "APPEALS_DATABASE_URL must contain '{service}' so that each service owns its "
                f"own database, e.g. postgresql://user@host/appeals_{{service}}; got {self.database_url!r}"
            )
        return self.database_url.replace("{service}", service)

    def http_port(self, service: str) -> int:
        return self.http_ports[service]

    @property
    def amqp_user(self) -> str:
        """The broker user this process connects as (the `user_id` it publishes with)."""
        return amqp_username(self.amqp_uri)

    def trusts_bus_user(self, user_id: str | None) -> bool:
        """A message from this user came from the suite itself (retry, replay)."""
        return bool(user_id) and (user_id == self.amqp_user or user_id in self.trusted_bus_users)

    def clock(self) -> Clock:
        return make_clock(self.clock_file, self.clock_offset_seconds)


def load_settings(env: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if env is None else env)
    ports = dict(DEFAULT_HTTP_PORTS)
    for service in SERVICES:
        key = f"APPEALS_{service.upper()}_HTTP_PORT"
        if key in env:
            ports[service] = _int(env, key)
    defaults = Settings()
    queue_type = env.get("APPEALS_QUEUE_TYPE", defaults.queue_type)
    if queue_type not in ("classic", "quorum"):
        raise SettingsError(f"APPEALS_QUEUE_TYPE must be 'classic' or 'quorum', got {queue_type!r}")
    delays = env.get("APPEALS_RETRY_DELAYS_MS")
    try:
        retry_delays = tuple(int(d) for d in delays.split(",")) if delays else defaults.retry_delays_ms
    except ValueError:
        raise SettingsError(f"APPEALS_RETRY_DELAYS_MS must be comma-separated integers: {delays!r}") from None
    if not retry_delays or any(d <= 0 for d in retry_delays):
        raise SettingsError("APPEALS_RETRY_DELAYS_MS needs at least one positive delay")
    return Settings(
        amqp_uri=env.get("APPEALS_AMQP_URI", defaults.amqp_uri),
        database_url=env.get("APPEALS_DATABASE_URL", defaults.database_url),
        config_dir=Path(env.get("APPEALS_CONFIG_DIR", str(defaults.config_dir))),
        jwt_secret=env.get("APPEALS_JWT_SECRET") or defaults.jwt_secret,
        dev_mode=dev_mode(env),
        token_max_hours=token_max_hours(env),
        reg_no_prefix=env.get("APPEALS_REG_NO_PREFIX", defaults.reg_no_prefix),
        timezone=env.get("APPEALS_TIMEZONE", defaults.timezone),
        clock_file=env.get("APPEALS_CLOCK_FILE") or None,
        clock_offset_seconds=_offset(env),
        programme_start=_date(env, "APPEALS_PROGRAMME_START", defaults.programme_start),
        bus_user_prefix=env.get("APPEALS_BUS_USER_PREFIX", defaults.bus_user_prefix),
        trusted_bus_users=tuple(u.strip() for u in env.get("APPEALS_TRUSTED_BUS_USERS", "")
                                .split(",") if u.strip()),
        http_host=env.get("APPEALS_HTTP_HOST", defaults.http_host),
        http_ports=ports,
        max_workers=_int(env, "APPEALS_MAX_WORKERS", defaults.max_workers),
        db_pool_size=_int(env, "APPEALS_DB_POOL_SIZE", defaults.db_pool_size),
        queue_type=queue_type,
        relay_batch_size=_int(env, "APPEALS_RELAY_BATCH_SIZE", defaults.relay_batch_size),
        retry_delays_ms=retry_delays,
        relay_poll_seconds=float(env.get("APPEALS_RELAY_POLL_SECONDS", defaults.relay_poll_seconds)),
        outbox_retention_hours=_int(env, "APPEALS_OUTBOX_RETENTION_HOURS",
                                    defaults.outbox_retention_hours),
    )


def dev_mode(env: dict[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get(DEV_MODE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def token_max_hours(env: dict[str, str] | None = None) -> float:
    """APPEALS_TOKEN_MAX_HOURS (default 12): read on its own, so the token check need not
    load every setting for each request."""
    env = os.environ if env is None else env
    raw = env.get(TOKEN_MAX_HOURS_ENV)
    if not raw:
        return DEFAULT_TOKEN_MAX_HOURS
    try:
        hours = float(raw)
    except ValueError:
        raise SettingsError(f"{TOKEN_MAX_HOURS_ENV} must be a number of hours, got {raw!r}") from None
    if not 0 < hours <= 24 * 7:
        raise SettingsError(f"{TOKEN_MAX_HOURS_ENV} must be more than 0 and at most 168 hours, "
                            f"got {raw!r}")
    return hours


# --------------------------------------------------------------------------- secrets

# Words that mark a value someone was meant to replace. Matched case-insensitively; `[\W_]*`
# lets them be written with any separators (change-me, CHANGE_ME, ChangeMe, change.me).
_PLACEHOLDER_PATTERNS = (
    (re.compile(r"change[\W_]*me", re.I), "contains 'change me'"),
    (re.compile(r"replace[\W_]*(me|this|with)", re.I), "contains 'replace me'"),
    (re.compile(r"placeholder", re.I), "contains 'placeholder'"),
    (re.compile(r"example", re.I), "contains 'example'"),
    (re.compile(r"insecure", re.I), "contains 'insecure'"),
    (re.compile(r"dummy|fixme", re.I), "contains 'dummy' or 'fixme'"),
    (re.compile(r"(your|my|some)[\W_]*(jwt[\W_]*)?(secret|password|key)", re.I),
     "contains 'your secret' or the like"),
)
# Written-out words that are a secret only when little else is there: a value that contains
# one of them and hardly any digits (a phrase, not random text) is a placeholder.
_WEAK_WORDS = re.compile(r"secret|passw(or)?d|default|sample|letmein", re.I)
MIN_DISTINCT_CHARACTERS = 8


def placeholder_reason(value: str) -> str | None:
    """Why `value` looks like a placeholder rather than a secret, or None. Never echoes it."""
    for pattern, reason in _PLACEHOLDER_PATTERNS:
        if pattern.search(value):
            return reason
    word = _WEAK_WORDS.search(value)
    if word and sum(c.isdigit() for c in value) < 8:
        return f"a phrase with the word '{word.group(0).lower()}'"
    if len(set(value)) < MIN_DISTINCT_CHARACTERS:
        return f"fewer than {MIN_DISTINCT_CHARACTERS} different characters"
    return None


def jwt_secret_problem(secret: str | None) -> str | None:
    """What is wrong with a JWT secret (never the secret itself), or None when it will do."""
    if not secret:
        return "is not set"
    if secret == DEV_JWT_SECRET:
        return "is not set (the built-in development value is in use)"
    size = len(secret.encode("utf-8"))
    if size < MIN_JWT_SECRET_BYTES:
        return f"is {size} bytes long; at least {MIN_JWT_SECRET_BYTES} are needed"
    reason = placeholder_reason(secret)
    if reason:
        return f"looks like a placeholder ({reason})"
    return None


def check_service_start(settings: Settings) -> list[str]:
    """The check every start of a service makes (`appeals run`, `appeals up`): raises
    SettingsError for an unset, default, placeholder or short APPEALS_JWT_SECRET unless
    APPEALS_DEV_MODE=1; returns the warnings to show (development mode)."""
    problem = jwt_secret_problem(settings.jwt_secret)
    if problem is None:
        return []
    if settings.dev_mode:
        return [f"DEVELOPMENT MODE ({DEV_MODE_ENV}=1): APPEALS_JWT_SECRET {problem}. Anyone who "
                "knows it can mint any token: never run like this where others can reach the "
                "services"]
    raise SettingsError(
        f"APPEALS_JWT_SECRET {problem}: refusing to start. Set it to a long random value, the "
        "same for every service, e.g. APPEALS_JWT_SECRET=$(openssl rand -hex 32) "
        f"(on a development machine {DEV_MODE_ENV}=1 accepts the built-in one)")


def _date(env: dict[str, str], key: str, default: date) -> date:
    raw = env.get(key)
    if not raw:
        return default
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise SettingsError(f"{key} must be a date like 2026-05-27, got {raw!r}") from None


def _offset(env: dict[str, str]) -> float:
    try:
        return parse_offset(env.get(OFFSET_ENV))
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _int(env: dict[str, str], key: str, default: int | None = None) -> int:
    raw = env.get(key)
    if raw is None:
        if default is None:
            raise SettingsError(f"{key} is required")
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{key} must be an integer, got {raw!r}") from None
