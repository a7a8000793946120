"""The department's side of the bus contract (docs/asyncapi.yaml), as plain data.

Pure functions only - no broker, no network - so every department can check what it is
about to publish before it publishes it. Nothing here imports the suite's own code: a
department codes against the documented contract alone.

Replies are strict on the suite's side (an unknown field is refused), so the builders
refuse unknown fields too and check what the contract fixes: lengths, the outcome enum,
department-code syntax and times with an explicit UTC offset.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

SCHEMA_VERSION = 1

DISPATCH_EXCHANGE = "appeals.dispatch"
REPLIES_EXCHANGE = "appeals.replies"
CONTENT_TYPE = "application/json"

CODE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
# These would clash with the suite's own dispatch.* queues (dispatch.events, dispatch.replies).
RESERVED_CODES = frozenset({"events", "replies", "dlq"})

# Department message kinds on appeals.dispatch. Readers MUST accept (and may ignore) kinds
# that are not listed here: the suite may add kinds in minor versions.
KNOWN_KINDS = ("assignment", "reply_result", "reminder", "supervision_notice",
               "key_supervision_order", "reassigned", "return_decision", "extension_decision",
               "deadlines_changed")
# Deadline names a `deadlines_changed` message may carry (the suite recounted provisional
# deadlines once a year's official working-day calendar was loaded).
DEADLINE_NAMES = ("sign_by", "return_by", "respond_by", "feedback_by", "plan_due_at",
                  "report_due_at", "patrol_due_at")
# A test knob the suite's processes share: real time shifted by this many seconds.
CLOCK_OFFSET_ENV = "APPEALS_CLOCK_OFFSET_SECONDS"

ACTIONS = ("sign", "respond", "return", "extend")
OUTCOMES = ("solved", "explained", "not_solvable")  # 已解决 / 已解释说明 / 现行政策下无法解决
# 退单 reasons the suite accepts (不属于本单位职责 / 应由其他单位承办 / 信息不全 / 重复 / 其他).
RETURN_REASON_CODES = ("not_our_duty", "wrong_unit", "insufficient_info", "duplicate", "other")

ASSIGNMENT_ID_MAX = 64
REG_NO_MAX = 32
OPERATOR_MAX = 50
REPLY_MAX = 5000
REASON_MAX = 1000

# Fields each action may carry beyond the common ones (schema_version, assignment_id,
# reg_no, replied_at, operator); True = required.
ACTION_FIELDS: dict[str, dict[str, bool]] = {
    "sign": {},
    "respond": {"outcome": True, "reply": True, "contacted_at": True},
    "return": {"reason_code": True, "reason": True, "suggested_unit": False},
    "extend": {"requested_until": True, "reason": True},
}
TIME_FIELDS = frozenset({"replied_at", "contacted_at", "requested_until"})


class ReplyValidationError(ValueError):
    """A reply that the suite would refuse; `errors` is `{field: [message]}` like its reply_result."""

    def __init__(self, errors: Mapping[str, list[str]]) -> None:
        self.errors = {field: list(messages) for field, messages in errors.items()}
        text = "; ".join(f"{field}: {', '.join(messages)}" for field, messages in self.errors.items())
        super().__init__(text or "invalid reply")


def check_dept_code(code: str) -> str:
    if not isinstance(code, str) or not CODE_RE.match(code) or code in RESERVED_CODES:
        raise ValueError(f"not a department code: {code!r} (lowercase [a-z0-9_-], not events/replies/dlq)")
    return code


def dispatch_queue(dept_code: str) -> str:
    """The queue a department reads: `dispatch.<dept_code>` (declared by the suite, never by us)."""
    return f"dispatch.{check_dept_code(dept_code)}"


def reply_routing_key(dept_code: str, action: str) -> str:
    """`dept.<dept_code>.<action>` on exchange `appeals.replies`."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    return f"dept.{check_dept_code(dept_code)}.{action}"


def parse_time(value: Any) -> datetime:
    """An aware datetime from a datetime or an ISO 8601 string; naive times are refused."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"not an ISO 8601 date-time: {value!r}") from None
    else:
        raise ValueError(f"not a date-time: {value!r}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"date-time without a UTC offset: {value!r} (e.g. 2026-11-27T10:30:00+08:00)")
    return moment


def iso_time(value: Any) -> str:
    return parse_time(value).isoformat()


def now_iso() -> str:
    """Now, in the machine's local zone, with its offset (shifted by
    APPEALS_CLOCK_OFFSET_SECONDS when a test runs the suite at another date)."""
    offset = float(os.environ.get(CLOCK_OFFSET_ENV) or 0)
    return (datetime.now().astimezone() + timedelta(seconds=offset)).isoformat(timespec="seconds")


def changed_deadlines(body: Mapping[str, Any]) -> dict[str, datetime]:
    """The new dates of a `deadlines_changed` message, by name (unknown names ignored)."""
    if body.get("kind") != "deadlines_changed":
        raise ValueError(f"not a deadlines_changed message: kind {body.get('kind')!r}")
    deadlines = body.get("deadlines")
    if not isinstance(deadlines, Mapping):
        raise ValueError("deadlines_changed without a 'deadlines' object")
    return {name: datetime.fromisoformat(value) for name, value in deadlines.items()
            if name in DEADLINE_NAMES and isinstance(value, str)}


def assignment_ref(assignment: Any) -> tuple[str, str]:
    """(assignment_id, reg_no) from an assignment message (or any department message that
    names one, e.g. a reply_result), an object with those attributes, or a pair."""
    if isinstance(assignment, Mapping):
        assignment_id, reg_no = assignment.get("assignment_id"), assignment.get("reg_no")
    elif isinstance(assignment, tuple | list) and len(assignment) == 2:
        assignment_id, reg_no = assignment
    elif hasattr(assignment, "assignment_id") and hasattr(assignment, "reg_no"):
        assignment_id, reg_no = assignment.assignment_id, assignment.reg_no
    else:
        raise TypeError("assignment must be a message dict, an (assignment_id, reg_no) pair "
                        f"or have .assignment_id and .reg_no, not {type(assignment).__name__}")
    errors: dict[str, list[str]] = {}
    _text(errors, "assignment_id", assignment_id, ASSIGNMENT_ID_MAX)
    _text(errors, "reg_no", reg_no, REG_NO_MAX)
    if errors:
        raise ReplyValidationError(errors)
    return assignment_id, reg_no


# W3C trace context: a reply carries the `traceparent` of the message it answers, so the
# bureau can follow one appeal through the department and back (DESIGN, AsyncAPI).
TRACE_HEADERS = ("traceparent", "tracestate")


def trace_headers_of(message: Any) -> dict[str, str]:
    """The trace context headers of a received message (an Incoming), to copy onto a reply."""
    headers = getattr(message, "headers", None) or {}
    found = {}
    for name in TRACE_HEADERS:
        value = headers.get(name)
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        if isinstance(value, str) and 0 < len(value) <= 512:
            found[name] = value
    return found


def _text(errors: dict[str, list[str]], field: str, value: Any, max_len: int, min_len: int = 1) -> None:
    if not isinstance(value, str):
        errors.setdefault(field, []).append("must be a string")
    elif not min_len <= len(value) <= max_len:
        errors.setdefault(field, []).append(f"length must be between {min_len} and {max_len}")


def build_reply(action: str, assignment: Any, *, replied_at: Any = None, operator: str | None = None,
                **fields: Any) -> dict[str, Any]:
    """The body of one reply, checked against the contract.

    `replied_at` defaults to now (local zone, with offset); `operator` and
    `suggested_unit` are left out when None. Raises ReplyValidationError (with every
    problem found) or ValueError for an unknown action.
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    assignment_id, reg_no = assignment_ref(assignment)
    allowed = ACTION_FIELDS[action]
    errors: dict[str, list[str]] = {}
    for name in fields:
        if name not in allowed:
            errors.setdefault(name, []).append(f"unknown field for a {action} reply")
    for name, required in allowed.items():
        if required and fields.get(name) is None:
            errors.setdefault(name, []).append("required")

    body: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "assignment_id": assignment_id,
                            "reg_no": reg_no}
    for name, value in {"replied_at": now_iso() if replied_at is None else replied_at,
                        **{k: v for k, v in fields.items() if k in allowed and v is not None}}.items():
        if name in TIME_FIELDS:
            try:
                body[name] = iso_time(value)
            except ValueError as exc:
                errors.setdefault(name, []).append(str(exc))
            continue
        body[name] = value
    if operator is not None:
        _text(errors, "operator", operator, OPERATOR_MAX, min_len=0)
        body["operator"] = operator

    if action == "respond":
        if "outcome" in body and body["outcome"] not in OUTCOMES:
            errors.setdefault("outcome", []).append(f"must be one of {', '.join(OUTCOMES)}")
        if "reply" in body:
            _text(errors, "reply", body["reply"], REPLY_MAX)
    elif action == "return":
        if "reason_code" in body and body["reason_code"] not in RETURN_REASON_CODES:
            errors.setdefault("reason_code", []).append(
                f"must be one of {', '.join(RETURN_REASON_CODES)}")
        if "reason" in body:
            _text(errors, "reason", body["reason"], REASON_MAX)
        unit = body.get("suggested_unit")
        if unit is not None and not (isinstance(unit, str) and CODE_RE.match(unit)):
            errors.setdefault("suggested_unit", []).append("not a department code")
    elif action == "extend" and "reason" in body:
        _text(errors, "reason", body["reason"], REASON_MAX)
    if errors:
        raise ReplyValidationError(errors)
    return body


def sign_body(assignment: Any, operator: str | None = None, *, replied_at: Any = None) -> dict[str, Any]:
    """签收."""
    return build_reply("sign", assignment, replied_at=replied_at, operator=operator)


def respond_body(assignment: Any, outcome: str, reply: str, contacted_at: Any, *,
                 operator: str | None = None, replied_at: Any = None) -> dict[str, Any]:
    """部门响应: outcome solved | explained | not_solvable, the answer, when the enterprise was contacted."""
    return build_reply("respond", assignment, replied_at=replied_at, operator=operator,
                       outcome=outcome, reply=reply, contacted_at=contacted_at)


def return_body(assignment: Any, reason_code: str, reason: str, suggested_unit: str | None = None, *,
                operator: str | None = None, replied_at: Any = None) -> dict[str, Any]:
    """退单, within the assignment's `return_by`."""
    return build_reply("return", assignment, replied_at=replied_at, operator=operator,
                       reason_code=reason_code, reason=reason, suggested_unit=suggested_unit)


def extend_body(assignment: Any, requested_until: Any, reason: str, *, operator: str | None = None,
                replied_at: Any = None) -> dict[str, Any]:
    """延期申请: `requested_until` must be after the current `respond_by`."""
    return build_reply("extend", assignment, replied_at=replied_at, operator=operator,
                       requested_until=requested_until, reason=reason)
