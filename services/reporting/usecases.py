"""Reporting's service layer: archive and project events, answer report queries, feed
the business metrics and the exports. docs/reports.md defines every figure."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import func, select

from appeals_common.activity_schedule import (
    PATROL_KIND,
    PROGRAMME_ISSUED,
    SIT_IN_KIND,
    ActivityRecord,
    compliance,
    in_sit_in_window,
)
from appeals_common.calendar import WorkingCalendar
from appeals_common.envelope import Event
from appeals_common.http import FieldErrors, NotFound
from appeals_common.input_guard import whole_number
from appeals_common.nameko_ext import Delivery, ServiceRuntime
from appeals_common.privacy import mask_personal, mask_phone
from appeals_common.reference import (
    ACTIVITY_KINDS,
    CHANNELS,
    SATISFIED_GRADES,
    WALKTHROUGH_LISTS,
    WALKTHROUGH_MODES,
)
from appeals_common.registries import (
    Category,
    Department,
    IndustryChain,
    load_categories,
    load_departments,
    load_industry_chains,
)
from appeals_common.settings import Settings
from services.reporting import exports, queries, readmodel
from services.reporting.domain import (
    GROUP_BYS,
    RESPONSE_BUCKETS,
    TIME_BUCKETS,
    ParameterError,
    Period,
    buckets_in,
    check_known,
    local_day,
    parse_period,
    ratio,
    working_days_since,
)
from services.reporting.models import (
    ACTIVITY_FACTS,
    APPEAL_FACTS,
    ASSIGNMENT_FACTS,
    CLASS_PROBLEM_FACTS,
    FOLLOWUP_FACTS,
    WALKTHROUGH_FACTS,
    WALKTHROUGH_ITEM_FACTS,
)
from services.reporting.projection import response_status

EVENTS_CONSUMER = "reporting.events"
PERIOD_PARAMS = ("period", "year", "quarter", "month", "from", "to")
MAX_PARAM_LENGTH = 100
DEFINITIONS = "docs/reports.md"


@dataclass(frozen=True)
class ReportingContext:
    """Reference data and time for reports: labels, the working-day calendar, the zone."""

    tz_name: str
    calendar: WorkingCalendar
    departments: Mapping[str, Department]
    chains: Mapping[str, IndustryChain]
    categories: Mapping[str, Category]
    programme_start: date = PROGRAMME_ISSUED

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.tz_name)

    @classmethod
    def load(cls, settings: Settings, calendar: WorkingCalendar | None = None
             ) -> ReportingContext:
        config: Path = settings.config_dir
        departments = load_departments(config)
        return cls(settings.timezone,
                   calendar or WorkingCalendar.from_file(config / "calendar_overrides.yaml",
                                                         tz=settings.timezone),
                   departments, load_industry_chains(config, departments),
                   load_categories(config), settings.programme_start)

    def label(self, dim: str, key: str | None) -> str | None:
        if key is None:
            return None
        if dim == "department":
            return getattr(self.departments.get(key), "name", None)
        if dim == "industry_chain":
            return getattr(self.chains.get(key), "name", None)
        if dim == "category":
            return getattr(self.categories.get(key), "name", None)
        if dim == "channel":
            return CHANNELS.get(key)
        return key


# --- events ------------------------------------------------------------------------------

def on_event(runtime: ServiceRuntime, ctx: ReportingContext, delivery: Delivery) -> None:
    event = Event.from_json(delivery.body)
    with runtime.unit_of_work() as uow:
        if not uow.first_time(EVENTS_CONSUMER, event.event_id):
            return
        conn = uow.session.connection()
        readmodel.project_live(conn, event, ctx.tz)
        readmodel.archive(conn, event, delivery.body)


def rebuild(runtime: ServiceRuntime, ctx: ReportingContext) -> dict[str, Any]:
    result = readmodel.rebuild(runtime.store.engine, ctx.tz)
    assert result is not None
    return result.view()


# --- parameters ----------------------------------------------------------------------------

def _params(raw: Mapping[str, str], allowed: tuple[str, ...]) -> dict[str, str]:
    params = {k: v for k, v in raw.items()}
    try:
        check_known(params, allowed)
    except ParameterError as exc:
        raise FieldErrors(exc.errors) from None
    long = {k: [f"at most {MAX_PARAM_LENGTH} characters"] for k, v in params.items()
            if len(v) > MAX_PARAM_LENGTH}
    if long:
        raise FieldErrors(long)
    return params


def _period(params: Mapping[str, str], today: date, optional: bool = False) -> Period | None:
    if optional and not any(params.get(k) for k in PERIOD_PARAMS):
        return None
    try:
        return parse_period({k: params[k] for k in PERIOD_PARAMS if k in params}, today)
    except ParameterError as exc:
        raise FieldErrors(exc.errors) from None


def _choice(params: Mapping[str, str], name: str, choices: tuple[str, ...] | list[str],
            default: str | None) -> str | None:
    value = params.get(name) or default
    if value is not None and value not in choices:
        raise FieldErrors({name: [f"must be one of {', '.join(choices)}, got {value!r}"]})
    return value


def _bounded_int(params: Mapping[str, str], name: str, default: int, low: int, high: int
                 ) -> int:
    raw = params.get(name)
    if not raw:
        return default
    value = whole_number(raw, len(str(high)))
    if value is None or not low <= value <= high:
        raise FieldErrors({name: [f"must be a whole number from {low} to {high}, got {raw[:40]!r}"]})
    return value


def _iso(moment: datetime | date | None) -> str | None:
    return moment.isoformat() if moment is not None else None


# --- 三率 and 按时办结率 ---------------------------------------------------------------------

def rates(runtime: ServiceRuntime, ctx: ReportingContext, raw: Mapping[str, str]
          ) -> dict[str, Any]:
    params = _params(raw, (*PERIOD_PARAMS, "group_by"))
    now = runtime.now()
    group_by = _choice(params, "group_by", GROUP_BYS, "none")
    period = _period(params, local_day(now, ctx.tz))
    assert period is not None and group_by is not None
    with runtime.store.read() as session:
        cells = queries.rate_cells(session.connection(), period, group_by, ctx.tz, now)
    if group_by in TIME_BUCKETS:
        keys: list[str | None] = list(buckets_in(period, group_by))
    elif group_by == "none":
        keys = []
    else:
        keys = sorted(cells, key=lambda k: (k is None, k or ""))
    groups = [{"key": key, "label": ctx.label(group_by, key), **_rates_of(cells.get(key, {}))}
              for key in keys]
    total: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for measures in cells.values():
        for measure, (n, hit) in measures.items():
            total[measure][0] += n
            total[measure][1] += hit
    return {"period": period.view(ctx.tz_name), "group_by": group_by, "as_of": now.isoformat(),
            "groups": groups, "total": _rates_of(total), "definitions": DEFINITIONS}


def _rates_of(measures: Mapping[str, list[int]]) -> dict[str, Any]:
    def get(name: str) -> tuple[int, int]:
        n, hit = measures.get(name, (0, 0))
        return int(n), int(hit)

    signed, on_time = get("response")
    unsigned, _ = get("response_open")
    responded, solved = get("solve")
    followed, satisfied = get("satisfaction")
    closed, closed_on_time = get("close")
    return {"response_rate": ratio(on_time, signed + unsigned),
            "solve_rate": ratio(solved, responded),
            "satisfaction_rate": ratio(satisfied, followed),
            "closed_on_time_rate": ratio(closed_on_time, closed)}


def summary(runtime: ServiceRuntime, ctx: ReportingContext, start: datetime | None,
            end: datetime | None) -> dict[str, Any]:
    with runtime.store.read() as session:
        c = queries.summary_counts(session.connection(), start, end, ctx.tz)
    return {"registered": sum(c["by_state"].values()), "by_state": c["by_state"],
            "by_channel": c["by_channel"], "responded": c["responded"], "closed": c["closed"],
            "solve_rate": ratio(c["solved"], c["responded"])["rate"],
            "satisfaction_rate": ratio(c["satisfied"], c["followed"])["rate"],
            "closed_on_time_rate": ratio(c["closed_on_time"], c["closed"])["rate"]}


# --- overdue --------------------------------------------------------------------------------

def overdue(runtime: ServiceRuntime, ctx: ReportingContext, raw: Mapping[str, str]
            ) -> dict[str, Any]:
    params = _params(raw, ("dept", "kind", "limit", "offset"))
    kind = _choice(params, "kind", queries.DUTY_KINDS, None)
    dept = params.get("dept") or None
    if dept is not None and dept not in ctx.departments:
        raise FieldErrors({"dept": [f"unknown department {dept!r}"]})
    limit = _bounded_int(params, "limit", 100, 1, 1000)
    offset = _bounded_int(params, "offset", 0, 0, 10_000_000)
    kinds = (kind,) if kind else queries.DUTY_KINDS
    now = runtime.now()
    with runtime.store.read() as session:
        conn = session.connection()
        counts = queries.overdue_counts(conn, now, kinds, dept)
        page = queries.overdue_page(conn, now, kinds, dept, limit, offset)
    by_dept: Counter[str] = Counter()
    by_kind: Counter[str] = Counter()
    for k, d, n in counts:
        by_dept[d or ""] += n
        by_kind[k] += n
    today = local_day(now, ctx.tz)
    working = working_days_since(ctx.calendar.is_working_day,
                                 (local_day(row.due_at, ctx.tz) for row in page), today)
    items = [{"kind": row.kind, "ref": row.ref, "reg_no": row.reg_no,
              "dept_code": row.dept_code, "dept_name": ctx.label("department", row.dept_code),
              "due_at": row.due_at.isoformat(),
              "working_days_overdue": working[local_day(row.due_at, ctx.tz)],
              "days_overdue": (today - local_day(row.due_at, ctx.tz)).days}
             for row in page]
    return {"as_of": now.isoformat(), "total": sum(by_kind.values()),
            "by_dept": dict(sorted(by_dept.items())), "by_kind": dict(sorted(by_kind.items())),
            "limit": limit, "offset": offset, "items": items}


# --- class problems, walkthroughs, activities ------------------------------------------------

def class_problems(runtime: ServiceRuntime, ctx: ReportingContext, raw: Mapping[str, str]
                   ) -> dict[str, Any]:
    params = _params(raw, ("state", "industry_chain"))
    state = _choice(params, "state", ("suggested", "confirmed", "resolved", "closed",
                                      "dismissed"), None)
    chain = params.get("industry_chain") or None
    now = runtime.now()
    c = CLASS_PROBLEM_FACTS.c
    query = select(CLASS_PROBLEM_FACTS).order_by(c.suggested_at.desc(), c.class_id)
    if state:
        query = query.where(c.state == state)
    if chain:
        query = query.where(c.industry_chain == chain)
    with runtime.store.read() as session:
        rows = [dict(r._mapping) for r in session.connection().execute(query.limit(1000))]
        counts = dict(session.connection().execute(
            select(c.state, func.count()).group_by(c.state)).all())
    items = []
    for row in rows:
        deadline, resolved = row["deadline"], row["resolved_at"]
        items.append({
            "class_id": row["class_id"], "state": row["state"],
            "industry_chain": row["industry_chain"],
            "industry_chain_name": ctx.label("industry_chain", row["industry_chain"]),
            "category": row["category"], "category_name": ctx.label("category", row["category"]),
            "keywords": json.loads(row["keywords"]), "score": row["score"],
            "reg_nos": json.loads(row["reg_nos"]), "members": row["members"],
            "lead_entity": row["lead_entity"],
            "lead_entity_name": ctx.label("department", row["lead_entity"]),
            "units": json.loads(row["units"]), "deadline": _iso(deadline),
            "measures": row["measures"], "promote": row["promote"], "note": row["note"],
            **{step: _iso(row[step]) for step in ("suggested_at", "confirmed_at", "resolved_at",
                                                  "closed_at", "dismissed_at")},
            "resolved_on_time": (resolved <= deadline) if resolved and deadline else None,
            "overdue": row["state"] == "confirmed" and deadline is not None and deadline < now,
        })
    return {"as_of": now.isoformat(), "counts": {k: int(v) for k, v in sorted(counts.items())},
            "items": items}


def walkthroughs(runtime: ServiceRuntime, ctx: ReportingContext, raw: Mapping[str, str]
                 ) -> dict[str, Any]:
    params = _params(raw, (*PERIOD_PARAMS, "lead_unit"))
    now = runtime.now()
    period = _period(params, local_day(now, ctx.tz), optional=True)
    w, i = WALKTHROUGH_FACTS.c, WALKTHROUGH_ITEM_FACTS.c
    query = select(WALKTHROUGH_FACTS).order_by(w.walked_on.desc(), w.walkthrough_id).limit(500)
    if period is not None:
        query = query.where(w.walked_on >= period.start, w.walked_on <= period.end)
    if params.get("lead_unit"):
        query = query.where(w.lead_unit == params["lead_unit"])
    with runtime.store.read() as session:
        conn = session.connection()
        walks = [dict(r._mapping) for r in conn.execute(query)]
        ids = [row["walkthrough_id"] for row in walks]
        items = [dict(r._mapping) for r in conn.execute(
            select(WALKTHROUGH_ITEM_FACTS).where(i.walkthrough_id.in_(ids))
            .order_by(i.due_at, i.item_id))] if ids else []
    by_walk: dict[str, list[dict]] = defaultdict(list)
    for item in items:
        by_walk[item["walkthrough_id"]].append(item)
    totals = {name: {"open": 0, "closed": 0, "closed_on_time": 0, "overdue": 0}
              for name in WALKTHROUGH_LISTS}
    out = []
    for row in walks:
        lists: dict[str, dict[str, Any]] = {name: {"label": label, "open": 0, "closed": 0,
                                                   "items": []}
                                            for name, label in WALKTHROUGH_LISTS.items()}
        for item in by_walk[row["walkthrough_id"]]:
            name = item["list"] if item["list"] in lists else "problem"
            overdue_now = item["state"] == "open" and item["due_at"] is not None \
                and item["due_at"] < now
            lists[name][item["state"]] = lists[name].get(item["state"], 0) + 1
            t = totals[name]
            t[item["state"]] = t.get(item["state"], 0) + 1
            t["closed_on_time"] += 1 if item["state"] == "closed" and item["on_time"] else 0
            t["overdue"] += 1 if overdue_now else 0
            lists[name]["items"].append({
                "item_id": item["item_id"], "description": item["description"],
                "owner": item["owner"], "due_at": _iso(item["due_at"]), "state": item["state"],
                "closed_at": _iso(item["closed_at"]), "on_time": item["on_time"],
                "resolution": item["resolution"], "overdue": overdue_now})
        out.append({
            "walkthrough_id": row["walkthrough_id"], "service_item": row["service_item"],
            "mode": row["mode"], "mode_label": WALKTHROUGH_MODES.get(row["mode"] or ""),
            "lead_unit": row["lead_unit"], "walked_on": _iso(row["walked_on"]),
            "scores": {k: row[k] for k in ("accuracy", "smoothness", "proofs", "experience",
                                           "conduct")},
            "summary": row["summary"], "lists": lists})
    return {"as_of": now.isoformat(),
            "period": period.view(ctx.tz_name) if period else None,
            "count": len(out), "by_mode": dict(sorted(Counter(
                r["mode"] for r in out if r["mode"]).items())),
            "totals": totals, "walkthroughs": out}


def _activities(conn: Any, start: date, end: date, kinds: tuple[str, ...] | None = None
                ) -> list[dict[str, Any]]:
    v = ACTIVITY_FACTS.c
    query = select(ACTIVITY_FACTS).where(v.held_on >= start, v.held_on <= end)
    if kinds:
        query = query.where(v.kind.in_(kinds))
    return [dict(r._mapping) for r in conn.execute(query.order_by(v.held_on, v.activity_id))]


def activity_compliance(runtime: ServiceRuntime, ctx: ReportingContext,
                        raw: Mapping[str, str]) -> dict[str, Any]:
    params = _params(raw, ("year",))
    now = runtime.now()
    year = _bounded_int(params, "year", local_day(now, ctx.tz).year, 2000, 2100)
    with runtime.store.read() as session:
        rows = _activities(session.connection(), date(year, 1, 1), date(year, 12, 31),
                           (SIT_IN_KIND, PATROL_KIND))
    return _compliance_view(ctx, year, rows, now)


def _compliance_view(ctx: ReportingContext, year: int, rows: list[dict[str, Any]],
                     now: datetime) -> dict[str, Any]:
    records = [ActivityRecord(r["activity_id"], r["kind"], r["held_on"], r["industry_chain"],
                              r["plan_submitted_at"], r["report_submitted_at"])
               for r in rows if r["held_on"] is not None]
    result = compliance(ctx.calendar, year, {code: c.lead for code, c in ctx.chains.items()},
                        records, now, ctx.programme_start)
    flags: list[dict[str, Any]] = []
    tallies: dict[str, Counter[str]] = {k: Counter() for k in ("sit_ins", "chains", "plans",
                                                                "reports")}
    for sit_in in result["sit_ins"]:
        tallies["sit_ins"][sit_in["status"]] += 1
        if sit_in["status"] == "missed":
            flags.append({"flag": "sit_in_missed", "month": sit_in["month"]})
        for activity in sit_in["activities"]:
            if not activity["in_window"]:
                flags.append({"flag": "sit_in_outside_mid_month",
                              "activity_id": activity["activity_id"]})
    for chain in result["patrols"]:
        chain["industry_chain_name"] = ctx.label("industry_chain", chain["industry_chain"])
        chain["lead_unit_name"] = ctx.label("department", chain["lead_unit"])
        tallies["chains"][chain["status"]] += 1
        if chain["status"] == "missed":
            flags.append({"flag": "patrol_missing", "industry_chain": chain["industry_chain"]})
        for patrol in chain["patrols"]:
            for filing in ("plan", "report"):
                tallies[f"{filing}s"][patrol[filing]] += 1
                if patrol[filing] in ("late", "missing"):
                    flags.append({"flag": f"{filing}_{patrol[filing]}",
                                  "activity_id": patrol["activity_id"],
                                  "industry_chain": chain["industry_chain"]})
    return {**result, "as_of": now.isoformat(),
            "summary": {k: dict(sorted(v.items())) for k, v in tallies.items()},
            "flags": flags}


# --- metrics ----------------------------------------------------------------------------------

def metric_snapshot(runtime: ServiceRuntime, ctx: ReportingContext) -> dict[str, Any]:
    """Everything the business series need, in three cheap queries."""
    now = runtime.now()
    with runtime.store.read() as session:
        conn = session.connection()
        totals = queries.counters(conn)
        open_ = queries.open_by_state(conn)
        overdue_counts = queries.overdue_counts(conn, now)
    by_dept: Counter[str] = Counter()
    for _, dept, n in overdue_counts:
        by_dept[dept or ""] += n
    followups = {grade: n for grade, (n, _) in totals.get("followups", {}).items()}
    satisfied = sum(n for grade, n in followups.items() if grade in SATISFIED_GRADES)
    buckets = totals.get("response_bucket", {})
    cumulative, running = [], 0
    for bound in RESPONSE_BUCKETS:
        running += buckets.get(str(bound), (0, 0.0))[0]
        cumulative.append((float(bound), running))
    count, seconds = totals.get("response_seconds", {}).get("", (0, 0.0))
    return {
        "registered_by_channel": {k: n for k, (n, _) in totals.get("registered", {}).items()},
        "open_by_state": open_, "overdue_by_dept": dict(by_dept),
        "response_buckets": cumulative, "response_count": count, "response_sum": seconds,
        "followups_by_grade": followups,
        "satisfaction_rate": satisfied / sum(followups.values()) if followups else None,
    }


# --- data for the exports (services/reporting/exports.py writes the files) ---------------------

def patrol_report(runtime: ServiceRuntime, ctx: ReportingContext, activity_id: str
                  ) -> dict[str, Any]:
    """链式巡诊开展情况报告 with its 附件3 list (phones masked) and the appeals taken."""
    f = APPEAL_FACTS.c
    with runtime.store.read() as session:
        conn = session.connection()
        row = conn.execute(select(ACTIVITY_FACTS).where(
            ACTIVITY_FACTS.c.activity_id == activity_id)).first()
        if row is None:
            raise NotFound(f"no activity {activity_id}")
        activity = dict(row._mapping)
        appeals = [dict(r._mapping) for r in conn.execute(
            select(APPEAL_FACTS).where(f.activity_id == activity_id)
            .order_by(f.registered_at, f.reg_no))]
    # 附件3 rows as every reader (viewers too) may see them: contact phones and names
    # masked, also where a row's text repeats a contact's name.
    items = mask_personal([{**item, "contact_phone": mask_phone(item.get("contact_phone"))}
                           for item in json.loads(activity["service_items"] or "[]")])
    return {
        "activity_id": activity_id, "kind": activity["kind"],
        "kind_label": ACTIVITY_KINDS.get(activity["kind"] or ""),
        "title": activity["title"], "held_on": _iso(activity["held_on"]),
        "industry_chain": activity["industry_chain"],
        "industry_chain_name": ctx.label("industry_chain", activity["industry_chain"]),
        "lead_unit": activity["lead_unit"],
        "lead_unit_name": ctx.label("department", activity["lead_unit"]),
        "plan_due_at": _iso(activity["plan_due_at"]),
        "plan_submitted_at": _iso(activity["plan_submitted_at"]),
        "plan_on_time": activity["plan_on_time"],
        "report_due_at": _iso(activity["report_due_at"]),
        "report_submitted_at": _iso(activity["report_submitted_at"]),
        "report_on_time": activity["report_on_time"],
        "policies_delivered": activity["policies_delivered"],
        "enterprises_served": activity["enterprises_served"],
        "class_problems": json.loads(activity["class_problems"] or "[]"),
        "summary": activity["report_summary"], "service_items": items,
        "appeals": [_appeal_line(ctx, a) for a in appeals],
    }


def _appeal_line(ctx: ReportingContext, a: Mapping[str, Any]) -> dict[str, Any]:
    return {"reg_no": a["reg_no"], "registered_at": _iso(a["registered_at"]),
            "enterprise_name": a["enterprise_name"], "contact_phone": a["contact_phone"],
            "title": a["title"], "channel": a["channel"], "category": a["category"],
            "category_name": ctx.label("category", a["category"]),
            "industry_chain": a["industry_chain"], "lead_dept": a["lead_dept"],
            "lead_dept_name": ctx.label("department", a["lead_dept"]), "state": a["state"],
            "responded_at": _iso(a["responded_at"]), "outcome": a["outcome"],
            "grade": a["last_grade"], "closed_at": _iso(a["closed_at"]),
            "closed_on_time": a["closed_on_time"], "activity_id": a["activity_id"]}


def sitin_summary(runtime: ServiceRuntime, ctx: ReportingContext, raw: Mapping[str, str]
                  ) -> dict[str, Any]:
    """A quarter's 局长坐诊: the sit-ins held, and the appeals taken at them with their
    figures (over those appeals, whenever their steps happened)."""
    params = _params(raw, ("year", "quarter", "format", "sheet"))
    now = runtime.now()
    today = local_day(now, ctx.tz)
    period = _period({"period": "quarter", "year": params.get("year") or str(today.year),
                      "quarter": params.get("quarter") or str((today.month - 1) // 3 + 1)},
                     today)
    assert period is not None
    f = APPEAL_FACTS.c
    with runtime.store.read() as session:
        conn = session.connection()
        sit_ins = _activities(conn, period.start, period.end, (SIT_IN_KIND,))
        ids = [s["activity_id"] for s in sit_ins]
        appeals = [dict(r._mapping) for r in conn.execute(
            select(APPEAL_FACTS).where(f.activity_id.in_(ids))
            .order_by(f.registered_at, f.reg_no))] if ids else []
        appeal_ids = [a["appeal_id"] for a in appeals]
        assignments = [dict(r._mapping) for r in conn.execute(
            select(ASSIGNMENT_FACTS).where(ASSIGNMENT_FACTS.c.appeal_id.in_(appeal_ids)))
        ] if appeal_ids else []
        followups = [dict(r._mapping) for r in conn.execute(
            select(FOLLOWUP_FACTS).where(FOLLOWUP_FACTS.c.appeal_id.in_(appeal_ids)))
        ] if appeal_ids else []
    counts = cohort_counts(appeals, assignments, followups, now)
    return {"year": period.start.year, "quarter": (period.start.month - 1) // 3 + 1,
            "period": period.view(ctx.tz_name), "as_of": now.isoformat(),
            "sit_ins": [{"activity_id": s["activity_id"], "title": s["title"],
                         "held_on": _iso(s["held_on"]), "lead_unit": s["lead_unit"],
                         "in_window": s["held_on"] is not None and in_sit_in_window(s["held_on"]),
                         "appeals": sum(1 for a in appeals
                                        if a["activity_id"] == s["activity_id"])}
                        for s in sit_ins],
            "totals": counts,
            "rates": {"response_rate": ratio(counts["signed_on_time"], counts["assigned"])["rate"],
                      "solve_rate": ratio(counts["solved"], counts["responded"])["rate"],
                      "satisfaction_rate": ratio(counts["satisfied"], counts["followed"])["rate"],
                      "closed_on_time_rate": ratio(counts["closed_on_time"],
                                                   counts["closed"])["rate"]},
            "appeals": [_appeal_line(ctx, a) for a in appeals]}


def cohort_counts(appeals: list[dict[str, Any]], assignments: list[dict[str, Any]],
                  followups: list[dict[str, Any]], now: datetime) -> dict[str, int]:
    """The rates' counts over one set of appeals, whenever their steps happened (the same
    rules as the period rates, docs/reports.md)."""
    statuses = [response_status(a) for a in assignments]
    due = [s for s, a in zip(statuses, assignments, strict=True)
           if s in ("on_time", "late") or (s == "open" and a["sign_by"] <= now)]
    return {"registered": len(appeals),
            "resolved_on_spot": sum(1 for a in appeals if a["resolved_on_spot_at"]),
            "assigned": len(due), "signed_on_time": due.count("on_time"),
            "responded": sum(1 for a in appeals if a["responded_at"]),
            "solved": sum(1 for a in appeals if a["responded_at"] and a["outcome"] == "solved"),
            "followed": len(followups), "satisfied": sum(1 for f in followups if f["satisfied"]),
            "closed": sum(1 for a in appeals if a["closed_at"]),
            "closed_on_time": sum(1 for a in appeals if a["closed_at"] and a["closed_on_time"])}


def annual_review(runtime: ServiceRuntime, ctx: ReportingContext, raw: Mapping[str, str]
                  ) -> dict[str, Any]:
    """全面复盘 of a year: totals and rates, by department, channel and chain, the class
    problems, typical cases, the activity schedule and the walkthrough lists."""
    params = _params(raw, ("year", "format", "sheet"))
    now = runtime.now()
    year = _bounded_int(params, "year", local_day(now, ctx.tz).year, 2000, 2100)
    period_params = {"period": "year", "year": str(year)}
    period = Period("year", date(year, 1, 1), date(year, 12, 31), str(year))
    review: dict[str, Any] = {"year": year, "as_of": now.isoformat(),
                              "period": period.view(ctx.tz_name)}
    total = rates(runtime, ctx, {**period_params, "group_by": "none"})["total"]
    start, end = period.bounds(ctx.tz)
    f = APPEAL_FACTS.c
    with runtime.store.read() as session:
        conn = session.connection()
        registered, on_spot = conn.execute(select(
            func.count(), func.count().filter(f.resolved_on_spot_at.is_not(None)))
            .where(f.registered_at >= start, f.registered_at < end)).one()
        cases = [dict(r._mapping) for r in conn.execute(
            select(APPEAL_FACTS).where(f.registered_at >= start, f.registered_at < end,
                                       (f.reopen_count > 0) | (f.key_orders > 0)
                                       | (f.last_grade == "very_satisfied"))
            .order_by((f.reopen_count + f.key_orders).desc(), f.registered_at).limit(20))]
        problems = [dict(r._mapping) for r in conn.execute(
            select(CLASS_PROBLEM_FACTS).where(CLASS_PROBLEM_FACTS.c.suggested_at >= start,
                                              CLASS_PROBLEM_FACTS.c.suggested_at < end)
            .order_by(CLASS_PROBLEM_FACTS.c.class_id))]
    review["totals"] = {"registered": registered, "resolved_on_spot": on_spot,
                        **_counts_of(total)}
    review["rates"] = {name: value["rate"] for name, value in total.items()}
    for group_by, key in (("department", "by_department"), ("channel", "by_channel"),
                          ("industry_chain", "by_chain"), ("category", "by_category"),
                          ("month", "by_month")):
        groups = rates(runtime, ctx, {**period_params, "group_by": group_by})["groups"]
        review[key] = [{"key": g["key"], "name": g["label"], **_counts_of(g),
                        **{name: g[name]["rate"] for name in _RATE_NAMES}} for g in groups]
    review["class_problems"] = [
        {"class_id": p["class_id"], "industry_chain": p["industry_chain"],
         "industry_chain_name": ctx.label("industry_chain", p["industry_chain"]),
         "category": p["category"], "category_name": ctx.label("category", p["category"]),
         "lead_entity": p["lead_entity"], "state": p["state"], "measures": p["measures"],
         "promote": p["promote"], "appeals": json.loads(p["reg_nos"])} for p in problems]
    review["typical_cases"] = [
        {**_appeal_line(ctx, a),
         "reason": "重办/重点督办后办结" if a["reopen_count"] or a["key_orders"] else "企业非常满意"}
        for a in cases]
    schedule = activity_compliance(runtime, ctx, {"year": str(year)})
    review["compliance"] = {
        "sit_ins": [{"month": s["month"], "held": s["status"] == "met",
                     "held_on": next((a["held_on"] for a in s["activities"] if a["in_window"]),
                                     None)} for s in schedule["sit_ins"]],
        "patrols": [{"industry_chain": c["industry_chain"], "name": c["industry_chain_name"],
                     "held": c["status"] == "met", "patrols": len(c["patrols"]),
                     "plans_on_time": sum(1 for p in c["patrols"] if p["plan"] == "on_time"),
                     "reports_on_time": sum(1 for p in c["patrols"] if p["report"] == "on_time")}
                    for c in schedule["patrols"]],
        "flags": schedule["flags"]}
    walks = walkthroughs(runtime, ctx, period_params)
    review["walkthrough_lists"] = [
        {"list": name, "total": t["open"] + t["closed"], "closed": t["closed"], "open": t["open"]}
        for name, t in walks["totals"].items()]
    return review


_RATE_NAMES = ("response_rate", "solve_rate", "satisfaction_rate", "closed_on_time_rate")


def _counts_of(group: Mapping[str, Any]) -> dict[str, int]:
    """A rates view's counts under the names the exports use."""
    return {"assigned": group["response_rate"]["denominator"],
            "signed_on_time": group["response_rate"]["numerator"],
            "responded": group["solve_rate"]["denominator"],
            "solved": group["solve_rate"]["numerator"],
            "followed": group["satisfaction_rate"]["denominator"],
            "satisfied": group["satisfaction_rate"]["numerator"],
            "closed": group["closed_on_time_rate"]["denominator"],
            "closed_on_time": group["closed_on_time_rate"]["numerator"]}


# --- the files ------------------------------------------------------------------------------

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_TYPE = "text/csv; charset=utf-8"


@dataclass(frozen=True)
class ExportFile:
    content: bytes
    media_type: str
    filename: str


def export(runtime: ServiceRuntime, ctx: ReportingContext, what: str, raw: Mapping[str, str],
           activity_id: str | None = None) -> ExportFile:
    """One export as XLSX (every sheet) or CSV (one sheet: `sheet`, 1-based, defaults to
    the main table: the 附件3 list, the appeal list, the figures by department)."""
    labels = exports.Labels.from_registries(ctx.departments, ctx.chains, ctx.categories)
    fmt = _choice(raw, "format", ("xlsx", "csv"), "xlsx")
    if what == "patrol-report":
        _params(raw, ("format", "sheet"))
        data = patrol_report(runtime, ctx, activity_id or "")
        sheets = exports.patrol_report_sheets(data, labels)
        stem, title = f"patrol-report-{_safe_name(activity_id or '')}", "链式巡诊开展情况报告"
    elif what == "sitin-summary":
        data = sitin_summary(runtime, ctx, raw)
        sheets = exports.sitin_summary_sheets(data, labels)
        stem = f"sitin-summary-{data['year']}-q{data['quarter']}"
        title = f"{data['year']}年第{data['quarter']}季度局长坐诊情况汇总"
    else:
        data = annual_review(runtime, ctx, raw)
        sheets = exports.annual_review_sheets(data, labels)
        stem, title = f"annual-review-{data['year']}", f"{data['year']}年局长坐诊接诉全面复盘"
    if fmt == "csv":
        index = _bounded_int(raw, "sheet", 2, 1, len(sheets))
        return ExportFile(exports.to_csv(sheets[index - 1], tz=ctx.tz_name), CSV_TYPE,
                          f"{stem}-{index}.csv")
    if raw.get("sheet"):
        raise FieldErrors({"sheet": ["applies to format=csv only (an XLSX holds every sheet)"]})
    return ExportFile(exports.to_xlsx(sheets, title, tz=ctx.tz_name), XLSX_TYPE, f"{stem}.xlsx")


def _safe_name(text: str) -> str:
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in text)[:80]
