"""Report queries over the read model (SQLAlchemy Core, PostgreSQL and SQLite).

Rates and the summary sum the daily roll-up; the overdue list and appeals_overdue read
open duties through small partial indexes. docs/reports.md has the definitions.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime, tzinfo
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    String,
    and_,
    case,
    cast,
    false,
    func,
    literal_column,
    null,
    or_,
    select,
    true,
    union_all,
)

from appeals_common.lifecycle import OPEN_STATES
from services.reporting.domain import (
    DIMENSIONS,
    TIME_BUCKETS,
    Period,
    bucket_of,
    local_day,
    local_midnight,
)
from services.reporting.models import (
    APPEAL_FACTS,
    ASSIGNMENT_FACTS,
    CLASS_PROBLEM_FACTS,
    COUNTERS,
    ORDER_FACTS,
    ROLLUP,
    WALKTHROUGH_ITEM_FACTS,
)

RATE_MEASURES = ("response", "response_open", "solve", "satisfaction", "close")
SUMMARY_MEASURES = ("summary", "summary_responded", "summary_followed", "summary_closed")
DUTY_KINDS = ("sign", "respond", "feedback", "class", "item")

Cells = dict[str | None, dict[str, list[int]]]


# --- rates ---------------------------------------------------------------------------------

def rate_cells(conn: Connection, period: Period, group_by: str, tz: tzinfo,
               now: datetime) -> Cells:
    """group -> measure -> [n, hit] over the period (see docs/reports.md).

    Every measure comes from the roll-up, except assignments not yet signed whose sign-by
    is today or later: whether they count depends on the time of day, so those few are
    read from the facts."""
    r = ROLLUP.c
    by_time = group_by in TIME_BUCKETS
    dim = group_by if group_by in DIMENSIONS else "all"
    today = local_day(now, tz)
    group_col = r.day if by_time else r.key
    rows = conn.execute(
        select(r.measure, group_col, func.sum(r.n), func.sum(r.hit))
        .where(r.dim == dim, r.day >= period.start, r.day <= period.end,
               r.measure.in_(RATE_MEASURES),
               or_(r.measure != "response_open", r.day < today))
        .group_by(r.measure, group_col))
    cells: Cells = defaultdict(lambda: defaultdict(lambda: [0, 0]))

    def group_of(value: Any) -> str | None:
        if by_time:
            return bucket_of(value, group_by)
        if dim == "all":
            return None
        return value or None

    for measure, value, n, hit in rows:
        if not n and not hit:
            continue  # a cell whose rows all moved elsewhere
        cell = cells[group_of(value)][measure]
        cell[0] += int(n)
        cell[1] += int(hit)
    if period.end >= today:
        for row in _unsigned_due_today(conn, period, tz, now):
            if by_time:
                value = local_day(row.sign_by, tz)
            else:
                value = getattr(row, "dept_code" if dim == "department" else dim, None)
            cells[group_of(value)]["response_open"][0] += 1
    return cells


def _unsigned_due_today(conn: Connection, period: Period, tz: tzinfo,
                        now: datetime) -> list[Any]:
    """Unsigned assignments due from today's start to now (projection.response_status in
    SQL: one the unit returned, or that was taken back, before its sign-by does not count,
    unless the bureau rejected that return)."""
    a = ASSIGNMENT_FACTS.c
    start, end = period.bounds(tz)
    low = max(start, local_midnight(local_day(now, tz), tz))
    returned = case((and_(a.return_rejected_at.is_not(None),
                          a.return_rejected_at >= a.returned_at), None), else_=a.returned_at)
    left = func.coalesce(returned, a.withdrawn_at)
    return conn.execute(select(a.dept_code, a.channel, a.industry_chain, a.category, a.sign_by)
                        .where(a.sign_by >= low, a.sign_by <= now, a.sign_by < end,
                               a.signed_at.is_(None),
                               or_(a.state.not_in(["returned", "withdrawn"]), left.is_(None),
                                   left > a.sign_by))).all()


# --- summary -----------------------------------------------------------------------------

def _is_midnight(moment: datetime | None, tz: tzinfo) -> bool:
    if moment is None:
        return True
    local = moment.astimezone(tz)
    return (local.hour, local.minute, local.second, local.microsecond) == (0, 0, 0, 0)


def summary_counts(conn: Connection, start: datetime | None, end: datetime | None,
                   tz: tzinfo) -> dict[str, Any]:
    """Counts over appeals registered in [start, end): from the roll-up when the window is
    whole local days (the usual case), else from the facts."""
    if _is_midnight(start, tz) and _is_midnight(end, tz):
        r = ROLLUP.c
        query = (select(r.measure, r.key, func.sum(r.n), func.sum(r.hit))
                 .where(r.measure.in_(SUMMARY_MEASURES)).group_by(r.measure, r.key))
        if start is not None:
            query = query.where(r.day >= local_day(start, tz))
        if end is not None:
            query = query.where(r.day < local_day(end, tz))
        by_state: dict[str, int] = defaultdict(int)
        by_channel: dict[str, int] = defaultdict(int)
        totals: dict[str, tuple[int, int]] = {}
        for measure, key, n, hit in conn.execute(query):
            if measure == "summary":
                state, channel = key.split("|", 1)
                by_state[state] += int(n)
                by_channel[channel] += int(n)
            else:
                totals[measure] = (int(n), int(hit))
        responded, solved = totals.get("summary_responded", (0, 0))
        followed, satisfied = totals.get("summary_followed", (0, 0))
        closed, closed_on_time = totals.get("summary_closed", (0, 0))
    else:
        f = APPEAL_FACTS.c
        count = func.count
        query = select(
            f.state, f.channel, count(),
            count().filter(f.responded_at.is_not(None)),
            count().filter(f.outcome == "solved"),
            count().filter(f.last_grade.is_not(None)),
            count().filter(f.last_grade.in_(["very_satisfied", "satisfied",
                                             "basically_satisfied"])),
            count().filter(f.closed_at.is_not(None)),
            count().filter(f.closed_on_time.is_(True)),
        ).group_by(f.state, f.channel)
        if start is not None:
            query = query.where(f.registered_at >= start)
        if end is not None:
            query = query.where(f.registered_at < end)
        by_state, by_channel = defaultdict(int), defaultdict(int)
        responded = solved = followed = satisfied = closed = closed_on_time = 0
        for state, channel, n, r_, s_, f_, sa_, c_, ct_ in conn.execute(query):
            by_state[state] += n
            by_channel[channel] += n
            responded, solved, followed = responded + r_, solved + s_, followed + f_
            satisfied, closed, closed_on_time = satisfied + sa_, closed + c_, closed_on_time + ct_
    return {"by_state": {k: v for k, v in sorted(by_state.items()) if v},
            "by_channel": {k: v for k, v in sorted(by_channel.items()) if v},
            "responded": responded, "solved": solved, "followed": followed,
            "satisfied": satisfied, "closed": closed, "closed_on_time": closed_on_time}


# --- open duties past their deadline --------------------------------------------------------

def _text_null() -> Any:
    return cast(null(), String(80))


def duty_selects(now: datetime, kinds: Iterable[str] = DUTY_KINDS,
                 dept: str | None = None) -> list[Select]:
    """One SELECT (kind, ref, reg_no, appeal_id, dept_code, due_at) per kind of duty, each
    matching a partial index's predicate."""
    a, o = ASSIGNMENT_FACTS.c, ORDER_FACTS.c
    c, i = CLASS_PROBLEM_FACTS.c, WALKTHROUGH_ITEM_FACTS.c

    def duty(name: str, ref: Any, reg_no: Any, appeal_id: Any, dept: Any, due: Any) -> Select:
        return select(literal_column(f"'{name}'", String(16)).label("kind"), ref.label("ref"),
                      reg_no.label("reg_no"), appeal_id.label("appeal_id"),
                      dept.label("dept_code"), due.label("due_at"))

    out: dict[str, Select] = {
        "sign": duty("sign", a.assignment_id, a.reg_no, a.appeal_id, a.dept_code, a.sign_by)
        .where(a.state == "assigned", a.appeal_closed == false(), a.sign_by < now),
        "respond": duty("respond", a.assignment_id, a.reg_no, a.appeal_id, a.dept_code,
                        a.respond_by)
        .where(a.role == "lead", a.state.in_(["assigned", "signed"]),
               a.appeal_closed == false(), a.respond_by < now),
        "feedback": duty("feedback", o.order_no, o.reg_no, o.appeal_id, o.dept_code,
                         o.feedback_by)
        .where(o.answered_at.is_(None), o.feedback_required == true(), o.feedback_by < now),
        "class": duty("class", c.class_id, _text_null(), _text_null(), c.lead_entity,
                      c.deadline)
        .where(c.state == "confirmed", c.deadline < now),
        "item": duty("item", i.item_id, _text_null(), _text_null(), i.owner, i.due_at)
        .where(i.state == "open", i.due_at < now),
    }
    dept_column = {"sign": a.dept_code, "respond": a.dept_code, "feedback": o.dept_code,
                   "class": c.lead_entity, "item": i.owner}
    selects = []
    for name in kinds:
        query = out[name]
        if dept is not None:
            query = query.where(dept_column[name] == dept)
        selects.append(query)
    return selects


def overdue_counts(conn: Connection, now: datetime, kinds: Iterable[str] = DUTY_KINDS,
                   dept: str | None = None) -> list[tuple[str, str, int]]:
    """(kind, dept_code, count) of open duties past their deadline."""
    union = union_all(*duty_selects(now, kinds, dept)).subquery()
    return [(k, d, int(n)) for k, d, n in conn.execute(
        select(union.c.kind, union.c.dept_code, func.count())
        .group_by(union.c.kind, union.c.dept_code))]


def overdue_page(conn: Connection, now: datetime, kinds: Iterable[str], dept: str | None,
                 limit: int, offset: int) -> list[Any]:
    union = union_all(*duty_selects(now, kinds, dept)).subquery()
    return conn.execute(select(union).order_by(union.c.due_at, union.c.kind, union.c.ref)
                        .limit(limit).offset(offset)).all()


# --- metrics ---------------------------------------------------------------------------------

def counters(conn: Connection) -> dict[str, dict[str, tuple[int, float]]]:
    out: dict[str, dict[str, tuple[int, float]]] = defaultdict(dict)
    for name, label, n, total in conn.execute(select(COUNTERS.c.name, COUNTERS.c.label,
                                                     COUNTERS.c.n, COUNTERS.c.total)):
        out[name][label] = (int(n), float(total))
    return out


def open_by_state(conn: Connection) -> dict[str, int]:
    f = APPEAL_FACTS.c
    # The predicate repeats the partial index's, so only open appeals are read.
    return {state: int(n) for state, n in conn.execute(
        select(f.state, func.count()).where(f.state.in_(sorted(OPEN_STATES)))
        .group_by(f.state))}
