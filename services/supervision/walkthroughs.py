"""我陪群众走流程 in supervision: record a walkthrough, put what it found on the problem,
demand and optimization lists, and close the items out one by one (销号).

Every open item has an owner and a deadline and is chased by the same clocks as an
assignment (reminder the working day before, 督办 after)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select

from appeals_common.http import Conflict, FieldErrors, NotFound, Page
from appeals_common.nameko_ext import ServiceRuntime
from appeals_common.reference import WALKTHROUGH_LISTS
from appeals_common.schemas import ItemClosureSchema, WalkthroughSchema
from services.supervision.clocks import open_clock, settle_clock
from services.supervision.models import ListItem, Walkthrough

ITEM_STATES = ("open", "closed")


def record(runtime: ServiceRuntime, departments: Collection[str], payload: Any,
           actor: str) -> dict[str, Any]:
    data = WalkthroughSchema().load(payload)
    now = runtime.now()
    errors: dict[str, list[str]] = {}
    if data["lead_unit"] not in departments:
        errors["lead_unit"] = [f"unknown department {data['lead_unit']!r}"]
    for i, finding in enumerate(data["findings"]):
        if finding["owner"] not in departments:
            errors[f"findings.{i}.owner"] = [f"unknown department {finding['owner']!r}"]
        if finding["due_at"] <= now:
            errors.setdefault(f"findings.{i}.due_at", []).append("must be in the future")
    if errors:
        raise FieldErrors(errors)
    # The date in the number is the bureau's local day, as staff read it.
    local_day = now.astimezone(ZoneInfo(runtime.settings.timezone))
    walkthrough_id = f"WT-{local_day:%Y%m%d}-{uuid.uuid4().hex[:8]}"
    with runtime.unit_of_work() as uow:
        walkthrough = Walkthrough(
            id=walkthrough_id, service_item=data["service_item"], mode=data["mode"],
            lead_unit=data["lead_unit"], walked_on=data["walked_on"],
            scores=json.dumps(data["scores"], sort_keys=True), summary=data["summary"],
            recorded_by=actor, recorded_at=uow.now)
        uow.session.add(walkthrough)
        items = []
        for n, finding in enumerate(data["findings"], start=1):
            item = ListItem(id=f"{walkthrough_id}-{n}", walkthrough_id=walkthrough_id,
                            list=finding["list"], description=finding["description"],
                            owner=finding["owner"], due_at=finding["due_at"], state="open")
            uow.session.add(item)
            items.append(item)
            open_clock(uow, appeal_id=item.id, dept=item.owner, duty_id=item.id, kind="item",
                       due_at=item.due_at, reg_no=item.id)
        view = _view(walkthrough, items)
        uow.emit("walkthrough.recorded", {**_event_view(view), "actor": actor})
        return view


def close_item(runtime: ServiceRuntime, item_id: str, payload: Any, actor: str) -> dict[str, Any]:
    """销号 of one list item, with what was done about it."""
    data = ItemClosureSchema().load(payload)
    with runtime.unit_of_work() as uow:
        item = uow.session.get(ListItem, item_id, with_for_update=True)
        if item is None:
            raise NotFound(f"no list item {item_id}")
        if item.state != "open":
            raise Conflict(f"list item {item_id} was already closed at {item.closed_at.isoformat()}")
        item.state, item.resolution = "closed", data["resolution"]
        item.closed_by, item.closed_at = actor, uow.now
        settle_clock(uow, item.id, "item")
        view = _item_view(item, uow.now)
        uow.emit("walkthrough_item.closed", {
            "walkthrough_id": item.walkthrough_id, "item_id": item.id, "list": item.list,
            "owner": item.owner, "resolution": item.resolution,
            "closed_at": uow.now.isoformat(), "on_time": uow.now <= item.due_at, "actor": actor})
        return view


def get(runtime: ServiceRuntime, walkthrough_id: str) -> dict[str, Any]:
    with runtime.store.read() as session:
        walkthrough = session.get(Walkthrough, walkthrough_id)
        if walkthrough is None:
            raise NotFound(f"no walkthrough {walkthrough_id}")
        items = session.scalars(select(ListItem).where(
            ListItem.walkthrough_id == walkthrough_id).order_by(ListItem.id))
        return _view(walkthrough, list(items), runtime.now())


def list_walkthroughs(runtime: ServiceRuntime, page: Page = Page()) -> list[dict[str, Any]]:
    with runtime.store.read() as session:
        walkthroughs = list(session.scalars(
            select(Walkthrough).order_by(Walkthrough.walked_on.desc(), Walkthrough.id)
            .offset(page.offset).limit(page.size)))
        items: dict[str, list[ListItem]] = {}
        for item in session.scalars(select(ListItem).where(
                ListItem.walkthrough_id.in_([w.id for w in walkthroughs])).order_by(ListItem.id)):
            items.setdefault(item.walkthrough_id, []).append(item)
        now = runtime.now()
        return [_view(w, items.get(w.id, []), now) for w in walkthroughs]


def list_items(runtime: ServiceRuntime, list_name: str | None, state: str | None,
               owner: str | None, page: Page = Page()) -> list[dict[str, Any]]:
    """The problem / demand / optimization lists; open items first, soonest due first."""
    errors = {}
    if list_name is not None and list_name not in WALKTHROUGH_LISTS:
        errors["list"] = [f"one of {', '.join(WALKTHROUGH_LISTS)}"]
    if state is not None and state not in ITEM_STATES:
        errors["state"] = [f"one of {', '.join(ITEM_STATES)}"]
    if errors:
        raise FieldErrors(errors)
    with runtime.store.read() as session:
        query = select(ListItem).order_by(ListItem.state.desc(), ListItem.due_at, ListItem.id)
        if list_name:
            query = query.where(ListItem.list == list_name)
        if state:
            query = query.where(ListItem.state == state)
        if owner:
            query = query.where(ListItem.owner == owner)
        now = runtime.now()
        return [_item_view(i, now)
                for i in session.scalars(query.offset(page.offset).limit(page.size))]


def _view(w: Walkthrough, items: list[ListItem], now: Any = None) -> dict[str, Any]:
    return {"walkthrough_id": w.id, "service_item": w.service_item, "mode": w.mode,
            "lead_unit": w.lead_unit, "walked_on": w.walked_on.isoformat(),
            "scores": json.loads(w.scores), "summary": w.summary,
            "recorded_by": w.recorded_by, "recorded_at": w.recorded_at.isoformat(),
            "items": [_item_view(i, now) for i in items]}


def _item_view(i: ListItem, now: Any) -> dict[str, Any]:
    return {"item_id": i.id, "walkthrough_id": i.walkthrough_id, "list": i.list,
            "description": i.description, "owner": i.owner, "due_at": i.due_at.isoformat(),
            "state": i.state, "resolution": i.resolution,
            "closed_at": i.closed_at and i.closed_at.isoformat(),
            "overdue": now is not None and i.state == "open" and now > i.due_at}


def _event_view(view: dict[str, Any]) -> dict[str, Any]:
    """The event carries the items as recorded (no derived overdue flag)."""
    return {**{k: v for k, v in view.items() if k not in ("recorded_by", "recorded_at", "items")},
            "items": [{k: item[k] for k in ("item_id", "list", "description", "owner", "due_at")}
                      for item in view["items"]]}
