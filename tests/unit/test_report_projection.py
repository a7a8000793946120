"""Reporting's pure parts: report periods, rate arithmetic, the projection (any arrival
order gives the same read model), and the roll-up agreeing with the facts it sums."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from appeals_common.envelope import Event
from appeals_common.reference import SATISFIED_GRADES
from services.reporting.domain import (
    ParameterError,
    Period,
    bucket_of,
    buckets_in,
    local_day,
    parse_period,
    ratio,
    response_bucket,
)
from services.reporting.models import (
    APPEAL_FACTS,
    ASSIGNMENT_FACTS,
    FOLLOWUP_FACTS,
    PROJECTION_TABLES,
)
from services.reporting.projection import TABLES, Projection, columns, lock_keys, needs
from tests.unit.test_report_scenario import TZ, Reporting, Scenario, at, build, end_of

TODAY = date(2026, 12, 10)


# --- periods and rates --------------------------------------------------------------------

@pytest.mark.parametrize(("params", "expected"), [
    ({}, ("year", "2026-01-01", "2026-12-31", "2026")),
    ({"year": "2025"}, ("year", "2025-01-01", "2025-12-31", "2025")),
    ({"period": "quarter", "year": "2026", "quarter": "4"},
     ("quarter", "2026-10-01", "2026-12-31", "2026-Q4")),
    ({"quarter": "1"}, ("quarter", "2026-01-01", "2026-03-31", "2026-Q1")),
    ({"period": "month", "year": "2024", "month": "2"},
     ("month", "2024-02-01", "2024-02-29", "2024-02")),
    ({"month": "12"}, ("month", "2026-12-01", "2026-12-31", "2026-12")),
    ({"from": "2026-11-05", "to": "2026-11-05"},
     ("custom", "2026-11-05", "2026-11-05", "2026-11-05..2026-11-05")),
    ({"period": "custom", "from": "2025-12-31", "to": "2026-01-01"},
     ("custom", "2025-12-31", "2026-01-01", "2025-12-31..2026-01-01")),
])
def test_periods(params, expected):
    period = parse_period(params, TODAY)
    assert (period.kind, period.start.isoformat(), period.end.isoformat(), period.label) == expected


@pytest.mark.parametrize(("params", "field"), [
    ({"period": "week"}, "period"),
    ({"period": "quarter", "quarter": "5"}, "quarter"),
    ({"period": "quarter"}, "quarter"),
    ({"period": "month", "month": "0"}, "month"),
    ({"period": "month"}, "month"),
    ({"year": "1999"}, "year"),
    ({"year": "twenty"}, "year"),
    ({"period": "custom"}, "from"),
    ({"period": "custom", "from": "2026-01-01"}, "to"),
    ({"from": "2026-02-30", "to": "2026-03-01"}, "from"),
    ({"from": "2026-1-1", "to": "2026-03-01"}, "from"),
    ({"from": "2026-03-02", "to": "2026-03-01"}, "to"),
    ({"from": "2000-01-01", "to": "2026-03-01"}, "to"),  # more than ten years
    ({"period": "quarter", "quarter": "2", "month": "4"}, "month"),
    ({"from": "2026-01-01", "to": "2026-02-01", "year": "2026"}, "year"),
])
def test_bad_periods_say_which_parameter(params, field):
    with pytest.raises(ParameterError) as refused:
        parse_period(params, TODAY)
    assert field in refused.value.errors


def test_period_bounds_are_local_midnights():
    start, end = parse_period({"month": "10"}, TODAY).bounds(TZ)
    assert (start.isoformat(), end.isoformat()) == ("2026-09-30T16:00:00+00:00",
                                                    "2026-10-31T16:00:00+00:00")
    assert local_day(datetime.fromisoformat("2026-09-30T23:30:00+00:00"), TZ) == date(2026, 10, 1)


def test_buckets_and_rates():
    assert bucket_of(date(2026, 11, 30), "quarter") == "2026-Q4"
    assert bucket_of(date(2026, 1, 31), "month") == "2026-01"
    period = Period("custom", date(2025, 11, 15), date(2026, 2, 3), "x")
    assert buckets_in(period, "month") == ["2025-11", "2025-12", "2026-01", "2026-02"]
    assert buckets_in(period, "quarter") == ["2025-Q4", "2026-Q1"]
    assert buckets_in(period, "year") == ["2025", "2026"]
    assert ratio(2, 3) == {"numerator": 2, "denominator": 3, "rate": 0.6667}
    assert ratio(0, 0) == {"numerator": 0, "denominator": 0, "rate": None}
    assert [response_bucket(s) for s in (0, 3600, 3601, 86400 * 30, 86400 * 31)] == \
        ["3600", "3600", "14400", "2592000", "+Inf"]


# --- the projection -------------------------------------------------------------------------

def test_projection_rows_are_the_tables_columns():
    for table in TABLES:
        assert set(columns(table)) == {c.name for c in PROJECTION_TABLES[table].columns}, table


def test_lock_keys_group_an_appeal_with_its_assignments():
    s = build()
    dispatched = next(e for e in s.events if e.event_type == "appeal.dispatched")
    assert lock_keys(dispatched) == {f"appeal:{dispatched.appeal_id}"}
    closed = next(e for e in s.events if e.event_type == "walkthrough_item.closed")
    assert lock_keys(closed) == {"walkthrough:WT-1", "item:WI-1"}
    assert ("items_of", "WT-1") in needs(next(e for e in s.events
                                              if e.event_type == "walkthrough.recorded"))


def apply_all(events: list[Event]) -> Projection:
    """Apply events in the order given; one that needs a row not there yet waits its turn,
    as the consumer's retry does."""
    projection = Projection(TZ, complete=True)
    pending = list(events)
    for _ in range(len(events) * 4):
        if not pending:
            break
        event = pending.pop(0)
        try:
            projection.apply(event)
        except LookupError:
            pending.append(event)
    assert not pending
    return projection


@pytest.mark.parametrize("seed", range(12))
def test_any_arrival_order_gives_the_same_read_model(seed):
    events = build().events
    in_order = apply_all(events)
    shuffled = list(events)
    random.Random(seed).shuffle(shuffled)
    assert apply_all(shuffled).rows == in_order.rows


def test_aggregates_follow_the_rows():
    """Draining after every event or once at the end adds up to the same roll-up."""
    events = build().events
    once = apply_all(events).drain().deltas
    stepwise = Projection(TZ, complete=True)
    totals: dict[str, dict[tuple, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for event in events:
        stepwise.apply(event)
        for agg, cells in stepwise.drain().deltas.items():
            for key, (n, value) in cells.items():
                totals[agg][key][0] += n
                totals[agg][key][1] += value
    for agg, cells in once.items():
        kept = {k: v for k, v in totals[agg].items() if v[0] or v[1]}
        assert {k: [v[0], pytest.approx(v[1])] for k, v in cells.items()} == kept


def test_late_or_partial_events_merge():
    p = Projection(TZ, complete=True)
    view = {"class_id": "LT-1", "state": "confirmed", "lead_entity": "fgj",
            "deadline": end_of("12-01"), "reg_nos": ["WH-1", "WH-2"]}
    p.apply(Event("class_problem.confirmed", "supervision", at("11-21 10:00"), view))
    p.apply(Event("class_problem.suggested", "supervision", at("11-20 10:00"),
                  {**view, "state": "suggested", "lead_entity": None}))
    c = p.rows["class_problem"]["LT-1"]
    assert (c["state"], c["lead_entity"], c["members"]) == ("confirmed", "fgj", 2)
    assert c["suggested_at"] == at("11-20 10:00")
    # Feedback before the order it answers (the order's event was retried).
    p.apply(Event("supervision_order.answered", "dispatch", at("11-12 10:00"), {
        "order_no": "ZD-1", "reg_no": "WH-1", "dept_code": "zjj", "feedback": "已办",
        "answered_at": at("11-12 10:00").isoformat()}))
    p.apply(Event("supervision_order.issued", "supervision", at("11-10 10:00"), {
        "order_no": "ZD-1", "reg_no": "WH-1", "dept_code": "zjj", "deadline": "respond",
        "feedback_required": True, "feedback_by": end_of("11-17")}))
    o = p.rows["order"]["ZD-1"]
    assert (o["cause"], o["answered_on_time"], o["issued_at"]) == ("overdue_respond", True,
                                                                    at("11-10 10:00"))
    # An item closed before its walkthrough's record arrived keeps its closure.
    p.apply(Event("walkthrough_item.closed", "supervision", at("11-20 10:00"), {
        "walkthrough_id": "WT-9", "item_id": "WI-9", "list": "problem", "owner": "zjj",
        "resolution": "已改", "closed_at": at("11-20 10:00").isoformat(), "on_time": True}))
    p.apply(Event("walkthrough.recorded", "supervision", at("11-13 10:00"), {
        "walkthrough_id": "WT-9", "service_item": "x", "mode": "in_person",
        "lead_unit": "zjj", "walked_on": "2026-11-13", "scores": {}, "items": [
            {"item_id": "WI-9", "list": "problem", "description": "d", "owner": "zjj",
             "due_at": end_of("11-27")}]}))
    item = p.rows["item"]["WI-9"]
    assert (item["state"], item["description"], item["walkthrough_id"]) == ("closed", "d",
                                                                           "WT-9")


def test_phones_are_masked_before_they_are_stored():
    s = Scenario()
    s.register("A1", "11-02 09:00", "sit_in", "digital_economy", "0102")
    s.emit("activity.report_submitted", at("11-20 09:00"), {
        "activity_id": "p1", "industry_chain": "digital_economy", "lead_unit": "gxj",
        "held_on": "2026-11-18", "service_items": [
            {"enterprise_name": "e", "contact_phone": "+86 139-1234-5678", "item": "i"}]})
    s.emit("walkthrough.recorded", at("11-13 10:00"), {
        "walkthrough_id": "WT-1", "service_item": "x", "mode": "in_person", "lead_unit": "zjj",
        "walked_on": "2026-11-13", "scores": {}, "summary": "窗口电话0871-63123456无人接",
        "items": [{"item_id": "WI-1", "list": "problem", "owner": "zjj",
                   "description": "请致电13912345678", "due_at": end_of("11-27")}]})
    p = apply_all(s.events)
    (appeal,) = p.rows["appeal"].values()
    assert appeal["contact_phone"] == "138****8000"
    assert p.rows["walkthrough"]["WT-1"]["summary"] == "窗口电话087****3456无人接"
    assert p.rows["item"]["WI-1"]["description"] == "请致电139****5678"
    assert "13912345678" not in p.rows["activity"]["p1"]["service_items"]
    assert "139****5678" in p.rows["activity"]["p1"]["service_items"]


def test_an_event_about_an_unknown_appeal_waits():
    p = Projection(TZ, complete=True)
    with pytest.raises(LookupError):
        p.apply(Event("appeal.responded", "dispatch", at("11-02 09:00"), {},
                      appeal_id="no-such-appeal"))
    assert not p.drain()


# --- the roll-up against the facts, on random histories -------------------------------------

NOW = datetime(2026, 12, 20, 12, 0, tzinfo=TZ)
DEPTS = ("zjj", "scjgj", "rsj", "gxj")
CHANNELS = ("sit_in", "hotline")
CHAINS = ("digital_economy", "trade_consumption", None)
CATEGORIES = ("0102", "0402", None)
GRADES = ("very_satisfied", "satisfied", "basically_satisfied", "unsatisfied",
          "very_unsatisfied")


def random_history(rng: random.Random, appeals: int) -> Scenario:
    s = Scenario()
    for n in range(1, appeals + 1):
        name = f"A{n}"
        registered = at("10-01 08:00") + timedelta(minutes=rng.randrange(0, 81 * 24 * 60))
        if registered > NOW - timedelta(hours=1):
            registered = NOW - timedelta(hours=rng.randrange(1, 48))
        on_spot = rng.random() < 0.1
        s.register(name, registered.isoformat(), rng.choice(CHANNELS), rng.choice(CHAINS),
                   rng.choice(CATEGORIES), on_spot=on_spot)
        t = registered
        if rng.random() < 0.1:
            t += timedelta(minutes=5)
            s.emit("appeal.reclassified", t, {"reg_no": name, "category": rng.choice(CATEGORIES),
                                              "industry_chain": rng.choice(CHAINS)}, name)
        if on_spot:
            if rng.random() < 0.7:
                grade = rng.choice(GRADES)
                s.followup(name, (t + timedelta(days=1)).isoformat(), grade,
                           closes=True if grade in SATISFIED_GRADES else None)
            continue
        t += timedelta(minutes=1)
        sign_by, respond_by = t + timedelta(hours=rng.choice((2, 20, 40))), t + timedelta(days=7)
        units = [("L", rng.choice(DEPTS), "lead")]
        if rng.random() < 0.4:
            units.append(("C", rng.choice(DEPTS), "co"))
        s.dispatch(name, t.isoformat(), *[(a, d, role, sign_by.isoformat(),
                                           respond_by.isoformat()) for a, d, role in units])
        lead_signed = False
        for a, _, role in units:
            fate = rng.choice(("on_time", "late", "never", "return_ok", "return_no"))
            if fate == "on_time":
                s.sign(name, a, (t + (sign_by - t) / 2).isoformat(), role, True)
                lead_signed |= role == "lead"
            elif fate == "late":
                s.sign(name, a, (sign_by + timedelta(hours=5)).isoformat(), role, False)
                lead_signed |= role == "lead"
            elif fate.startswith("return"):
                s.emit("assignment.returned", t + timedelta(minutes=30), {
                    "reg_no": name, "assignment_id": f"{name}-{a}", "role": role}, name)
                s.emit("assignment.return_decided", t + timedelta(hours=1), {
                    "reg_no": name, "assignment_id": f"{name}-{a}", "role": role,
                    "accepted": fate == "return_ok"}, name)
                if fate == "return_no" and rng.random() < 0.5:
                    s.sign(name, a, (sign_by + timedelta(hours=1)).isoformat(), role, False)
                    lead_signed |= role == "lead"
        if not lead_signed:
            continue
        answered = t + timedelta(days=rng.randrange(2, 10))
        if answered >= NOW:
            continue
        s.respond(name, "L", answered.isoformat(), rng.choice(("solved", "explained")),
                  on_time=answered <= respond_by)
        asked = answered + timedelta(days=1)
        if asked >= NOW or rng.random() < 0.2:
            continue
        grade = rng.choice(GRADES)
        s.followup(name, asked.isoformat(), grade,
                   closes=rng.random() < 0.7 if grade in SATISFIED_GRADES else None)
        if grade not in SATISFIED_GRADES:
            s.emit("appeal.reopened", asked + timedelta(seconds=2), {
                "reg_no": name, "respond_by": (asked + timedelta(days=5)).isoformat()}, name)
    s.events.sort(key=lambda e: e.occurred_at)
    return s


def brute_force(r: Reporting, period: Period, group_by: str) -> dict[Any, tuple]:
    """The four rates straight from the fact rows, by the definitions in docs/reports.md."""
    start, end = period.bounds(TZ)
    with r.store.engine.connect() as conn:
        appeals = [dict(x._mapping) for x in conn.execute(select(APPEAL_FACTS))]
        assignments = [dict(x._mapping) for x in conn.execute(select(ASSIGNMENT_FACTS))]
        followups = [dict(x._mapping) for x in conn.execute(select(FOLLOWUP_FACTS))]
    counts: dict[Any, list[int]] = defaultdict(lambda: [0] * 8)

    def key(row: dict, dept_field: str, moment: datetime) -> Any:
        if group_by == "none":
            return None
        if group_by in ("month", "quarter", "year"):
            return bucket_of(local_day(moment, TZ), group_by)
        return row[dept_field if group_by == "department" else group_by]

    for a in assignments:
        if not start <= a["sign_by"] < end:
            continue
        returned = a["returned_at"]
        if returned and a["return_rejected_at"] and a["return_rejected_at"] >= returned:
            returned = None
        left = returned or a["withdrawn_at"]
        if a["signed_at"] is None and a["state"] in ("returned", "withdrawn") and left \
                and left <= a["sign_by"]:
            continue
        if a["signed_at"] is None and a["sign_by"] > NOW:
            continue
        c = counts[key(a, "dept_code", a["sign_by"])]
        c[0] += bool(a["signed_at"] and a["signed_on_time"])
        c[1] += 1
    for a in appeals:
        if a["responded_at"] and start <= a["responded_at"] < end:
            c = counts[key(a, "lead_dept", a["responded_at"])]
            c[2] += a["outcome"] == "solved"
            c[3] += 1
        if a["closed_at"] and start <= a["closed_at"] < end:
            c = counts[key(a, "lead_dept", a["closed_at"])]
            c[6] += bool(a["closed_on_time"])
            c[7] += 1
    for f in followups:
        if start <= f["recorded_at"] < end:
            c = counts[key(f, "dept_code", f["recorded_at"])]
            c[4] += f["grade"] in SATISFIED_GRADES
            c[5] += 1
    return {k: tuple(zip(v[0::2], v[1::2], strict=True)) for k, v in counts.items() if any(v)}


@pytest.fixture(scope="module")
def random_reporting(tmp_path_factory) -> Reporting:
    r = Reporting(f"sqlite:///{tmp_path_factory.mktemp('random')}/reporting.db")
    r.clock.moment = NOW
    r.deliver(random_history(random.Random(7), 150).events)
    return r


@pytest.mark.parametrize("group_by", ["none", "department", "channel", "industry_chain",
                                      "category", "month", "quarter"])
@pytest.mark.parametrize("params", [
    {"period": "quarter", "year": "2026", "quarter": "4"},
    {"period": "month", "year": "2026", "month": "11"},
    {"from": "2026-12-01", "to": "2026-12-20"},
    {"from": "2026-12-20", "to": "2026-12-31"},  # today: the part read from the facts
])
def test_rates_from_the_roll_up_equal_the_facts(random_reporting, params, group_by):
    report = random_reporting.rates(**params, group_by=group_by)
    period = parse_period(params, NOW.date())
    expected = brute_force(random_reporting, period, group_by)
    if group_by == "none":
        assert figures_of(report["total"]) == expected.get(None, ((0, 0),) * 4)
        return
    got = {g["key"]: figures_of(g) for g in report["groups"] if any(n for _, n in figures_of(g))}
    assert got == expected


def figures_of(group: dict) -> tuple:
    return tuple((group[k]["numerator"], group[k]["denominator"])
                 for k in ("response_rate", "solve_rate", "satisfaction_rate",
                           "closed_on_time_rate"))


def test_working_days_since_agrees_with_the_calendar():
    from appeals_common.calendar import WorkingCalendar
    from services.reporting.domain import working_days_since

    calendar = WorkingCalendar()
    today = date(2026, 12, 10)
    days = [date(2023, 1, 3), date(2026, 2, 14), date(2026, 10, 1), date(2026, 11, 6), today]
    assert working_days_since(calendar.is_working_day, days, today) == {
        d: calendar.working_days_between(d, today) for d in days}
    assert working_days_since(calendar.is_working_day, [], today) == {}
