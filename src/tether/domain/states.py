"""Host and pool life cycles as explicit state machines.

Each machine is a table ``(state, event) -> next state``. A pair missing from the
table is an illegal transition and raises :class:`IllegalTransition`; nothing is ever
silently ignored. Tables are data, so tests can walk every pair exhaustively.
"""

from __future__ import annotations

from enum import StrEnum

from tether.domain.errors import IllegalTransition


class HostState(StrEnum):
    """Where an edge host is in its life."""

    REGISTERED = "Registered"  # enrolled, not yet passed its health checks
    READY = "Ready"  # healthy and assignable to a pool
    IN_USE = "InUse"  # serving as a node in a pool
    UNHEALTHY = "Unhealthy"  # the agent reports failing checks
    UNREACHABLE = "Unreachable"  # heartbeats missed
    UNPAIRED = "Unpaired"  # removed from Tether; terminal


class HostEvent(StrEnum):
    CHECKS_PASSED = "ChecksPassed"
    CHECKS_FAILED = "ChecksFailed"
    ASSIGN = "Assign"
    RELEASE = "Release"
    HEARTBEAT_MISSED = "HeartbeatMissed"
    RESET = "Reset"
    UNPAIR = "Unpair"


class PoolState(StrEnum):
    """Where a hybrid node pool is in its life."""

    PENDING = "Pending"  # created, no hosts assigned yet
    PROVISIONING = "Provisioning"  # hosts assigned, nodes joining
    READY = "Ready"  # every node Ready
    DEGRADED = "Degraded"  # at least one node not Ready
    REPAVING = "Repaving"  # an approved repave is rolling through the nodes
    DELETING = "Deleting"  # being torn down; terminal for new work


class PoolEvent(StrEnum):
    HOSTS_ASSIGNED = "HostsAssigned"
    ALL_NODES_READY = "AllNodesReady"
    NODE_NOT_READY = "NodeNotReady"
    REPAVE_APPROVED = "RepaveApproved"
    REPAVE_COMPLETED = "RepaveCompleted"
    REPAVE_FAILED = "RepaveFailed"
    DELETE = "Delete"


_H, _HE = HostState, HostEvent
#: Host transitions that do not depend on pool assignment.
HOST_TRANSITIONS: dict[tuple[HostState, HostEvent], HostState] = {
    (_H.REGISTERED, _HE.CHECKS_PASSED): _H.READY,
    (_H.REGISTERED, _HE.CHECKS_FAILED): _H.UNHEALTHY,
    (_H.READY, _HE.CHECKS_PASSED): _H.READY,
    (_H.READY, _HE.ASSIGN): _H.IN_USE,
    (_H.READY, _HE.CHECKS_FAILED): _H.UNHEALTHY,
    (_H.IN_USE, _HE.CHECKS_PASSED): _H.IN_USE,
    (_H.IN_USE, _HE.RELEASE): _H.READY,
    (_H.IN_USE, _HE.CHECKS_FAILED): _H.UNHEALTHY,
    (_H.UNHEALTHY, _HE.CHECKS_FAILED): _H.UNHEALTHY,
    (_H.UNREACHABLE, _HE.CHECKS_FAILED): _H.UNHEALTHY,
}
for _live in (_H.REGISTERED, _H.READY, _H.IN_USE, _H.UNHEALTHY, _H.UNREACHABLE):
    HOST_TRANSITIONS[(_live, _HE.HEARTBEAT_MISSED)] = _H.UNREACHABLE
for _free in (_H.REGISTERED, _H.READY, _H.UNHEALTHY, _H.UNREACHABLE):
    HOST_TRANSITIONS[(_free, _HE.RESET)] = _H.REGISTERED
    HOST_TRANSITIONS[(_free, _HE.UNPAIR)] = _H.UNPAIRED

#: Recovery from Unhealthy/Unreachable returns a host to where it belongs: In-Use when
#: it is still assigned to a pool, Ready otherwise.
_RECOVERING = {_H.UNHEALTHY, _H.UNREACHABLE}


def next_host_state(state: HostState, event: HostEvent, *, assigned: bool) -> HostState:
    """Return the host's state after ``event``; raise :class:`IllegalTransition` if refused.

    ``assigned`` says whether the host belongs to a pool; it decides where a recovering
    host goes, and an assigned host cannot be reset or unpaired (release it first).
    """
    if state in _RECOVERING and event is _HE.CHECKS_PASSED:
        return _H.IN_USE if assigned else _H.READY
    if assigned and event in (_HE.RESET, _HE.UNPAIR, _HE.ASSIGN):
        raise IllegalTransition("host", state, event)
    if event is _HE.RELEASE and state in _RECOVERING:
        return state  # released while sick: it stays sick, now unassigned
    try:
        return HOST_TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition("host", state, event) from None


_P, _PE = PoolState, PoolEvent
POOL_TRANSITIONS: dict[tuple[PoolState, PoolEvent], PoolState] = {
    (_P.PENDING, _PE.HOSTS_ASSIGNED): _P.PROVISIONING,
    (_P.PROVISIONING, _PE.HOSTS_ASSIGNED): _P.PROVISIONING,
    (_P.PROVISIONING, _PE.ALL_NODES_READY): _P.READY,
    (_P.PROVISIONING, _PE.NODE_NOT_READY): _P.DEGRADED,
    (_P.READY, _PE.HOSTS_ASSIGNED): _P.PROVISIONING,
    (_P.READY, _PE.ALL_NODES_READY): _P.READY,
    (_P.READY, _PE.NODE_NOT_READY): _P.DEGRADED,
    (_P.READY, _PE.REPAVE_APPROVED): _P.REPAVING,
    (_P.DEGRADED, _PE.HOSTS_ASSIGNED): _P.DEGRADED,
    (_P.DEGRADED, _PE.ALL_NODES_READY): _P.READY,
    (_P.DEGRADED, _PE.NODE_NOT_READY): _P.DEGRADED,
    (_P.DEGRADED, _PE.REPAVE_APPROVED): _P.REPAVING,
    (_P.REPAVING, _PE.NODE_NOT_READY): _P.REPAVING,
    (_P.REPAVING, _PE.ALL_NODES_READY): _P.REPAVING,
    (_P.REPAVING, _PE.REPAVE_COMPLETED): _P.READY,
    (_P.REPAVING, _PE.REPAVE_FAILED): _P.DEGRADED,
}
for _pool_state in (_P.PENDING, _P.PROVISIONING, _P.READY, _P.DEGRADED, _P.REPAVING):
    POOL_TRANSITIONS[(_pool_state, _PE.DELETE)] = _P.DELETING


def next_pool_state(state: PoolState, event: PoolEvent) -> PoolState:
    """Return the pool's state after ``event``; raise :class:`IllegalTransition` if refused."""
    try:
        return POOL_TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition("pool", state, event) from None
