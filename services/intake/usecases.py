"""Intake's service layer: registration from any channel, receipts, the timeline."""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from marshmallow import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from appeals_common.db import UnitOfWork
from appeals_common.envelope import Event
from appeals_common.lifecycle import appeal_state_after
from appeals_common.nameko_ext import Delivery, ServiceRuntime
from appeals_common.schemas import (
    MAX_BODY_BYTES,
    InboundAppealSchema,
    StaffAppealSchema,
    errors_by_field,
)
from appeals_common.topology import RECEIPTS_EXCHANGE, REJECTED_QUEUE
from services.intake.domain import content_hash, format_reg_no, source_from_routing_key
from services.intake.models import Appeal, RegNoCounter, TimelineEntry

log = logging.getLogger("appeals.intake")

INBOUND_CONSUMER = "intake.inbound"
EVENTS_CONSUMER = "intake.events"
STAFF_SOURCE = "staff"


class DuplicateConflict(Exception):
    """The idempotency key was used before for an appeal with different content."""

    def __init__(self, appeal: Appeal) -> None:
        super().__init__(f"external_id was already used for {appeal.reg_no} with different content")
        self.appeal = appeal


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


def register(runtime: ServiceRuntime, uow: UnitOfWork, data: dict[str, Any], *,
             source_system: str, actor: str, correlation_id: str | None = None) -> Registration:
    """Register validated appeal data once per (source_system, external_id)."""
    digest = content_hash(data)
    external_id = data.get("external_id")
    if external_id:
        existing = find_by_source_key(uow, source_system, external_id)
        if existing is not None:
            if existing.content_hash != digest:
                raise DuplicateConflict(existing)
            return Registration(existing, duplicate=True)
    now = uow.now
    tz = ZoneInfo(runtime.settings.timezone)
    reg_no = allocate_reg_no(uow, runtime.settings.reg_no_prefix, now.astimezone(tz).year)
    enterprise = data["enterprise"]
    appeal = Appeal(
        id=str(uuid.uuid4()), reg_no=reg_no, source_system=source_system,
        external_id=external_id, content_hash=digest, channel=data["channel"],
        enterprise_name=enterprise["name"], uscc=enterprise["uscc"],
        contact_name=enterprise["contact_name"], contact_phone=enterprise["contact_phone"],
        title=data["title"], content=data["content"], category=data.get("category"),
        industry_chain=data.get("industry_chain"), urgency=data.get("urgency") or "normal",
        activity_id=data.get("activity_id"),
        attachments=json.dumps(data.get("attachments") or [], ensure_ascii=False),
        submitted_at=data.get("submitted_at") or now, registered_at=now, registered_by=actor,
        state="registered", state_at=now, units="[]",
    )
    uow.session.add(appeal)
    event = uow.emit("appeal.registered", appeal_payload(appeal), appeal_id=appeal.id,
                     correlation_id=correlation_id)
    _add_timeline(uow, event, actor=actor, detail={"reg_no": reg_no, "channel": appeal.channel,
                                                    "source_system": source_system})
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
        "industry_chain": appeal.industry_chain, "urgency": appeal.urgency,
        "activity_id": appeal.activity_id, "attachments": json.loads(appeal.attachments),
        "submitted_at": appeal.submitted_at.isoformat(),
        "registered_at": appeal.registered_at.isoformat(),
        "registered_by": appeal.registered_by,
    }


def _add_timeline(uow: UnitOfWork, event: Event, *, actor: str | None,
                  detail: dict[str, Any]) -> None:
    uow.session.add(TimelineEntry(
        appeal_id=event.appeal_id, event_id=event.event_id, event_type=event.event_type,
        occurred_at=event.occurred_at, producer=event.producer, actor=actor,
        detail=json.dumps(detail, ensure_ascii=False, default=str),
    ))


# --- the bus: appeals.inbound -------------------------------------------------------------

def handle_inbound(runtime: ServiceRuntime, delivery: Delivery, known_sources: frozenset[str]) -> str:
    """Register one inbound message, or reject it; every message gets one receipt.

    Returns the receipt status (or "redelivered" for a message already handled).
    """
    rk_source = source_from_routing_key(delivery.routing_key)
    data, errors, external_id = _validate_inbound(runtime, delivery, rk_source, known_sources)
    idempotency_key = delivery.message_id or "sha256:" + hashlib.sha256(
        delivery.routing_key.encode() + b"\0" + delivery.body).hexdigest()
    try:
        with runtime.unit_of_work() as uow:
            if not uow.first_time(INBOUND_CONSUMER, idempotency_key):
                return "redelivered"
            if errors:
                _reject(uow, delivery, rk_source, known_sources, external_id, errors)
                return "rejected"
            try:
                result = register(runtime, uow, data, source_system=rk_source,
                                  actor=f"system:{rk_source}", correlation_id=delivery.message_id)
            except DuplicateConflict as conflict:
                log.warning("conflicting repeat of %s/%s (original %s)", rk_source, external_id,
                            conflict.appeal.reg_no)
                _reject(uow, delivery, rk_source, known_sources, external_id,
                        {"external_id": [f"already used for {conflict.appeal.reg_no} with "
                                         "different content"]})
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


def _validate_inbound(runtime: ServiceRuntime, delivery: Delivery, rk_source: str | None,
                      known_sources: frozenset[str]) -> tuple[dict[str, Any], dict[str, list[str]], Any]:
    errors: dict[str, list[str]] = {}
    if rk_source is None:
        errors["routing_key"] = [f"must be appeal.submit.<source_system>, got {delivery.routing_key!r}"]
    elif rk_source not in known_sources:
        errors["source_system"] = [f"{rk_source!r} is not a registered source system"]
    if len(delivery.body) > MAX_BODY_BYTES:
        errors["_body"] = [f"message body larger than {MAX_BODY_BYTES} bytes"]
        return {}, errors, None
    content_type = (delivery.content_type or "").split(";")[0].strip()
    if content_type != "application/json":
        errors.setdefault("_body", []).append(
            f"content_type must be application/json, got {delivery.content_type!r}")
    try:
        raw = json.loads(delivery.body.decode("utf-8"))
    except UnicodeDecodeError:
        errors.setdefault("_body", []).append("body is not UTF-8")
        return {}, errors, None
    except json.JSONDecodeError as exc:
        errors.setdefault("_body", []).append(f"body is not JSON: {exc}")
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


def _reject(uow: UnitOfWork, delivery: Delivery, rk_source: str | None,
            known_sources: frozenset[str], external_id: str | None,
            errors: dict[str, list[str]]) -> None:
    # Only a registered source has a receipts queue; an unknown one gets its message kept.
    if rk_source in known_sources:
        _receipt(uow, rk_source, external_id, delivery.message_id, "rejected", errors=errors)
    uow.send("", REJECTED_QUEUE, delivery.body, content_type=delivery.content_type or
             "application/octet-stream", headers={
                 "x-original-routing-key": delivery.routing_key,
                 "x-original-message-id": delivery.message_id or "",
                 "x-errors": json.dumps(errors, ensure_ascii=False),
                 "x-rejected-at": uow.now.isoformat()})


# --- staff over HTTP / RPC ----------------------------------------------------------------

def register_by_staff(runtime: ServiceRuntime, payload: Any, actor: str) -> dict[str, Any]:
    data = StaffAppealSchema().load(payload)
    with runtime.unit_of_work() as uow:
        result = register(runtime, uow, data, source_system=STAFF_SOURCE, actor=actor)
        return {**appeal_summary(result.appeal), "duplicate": result.duplicate}


def appeal_summary(appeal: Appeal) -> dict[str, Any]:
    return {"appeal_id": appeal.id, "reg_no": appeal.reg_no, "state": appeal.state,
            "channel": appeal.channel, "title": appeal.title,
            "registered_at": appeal.registered_at.isoformat()}


def get_appeal(runtime: ServiceRuntime, reg_no: str) -> dict[str, Any] | None:
    with runtime.store.read() as session:
        appeal = session.scalars(select(Appeal).where(Appeal.reg_no == reg_no)).first()
        if appeal is None:
            return None
        entries = session.scalars(
            select(TimelineEntry).where(TimelineEntry.appeal_id == appeal.id)
            .order_by(TimelineEntry.occurred_at, TimelineEntry.id)
        ).all()
        return {
            **appeal_summary(appeal),
            **{k: v for k, v in appeal_payload(appeal).items() if k != "reg_no"},
            "units": json.loads(appeal.units),
            "timeline": [{"at": e.occurred_at.isoformat(), "event": e.event_type,
                          "by": e.actor or e.producer, "detail": json.loads(e.detail)}
                         for e in entries],
        }


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
            raise LookupError(f"event {event.event_id} for unknown appeal {event.appeal_id}")
        _add_timeline(uow, event, actor=event.data.get("actor"), detail=event.data)
        new_state = appeal_state_after(event.event_type, event.data)
        if new_state and event.occurred_at >= appeal.state_at:
            appeal.state, appeal.state_at = new_state, event.occurred_at
        if event.event_type == "appeal.dispatched":
            appeal.units = json.dumps(event.data.get("units", {}), ensure_ascii=False)

