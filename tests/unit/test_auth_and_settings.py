import os
import subprocess
import sys
from datetime import timedelta

import pytest

from appeals_common.auth import AuthError, authenticate, issue_token, require
from appeals_common.deadlines import DeadlinePolicy
from appeals_common.settings import SettingsError, load_settings

SECRET = "s" * 40


def test_token_roundtrip_and_roles():
    token = issue_token(SECRET, "dept-user", "department", "zjj")
    principal = authenticate(f"Bearer {token}", SECRET)
    assert (principal.role, principal.dept_code) == ("department", "zjj")
    require(principal, "department")
    with pytest.raises(AuthError) as err:
        require(principal, "bureau_staff")
    assert err.value.status == 403


@pytest.mark.parametrize("header", [None, "Basic abc", "Bearer nonsense"])
def test_bad_credentials_are_401(header):
    with pytest.raises(AuthError) as err:
        authenticate(header, SECRET)
    assert err.value.status == 401


def test_wrong_secret_and_expired_tokens_are_refused():
    token = issue_token("x" * 40, "a", "viewer")
    with pytest.raises(AuthError):
        authenticate(f"Bearer {token}", SECRET)
    old = issue_token(SECRET, "a", "viewer", ttl=timedelta(seconds=-90))
    with pytest.raises(AuthError, match="expired"):
        authenticate(f"Bearer {old}", SECRET)
    # Hosts' clocks differ: a token that expired 30 s ago by ours is still good.
    just = issue_token(SECRET, "a", "viewer", ttl=timedelta(seconds=-30))
    assert authenticate(f"Bearer {just}", SECRET).subject == "a"


def test_department_token_needs_a_department():
    with pytest.raises(ValueError):
        issue_token(SECRET, "a", "department")


def test_settings_from_env():
    s = load_settings({"APPEALS_DATABASE_URL": "postgresql://h/appeals_{service}",
                       "APPEALS_RETRY_DELAYS_MS": "100,200"})
    assert s.database_url_for("intake") == "postgresql://h/appeals_intake"
    assert s.retry_delays_ms == (100, 200)
    with pytest.raises(SettingsError, match="{service}"):
        load_settings({"APPEALS_DATABASE_URL": "postgresql://h/one"}).database_url_for("intake")
    with pytest.raises(SettingsError):
        load_settings({"APPEALS_QUEUE_TYPE": "stream"})


def test_deadline_policy_on_the_calendar():
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from appeals_common.calendar import WorkingCalendar

    cal = WorkingCalendar()
    tz = ZoneInfo("Asia/Shanghai")
    # Assigned Wednesday 30 Sep 2026, before the National Day holiday (1-7 Oct; Sat 10 Oct
    # is a make-up working day).
    d = DeadlinePolicy().for_assignment(cal, datetime(2026, 9, 30, 10, tzinfo=tz), "normal")
    assert d.sign_by.date().isoformat() == "2026-10-08"
    assert d.respond_by.date().isoformat() == "2026-10-13"  # 8, 9, 10, 12, 13
    assert not d.provisional
    urgent = DeadlinePolicy().for_assignment(cal, datetime(2026, 9, 30, 10, tzinfo=tz), "urgent")
    assert urgent.sign_by == datetime(2026, 9, 30, 12, tzinfo=tz)
    late = DeadlinePolicy().for_assignment(cal, datetime(2026, 12, 28, 10, tzinfo=tz), "normal")
    assert late.respond_by.year == 2027 and late.provisional == (not cal.covers(2027))


def test_the_latest_date_an_extension_may_reach_counts_in_the_provisional_flag() -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from appeals_common.calendar import WorkingCalendar
    from tests.tools_time import first_uncovered_year

    cal, year = WorkingCalendar(), first_uncovered_year()
    assigned = datetime(year - 1, 12, 15, 10, tzinfo=ZoneInfo("Asia/Shanghai"))
    d = DeadlinePolicy().for_assignment(cal, assigned, "normal")
    # Sign, return and respond fall in the covered year; only `latest` reaches the next.
    assert (d.sign_by.year, d.return_by.year, d.respond_by.year) == (year - 1,) * 3
    assert d.latest_respond_by.year == year
    assert d.provisional and d.provisional_years == {year}


# --- No weak JWT secret outside development; tokens live for hours -----------------------

GOOD_SECRET = "0f3c9a1e5b7d2468ace13579bdf02468ace13579bdf02468ace13579bdf02468"


@pytest.mark.parametrize(("secret", "why"), [
    (None, "is not set"),
    ("", "is not set"),
    ("insecure-development-secret-set-APPEALS_JWT_SECRET", "built-in development value"),
    ("change-me", "9 bytes long; at least 32"),
    ("short-but-random-9f8e7d6c5b4a", "bytes long; at least 32"),
    ("CHANGE-ME-a-long-random-secret-for-the-suite", "placeholder"),
    ("please_ChangeMe_before_production_use_0123456789", "placeholder"),
    ("an-example-value-of-forty-bytes-0123456789", "placeholder"),
    ("a-placeholder-that-is-long-enough-1234567", "placeholder"),
    ("my-super-secret-jwt-signing-key-for-production", "placeholder"),
    ("x" * 64, "placeholder"),
])
def test_services_refuse_to_start_with_a_weak_jwt_secret(secret, why):
    from appeals_common.settings import check_service_start

    env = {} if secret is None else {"APPEALS_JWT_SECRET": secret}
    with pytest.raises(SettingsError) as err:
        check_service_start(load_settings(env))
    message = str(err.value)
    assert "APPEALS_JWT_SECRET" in message and why in message and "refusing to start" in message
    assert "APPEALS_DEV_MODE=1" in message  # says how a development machine gets past it
    if secret and len(secret) > 12:
        assert secret not in message  # never echoed
    # A development run says so instead of refusing.
    warnings = check_service_start(load_settings({**env, "APPEALS_DEV_MODE": "1"}))
    assert len(warnings) == 1 and "DEVELOPMENT MODE" in warnings[0]


@pytest.mark.parametrize("secret", [
    GOOD_SECRET,
    "e2e-secret-0123456789-0123456789-abcdef",  # the end-to-end tests' (40 bytes, digits)
    "Jx7kQ2mV9pL4wR8tZ3nB6cF1hD5gS0aY-uE_iO",  # token_urlsafe-like
])
def test_a_long_random_jwt_secret_starts(secret):
    from appeals_common.settings import check_service_start

    assert check_service_start(load_settings({"APPEALS_JWT_SECRET": secret})) == []


def test_generated_secrets_are_never_taken_for_placeholders():
    import secrets

    from appeals_common.settings import jwt_secret_problem

    for _ in range(2000):
        assert jwt_secret_problem(secrets.token_hex(32)) is None
        assert jwt_secret_problem(secrets.token_urlsafe(32)) is None


def test_dev_mode_and_token_max_hours_settings():
    assert not load_settings({}).dev_mode
    assert load_settings({"APPEALS_DEV_MODE": "1"}).dev_mode
    assert not load_settings({"APPEALS_DEV_MODE": "0"}).dev_mode
    assert load_settings({}).token_max_hours == 12
    assert load_settings({"APPEALS_TOKEN_MAX_HOURS": "4"}).token_max_hours == 4
    for bad in ("x", "0", "-1", "1000"):
        with pytest.raises(SettingsError, match="APPEALS_TOKEN_MAX_HOURS"):
            load_settings({"APPEALS_TOKEN_MAX_HOURS": bad})


def _claims(token: str) -> dict:
    import jwt

    return jwt.decode(token, options={"verify_signature": False})


def test_tokens_live_hours_and_longer_ones_are_refused(monkeypatch):
    monkeypatch.delenv("APPEALS_TOKEN_MAX_HOURS", raising=False)
    token = issue_token(SECRET, "a", "viewer")
    claims = _claims(token)
    assert claims["exp"] - claims["iat"] == 8 * 3600  # a working day, not a month
    assert authenticate(f"Bearer {token}", SECRET).subject == "a"
    assert authenticate(f"Bearer {issue_token(SECRET, 'a', 'viewer', ttl=timedelta(hours=12))}",
                        SECRET).subject == "a"
    for ttl in (timedelta(hours=12, seconds=1), timedelta(days=30)):
        long_lived = issue_token(SECRET, "a", "viewer", ttl=ttl)
        with pytest.raises(AuthError) as err:
            authenticate(f"Bearer {long_lived}", SECRET)
        assert (err.value.status, err.value.message) == (401, "token lifetime longer than allowed")
    # The maximum is a setting (read as each token is checked) or an argument.
    day = issue_token(SECRET, "a", "viewer", ttl=timedelta(hours=24))
    monkeypatch.setenv("APPEALS_TOKEN_MAX_HOURS", "24")
    assert authenticate(f"Bearer {day}", SECRET).subject == "a"
    with pytest.raises(AuthError, match="lifetime longer than allowed"):
        authenticate(f"Bearer {day}", SECRET, max_lifetime=timedelta(hours=1))


def test_a_token_must_say_when_it_was_issued_and_not_in_the_future():
    from datetime import UTC, datetime

    import jwt

    now = datetime.now(UTC)
    no_iat = jwt.encode({"sub": "a", "role": "viewer", "iss": "appeals-suite",
                         "exp": now + timedelta(hours=1)}, SECRET, algorithm="HS256")
    with pytest.raises(AuthError, match="iat"):
        authenticate(f"Bearer {no_iat}", SECRET)
    # An `iat` in the future would let a far `exp` pass as a short lifetime: refused.
    ahead = jwt.encode({"sub": "a", "role": "viewer", "iss": "appeals-suite",
                        "iat": now + timedelta(days=29), "exp": now + timedelta(days=30)},
                       SECRET, algorithm="HS256")
    with pytest.raises(AuthError) as err:
        authenticate(f"Bearer {ahead}", SECRET)
    assert err.value.status == 401


def test_appeals_token_issues_hours_and_refuses_more_than_allowed(monkeypatch, capsys):
    from appeals_common import cli

    for key in ("APPEALS_DEV_MODE", "APPEALS_TOKEN_MAX_HOURS"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("APPEALS_JWT_SECRET", GOOD_SECRET)
    assert cli.main(["token", "--role", "viewer", "--subject", "v"]) == 0
    claims = _claims(capsys.readouterr().out.strip())
    assert claims["exp"] - claims["iat"] == 8 * 3600
    assert cli.main(["token", "--role", "viewer", "--subject", "v", "--hours", "2"]) == 0
    claims = _claims(capsys.readouterr().out.strip())
    assert claims["exp"] - claims["iat"] == 2 * 3600
    assert cli.main(["token", "--role", "viewer", "--subject", "v", "--hours", "13"]) == 2
    assert "APPEALS_TOKEN_MAX_HOURS" in capsys.readouterr().err
    # No token signed with a secret the services refuse, outside development mode.
    monkeypatch.delenv("APPEALS_JWT_SECRET")
    assert cli.main(["token", "--role", "viewer", "--subject", "v"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "APPEALS_JWT_SECRET" in out.err
    monkeypatch.setenv("APPEALS_DEV_MODE", "1")
    assert cli.main(["token", "--role", "viewer", "--subject", "v"]) == 0
    assert "development mode" in capsys.readouterr().err


def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("APPEALS_JWT_SECRET", "APPEALS_DEV_MODE")}
    return subprocess.run([sys.executable, "-m", "appeals_common.cli", *args],
                          env={**base, **env}, capture_output=True, text=True, timeout=120)


def test_appeals_run_and_up_refuse_a_weak_secret_before_touching_anything(tmp_path):
    # A broker nobody listens on: the refusal comes before any connection is tried.
    env = {"APPEALS_AMQP_URI": "amqp://guest:guest@127.0.0.1:1/",
           "APPEALS_DATABASE_URL": f"sqlite:///{tmp_path}/{{service}}.db",
           "APPEALS_JWT_SECRET": "change-me"}
    run = _run_cli("run", "intake", env=env)
    assert run.returncode != 0
    assert "appeals run intake: APPEALS_JWT_SECRET is 9 bytes long" in run.stderr
    up = _run_cli("up", "--log-dir", str(tmp_path / "log"), env={
        **env, "APPEALS_JWT_SECRET": "CHANGE-ME-a-long-random-secret-for-the-suite"})
    assert up.returncode == 2
    assert "appeals up: APPEALS_JWT_SECRET looks like a placeholder" in up.stderr
    assert not (tmp_path / "log").exists() and not list(tmp_path.glob("*.db"))


def test_the_launcher_refuses_a_weak_secret_before_starting_a_service(tmp_path):
    from appeals_common.launcher import SuiteProcesses

    suite = SuiteProcesses(env={"APPEALS_JWT_SECRET": "", "APPEALS_DEV_MODE": ""},
                           log_dir=tmp_path)
    with pytest.raises(SettingsError, match="APPEALS_JWT_SECRET is not set"):
        suite.start_all(timeout=1)
    assert suite.procs == {}
