"""The host state machine, walked exhaustively and by random sequences."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.domain.errors import IllegalTransition
from tether.domain.states import (
    HOST_TRANSITIONS,
    HostEvent,
    HostState,
    next_host_state,
)


def test_unpaired_host_is_terminal() -> None:
    for event, assigned in itertools.product(HostEvent, (False, True)):
        with pytest.raises(IllegalTransition):
            next_host_state(HostState.UNPAIRED, event, assigned=assigned)


def test_recovery_returns_host_where_it_belongs() -> None:
    for sick in (HostState.UNHEALTHY, HostState.UNREACHABLE):
        assert next_host_state(sick, HostEvent.CHECKS_PASSED, assigned=True) is HostState.IN_USE
        assert next_host_state(sick, HostEvent.CHECKS_PASSED, assigned=False) is HostState.READY


def test_only_ready_hosts_can_be_assigned() -> None:
    assert next_host_state(HostState.READY, HostEvent.ASSIGN, assigned=False) is HostState.IN_USE
    for state in set(HostState) - {HostState.READY}:
        with pytest.raises(IllegalTransition):
            next_host_state(state, HostEvent.ASSIGN, assigned=False)


def test_assigned_hosts_cannot_be_reset_or_unpaired() -> None:
    for state, event in itertools.product(HostState, (HostEvent.RESET, HostEvent.UNPAIR)):
        with pytest.raises(IllegalTransition):
            next_host_state(state, event, assigned=True)


@given(st.lists(st.tuples(st.sampled_from(HostEvent)), max_size=40))
def test_random_host_histories_stay_consistent(events: list[tuple[HostEvent]]) -> None:
    """Apply random events, tracking assignment as the plane does; invariants hold."""
    state, assigned = HostState.REGISTERED, False
    for (event,) in events:
        try:
            new = next_host_state(state, event, assigned=assigned)
        except IllegalTransition:
            continue  # refused: nothing changed
        if event is HostEvent.ASSIGN:
            assigned = True
        elif event is HostEvent.RELEASE:
            assigned = False
        state = new
        assert state in HostState
        if state is HostState.IN_USE:
            assert assigned, "In-Use without a pool"
        if not assigned:
            assert state is not HostState.IN_USE
    assert (state, HostEvent.HEARTBEAT_MISSED) in HOST_TRANSITIONS or state is HostState.UNPAIRED
