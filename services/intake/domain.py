"""Intake rules that need no framework: reg_no format, idempotency, content identity,
and what a department sees of an appeal."""

from __future__ import annotations

import hashlib
import json
from typing import Any

RECEIPT_STATUSES = ("accepted", "duplicate", "rejected")


def format_reg_no(prefix: str, year: int, number: int) -> str:
    return f"{prefix}-{year}-{number:06d}"


def content_hash(appeal: dict[str, Any]) -> str:
    """Identity of what was said, to tell a harmless repeat from a conflicting one."""
    keys = ("channel", "enterprise", "title", "content", "category", "industry_chain",
            "urgency", "activity_id", "attachments")
    canonical = json.dumps({k: appeal.get(k) for k in keys}, sort_keys=True, ensure_ascii=False,
                           default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def source_from_routing_key(routing_key: str) -> str | None:
    prefix = "appeal.submit."
    if routing_key.startswith(prefix) and routing_key.count(".") == 2:
        return routing_key[len(prefix):] or None
    return None


# What a department sees of an appeal dispatched to it: what its assignment message told
# it (the enterprise with its contact, the request, the units), not how the bureau
# registered, classified or matched it.
DEPARTMENT_FIELDS = (
    "appeal_id", "reg_no", "state", "channel", "title", "content", "enterprise",
    "enterprise_name", "uscc", "category", "industry_chain", "urgency", "activity_id",
    "attachments", "submitted_at", "registered_at", "units")


def department_view(view: dict[str, Any], dept_code: str) -> dict[str, Any]:
    """A department's share of an appeal: its public fields and the timeline entries
    addressed to it - about its own assignments, their deadlines, extensions, returns,
    notices and key orders. Other units' assignment ids, replies, return reasons, the
    follow-up and who at the bureau did what are left out: nothing in it lets the unit act
    as another. `by` is the unit itself or the service that recorded the entry."""
    own_ids: set[str] = set()
    for entry in view["timeline"]:
        if entry["event"] == "appeal.dispatched":
            own_ids |= {a.get("assignment_id") for a in entry["detail"].get("assignments") or ()
                        if a.get("dept_code") == dept_code}
        elif entry["detail"].get("dept_code") == dept_code and entry["detail"].get("assignment_id"):
            own_ids.add(entry["detail"]["assignment_id"])
    own_ids.discard(None)
    me = f"dept:{dept_code}"
    timeline = []
    for entry in view["timeline"]:
        detail = entry["detail"]
        if entry["event"] == "appeal.dispatched":
            mine = [a for a in detail.get("assignments") or () if a.get("dept_code") == dept_code]
            if not mine:
                continue
            detail = {"reg_no": detail.get("reg_no"), "units": detail.get("units"),
                      "assignments": mine,
                      "deadlines_provisional": detail.get("deadlines_provisional")}
        elif detail.get("dept_code") == dept_code or (
                detail.get("assignment_id") in own_ids and detail.get("dept_code") in (None, dept_code)):
            detail = {k: v for k, v in detail.items() if k != "actor"}
        else:
            continue
        timeline.append({"at": entry["at"], "event": entry["event"],
                         "by": me if entry["by"] == me else entry["producer"],
                         "detail": detail})
    return {**{k: view[k] for k in DEPARTMENT_FIELDS}, "timeline": timeline}
