"""Keeps a cluster's own network objects in line with its pools (the adapter of
:mod:`tether.netplan.incluster`).

One pass: read the cluster's pools from the store as a network document, read the
cluster's Nodes and the BGP objects Tether manages there, plan in memory, then act:
server-side apply the wanted objects (field manager ``tether``, schema-checked strictly
by the API server), delete the unwanted, patch each Node's pod CIDR (and Calico AS
annotation) once. Then each pool's ``NetworkApplied`` condition is written, with an
event when it changes and one per Node pod CIDR set or object removed.

Level-triggered and crash-safe: nothing is remembered between passes; a pass after a
crash finds what the previous one did in the cluster and does only the rest.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether import netplan
from tether.domain.models import ObjectKind, PoolSpec
from tether.domain.poolplan import Condition
from tether.kube.client import KubeClient
from tether.kube.errors import KubeError, NotFound
from tether.kube.resources import Node
from tether.netplan.incluster import (
    CNI,
    KINDS,
    POOL_LABEL,
    ClusterNetworkPlan,
    Kind,
    ManagedObject,
    ObservedNode,
    PoolNetwork,
    failed_condition,
    kind_of,
    managed_selector,
    observed_allocations,
    plan_cluster,
    plan_pools,
)
from tether.netplan.model import PoolPlan
from tether.services import events, network
from tether.services.pools import NETWORK_CONDITION, set_condition
from tether.services.profiles import load_profile
from tether.store.db import Database
from tether.store.schema import PoolRow

__all__ = ["NETWORK_CONDITION", "NetworkPass", "reconcile_network"]

log = logging.getLogger(__name__)


@dataclass
class NetworkPass:
    """What one pass did (for logs and tests)."""

    plan: ClusterNetworkPlan
    applied: int = 0


def _pools(
    session: Session, cluster: str, previous: dict[str, str]
) -> tuple[tuple[PoolPlan, ...], dict[str, CNI], list[netplan.Finding]]:
    """The cluster's planned pools, each pool's CNI (its profile's network layer), and
    the document's errors (then no pools)."""
    data = network.with_endpoint(network.document(session, cluster))
    doc, findings = netplan.load_document(data)
    if doc is not None:
        pools, findings = plan_pools(doc, previous)
    errors = [f for f in findings if f.is_error]
    if doc is None or errors:
        return (), {}, errors
    cni: dict[str, CNI] = {}
    for row in session.scalars(select(PoolRow).where(PoolRow.cluster == cluster)):
        spec = PoolSpec.model_validate(row.spec)
        profile = load_profile(session, spec.profile) if spec.profile else None
        cni[row.name] = profile.layers.network.cni if profile is not None else "cilium"
    return pools, cni, []


def _observe_nodes(client: KubeClient) -> dict[str, ObservedNode]:
    nodes = {}
    for node in client.list(Node):
        meta, spec = node.metadata, node.spec
        if meta is None or not meta.name:
            continue
        cidrs = tuple((spec.podCIDRs or ([spec.podCIDR] if spec.podCIDR else [])) if spec else ())
        nodes[meta.name] = ObservedNode(pod_cidrs=cidrs, annotations=dict(meta.annotations or {}))
    return nodes


def _observe_managed(client: KubeClient, cluster: str) -> list[ManagedObject]:
    """Tether's objects of every kind; a kind whose CRD is not installed has none."""
    seen = []
    for kind in KINDS:
        try:
            items = client.list_objects(
                kind.api_version, kind.plural, labels=managed_selector(cluster)
            )
        except NotFound:
            continue
        for item in items:
            meta = item.get("metadata") or {}
            pool = (meta.get("labels") or {}).get(POOL_LABEL)
            if pool:
                seen.append(ManagedObject(kind=kind, name=str(meta["name"]), pool=str(pool)))
    return seen


def _fail(failures: dict[str, list[str]], pool: str, what: str, exc: KubeError) -> None:
    failures[pool].append(f"{what}: {exc}")
    log.warning("pool %s: %s failed: %s", pool, what, exc)


def _act(client: KubeClient, plan: ClusterNetworkPlan, notes: list[tuple[str, str, str]]) -> int:
    """Apply, delete, patch; return how many objects were applied. Failures turn the
    pool's condition False (``notes`` gets ``(pool, reason, message)`` events)."""
    failures: dict[str, list[str]] = defaultdict(list)
    missing: dict[str, list[Kind]] = defaultdict(list)  # kinds the API server does not serve
    applied = 0
    for pool, obj in plan.apply:
        what = f"{obj['kind']} {obj['metadata']['name']}"
        try:
            client.apply_object(kind_of(obj).plural, obj, force=True)
            applied += 1
        except NotFound:  # an apply creates: only the resource type itself can be missing
            missing[pool].append(kind_of(obj))
            log.warning("pool %s: applying %s: the cluster does not serve its kind", pool, what)
        except KubeError as exc:
            _fail(failures, pool, f"applying {what}", exc)
    for gone in plan.delete:
        try:
            client.delete_object(gone.kind.api_version, gone.kind.plural, gone.name)
        except KubeError as exc:
            _fail(failures, gone.pool, f"deleting {gone.kind.kind} {gone.name}", exc)
            continue
        notes.append((gone.pool, "NetworkResourceDeleted", f"{gone.kind.kind} {gone.name}"))
    for name, (pool, patch) in sorted(plan.node_patches.items()):
        try:
            client.patch(Node, name, patch)
        except KubeError as exc:
            _fail(failures, pool, f"patching Node {name}", exc)
            continue
        cidr = patch.get("spec", {}).get("podCIDR")
        if cidr:
            notes.append((pool, "PodCIDRSet", f"Node {name}: podCIDR {cidr}"))
    for pool in set(failures) | set(missing):
        if pool in plan.pools:
            plan.pools[pool] = failed_condition(missing[pool], failures[pool])
    return applied


def _record(
    session: Session,
    conditions: dict[str, PoolNetwork],
    notes: list[tuple[str, str, str]],
) -> None:
    for pool, reason, message in notes:
        events.record(session, ObjectKind.POOL, pool, reason, message, pool=pool)
    wanted = {
        pool: Condition(NETWORK_CONDITION, want.status, want.reason, want.message)
        for pool, want in conditions.items()
    }
    set_condition(session, NETWORK_CONDITION, wanted, "Network")


def reconcile_network(db: Database, cluster: str, client: KubeClient) -> NetworkPass:
    """One pass over ``cluster`` (module doc)."""
    nodes = _observe_nodes(client)
    with db.session() as session:
        pools, cni, errors = _pools(session, cluster, observed_allocations(nodes))
    if errors:  # say so on every pool, touch nothing in the cluster
        with db.session() as session:
            names = session.scalars(select(PoolRow.name).where(PoolRow.cluster == cluster))
            bad = {n: PoolNetwork("False", "NetworkInvalid", errors[0].text) for n in names}
            _record(session, bad, [])
        return NetworkPass(plan=ClusterNetworkPlan(pools=bad))
    plan = plan_cluster(cluster, pools, cni, nodes, _observe_managed(client, cluster))
    notes: list[tuple[str, str, str]] = []
    applied = _act(client, plan, notes)
    with db.session() as session:
        _record(session, plan.pools, notes)
    return NetworkPass(plan=plan, applied=applied)
