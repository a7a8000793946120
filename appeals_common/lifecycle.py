"""The appeal and assignment state machines (DESIGN §3), free of any framework.

Every service that changes an appeal checks the move here first; an illegal move is
refused with a message saying what was tried and what is allowed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

APPEAL_STATES = ("registered", "resolved_on_spot", "dispatched", "in_progress", "responded",
                 "reopened", "closed", "withdrawn")
FINAL_STATES = frozenset({"closed", "withdrawn"})
OPEN_STATES = frozenset({"registered", "dispatched", "in_progress", "responded", "reopened"})

# action -> (states it may start from, state it leads to)
APPEAL_TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "resolve_on_spot": (frozenset({"registered"}), "resolved_on_spot"),
    # A reopened on-the-spot answer has no unit yet: it is dispatched like a new appeal.
    "dispatch": (frozenset({"registered", "dispatched", "in_progress", "reopened"}),
                 "dispatched"),
    "lead_sign": (frozenset({"dispatched"}), "in_progress"),
    "respond": (frozenset({"in_progress", "reopened"}), "responded"),
    "reopen": (frozenset({"responded", "resolved_on_spot"}), "reopened"),
    "close": (frozenset({"responded", "resolved_on_spot"}), "closed"),
    "withdraw": (frozenset({"registered", "dispatched", "in_progress", "reopened"}), "withdrawn"),
}

ASSIGNMENT_STATES = ("assigned", "signed", "responded", "returned", "withdrawn")
ASSIGNMENT_TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "sign": (frozenset({"assigned"}), "signed"),
    "respond": (frozenset({"signed"}), "responded"),
    "return": (frozenset({"assigned", "signed"}), "returned"),
    "reject_return": (frozenset({"returned"}), "assigned"),
    # A unit that had signed before returning is back where it was.
    "reject_return_signed": (frozenset({"returned"}), "signed"),
    "reopen": (frozenset({"responded"}), "signed"),
    "withdraw": (frozenset({"assigned", "signed", "returned"}), "withdrawn"),
}


class IllegalTransition(ValueError):
    def __init__(self, subject: str, current: str, action: str, allowed_from: frozenset[str]):
        self.current = current
        self.action = action
        super().__init__(
            f"cannot {action.replace('_', ' ')} {subject} in state '{current}'; "
            f"allowed only from: {', '.join(sorted(allowed_from))}"
        )


def next_appeal_state(current: str, action: str) -> str:
    allowed_from, target = APPEAL_TRANSITIONS[action]
    if current not in allowed_from:
        raise IllegalTransition("an appeal", current, action, allowed_from)
    return target


def next_assignment_state(current: str, action: str) -> str:
    allowed_from, target = ASSIGNMENT_TRANSITIONS[action]
    if current not in allowed_from:
        raise IllegalTransition("an assignment", current, action, allowed_from)
    return target


def appeal_state_after(event_type: str, data: dict[str, Any]) -> str | None:
    """The appeal state an event leaves behind, for projections kept by other services.

    None when the event does not move the appeal (e.g. a co-unit signing).
    """
    if event_type == "assignment.signed":
        return "in_progress" if data.get("role") == "lead" else None
    return {
        "appeal.registered": "registered",
        "appeal.resolved_on_spot": "resolved_on_spot",
        "appeal.dispatched": "dispatched",
        "appeal.responded": "responded",
        "appeal.reopened": "reopened",
        "appeal.closed": "closed",
        "appeal.withdrawn": "withdrawn",
    }.get(event_type)


def project_state(current: str, current_at: datetime, event_type: str, data: dict[str, Any],
                  occurred_at: datetime) -> tuple[str, datetime]:
    """A projection's appeal state after an event that may arrive out of order.

    Events from several services race each other: the latest one wins, except that a
    closed or withdrawn appeal stays so (a dispatch racing a withdrawal must not revive it).
    """
    new_state = appeal_state_after(event_type, data)
    if new_state is None or current in FINAL_STATES or occurred_at < current_at:
        return current, current_at
    return new_state, occurred_at
