"""Host health and observed Node status from Kubernetes Nodes: snapshot, plan, write.

The plan itself is pure (:func:`tether.domain.nodehealth.plan_health`); this module
reads what it needs from the store and writes the plan back, each change guarded by the
``resource_version`` it was planned from (a concurrent change makes the whole
transaction fail with ``Conflict`` and the controller plans again) and each change
recorded as an event in the same transaction.

It also keeps ``node_status``: what was last seen of each pool host's Node (readiness and
since when, cordoned, kubelet version). The pool reconciler reads Nodes from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tether.domain.models import EventType, ObjectKind
from tether.domain.nodehealth import HealthPlan, HostSnapshot, NodeSnapshot, plan_health
from tether.domain.states import HostState
from tether.services import events
from tether.store.repo import get_named, update_checked
from tether.store.schema import HostRow, NodeStatusRow, PoolRow, utcnow

__all__ = ["apply_health_plan", "reconcile_cluster_health", "record_nodes", "snapshot"]


def snapshot(session: Session, cluster: str) -> list[HostSnapshot]:
    """The hosts assigned to the pools of *cluster*."""
    pools = select(PoolRow.name).where(PoolRow.cluster == cluster)
    return [
        HostSnapshot(
            name=h.name,
            pool=h.pool,
            state=HostState(h.state),
            health=h.health,
            resource_version=h.resource_version,
        )
        for h in session.scalars(select(HostRow).where(HostRow.pool.in_(pools)))
    ]


def apply_health_plan(session: Session, plan: HealthPlan) -> None:
    """Write *plan* (host states and health) with one event per change."""
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


def reconcile_cluster_health(
    session: Session, cluster: str, nodes: Mapping[str, NodeSnapshot]
) -> HealthPlan:
    """Plan from the store and *nodes*, apply, and return what was applied."""
    plan = plan_health(snapshot(session, cluster), nodes)
    if not plan.empty:
        apply_health_plan(session, plan)
    return plan


def record_nodes(
    session: Session,
    cluster: str,
    nodes: Mapping[str, NodeSnapshot],
    *,
    now: datetime | None = None,
) -> dict[str, str]:
    """Bring ``node_status`` in line with *nodes* for the hosts of *cluster*'s pools;
    return the hosts whose row changed, with their pools (to reconcile)."""
    now = now or utcnow()
    hosts = {h.name: h.pool for h in snapshot(session, cluster)}
    rows = {
        r.host_name: r
        for r in session.scalars(select(NodeStatusRow).where(NodeStatusRow.cluster == cluster))
    }
    changed: list[str] = []
    for name in hosts:
        node = nodes.get(name)
        row = rows.get(name)
        if node is None:
            if row is not None:
                session.delete(row)
                changed.append(name)
            continue
        values = {
            "ready": node.ready,
            "reason": node.reason[:128],
            "ready_since": node.ready_since,
            "unschedulable": node.unschedulable,
            "kubelet_version": node.kubelet_version[:64],
        }
        if row is None:
            session.add(NodeStatusRow(host_name=name, cluster=cluster, observed_at=now, **values))
            changed.append(name)
        elif any(getattr(row, k) != v for k, v in values.items()):
            for key, value in values.items():
                setattr(row, key, value)
            row.observed_at = now
            changed.append(name)
    gone = [n for n in rows if n not in hosts]
    if gone:
        session.execute(delete(NodeStatusRow).where(NodeStatusRow.host_name.in_(gone)))
    return {n: p for n in changed if (p := hosts.get(n))}
