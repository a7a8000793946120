"""The read model as plain Python: how each event changes the fact rows, and what each
fact row contributes to the daily roll-ups and the metric counters.

No SQLAlchemy and no nameko: services/reporting/readmodel.py loads the rows a batch of
events needs into a `Projection`, applies the events here, and writes back what
`drain()` reports as changed. The live consumer runs batches of one event; a rebuild
runs the whole archive through one Projection and writes in large batches.

Events from several services may arrive in any order the bus allows; a handler that
needs a row some earlier event creates (the appeal, its assignment) raises NotYet (a LookupError),
so the consumer quietly waits for it (and a rebuild counts it as skipped).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from typing import Any

from appeals_common.envelope import Event
from appeals_common.lifecycle import FINAL_STATES, project_state
from appeals_common.nameko_ext import NotYet
from appeals_common.privacy import mask_phone, mask_phones_in_text
from appeals_common.reference import SATISFIED_GRADES
from services.reporting.domain import DIMENSIONS, local_day, response_bucket

Row = dict[str, Any]

PRIMARY_KEYS: dict[str, str] = {
    "appeal": "appeal_id", "assignment": "assignment_id", "followup": "followup_id",
    "class_problem": "class_id", "order": "order_no", "walkthrough": "walkthrough_id",
    "item": "item_id", "activity": "activity_id",
}

# Every column of every fact table, with what a new row holds (models.py has the types;
# tests/unit/test_reporting_projection.py checks the two agree).
_DEFAULTS: dict[str, Row] = {
    "appeal": dict.fromkeys((
        "appeal_id", "reg_no", "channel", "source_system", "category", "industry_chain",
        "urgency", "enterprise_name", "contact_phone", "title", "activity_id", "state",
        "state_at", "classified_at", "overdue_noticed_at", "overdue_cleared_at",
        "registered_at", "resolved_on_spot_at", "dispatched_at", "lead_dept",
        "lead_assignment_id", "sign_by", "signed_at", "signed_on_time", "respond_by",
        "first_responded_at", "responded_at", "responded_on_time", "outcome", "last_grade",
        "last_followup_at", "closed_at", "closed_on_time", "close_reason", "withdrawn_at",
        "overdue_since", "class_id")) | {"followups": 0, "reopen_count": 0, "overdue": False,
                                          "key_orders": 0},
    "assignment": dict.fromkeys((
        "assignment_id", "appeal_id", "reg_no", "dept_code", "role", "state", "state_at",
        "assigned_at", "sign_by", "signed_at", "signed_on_time", "respond_by", "respond_by_at",
        "responded_at", "responded_on_time", "outcome", "returned_at", "return_rejected_at",
        "withdrawn_at", "channel", "category", "industry_chain")) | {"appeal_closed": False},
    "followup": dict.fromkeys((
        "followup_id", "appeal_id", "reg_no", "recorded_at", "grade", "satisfied", "on_time",
        "dept_code", "channel", "category", "industry_chain")),
    "class_problem": dict.fromkeys((
        "class_id", "state", "state_at", "industry_chain", "category", "score", "lead_entity",
        "deadline", "measures", "promote", "note", "suggested_at", "confirmed_at",
        "resolved_at", "closed_at", "dismissed_at")) | {"keywords": "[]", "reg_nos": "[]",
                                                        "members": 0, "units": "[]"},
    "order": dict.fromkeys((
        "order_no", "appeal_id", "reg_no", "assignment_id", "dept_code", "cause", "issued_at",
        "reasons", "feedback_by", "answered_at", "feedback", "answered_on_time"))
    | {"feedback_required": True},
    "walkthrough": dict.fromkeys((
        "walkthrough_id", "service_item", "mode", "lead_unit", "walked_on", "accuracy",
        "smoothness", "proofs", "experience", "conduct", "summary", "recorded_at")),
    "item": dict.fromkeys((
        "item_id", "walkthrough_id", "list", "description", "owner", "due_at", "closed_at",
        "on_time", "resolution")) | {"state": "open"},
    "activity": dict.fromkeys((
        "activity_id", "kind", "held_on", "title", "lead_unit", "industry_chain",
        "registered_at", "plan_due_at", "plan_submitted_at", "plan_on_time", "plan_summary",
        "report_due_at", "report_submitted_at", "report_on_time", "policies_delivered",
        "enterprises_served", "class_problems", "report_summary", "service_items")),
}
TABLES = tuple(PRIMARY_KEYS)
# Rows kept per parent, so an event about the parent reaches all of them.
_CHILDREN = {"assignment": "appeal_id", "followup": "appeal_id", "item": "walkthrough_id"}


def columns(table: str) -> tuple[str, ...]:
    return tuple(_DEFAULTS[table])


def new_row(table: str, key: str) -> Row:
    row = dict(_DEFAULTS[table])
    row[PRIMARY_KEYS[table]] = key
    return row


# --- what a batch of events needs loaded -------------------------------------------------

# Loaders: "appeal" (the row), "assignments_of"/"followups_of" (an appeal's rows),
# "walkthrough", "items_of", "item", "class_problem", "order", "activity".
_APPEAL_AND_ASSIGNMENTS = ("appeal", "assignments_of")
# Events that may change which unit leads: follow-ups record the lead of their time.
_LEAD_CHANGES = ("appeal", "assignments_of", "followups_of")
_NEEDS: dict[str, tuple[str, ...]] = {
    "appeal.registered": ("appeal",),
    "appeal.resolved_on_spot": ("appeal",),
    "appeal.reclassified": ("appeal", "assignments_of", "followups_of"),
    "appeal.withdrawn": _APPEAL_AND_ASSIGNMENTS,
    "appeal.dispatched": _LEAD_CHANGES,
    "assignment.signed": _APPEAL_AND_ASSIGNMENTS,
    "assignment.returned": _APPEAL_AND_ASSIGNMENTS,
    "assignment.return_decided": _LEAD_CHANGES,
    "assignment.reassigned": _LEAD_CHANGES,
    "extension.decided": _APPEAL_AND_ASSIGNMENTS,
    "assignment.contributed": _APPEAL_AND_ASSIGNMENTS,
    "appeal.responded": _APPEAL_AND_ASSIGNMENTS,
    "appeal.reopened": _APPEAL_AND_ASSIGNMENTS,
    "appeal.closed": _APPEAL_AND_ASSIGNMENTS,
    "followup.recorded": _APPEAL_AND_ASSIGNMENTS,
    "appeal.overdue": ("appeal",),
    "class_problem.annotated": ("appeal",),
    "deadline.recomputed": _APPEAL_AND_ASSIGNMENTS,
}


def needs(event: Event) -> list[tuple[str, str]]:
    """(loader, key) pairs whose rows must be in memory before `event` is applied."""
    t, d = event.event_type, event.data
    out = [(loader, event.appeal_id) for loader in _NEEDS.get(t, ()) if event.appeal_id]
    if t.startswith("supervision_order."):
        out.append(("order", d.get("order_no")))
        if event.appeal_id and t == "supervision_order.issued":
            out.append(("appeal", event.appeal_id))
    elif t.startswith("class_problem.") and t != "class_problem.annotated":
        out.append(("class_problem", d.get("class_id")))
    elif t == "walkthrough.recorded":
        out += [("walkthrough", d.get("walkthrough_id")), ("items_of", d.get("walkthrough_id"))]
    elif t == "walkthrough_item.closed":
        # Under the walkthrough's lock: its record may be writing the same item row.
        out += [("walkthrough", d.get("walkthrough_id")), ("item", d.get("item_id"))]
    elif t.startswith("activity."):
        out.append(("activity", d.get("activity_id")))
    elif t == "deadline.recomputed":
        if d.get("order_no"):
            out.append(("order", d.get("order_no")))
        if d.get("duty") == "activity":
            out.append(("activity", d.get("assignment_id")))
    return [(loader, key) for loader, key in out if key]


def lock_keys(event: Event) -> set[str]:
    """The entities an event changes: concurrent consumers take these one at a time."""
    return {_entity(loader, key) for loader, key in needs(event)}


def _entity(loader: str, key: str) -> str:
    # An appeal's assignments and follow-ups are locked with the appeal, a
    # walkthrough's items with the walkthrough.
    parent = {"assignments_of": "appeal", "followups_of": "appeal", "items_of": "walkthrough"}
    return f"{parent.get(loader, loader)}:{key}"


# --- the projection ---------------------------------------------------------------------

@dataclass
class Changes:
    """What a drain found changed: rows to write, and deltas to add to the aggregates."""

    rows: dict[str, list[Row]] = field(default_factory=dict)
    # aggregate table -> key tuple -> [n, value]
    deltas: dict[str, dict[tuple, list[float]]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.rows or self.deltas)


class Projection:
    """Fact rows in memory, and the images they had at the last drain."""

    def __init__(self, tz: tzinfo, complete: bool = False) -> None:
        self.tz = tz
        self.applied = 0
        self._forget()
        # True while every row that exists is in memory (a replay from empty tables):
        # then nothing needs loading.
        self.complete = complete

    def _forget(self) -> None:
        self.rows: dict[str, dict[str, Row]] = {t: {} for t in TABLES}
        self._base: dict[str, dict[str, Row | None]] = {t: {} for t in TABLES}
        self._children: dict[str, defaultdict[str, set[str]]] = {
            t: defaultdict(set) for t in _CHILDREN}
        self._loaded: set[tuple[str, str]] = set()
        self.complete = False

    # -- loading (by the adapter) -----------------------------------------------------

    def to_load(self, wanted: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
        if self.complete:
            return {}
        out: dict[str, set[str]] = defaultdict(set)
        for loader, key in wanted:
            if (loader, key) not in self._loaded:
                out[loader].add(key)
        return out

    def loaded(self, loader: str, keys: Iterable[str], rows: dict[str, list[Row]]) -> None:
        """Rows fetched for `loader` and `keys`, by table (a key with no row is fine)."""
        for table, found in rows.items():
            for row in found:
                key = row[PRIMARY_KEYS[table]]
                if key not in self.rows[table]:
                    self._keep(table, row)
        self._loaded.update((loader, key) for key in keys)

    def evict(self) -> None:
        """Forget every row (after they were written), e.g. to bound a replay's memory."""
        if any(self._base.values()):
            raise RuntimeError("drain before evicting")
        self._forget()

    def size(self) -> int:
        return sum(len(rows) for rows in self.rows.values())

    def _keep(self, table: str, row: Row) -> None:
        self.rows[table][row[PRIMARY_KEYS[table]]] = row
        if table in _CHILDREN:
            self._children[table][row[_CHILDREN[table]]].add(row[PRIMARY_KEYS[table]])

    # -- rows for the handlers --------------------------------------------------------

    def find(self, table: str, key: str | None) -> Row | None:
        return self.rows[table].get(key) if key else None

    def edit(self, table: str, key: str, parent: str | None = None) -> Row:
        """The row to change (created if missing, under `parent` for an appeal's
        assignments and follow-ups and a walkthrough's items), its image before
        remembered."""
        row = self.rows[table].get(key)
        base = self._base[table]
        if row is None:
            row = new_row(table, key)
            if table in _CHILDREN:
                row[_CHILDREN[table]] = parent
            self._keep(table, row)
            base.setdefault(key, None)
        elif key not in base:
            base[key] = dict(row)
        return row

    def need(self, table: str, key: str | None, event: Event) -> Row:
        """An existing row the event is about; LookupError (retry later) when missing."""
        if not key or key not in self.rows[table]:
            raise NotYet(f"{event.event_type} {event.event_id}: no {table} {key!r} yet")
        return self.edit(table, key)

    def children(self, table: str, parent: str) -> list[Row]:
        return [self.edit(table, key) for key in sorted(self._children[table].get(parent, ()))]

    # -- applying ---------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        handler = _HANDLERS.get(event.event_type)
        if handler is not None:
            handler(self, event)
        self.applied += 1

    def drain(self) -> Changes:
        """Rows changed since the last drain and the aggregate deltas they cause."""
        changes = Changes()
        deltas: dict[str, dict[tuple, list[float]]] = defaultdict(dict)
        for table, base in self._base.items():
            dirty = []
            for key, before in base.items():
                after = self.rows[table][key]
                if after == before:
                    continue
                dirty.append(after)
                for sign, row in ((-1, before), (1, after)):
                    if row is None:
                        continue
                    for agg, agg_key, n, value in contributions(table, row, self.tz):
                        cell = deltas[agg].setdefault(agg_key, [0, 0.0])
                        cell[0] += sign * n
                        cell[1] += sign * value
            if dirty:
                changes.rows[table] = dirty
            base.clear()
        for agg, cells in deltas.items():
            kept = {k: v for k, v in cells.items() if v[0] or v[1]}
            if kept:
                changes.deltas[agg] = kept
        return changes


# --- what a fact contributes to the aggregates (docs/reports.md) -----------------------

Contribution = tuple[str, tuple, int, float]


def _dims(dept: str | None, row: Row) -> list[tuple[str, str]]:
    values = {"department": dept, "channel": row["channel"],
              "industry_chain": row["industry_chain"], "category": row["category"]}
    return [("all", ""), *((dim, values[dim] or "") for dim in DIMENSIONS)]


def response_status(a: Row) -> str | None:
    """An assignment's standing for 响应率: on_time / late (signed), open (not signed) or
    None when it does not count: the unit returned it, or it was taken back, before its
    sign-by and it did not come back."""
    if a["signed_at"] is not None:
        return "on_time" if a["signed_on_time"] else "late"
    returned = a["returned_at"]
    if returned is not None and a["return_rejected_at"] is not None \
            and a["return_rejected_at"] >= returned:
        returned = None  # the bureau rejected that return: it excuses nothing
    left = returned or a["withdrawn_at"]
    if a["state"] in ("returned", "withdrawn") and left is not None and left <= a["sign_by"]:
        return None
    return "open"


def contributions(table: str, row: Row, tz: tzinfo) -> list[Contribution]:
    if table == "appeal":
        return _appeal_contributions(row, tz)
    if table == "assignment":
        status = response_status(row)
        if status is None:
            return []
        measure = "response_open" if status == "open" else "response"
        day = local_day(row["sign_by"], tz)
        hit = 1 if status == "on_time" else 0
        return [("rollup", (measure, dim, day, key), 1, hit)
                for dim, key in _dims(row["dept_code"], row)]
    if table == "followup":
        day = local_day(row["recorded_at"], tz)
        hit = 1 if row["satisfied"] else 0
        return [("counters", ("followups", row["grade"]), 1, 0.0),
                *(("rollup", ("satisfaction", dim, day, key), 1, hit)
                  for dim, key in _dims(row["dept_code"], row))]
    return []


def _appeal_contributions(a: Row, tz: tzinfo) -> list[Contribution]:
    out: list[Contribution] = [("counters", ("registered", a["channel"]), 1, 0.0)]
    registered = local_day(a["registered_at"], tz)
    out.append(("rollup", ("summary", "state_channel", registered,
                           f"{a['state']}|{a['channel']}"), 1, 0))
    solved = 1 if a["outcome"] == "solved" else 0
    on_time = 1 if a["closed_on_time"] else 0
    if a["responded_at"] is not None:
        out.append(("rollup", ("summary_responded", "all", registered, ""), 1, solved))
        day = local_day(a["responded_at"], tz)
        out += [("rollup", ("solve", dim, day, key), 1, solved)
                for dim, key in _dims(a["lead_dept"], a)]
    if a["last_grade"] is not None:
        out.append(("rollup", ("summary_followed", "all", registered, ""), 1,
                    1 if a["last_grade"] in SATISFIED_GRADES else 0))
    if a["closed_at"] is not None:
        out.append(("rollup", ("summary_closed", "all", registered, ""), 1, on_time))
        day = local_day(a["closed_at"], tz)
        out += [("rollup", ("close", dim, day, key), 1, on_time)
                for dim, key in _dims(a["lead_dept"], a)]
    if a["first_responded_at"] is not None:
        seconds = max(0.0, (a["first_responded_at"] - a["registered_at"]).total_seconds())
        out += [("counters", ("response_bucket", response_bucket(seconds)), 1, 0.0),
                ("counters", ("response_seconds", ""), 1, seconds)]
    return out


# --- the handlers ----------------------------------------------------------------------

def _time(value: Any) -> datetime | None:
    if not value:
        return None
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def _day(value: Any) -> date | None:
    if not value:
        return None
    return value if isinstance(value, date) else date.fromisoformat(value)


def _text(value: Any, limit: int | None = None) -> str | None:
    """Free text as the read model keeps it: any phone number in it masked."""
    return None if value is None else mask_phones_in_text(str(value))[:limit]


def _move(a: Row, e: Event) -> None:
    a["state"], a["state_at"] = project_state(a["state"], a["state_at"], e.event_type, e.data,
                                              e.occurred_at)


def _later(current: datetime | None, moment: datetime) -> bool:
    """Does an event at `moment` supersede what was set at `current`? (latest wins)"""
    return current is None or moment >= current


def _earliest(current: datetime | None, moment: datetime | None) -> datetime | None:
    return moment if current is None or (moment is not None and moment < current) else current


def _latest(current: datetime | None, moment: datetime | None) -> datetime | None:
    return moment if current is None or (moment is not None and moment > current) else current


def _registered(p: Projection, e: Event) -> None:
    d = e.data
    fresh = p.find("appeal", e.appeal_id) is None
    a = p.edit("appeal", e.appeal_id)
    enterprise = d.get("enterprise") or {}
    a.update(reg_no=d["reg_no"], channel=d["channel"], source_system=d.get("source_system"),
             urgency=d.get("urgency") or "normal",
             enterprise_name=_text(enterprise.get("name"), 200),
             # Only the masked number is kept: the read model cannot leak a phone.
             contact_phone=mask_phone(enterprise.get("contact_phone")) or None,
             title=_text(d.get("title"), 200), activity_id=d.get("activity_id"),
             registered_at=e.occurred_at)
    if fresh:
        a.update(state="registered", state_at=e.occurred_at, category=d.get("category"),
                 industry_chain=d.get("industry_chain"), classified_at=e.occurred_at)


def _on_spot(p: Projection, e: Event) -> None:
    a = p.need("appeal", e.appeal_id, e)
    a["resolved_on_spot_at"] = _earliest(a["resolved_on_spot_at"], e.occurred_at)
    _move(a, e)


def _reclassified(p: Projection, e: Event) -> None:
    a = p.need("appeal", e.appeal_id, e)
    if not _later(a["classified_at"], e.occurred_at):
        return
    a["classified_at"] = e.occurred_at
    fields = {"category": e.data.get("category"), "industry_chain": e.data.get("industry_chain")}
    for row in (a, *p.children("assignment", a["appeal_id"]),
                *p.children("followup", a["appeal_id"])):
        row.update(fields)


def _ended(p: Projection, e: Event, column: str) -> None:
    """Closed or withdrawn: the appeal is over, and so is whatever its units still owed."""
    a = p.need("appeal", e.appeal_id, e)
    if a[column] is None or e.occurred_at < a[column]:
        a[column] = e.occurred_at
        if e.event_type == "appeal.closed":
            a["closed_on_time"] = e.data.get("on_time")
            a["close_reason"] = _text(e.data.get("reason"), 40)
    _clear_overdue(a, e.occurred_at)
    for asg in p.children("assignment", a["appeal_id"]):
        asg["appeal_closed"] = True
    _move(a, e)


# Assignments. Events about one assignment may be applied in any order (workers take the
# events in flight concurrently; a retried event comes late), so each field is a merge
# that does not depend on order: the earliest signature, the latest response, the state
# of the latest event (withdrawn stays withdrawn), the deadline set last.

def _assignment_state(asg: Row, state: str, moment: datetime) -> None:
    if asg["state"] == "withdrawn" or not _later(asg["state_at"], moment):
        return
    asg["state"], asg["state_at"] = state, moment


def _respond_by(asg: Row, value: datetime | None, moment: datetime) -> None:
    if value is not None and _later(asg["respond_by_at"], moment):
        asg["respond_by"], asg["respond_by_at"] = value, moment


def _current_lead(assignments: Iterable[Row]) -> Row | None:
    """The lead unit's assignment: the latest one not taken back, else the latest."""
    leads = [x for x in assignments if x["role"] == "lead"]
    active = [x for x in leads if x["state"] != "withdrawn"]
    return max(active or leads, key=lambda x: (x["assigned_at"], x["assignment_id"]),
               default=None)


def lead_at(assignments: Iterable[Row], moment: datetime) -> str | None:
    """The lead unit holding the appeal at `moment` (None before any dispatch)."""
    holding = [x for x in assignments if x["role"] == "lead" and x["assigned_at"] <= moment
               and (x["withdrawn_at"] is None or x["withdrawn_at"] > moment)]
    best = max(holding, key=lambda x: (x["assigned_at"], x["assignment_id"]), default=None)
    return best["dept_code"] if best else None


def _sync(p: Projection, a: Row, followups: bool = False) -> None:
    """The appeal's lead fields, derived from its assignments whatever the order they
    came in; with `followups`, each follow-up's unit too (the lead when it was asked)."""
    assignments = p.children("assignment", a["appeal_id"])
    lead = _current_lead(assignments)
    if lead is not None:
        a.update(lead_dept=lead["dept_code"], lead_assignment_id=lead["assignment_id"],
                 sign_by=lead["sign_by"], signed_at=lead["signed_at"],
                 signed_on_time=lead["signed_on_time"], respond_by=lead["respond_by"])
    if followups:
        for f in p.children("followup", a["appeal_id"]):
            f["dept_code"] = lead_at(assignments, f["recorded_at"])


def _dispatched(p: Projection, e: Event) -> None:
    a = p.need("appeal", e.appeal_id, e)
    a["dispatched_at"] = _earliest(a["dispatched_at"], e.occurred_at)
    for item in e.data.get("assignments", ()):
        asg = p.edit("assignment", item["assignment_id"], a["appeal_id"])
        if asg["state"] is None:
            sign_by = _time(item.get("sign_by")) or e.occurred_at
            asg.update(reg_no=a["reg_no"], dept_code=item["dept_code"], role=item["role"],
                       state="assigned", state_at=e.occurred_at,
                       assigned_at=_time(item.get("assigned_at")) or e.occurred_at,
                       sign_by=sign_by, channel=a["channel"], category=a["category"],
                       industry_chain=a["industry_chain"],
                       appeal_closed=a["state"] in FINAL_STATES)
            _respond_by(asg, _time(item.get("respond_by")), e.occurred_at)
    _sync(p, a, followups=True)
    _move(a, e)


def _assignment_event(p: Projection, e: Event) -> tuple[Row, Row]:
    a = p.need("appeal", e.appeal_id, e)
    asg = p.need("assignment", e.data.get("assignment_id"), e)
    return a, asg


def _signed(p: Projection, e: Event) -> None:
    a, asg = _assignment_event(p, e)
    signed_at = _time(e.data.get("signed_at")) or e.occurred_at
    if asg["signed_at"] is None or signed_at < asg["signed_at"]:
        on_time = e.data.get("on_time")
        asg["signed_at"] = signed_at
        asg["signed_on_time"] = on_time if on_time is not None else signed_at <= asg["sign_by"]
    _assignment_state(asg, "signed", e.occurred_at)
    _sync(p, a)
    _move(a, e)


def _returned(p: Projection, e: Event) -> None:
    a, asg = _assignment_event(p, e)
    asg["returned_at"] = _latest(asg["returned_at"], e.occurred_at)
    _assignment_state(asg, "returned", e.occurred_at)
    _sync(p, a)


def _return_decided(p: Projection, e: Event) -> None:
    a, asg = _assignment_event(p, e)
    if e.data.get("accepted"):
        asg["withdrawn_at"] = _earliest(asg["withdrawn_at"], e.occurred_at)
        _assignment_state(asg, "withdrawn", e.occurred_at)
    else:  # the unit keeps it, as it was; that return no longer excuses it
        asg["return_rejected_at"] = _latest(asg["return_rejected_at"], e.occurred_at)
        _assignment_state(asg, "signed" if asg["signed_at"] else "assigned", e.occurred_at)
    _sync(p, a, followups=True)


def _reassigned(p: Projection, e: Event) -> None:
    a, asg = _assignment_event(p, e)
    asg["withdrawn_at"] = _earliest(asg["withdrawn_at"], e.occurred_at)
    _assignment_state(asg, "withdrawn", e.occurred_at)
    _sync(p, a, followups=True)


def _extension(p: Projection, e: Event) -> None:
    if not e.data.get("approved"):
        return
    a, asg = _assignment_event(p, e)
    _respond_by(asg, _time(e.data.get("respond_by")), e.occurred_at)
    _sync(p, a)


def _unit_responded(asg: Row, e: Event) -> None:
    d = e.data
    responded_at = _time(d.get("responded_at")) or e.occurred_at
    if asg["responded_at"] is None or responded_at >= asg["responded_at"]:
        asg.update(responded_at=responded_at, responded_on_time=d.get("on_time"),
                   outcome=d.get("outcome"))
    _assignment_state(asg, "responded", e.occurred_at)


def _contributed(p: Projection, e: Event) -> None:
    _, asg = _assignment_event(p, e)
    _unit_responded(asg, e)


def _responded(p: Projection, e: Event) -> None:
    a, asg = _assignment_event(p, e)
    d = e.data
    _unit_responded(asg, e)
    if _later(a["responded_at"], e.occurred_at):
        a.update(responded_at=e.occurred_at, responded_on_time=d.get("on_time"),
                 outcome=d.get("outcome"))
    a["first_responded_at"] = _earliest(a["first_responded_at"], e.occurred_at)
    _clear_overdue(a, e.occurred_at)
    _sync(p, a)
    _move(a, e)


def _reopened(p: Projection, e: Event) -> None:
    a = p.need("appeal", e.appeal_id, e)
    lead = p.find("assignment", a["lead_assignment_id"])
    if lead is None and a["resolved_on_spot_at"] is None:
        raise NotYet(f"{e.event_type} {e.event_id}: appeal {a['reg_no']} has no lead yet")
    if lead is not None:
        # 重办: the lead unit owes a new response (lifecycle: responded → signed), by the
        # key supervision order's new deadline when there is one.
        lead = p.edit("assignment", lead["assignment_id"])
        _assignment_state(lead, "signed", e.occurred_at)
        _respond_by(lead, _time(e.data.get("respond_by")), e.occurred_at)
    a["reopen_count"] += 1
    _sync(p, a)
    _move(a, e)


def _followup(p: Projection, e: Event) -> None:
    a = p.need("appeal", e.appeal_id, e)
    grade = e.data.get("grade")
    a["followups"] += 1
    if _later(a["last_followup_at"], e.occurred_at):
        a["last_grade"], a["last_followup_at"] = grade, e.occurred_at
    f = p.edit("followup", e.event_id, a["appeal_id"])
    f.update(reg_no=a["reg_no"], recorded_at=e.occurred_at, grade=grade,
             satisfied=grade in SATISFIED_GRADES, on_time=e.data.get("on_time"),
             dept_code=lead_at(p.children("assignment", a["appeal_id"]), e.occurred_at),
             channel=a["channel"], category=a["category"], industry_chain=a["industry_chain"])


def _overdue(p: Projection, e: Event) -> None:
    if not e.appeal_id:
        return  # a class problem's or an activity's deadline: listed from its own facts
    a = p.need("appeal", e.appeal_id, e)
    if a["state"] in FINAL_STATES or not _later(a["overdue_cleared_at"], e.occurred_at):
        return  # answered or closed since
    due = _time(e.data.get("due_at")) or e.occurred_at
    a["overdue"] = True
    a["overdue_since"] = _earliest(a["overdue_since"], due)
    a["overdue_noticed_at"] = _latest(a["overdue_noticed_at"], e.occurred_at)


def _clear_overdue(a: Row, moment: datetime) -> None:
    """A response, close or withdrawal ends the appeal's overdue spell, unless a notice
    newer than it says otherwise."""
    a["overdue_cleared_at"] = _latest(a["overdue_cleared_at"], moment)
    if a["overdue_noticed_at"] is None or a["overdue_noticed_at"] <= moment:
        a["overdue"], a["overdue_since"] = False, None


def _order_issued(p: Projection, e: Event) -> None:
    d = e.data
    a = p.need("appeal", e.appeal_id, e) if e.appeal_id else None
    o = p.edit("order", d["order_no"])
    if o["issued_at"] is None and a is not None:
        a["key_orders"] += 1
    deadline = d.get("deadline")
    o.update(appeal_id=e.appeal_id, reg_no=d.get("reg_no"), issued_at=e.occurred_at,
             assignment_id=d.get("assignment_id") or o["assignment_id"],
             dept_code=d.get("dept_code") or o["dept_code"],
             cause=_text(d.get("cause") or ("unsatisfied_followup" if d.get("grade")
                                            else f"overdue_{deadline}" if deadline else None), 40),
             reasons=_text(d.get("reasons")), feedback_required=bool(d.get("feedback_required", True)),
             feedback_by=_time(d.get("feedback_by") or d.get("respond_by")))
    _order_on_time(o)


def _order_answered(p: Projection, e: Event) -> None:
    d = e.data
    o = p.edit("order", d["order_no"])
    o.update(appeal_id=o["appeal_id"] or e.appeal_id, reg_no=o["reg_no"] or d.get("reg_no"),
             assignment_id=o["assignment_id"] or d.get("assignment_id"),
             dept_code=o["dept_code"] or d.get("dept_code"),
             answered_at=_time(d.get("answered_at")) or e.occurred_at,
             feedback=_text(d.get("feedback")))
    if d.get("on_time") is not None:
        o["answered_on_time"] = d["on_time"]
    else:
        _order_on_time(o)


def _order_on_time(o: Row) -> None:
    if o["answered_at"] is not None and o["feedback_by"] is not None:
        o["answered_on_time"] = o["answered_at"] <= o["feedback_by"]


_CLASS_STEPS = {"class_problem.suggested": "suggested_at", "class_problem.confirmed": "confirmed_at",
                "class_problem.resolved": "resolved_at", "class_problem.closed": "closed_at",
                "class_problem.dismissed": "dismissed_at"}


def _class_problem(p: Projection, e: Event) -> None:
    d = e.data
    c = p.edit("class_problem", d["class_id"])
    c[_CLASS_STEPS[e.event_type]] = e.occurred_at
    if c["state_at"] is not None and e.occurred_at < c["state_at"]:
        return  # an older step arriving late: the newer view stands
    reg_nos = list(d.get("reg_nos") or [])
    c.update(state=d.get("state") or e.event_type.split(".")[1], state_at=e.occurred_at,
             industry_chain=d.get("industry_chain"), category=d.get("category"),
             keywords=json.dumps(d.get("keywords") or [], ensure_ascii=False),
             score=d.get("score"), reg_nos=json.dumps(reg_nos, ensure_ascii=False),
             members=len(reg_nos), lead_entity=d.get("lead_entity"),
             units=json.dumps(d.get("units") or [], ensure_ascii=False),
             deadline=_time(d.get("deadline")), measures=_text(d.get("measures")),
             promote=d.get("promote"), note=_text(d.get("note")))


def _annotated(p: Projection, e: Event) -> None:
    a = p.need("appeal", e.appeal_id, e)
    a["class_id"] = e.data.get("class_id") or a["class_id"]


_SCORES = ("accuracy", "smoothness", "proofs", "experience", "conduct")


def _walkthrough(p: Projection, e: Event) -> None:
    d = e.data
    w = p.edit("walkthrough", d["walkthrough_id"])
    scores = d.get("scores") or {}
    w.update(service_item=_text(d.get("service_item"), 200), mode=d.get("mode"),
             lead_unit=d.get("lead_unit"), walked_on=_day(d.get("walked_on")),
             summary=_text(d.get("summary")), recorded_at=e.occurred_at,
             **{name: scores.get(name) for name in _SCORES})
    for item in d.get("items") or d.get("findings") or ():
        row = p.edit("item", item["item_id"], d["walkthrough_id"])
        row.update(walkthrough_id=d["walkthrough_id"], list=item.get("list"),
                   description=_text(item.get("description")), owner=item.get("owner"),
                   due_at=_time(item.get("due_at")))


def _item_closed(p: Projection, e: Event) -> None:
    d = e.data
    row = p.edit("item", d["item_id"], d.get("walkthrough_id"))
    row.update(walkthrough_id=row["walkthrough_id"] or d.get("walkthrough_id"),
               list=row["list"] or d.get("list"), owner=row["owner"] or d.get("owner"),
               state="closed", closed_at=_time(d.get("closed_at")) or e.occurred_at,
               on_time=d.get("on_time"), resolution=_text(d.get("resolution")))
    if row["on_time"] is None and row["due_at"] is not None:
        row["on_time"] = row["closed_at"] <= row["due_at"]


def _activity_base(p: Projection, e: Event) -> Row:
    d = e.data
    v = p.edit("activity", d["activity_id"])
    for name in ("lead_unit", "industry_chain", "kind"):
        if d.get(name) is not None:
            v[name] = d[name]
    v["held_on"] = _day(d.get("held_on")) or v["held_on"]
    if v["kind"] is None and e.event_type != "activity.registered":
        v["kind"] = "chain_patrol"  # only patrols file plans and reports
    return v


def _activity_registered(p: Projection, e: Event) -> None:
    v = _activity_base(p, e)
    v["title"], v["registered_at"] = _text(e.data.get("title"), 200), e.occurred_at


def _plan_submitted(p: Projection, e: Event) -> None:
    d = e.data
    v = _activity_base(p, e)
    v.update(plan_due_at=_time(d.get("plan_due_at")),
             plan_submitted_at=_time(d.get("submitted_at")) or e.occurred_at,
             plan_on_time=d.get("on_time"), plan_summary=_text(d.get("summary")))


def _report_submitted(p: Projection, e: Event) -> None:
    d = e.data
    v = _activity_base(p, e)
    # Phones are masked before they are stored: no report can leak them.
    items = [{**{k: _text(v) if isinstance(v, str) else v for k, v in item.items()},
              "contact_phone": mask_phone(item.get("contact_phone")) or None}
             for item in d.get("service_items") or ()]
    v.update(report_due_at=_time(d.get("report_due_at")),
             report_submitted_at=_time(d.get("submitted_at")) or e.occurred_at,
             report_on_time=d.get("on_time"), policies_delivered=d.get("policies_delivered"),
             enterprises_served=d.get("enterprises_served"),
             class_problems=json.dumps([_text(c) for c in d.get("class_problems") or []],
                                       ensure_ascii=False),
             report_summary=_text(d.get("summary")),
             service_items=json.dumps(items, ensure_ascii=False))


def _recomputed(p: Projection, e: Event) -> None:
    """Deadlines counted again once the year's official calendar was loaded."""
    d = e.data
    deadlines = {name: _time(value) for name, value in (d.get("deadlines") or {}).items()}
    if d.get("duty") in ("assignment", "key_order") and e.appeal_id and (
            "sign_by" in deadlines or "respond_by" in deadlines):
        a, asg = _assignment_event(p, e)
        if deadlines.get("sign_by") and asg["signed_at"] is None:
            asg["sign_by"] = deadlines["sign_by"]
        _respond_by(asg, deadlines.get("respond_by"), e.occurred_at)
        _sync(p, a)
    if d.get("order_no") and deadlines.get("feedback_by"):
        order = p.need("order", d["order_no"], e)
        order["feedback_by"] = deadlines["feedback_by"]
        _order_on_time(order)
    if d.get("duty") == "activity":
        activity = p.need("activity", d.get("assignment_id"), e)
        for name in ("plan_due_at", "report_due_at"):
            if deadlines.get(name):
                activity[name] = deadlines[name]


_HANDLERS: dict[str, Callable[[Projection, Event], None]] = {
    "appeal.registered": _registered,
    "appeal.resolved_on_spot": _on_spot,
    "appeal.reclassified": _reclassified,
    "appeal.withdrawn": lambda p, e: _ended(p, e, "withdrawn_at"),
    "appeal.closed": lambda p, e: _ended(p, e, "closed_at"),
    "appeal.dispatched": _dispatched,
    "assignment.signed": _signed,
    "assignment.returned": _returned,
    "assignment.return_decided": _return_decided,
    "assignment.reassigned": _reassigned,
    "extension.decided": _extension,
    "assignment.contributed": _contributed,
    "appeal.responded": _responded,
    "appeal.reopened": _reopened,
    "followup.recorded": _followup,
    "appeal.overdue": _overdue,
    "supervision_order.issued": _order_issued,
    "supervision_order.answered": _order_answered,
    **dict.fromkeys(_CLASS_STEPS, _class_problem),
    "class_problem.annotated": _annotated,
    "walkthrough.recorded": _walkthrough,
    "walkthrough_item.closed": _item_closed,
    "activity.registered": _activity_registered,
    "activity.plan_submitted": _plan_submitted,
    "activity.report_submitted": _report_submitted,
    "deadline.recomputed": _recomputed,
}
PROJECTED_EVENTS = frozenset(_HANDLERS)
