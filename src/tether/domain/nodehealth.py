"""From Node readiness to host health, planned purely and level-triggered.

The nodes controller hands :func:`plan_health` a snapshot of the store (the hosts in the
cluster's pools) and what it last saw of each Node (Ready or not). The plan says which
hosts must change; applying it and planning again from the result gives an empty plan,
so a restart (or a repeated watch event) never applies a transition twice. (Pools take
their state from the pool reconciler, :mod:`tether.domain.poolplan`.)

Rules:

- A host whose Node is ``Ready=True`` is healthy: ``Unhealthy`` hosts recover
  (``ChecksPassed`` -> ``InUse``, as they are assigned).
- A host whose Node is ``Ready=False`` or ``Unknown`` (or has no Ready condition) is
  unhealthy: ``InUse`` hosts take ``ChecksFailed`` -> ``Unhealthy``.
- A host without a Node (or whose Node has no Ready condition yet, so is still
  registering) has not joined yet: nothing changes. The caller leaves such Nodes out.
- ``Unreachable`` hosts keep their state (heartbeats, not the Node, decide it); only their
  health field follows the Node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from tether.domain.states import HostEvent, HostState, next_host_state

__all__ = [
    "HealthPlan",
    "HostChange",
    "HostSnapshot",
    "NodeSnapshot",
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
    ready_since: datetime | None = None  # the Ready condition's lastTransitionTime
    unschedulable: bool = False
    kubelet_version: str = ""


@dataclass(frozen=True)
class HostSnapshot:
    name: str
    pool: str | None
    state: HostState
    health: str
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
class HealthPlan:
    hosts: tuple[HostChange, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.hosts


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


def plan_health(hosts: Iterable[HostSnapshot], nodes: Mapping[str, NodeSnapshot]) -> HealthPlan:
    """Host changes that make the store agree with the Nodes (rules: module doc).

    ``hosts`` should be the hosts in the cluster's pools; others are ignored.
    """
    changes = []
    for host in sorted(hosts, key=lambda h: h.name):
        node = nodes.get(host.name)
        if host.pool is None or node is None:
            continue
        change = _host_change(host, node)
        if change is not None:
            changes.append(change)
    return HealthPlan(hosts=tuple(changes))
