"""Host and pool health from Kubernetes Nodes: snapshot the store, apply a health plan.

The plan itself is pure (:func:`tether.domain.nodehealth.plan_health`); this module
reads what it needs from the store and writes the plan back, each change guarded by the
``resource_version`` it was planned from (a concurrent change makes the whole
transaction fail with ``Conflict`` and the controller plans again) and each change
recorded as an event in the same transaction.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.domain.models import EventType, ObjectKind
from tether.domain.nodehealth import (
    HealthPlan,
    HostSnapshot,
    NodeSnapshot,
    PoolSnapshot,
    plan_health,
)
from tether.domain.states import HostState, PoolState
from tether.services import events
from tether.services import resources as svc
from tether.store.repo import get_named, update_checked
from tether.store.schema import HostRow, PoolRow

__all__ = ["apply_health_plan", "reconcile_cluster_health", "snapshot"]


def snapshot(session: Session, cluster: str) -> tuple[list[PoolSnapshot], list[HostSnapshot]]:
    """The pools of *cluster* and the hosts assigned to them."""
    pools = [
        PoolSnapshot(name=p.name, state=PoolState(p.state), resource_version=p.resource_version)
        for p in session.scalars(select(PoolRow).where(PoolRow.cluster == cluster))
    ]
    names = [p.name for p in pools]
    hosts = (
        [
            HostSnapshot(
                name=h.name,
                pool=h.pool,
                state=HostState(h.state),
                health=h.health,
                resource_version=h.resource_version,
            )
            for h in session.scalars(select(HostRow).where(HostRow.pool.in_(names)))
        ]
        if names
        else []
    )
    return pools, hosts


def apply_health_plan(session: Session, plan: HealthPlan) -> None:
    """Write *plan* (host states and health, pool states) with one event per change."""
    for change in plan.hosts:
        row = get_named(session, HostRow, "host", change.host)
        values: dict[str, str] = {"health": change.health}
        if change.new_state != change.old_state:
            values["state"] = change.new_state.value
        update_checked(session, row, "host", change.resource_version, values)
        bad = change.health != "Healthy"
        if change.event is not None:
            reason = "NodeNotReady" if bad else "NodeReady"
            message = (
                f"{change.old_state.value} -> {change.new_state.value} "
                f"({change.event.value}): {change.message}"
            )
        else:
            reason, message = "NodeHealth", f"health {change.health}: {change.message}"
        events.record(
            session,
            ObjectKind.HOST,
            change.host,
            reason,
            message,
            EventType.WARNING if bad else EventType.NORMAL,
        )
    for pool_change in plan.pools:
        # Through the shared pool transition, so pool events read the same everywhere
        # ("StateChanged", "Ready -> Degraded (NodeNotReady)"); the first step is guarded
        # by the version the plan was made from, later steps are in the same transaction.
        version: int | None = pool_change.resource_version
        for event in pool_change.events:
            svc.transition_pool(session, pool_change.pool, event, version)
            version = None


def reconcile_cluster_health(
    session: Session, cluster: str, nodes: Mapping[str, NodeSnapshot]
) -> HealthPlan:
    """Plan from the store and *nodes*, apply, and return what was applied."""
    pools, hosts = snapshot(session, cluster)
    plan = plan_health(pools, hosts, nodes)
    if not plan.empty:
        apply_health_plan(session, plan)
    return plan
