"""Intake's service layer: registration from every channel, receipts, the register's
state and timeline, staff operations (on-the-spot answers, reclassification, withdrawal,
search) and activities."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from marshmallow import ValidationError
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError

from appeals_common.auth import Principal
from appeals_common.db import UnitOfWork
from appeals_common.envelope import Event
from appeals_common.http import Conflict, FieldErrors, NotFound
from appeals_common.identity import inbox_key, sender_mismatch, source_user
from appeals_common.input_guard import JsonRefused, parse_json
from appeals_common.lifecycle import IllegalTransition, next_appeal_state, project_state
from appeals_common.nameko_ext import Delivery, NotYet, ServiceRuntime
from appeals_common.privacy import mask_personal
from appeals_common.schemas import (
    MAX_BODY_BYTES,
    ActivitySchema,
    InboundAppealSchema,
    OnSpotAppealSchema,
    ReclassifySchema,
    SearchSchema,
    StaffAppealSchema,
    WithdrawSchema,
    errors_by_field,
)
from appeals_common.similarity import similarity
from appeals_common.topology import RECEIPTS_EXCHANGE, REJECTED_QUEUE
from services.intake.classification import Classifier
from services.intake.domain import content_hash, department_view, format_reg_no, source_from_routing_key
from services.intake.models import Activity, Appeal, RegNoCounter, TimelineEntry

log = logging.getLogger("appeals.intake")

INBOUND_CONSUMER = "intake.inbound"
EVENTS_CONSUMER = "intake.events"
STAFF_SOURCE = "staff"


@dataclass(frozen=True)
class IntakeContext:
    """Reference data and rules, loaded once at start."""

    sources: frozenset[str]
    departments: frozenset[str]
    classifier: Classifier
    duplicate_threshold: float = 0.6
    duplicate_window: timedelta = timedelta(days=30)


class DuplicateConflict(Exception):
    """The idempotency key was used before for an appeal with different content."""

    def __init__(self, appeal: Appeal) -> None:
        super().__init__(f"external_id was already used for {appeal.reg_no} with different content")
        self.reg_no = appeal.reg_no  # read now: the session may be gone when it is handled


@dataclass(frozen=True)
class Registration:
    appeal: Appeal
    duplicate: bool


def allocate_reg_no(uow: UnitOfWork, prefix: str, year: int) -> str:
    """Next number of the year, in the registering transaction: a rollback frees it,
    so numbers have no gaps; the row lock serialises concurrent replicas."""
    # Everything else is done before this: the counter row stays locked until commit.
    uow.enter_critical_section()
    if uow.session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    table = RegNoCounter.__table__
    stmt = insert(table).values(prefix=prefix, year=year, last=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.prefix, table.c.year], set_={"last": table.c.last + 1}
    ).returning(table.c.last)
    number = uow.session.execute(stmt).scalar_one()
    return format_reg_no(prefix, year, number)


def find_by_source_key(uow: UnitOfWork, source_system: str, external_id: str) -> Appeal | None:
    return uow.session.scalars(
        select(Appeal).where(Appeal.source_system == source_system,
                             Appeal.external_id == external_id)
    ).first()


def _check_references(uow: UnitOfWork, ctx: IntakeContext, data: dict[str, Any]) -> None:
    errors = ctx.classifier.unknown_fields(data.get("category"), data.get("industry_chain"))
    activity_id = data.get("activity_id")
    if activity_id and uow.session.get(Activity, activity_id) is None:
        errors["activity_id"] = [f"unknown activity {activity_id!r}; register it first"]
    if errors:
        raise FieldErrors(errors)


def _known_chain(uow: UnitOfWork, uscc: str) -> tuple[str, str] | None:
    """The chain of the enterprise's latest appeal whose chain was given or set by staff."""
    # Only a chain a person stated: a keyword guess must not spread to every later appeal.
    row = uow.session.execute(
        select(Appeal.industry_chain, Appeal.reg_no)
        .where(Appeal.uscc == uscc, Appeal.industry_chain.is_not(None),
               or_(Appeal.chain_rule == "given", Appeal.chain_rule.startswith("staff:")))
        .order_by(Appeal.registered_at.desc(), Appeal.reg_no.desc()).limit(1)
    ).first()
    return (row[0], row[1]) if row else None


def _possible_duplicate(uow: UnitOfWork, ctx: IntakeContext, uscc: str, text: str
                        ) -> tuple[str, float] | None:
    """The most similar appeal of the same enterprise in the window, if similar enough."""
    since = uow.now - ctx.duplicate_window
    best: tuple[str, float] | None = None
    for reg_no, title, content in uow.session.execute(
            select(Appeal.reg_no, Appeal.title, Appeal.content)
            .where(Appeal.uscc == uscc, Appeal.registered_at >= since)
            .order_by(Appeal.registered_at.desc(), Appeal.reg_no.desc()).limit(50)):
        score = similarity(text, f"{title}\n{content}")
        if score >= ctx.duplicate_threshold and (best is None or score > best[1]):
            best = (reg_no, round(score, 3))
    return best


def register(runtime: ServiceRuntime, ctx: IntakeContext, uow: UnitOfWork, data: dict[str, Any],
             *, source_system: str, actor: str, correlation_id: str | None = None,
             answer: str | None = None) -> Registration:
    """Register validated appeal data once per (source_system, external_id).

    With `answer` the appeal is resolved on the spot (当场办结) in the same transaction.
    """
    digest = content_hash(data)
    external_id = data.get("external_id")
    if external_id:
        existing = find_by_source_key(uow, source_system, external_id)
        if existing is not None:
            if existing.content_hash != digest:
                raise DuplicateConflict(existing)
            return Registration(existing, duplicate=True)
    _check_references(uow, ctx, data)
    enterprise = data["enterprise"]
    classified = ctx.classifier.classify(data["title"], data["content"], data.get("category"),
                                         data.get("industry_chain"),
                                         _known_chain(uow, enterprise["uscc"]))
    repeat = _possible_duplicate(uow, ctx, enterprise["uscc"],
                                 f"{data['title']}\n{data['content']}")
    now = uow.now
    tz = ZoneInfo(runtime.settings.timezone)
    reg_no = allocate_reg_no(uow, runtime.settings.reg_no_prefix, now.astimezone(tz).year)
    appeal = Appeal(
        id=str(uuid.uuid4()), reg_no=reg_no, source_system=source_system,
        external_id=external_id, content_hash=digest, channel=data["channel"],
        enterprise_name=enterprise["name"], uscc=enterprise["uscc"],
        contact_name=enterprise["contact_name"], contact_phone=enterprise["contact_phone"],
        title=data["title"], content=data["content"], category=classified.category,
        category_rule=classified.category_rule, industry_chain=classified.industry_chain,
        chain_rule=classified.chain_rule, urgency=data.get("urgency") or "normal",
        activity_id=data.get("activity_id"),
        attachments=json.dumps(data.get("attachments") or [], ensure_ascii=False),
        submitted_at=data.get("submitted_at") or now, registered_at=now, registered_by=actor,
        state="registered", state_at=now, units="[]",
        possible_duplicate_of=repeat[0] if repeat else None,
        duplicate_score=repeat[1] if repeat else None,
    )
    uow.session.add(appeal)
    payload = appeal_payload(appeal)
    payload["resolved_on_spot"] = answer is not None
    event = uow.emit("appeal.registered", payload, appeal_id=appeal.id,
                     correlation_id=correlation_id)
    _add_timeline(uow, event, actor=actor, detail={
        "reg_no": reg_no, "channel": appeal.channel, "source_system": source_system,
        "category": appeal.category, "category_rule": appeal.category_rule,
        "industry_chain": appeal.industry_chain, "chain_rule": appeal.chain_rule,
        "possible_duplicate_of": appeal.possible_duplicate_of})
    if answer is not None:
        appeal.state = next_appeal_state(appeal.state, "resolve_on_spot")
        appeal.answer = answer
        event = uow.emit("appeal.resolved_on_spot", {"reg_no": reg_no, "answer": answer,
                                                     "actor": actor}, appeal_id=appeal.id)
        _add_timeline(uow, event, actor=actor, detail={"answer": answer})
    return Registration(appeal, duplicate=False)


def appeal_payload(appeal: Appeal) -> dict[str, Any]:
    """What other services learn about a new appeal (they keep their own copies)."""
    return {
        "reg_no": appeal.reg_no, "source_system": appeal.source_system,
        "external_id": appeal.external_id, "channel": appeal.channel,
        "enterprise": {"name": appeal.enterprise_name, "uscc": appeal.uscc,
                       "contact_name": appeal.contact_name,
                       "contact_phone": appeal.contact_phone},
        "title": appeal.title, "content": appeal.content, "category": appeal.category,
        "category_rule": appeal.category_rule, "industry_chain": appeal.industry_chain,
        "chain_rule": appeal.chain_rule, "urgency": appeal.urgency,
        "activity_id": appeal.activity_id, "attachments": json.loads(appeal.attachments),
        "submitted_at": appeal.submitted_at.isoformat(),
        "registered_at": appeal.registered_at.isoformat(),
        "registered_by": appeal.registered_by,
        "possible_duplicate_of": appeal.possible_duplicate_of,
    }


def _add_timeline(uow: UnitOfWork, event: Event, *, actor: str | None,
                  detail: dict[str, Any]) -> None:
    uow.session.add(TimelineEntry(
        appeal_id=event.appeal_id, event_id=event.event_id, event_type=event.event_type,
        occurred_at=event.occurred_at, producer=event.producer, actor=actor,
        detail=json.dumps(detail, ensure_ascii=False, default=str),
    ))


# --- the bus: appeals.inbound -------------------------------------------------------------

def handle_inbound(runtime: ServiceRuntime, ctx: IntakeContext, delivery: Delivery) -> str:
    """Register one inbound message, or reject it; every message gets one receipt.

    Returns the receipt status (or "redelivered" for a message already handled).
    """
    rk_source = source_from_routing_key(delivery.routing_key)
    data, errors, external_id = _validate_inbound(runtime, ctx, delivery, rk_source)
    if rk_source is not None:  # the sender is the broker's word, not the publisher's
        mismatch = sender_mismatch(delivery.user_id, source_user(
            rk_source, runtime.settings.bus_user_prefix), delivery.routing_key)
        if mismatch:
            errors.setdefault("user_id", []).append(mismatch)
    idempotency_key = inbox_key(delivery.user_id, delivery.message_id or "sha256:" + hashlib.sha256(
        delivery.routing_key.encode() + b"\0" + delivery.body).hexdigest())
    try:
        with runtime.unit_of_work() as uow:
            if not uow.first_time(INBOUND_CONSUMER, idempotency_key):
                return "redelivered"
            if errors:
                _reject(uow, ctx, delivery, rk_source, external_id, errors)
                return "rejected"
            try:
                result = register(runtime, ctx, uow, data, source_system=rk_source,
                                  actor=f"system:{rk_source}", correlation_id=delivery.message_id)
            except DuplicateConflict as conflict:
                log.warning("conflicting repeat of %s/%s (original %s)", rk_source, external_id,
                            conflict.reg_no)
                _reject(uow, ctx, delivery, rk_source, external_id,
                        {"external_id": [f"already used for {conflict.reg_no} with "
                                         "different content"]})
                return "rejected"
            except FieldErrors as refused:
                _reject(uow, ctx, delivery, rk_source, external_id, refused.errors)
                return "rejected"
            status = "duplicate" if result.duplicate else "accepted"
            _receipt(uow, rk_source, external_id, delivery.message_id, status,
                     appeal_id=result.appeal.id, reg_no=result.appeal.reg_no)
            return status
    except IntegrityError:
        # Another replica registered the same key at the same moment; on retry we
        # find its appeal and answer `duplicate`.
        log.info("concurrent registration of %s/%s; will retry", rk_source, external_id)
        raise


def _validate_inbound(runtime: ServiceRuntime, ctx: IntakeContext, delivery: Delivery,
                      rk_source: str | None) -> tuple[dict[str, Any], dict[str, list[str]], Any]:
    errors: dict[str, list[str]] = {}
    if rk_source is None:
        errors["routing_key"] = [
            f"must be appeal.submit.<source_system>, got {delivery.routing_key!r}"]
    elif rk_source not in ctx.sources:
        errors["source_system"] = [f"{rk_source!r} is not a registered source system"]
    if len(delivery.body) > MAX_BODY_BYTES:
        errors["_body"] = [f"message body larger than {MAX_BODY_BYTES} bytes"]
        return {}, errors, None
    content_type = (delivery.content_type or "").split(";")[0].strip()
    if content_type != "application/json":
        errors.setdefault("_body", []).append(
            f"content_type must be application/json, got {delivery.content_type!r}")
    try:
        raw = parse_json(delivery.body)  # UTF-8, nested at most MAX_JSON_DEPTH deep
    except JsonRefused as exc:
        errors.setdefault("_body", []).append(f"body {exc}")
        return {}, errors, None
    if not isinstance(raw, dict):
        errors.setdefault("_body", []).append("body must be a JSON object")
        return {}, errors, None
    external_id = raw.get("external_id") if isinstance(raw.get("external_id"), str) else None
    data: dict[str, Any] = {}
    try:
        data = InboundAppealSchema(now=runtime.now()).load(raw)
    except ValidationError as exc:
        for field, messages in errors_by_field(exc).items():
            errors.setdefault(field, []).extend(messages)
    if data and rk_source and data["source_system"] != rk_source:
        errors.setdefault("source_system", []).append(
            f"{data['source_system']!r} does not match the routing key's {rk_source!r}")
    return data, errors, external_id


def _receipt(uow: UnitOfWork, source: str, external_id: str | None, message_id: str | None,
             status: str, *, appeal_id: str | None = None, reg_no: str | None = None,
             errors: dict[str, list[str]] | None = None) -> None:
    body: dict[str, Any] = {"source_system": source, "external_id": external_id,
                            "message_id": message_id, "status": status}
    if reg_no:
        body.update(appeal_id=appeal_id, reg_no=reg_no)
    if errors:
        body["errors"] = errors
    uow.send(RECEIPTS_EXCHANGE, f"receipt.{source}", body)


def _reject(uow: UnitOfWork, ctx: IntakeContext, delivery: Delivery, rk_source: str | None,
            external_id: str | None, errors: dict[str, list[str]]) -> None:
    # Only a registered source has a receipts queue; an unknown one gets its message kept.
    if rk_source in ctx.sources:
        _receipt(uow, rk_source, external_id, delivery.message_id, "rejected", errors=errors)
    uow.send("", REJECTED_QUEUE, delivery.body, content_type=delivery.content_type or
             "application/octet-stream", headers={
                 "x-original-routing-key": delivery.routing_key,
                 "x-original-message-id": delivery.message_id or "",
                 "x-errors": json.dumps(errors, ensure_ascii=False),
                 "x-rejected-at": uow.now.isoformat()})


# --- staff over HTTP / RPC ----------------------------------------------------------------

def register_by_staff(runtime: ServiceRuntime, ctx: IntakeContext, payload: Any, actor: str
                      ) -> dict[str, Any]:
    data = StaffAppealSchema().load(payload)
    return _staff_register(runtime, ctx, data, actor, answer=None)


def register_on_spot(runtime: ServiceRuntime, ctx: IntakeContext, payload: Any, actor: str
                     ) -> dict[str, Any]:
    """当场办结: registered and answered at once; it is not dispatched."""
    data = OnSpotAppealSchema().load(payload)
    return _staff_register(runtime, ctx, data, actor, answer=data.pop("answer"))


def _staff_register(runtime: ServiceRuntime, ctx: IntakeContext, data: dict[str, Any],
                    actor: str, answer: str | None) -> dict[str, Any]:
    try:
        with runtime.unit_of_work() as uow:
            result = register(runtime, ctx, uow, data, source_system=STAFF_SOURCE, actor=actor,
                              answer=answer)
            return {**appeal_summary(result.appeal), "duplicate": result.duplicate}
    except DuplicateConflict as conflict:
        raise Conflict(str(conflict), {"external_id": [
            f"already used for {conflict.reg_no} with different content"]}) from None


def _locked_appeal(uow: UnitOfWork, reg_no: str) -> Appeal:
    appeal = uow.session.scalars(
        select(Appeal).where(Appeal.reg_no == reg_no).with_for_update()).first()
    if appeal is None:
        raise NotFound(f"no appeal {reg_no}")
    return appeal


def reclassify(runtime: ServiceRuntime, ctx: IntakeContext, reg_no: str, payload: Any,
               actor: str) -> dict[str, Any]:
    """Staff correct category and/or chain; the rule that had chosen them is kept."""
    data = ReclassifySchema().load(payload)
    errors = ctx.classifier.unknown_fields(data["category"], data["industry_chain"])
    if errors:
        raise FieldErrors(errors)
    with runtime.unit_of_work() as uow:
        appeal = _locked_appeal(uow, reg_no)
        if appeal.state in ("closed", "withdrawn"):
            raise Conflict(f"cannot reclassify an appeal in state '{appeal.state}'")
        previous = {"category": appeal.category, "category_rule": appeal.category_rule,
                    "industry_chain": appeal.industry_chain, "chain_rule": appeal.chain_rule}
        if data["category"] is not None:
            appeal.category, appeal.category_rule = data["category"], f"staff:{actor}"
        if data["industry_chain"] is not None:
            appeal.industry_chain, appeal.chain_rule = data["industry_chain"], f"staff:{actor}"
        detail = {"reg_no": reg_no, "category": appeal.category,
                  "industry_chain": appeal.industry_chain, "previous": previous,
                  "reason": data["reason"], "actor": actor}
        event = uow.emit("appeal.reclassified", detail, appeal_id=appeal.id)
        _add_timeline(uow, event, actor=actor, detail=detail)
        return appeal_summary(appeal)


def withdraw(runtime: ServiceRuntime, reg_no: str, payload: Any, actor: str) -> dict[str, Any]:
    """撤回: the appeal stops here, with the reason; it is kept, never deleted."""
    data = WithdrawSchema().load(payload)
    with runtime.unit_of_work() as uow:
        appeal = _locked_appeal(uow, reg_no)
        try:
            appeal.state = next_appeal_state(appeal.state, "withdraw")
        except IllegalTransition as exc:
            raise Conflict(str(exc)) from None
        appeal.state_at, appeal.withdrawn_reason = uow.now, data["reason"]
        detail = {"reg_no": reg_no, "reason": data["reason"], "actor": actor}
        event = uow.emit("appeal.withdrawn", detail, appeal_id=appeal.id)
        _add_timeline(uow, event, actor=actor, detail=detail)
        return appeal_summary(appeal)


def appeal_summary(appeal: Appeal) -> dict[str, Any]:
    return {"appeal_id": appeal.id, "reg_no": appeal.reg_no, "state": appeal.state,
            "channel": appeal.channel, "title": appeal.title,
            "enterprise_name": appeal.enterprise_name, "uscc": appeal.uscc,
            "category": appeal.category, "industry_chain": appeal.industry_chain,
            "possible_duplicate_of": appeal.possible_duplicate_of,
            "registered_at": appeal.registered_at.isoformat()}


def get_appeal(runtime: ServiceRuntime, reg_no: str, principal: Principal | None = None
               ) -> dict[str, Any] | None:
    """The appeal and its timeline as `principal` may see it (None: the whole, for the
    bureau's RPC). The bureau sees everything; a viewer everything with the contact's
    phone and name masked, in free text too; a department only its share (see
    `department_view`), and None (as if unknown) when the appeal is not dispatched to it."""
    with runtime.store.read() as session:
        appeal = session.scalars(select(Appeal).where(Appeal.reg_no == reg_no)).first()
        if appeal is None:
            return None
        if principal is not None and principal.role == "department" \
                and principal.dept_code not in _units_of(appeal):
            return None
        entries = session.scalars(
            select(TimelineEntry).where(TimelineEntry.appeal_id == appeal.id)
            .order_by(TimelineEntry.occurred_at, TimelineEntry.id)
        ).all()
        view = {
            **appeal_payload(appeal), **appeal_summary(appeal),
            "units": json.loads(appeal.units), "answer": appeal.answer,
            "withdrawn_reason": appeal.withdrawn_reason,
            "duplicate_score": appeal.duplicate_score,
            "timeline": [{"at": e.occurred_at.isoformat(), "event": e.event_type,
                          "by": e.actor or e.producer, "producer": e.producer,
                          "detail": json.loads(e.detail)}
                         for e in entries],
        }
    if principal is not None and principal.role == "department":
        return department_view(view, principal.dept_code)
    for entry in view["timeline"]:
        del entry["producer"]
    if principal is not None and principal.role == "viewer":
        return mask_personal(view)
    return view


def _units_of(appeal: Appeal) -> list[str]:
    """The lead and co-units of the appeal's current dispatch (from appeal.dispatched)."""
    units = json.loads(appeal.units or "[]")
    if not isinstance(units, dict):
        return []
    return [u for u in [units.get("lead"), *(units.get("co") or [])] if u]


def search(runtime: ServiceRuntime, params: Any, mask: bool = False) -> dict[str, Any]:
    """Find appeals by enterprise (name or USCC), state, channel and registration time.
    With `mask` (a viewer) phones and names in the summaries are masked."""
    p = SearchSchema().load(params)
    query = select(Appeal)
    if p["q"]:
        query = query.where(or_(Appeal.enterprise_name.contains(p["q"], autoescape=True),
                                Appeal.uscc == p["q"].upper(), Appeal.reg_no == p["q"]))
    if p["uscc"]:
        query = query.where(Appeal.uscc == p["uscc"].upper())
    if p["state"]:
        query = query.where(Appeal.state == p["state"])
    if p["channel"]:
        query = query.where(Appeal.channel == p["channel"])
    if p["registered_from"]:
        query = query.where(Appeal.registered_at >= p["registered_from"])
    if p["registered_to"]:
        query = query.where(Appeal.registered_at < p["registered_to"])
    with runtime.store.read() as session:
        total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        rows = session.scalars(query.order_by(Appeal.registered_at.desc(), Appeal.reg_no.desc())
                               .offset((p["page"] - 1) * p["page_size"]).limit(p["page_size"]))
        items = [mask_personal(appeal_summary(a), [a.contact_name]) if mask
                 else appeal_summary(a) for a in rows]
        return {"items": items, "page": p["page"], "page_size": p["page_size"], "total": total}


# --- activities ---------------------------------------------------------------------------

def register_activity(runtime: ServiceRuntime, ctx: IntakeContext, payload: Any, actor: str
                      ) -> dict[str, Any]:
    data = ActivitySchema().load(payload)
    errors = ctx.classifier.unknown_fields(None, data["industry_chain"])
    if data["lead_unit"] not in ctx.departments:
        errors["lead_unit"] = [f"unknown department {data['lead_unit']!r}"]
    if errors:
        raise FieldErrors(errors)
    activity_id = data["activity_id"] or f"{data['kind']}-{data['held_on']:%Y%m%d}-" \
                                         f"{uuid.uuid4().hex[:6]}"
    with runtime.unit_of_work() as uow:
        if uow.session.get(Activity, activity_id) is not None:
            raise Conflict(f"activity {activity_id} already exists")
        activity = Activity(id=activity_id, kind=data["kind"], held_on=data["held_on"],
                            title=data["title"], lead_unit=data["lead_unit"],
                            industry_chain=data["industry_chain"], created_by=actor,
                            created_at=uow.now)
        uow.session.add(activity)
        view = activity_view(activity)
        uow.emit("activity.registered", {**view, "actor": actor})
        return view


def activity_view(a: Activity) -> dict[str, Any]:
    return {"activity_id": a.id, "kind": a.kind, "held_on": a.held_on.isoformat(),
            "title": a.title, "lead_unit": a.lead_unit, "industry_chain": a.industry_chain}


def list_activities(runtime: ServiceRuntime) -> list[dict[str, Any]]:
    with runtime.store.read() as session:
        return [activity_view(a) for a in session.scalars(
            select(Activity).order_by(Activity.held_on.desc()).limit(500))]


# --- events from the other services keep the register's state and timeline current -------

def apply_event(runtime: ServiceRuntime, delivery: Delivery) -> None:
    event = Event.from_json(delivery.body)
    if event.producer == runtime.service or not event.appeal_id:
        return  # intake wrote its own timeline entries when it made the change
    with runtime.unit_of_work() as uow:
        if not uow.first_time(EVENTS_CONSUMER, event.event_id):
            return
        appeal = uow.session.get(Appeal, event.appeal_id, with_for_update=True)
        if appeal is None:
            raise NotYet(f"event {event.event_id} for unknown appeal {event.appeal_id}")
        _add_timeline(uow, event, actor=event.data.get("actor"), detail=event.data)
        appeal.state, appeal.state_at = project_state(
            appeal.state, appeal.state_at, event.event_type, event.data, event.occurred_at)
        if event.event_type == "appeal.dispatched":
            appeal.units = json.dumps(event.data.get("units", {}), ensure_ascii=False)
