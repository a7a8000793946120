"""Intake rules that need no framework: reg_no format, idempotency, content identity."""

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
