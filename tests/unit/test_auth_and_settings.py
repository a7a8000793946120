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
