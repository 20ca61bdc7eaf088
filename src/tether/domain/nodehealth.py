"""From Node readiness to host and pool health, planned purely and level-triggered.

The nodes controller hands :func:`plan_health` a snapshot of the store (the hosts in the
cluster's pools, and the pools) and what it last saw of each Node (Ready or not). The
plan says which hosts and pools must change; applying it and planning again from the
result gives an empty plan, so a restart (or a repeated watch event) never applies a
transition twice.

Rules:

- A host whose Node is ``Ready=True`` is healthy: ``Unhealthy`` hosts recover
  (``ChecksPassed`` -> ``InUse``, as they are assigned).
- A host whose Node is ``Ready=False`` or ``Unknown`` (or has no Ready condition) is
  unhealthy: ``InUse`` hosts take ``ChecksFailed`` -> ``Unhealthy``.
- A host without a Node (or whose Node has no Ready condition yet, so is still
  registering) has not joined yet: nothing changes. The caller leaves such Nodes out.
- ``Unreachable`` hosts keep their state (heartbeats, not the Node, decide it); only their
  health field follows the Node.
- A ``Pending`` pool with hosts first takes ``HostsAssigned`` (-> ``Provisioning``).
  Then, if any host's Node is not Ready the pool takes ``NodeNotReady``; if every host
  has a Ready Node it takes ``AllNodesReady``; otherwise (nodes still joining) nothing.
  An event the pool's state machine refuses (``Deleting``) is not applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tether.domain.errors import IllegalTransition
from tether.domain.states import (
    HostEvent,
    HostState,
    PoolEvent,
    PoolState,
    next_host_state,
    next_pool_state,
)

__all__ = [
    "HealthPlan",
    "HostChange",
    "HostSnapshot",
    "NodeSnapshot",
    "PoolChange",
    "PoolSnapshot",
    "node_ready",
    "plan_health",
]

HEALTHY = "Healthy"
UNHEALTHY = "Unhealthy"


def node_ready(conditions: Iterable[tuple[str, str]]) -> bool | None:
    """``True``/``False`` from a Node's ``Ready`` condition; ``None`` when Unknown or absent."""
    for kind, status in conditions:
        if kind == "Ready":
            return {"True": True, "False": False}.get(status)
    return None


@dataclass(frozen=True)
class NodeSnapshot:
    ready: bool | None
    reason: str = ""  # the Ready condition's reason, for messages


@dataclass(frozen=True)
class HostSnapshot:
    name: str
    pool: str | None
    state: HostState
    health: str
    resource_version: int


@dataclass(frozen=True)
class PoolSnapshot:
    name: str
    state: PoolState
    resource_version: int


@dataclass(frozen=True)
class HostChange:
    host: str
    old_state: HostState
    new_state: HostState
    event: HostEvent | None  # None: only the health field changes
    health: str
    message: str
    resource_version: int


@dataclass(frozen=True)
class PoolChange:
    pool: str
    old_state: PoolState
    new_state: PoolState
    events: tuple[PoolEvent, ...]
    message: str
    resource_version: int


@dataclass(frozen=True)
class HealthPlan:
    hosts: tuple[HostChange, ...] = ()
    pools: tuple[PoolChange, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.hosts and not self.pools


def _describe(name: str, node: NodeSnapshot) -> str:
    status = {True: "Ready", False: "NotReady", None: "Unknown"}[node.ready]
    return f"node {name} is {status}" + (f" ({node.reason})" if node.reason else "")


def _host_change(host: HostSnapshot, node: NodeSnapshot) -> HostChange | None:
    health = HEALTHY if node.ready is True else UNHEALTHY
    event: HostEvent | None = None
    if node.ready is True and host.state is HostState.UNHEALTHY:
        event = HostEvent.CHECKS_PASSED
    elif node.ready is not True and host.state is HostState.IN_USE:
        event = HostEvent.CHECKS_FAILED
    new_state = host.state
    if event is not None:
        new_state = next_host_state(host.state, event, assigned=host.pool is not None)
    if new_state == host.state and health == host.health:
        return None
    return HostChange(
        host=host.name,
        old_state=host.state,
        new_state=new_state,
        event=event if new_state != host.state else None,
        health=health,
        message=_describe(host.name, node),
        resource_version=host.resource_version,
    )


def _pool_change(
    pool: PoolSnapshot, members: Sequence[HostSnapshot], nodes: Mapping[str, NodeSnapshot]
) -> PoolChange | None:
    if not members:
        return None
    state = pool.state
    applied: list[PoolEvent] = []

    def step(event: PoolEvent) -> None:
        nonlocal state
        try:
            new = next_pool_state(state, event)
        except IllegalTransition:
            return
        if new != state:
            applied.append(event)
            state = new

    if state is PoolState.PENDING:
        step(PoolEvent.HOSTS_ASSIGNED)
    seen = {h.name: nodes.get(h.name) for h in members}
    failing = sorted(n for n, s in seen.items() if s is not None and s.ready is not True)
    message = ""
    if failing:
        step(PoolEvent.NODE_NOT_READY)
        message = "not Ready: " + ", ".join(failing)
    elif all(s is not None and s.ready is True for s in seen.values()):
        step(PoolEvent.ALL_NODES_READY)
        message = f"all {len(seen)} nodes Ready"
    else:
        missing = sorted(n for n, s in seen.items() if s is None)
        message = "waiting for nodes to join: " + ", ".join(missing)
    if state == pool.state:
        return None
    return PoolChange(
        pool=pool.name,
        old_state=pool.state,
        new_state=state,
        events=tuple(applied),
        message=message,
        resource_version=pool.resource_version,
    )


def plan_health(
    pools: Iterable[PoolSnapshot],
    hosts: Iterable[HostSnapshot],
    nodes: Mapping[str, NodeSnapshot],
) -> HealthPlan:
    """Host and pool changes that make the store agree with the Nodes (rules: module doc).

    ``hosts`` should be the hosts assigned to ``pools``; others are ignored.
    """
    pool_list = sorted(pools, key=lambda p: p.name)
    names = {p.name for p in pool_list}
    members: dict[str, list[HostSnapshot]] = {p.name: [] for p in pool_list}
    host_changes = []
    for host in sorted(hosts, key=lambda h: h.name):
        if host.pool is None or host.pool not in names:
            continue
        members[host.pool].append(host)
        node = nodes.get(host.name)
        if node is None:
            continue
        change = _host_change(host, node)
        if change is not None:
            host_changes.append(change)
    pool_changes = []
    for pool in pool_list:
        pool_change = _pool_change(pool, members[pool.name], nodes)
        if pool_change is not None:
            pool_changes.append(pool_change)
    return HealthPlan(hosts=tuple(host_changes), pools=tuple(pool_changes))
