import pytest

from appeals_common.lifecycle import (
    APPEAL_STATES,
    APPEAL_TRANSITIONS,
    IllegalTransition,
    appeal_state_after,
    next_appeal_state,
    next_assignment_state,
)


def test_happy_path():
    state = "registered"
    for action in ("dispatch", "lead_sign", "respond", "close"):
        state = next_appeal_state(state, action)
    assert state == "closed"


def test_unsatisfied_followup_reopens_and_needs_a_new_response():
    state = next_appeal_state("responded", "reopen")
    assert state == "reopened"
    assert next_appeal_state(state, "respond") == "responded"
    with pytest.raises(IllegalTransition):
        next_appeal_state("reopened", "close")


@pytest.mark.parametrize("state,action", [
    ("registered", "close"), ("dispatched", "respond"), ("closed", "reopen"),
    ("withdrawn", "dispatch"), ("closed", "withdraw"), ("resolved_on_spot", "dispatch"),
])
def test_illegal_moves_are_refused_with_what_is_allowed(state, action):
    with pytest.raises(IllegalTransition) as err:
        next_appeal_state(state, action)
    assert f"state '{state}'" in str(err.value)
    assert "allowed only from" in str(err.value)


def test_every_transition_targets_a_known_state():
    for sources, target in APPEAL_TRANSITIONS.values():
        assert target in APPEAL_STATES
        assert sources <= set(APPEAL_STATES)


def test_assignment_machine():
    assert next_assignment_state("assigned", "sign") == "signed"
    assert next_assignment_state("signed", "respond") == "responded"
    assert next_assignment_state("returned", "reject_return") == "assigned"
    with pytest.raises(IllegalTransition):
        next_assignment_state("assigned", "respond")
    with pytest.raises(IllegalTransition):
        next_assignment_state("responded", "sign")


def test_projection_state_after_events():
    assert appeal_state_after("assignment.signed", {"role": "lead"}) == "in_progress"
    assert appeal_state_after("assignment.signed", {"role": "co"}) is None
    assert appeal_state_after("appeal.closed", {}) == "closed"
    assert appeal_state_after("followup.recorded", {}) is None


def test_projection_keeps_a_withdrawal_a_later_dispatch_races():
    from datetime import UTC, datetime, timedelta

    from appeals_common.lifecycle import project_state

    t0 = datetime(2026, 11, 27, tzinfo=UTC)
    state, at = project_state("registered", t0, "appeal.withdrawn", {}, t0 + timedelta(seconds=1))
    assert state == "withdrawn"
    assert project_state(state, at, "appeal.dispatched", {}, t0 + timedelta(seconds=2))[0] == \
        "withdrawn"
    # An older event arriving late does not move the state back either.
    assert project_state("responded", t0, "appeal.dispatched", {}, t0 - timedelta(seconds=1)) \
        == ("responded", t0)
    assert project_state("registered", t0, "followup.recorded", {}, t0) == ("registered", t0)
