"""The host life cycle as an explicit state machine, and the states of a pool.

The host machine is a table ``(state, event) -> next state``. A pair missing from the
table is an illegal transition and raises :class:`IllegalTransition`; nothing is ever
silently ignored. Tables are data, so tests can walk every pair exhaustively. A pool's
state is derived from its conditions by the pool reconciler
(:func:`tether.domain.poolplan.pool_state`), not driven by events.
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

    PENDING = "Pending"  # no hosts
    PROVISIONING = "Provisioning"  # hosts joining
    READY = "Ready"  # every node Ready and every plan applied
    DEGRADED = "Degraded"  # a node not Ready, a plan failed, or a rollout failed
    REPAVING = "Repaving"  # an approved rollout is moving through the nodes
    DELETING = "Deleting"  # every host is drained and removed, then the pool


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
