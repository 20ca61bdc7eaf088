"""Hybrid mode on a cluster: observe, plan purely (:mod:`tether.domain.hybrid`), apply.

Each patch carries the ``resourceVersion`` it was planned from; if the object changed
meanwhile the API server answers ``Conflict`` and the whole plan is made again from fresh
observations (up to three rounds). Every applied change is an event on the Cluster; a
run that finds nothing to change records nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.domain.hybrid import (
    DaemonSetFacts,
    DaemonSetRole,
    HybridHost,
    HybridPlan,
    NodeFacts,
    daemonset_roles,
    desired_labels,
    plan_hybrid,
)
from tether.domain.kubeapi import HybridReport
from tether.domain.models import EventType, ObjectKind
from tether.kube.client import KubeClient
from tether.kube.errors import Conflict, KubeError, NotFound
from tether.kube.resources import DaemonSet, Node
from tether.services import events
from tether.services import resources as svc
from tether.services.kubeconn import from_kube_error
from tether.store.schema import HostRow, PoolRow

__all__ = ["hybrid_hosts", "observe", "set_hybrid"]

_ROUNDS = 3


def hybrid_hosts(session: Session, cluster: str) -> list[HybridHost]:
    """Tether hosts assigned to a pool of *cluster* (their node name is their name)."""
    rows = session.execute(
        select(HostRow.name, PoolRow.site, PoolRow.name)
        .join(PoolRow, HostRow.pool == PoolRow.name)
        .where(PoolRow.cluster == cluster)
        .order_by(HostRow.name)
    ).all()
    return [HybridHost(name=h, site=site, pool=pool) for h, site, pool in rows]


def _node_facts(node: Node) -> NodeFacts:
    meta = node.metadata
    assert meta is not None
    assert meta.name is not None
    return NodeFacts(
        name=meta.name,
        labels=dict(meta.labels or {}),
        annotations=dict(meta.annotations or {}),
        provider_id=node.spec.providerID if node.spec is not None else None,
        resource_version=meta.resourceVersion,
    )


def _daemonset_facts(ds: DaemonSet, role: DaemonSetRole) -> DaemonSetFacts:
    meta = ds.metadata
    assert meta is not None
    assert meta.name is not None
    assert meta.namespace is not None
    affinity = None
    spec = ds.spec
    if spec is not None and spec.template.spec is not None:
        pod_affinity = spec.template.spec.affinity
        affinity = pod_affinity.to_dict() if pod_affinity is not None else None
    return DaemonSetFacts(
        namespace=meta.namespace,
        name=meta.name,
        role=role,
        affinity=affinity,
        annotations=dict(meta.annotations or {}),
        resource_version=meta.resourceVersion,
    )


def observe(client: KubeClient) -> tuple[list[NodeFacts], list[DaemonSetFacts]]:
    """Every Node, and those of the hybrid-relevant DaemonSets that exist."""
    nodes = [_node_facts(n) for n in client.list(Node)]
    daemonsets = []
    for (namespace, name), role in sorted(daemonset_roles().items()):
        try:
            ds = client.get(DaemonSet, name, namespace=namespace)
        except NotFound:
            continue
        daemonsets.append(_daemonset_facts(ds, role))
    return nodes, daemonsets


def _apply(client: KubeClient, plan: HybridPlan) -> tuple[list[str], list[str], bool]:
    """Apply a plan; returns (applied, failed, conflicted)."""
    calls: list[tuple[str, Callable[[], object]]] = [
        (p.describe(), partial(client.patch, Node, p.node, p.patch)) for p in plan.nodes
    ]
    calls += [
        (p.describe(), partial(client.patch, DaemonSet, p.name, p.patch, namespace=p.namespace))
        for p in plan.daemonsets
    ]
    applied: list[str] = []
    failed: list[str] = []
    for what, call in calls:
        try:
            call()
        except Conflict:
            return applied, failed, True
        except KubeError as exc:
            failed.append(f"{what}: {exc}")
            continue
        applied.append(what)
    return applied, failed, False


def set_hybrid(
    session: Session,
    cluster: str,
    *,
    enable: bool,
    client: KubeClient,
    eks_labels: bool = False,
    dry_run: bool = False,
) -> HybridReport:
    """Enable or disable hybrid mode on *cluster* (what that means: :mod:`tether.domain.hybrid`).

    Idempotent: a second run changes nothing and records no events. Failures of single
    objects are reported (and recorded as Warning events) without undoing the others.
    """
    svc.get_cluster(session, cluster)  # NotFound if there is no such cluster
    if not dry_run:  # recorded first: the node controller keeps it so as nodes join
        svc.set_cluster_hybrid(session, cluster, enabled=enable, eks_labels=eks_labels)
    hosts = hybrid_hosts(session, cluster) if enable else []
    by_name = {h.name: h for h in hosts}
    applied: list[str] = []
    failed: list[str] = []
    planned: list[str] = []
    nodes: list[NodeFacts] = []
    for _ in range(_ROUNDS):
        try:
            nodes, daemonsets = observe(client)
        except KubeError as exc:
            raise from_kube_error(exc, f"observing cluster {cluster}") from exc
        plan = plan_hybrid(
            cluster=cluster,
            enable=enable,
            nodes=nodes,
            daemonsets=daemonsets,
            hosts=hosts,
            eks_labels=eks_labels,
        )
        planned = [p.describe() for p in plan.nodes] + [d.describe() for d in plan.daemonsets]
        if dry_run or plan.empty:
            break
        done, errors, conflicted = _apply(client, plan)
        applied += done
        failed += errors
        if not conflicted:
            break
    else:
        failed.append("objects kept changing while hybrid mode was applied; run it again")
    hybrid_nodes = (
        sorted(n.name for n in nodes if desired_labels(n, cluster, by_name, eks_labels=eks_labels))
        if enable
        else []
    )
    reason = "HybridEnabled" if enable else "HybridDisabled"
    for line in applied:
        events.record(session, ObjectKind.CLUSTER, cluster, reason, line)
    for line in failed:
        events.record(
            session, ObjectKind.CLUSTER, cluster, "HybridChangeFailed", line, EventType.WARNING
        )
    return HybridReport(
        cluster=cluster,
        enabled=enable,
        dry_run=dry_run,
        hybrid_nodes=hybrid_nodes,
        changes=planned if dry_run else applied,
        failed=failed,
    )
