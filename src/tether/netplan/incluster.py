"""What the cluster itself must hold for a plan: BGP resources and every node's pod CIDR.

Pure (no I/O): from the planned pools, the CNI each pool's nodes run, and what was seen
in the cluster (the Nodes' pod CIDRs and annotations, the BGP objects Tether manages), it
decides what to server-side apply, what to delete, how to patch each Node, and what to
say about each pool. The plane's adapter (:mod:`tether.services.clusternet`) observes
and acts; running it again on an unchanged cluster does nothing.

* ``bgp`` pools get their Cilium BGP resources (``cilium.io/v2``), or with Calico an
  ``IPPool`` and a ``BGPPeer`` (the ``crd.projectcalico.org/v1`` CRDs Calico stores in)
  plus the ``projectcalico.org/ASNumber`` annotation on each Node.
* Every pool node gets its planned block as ``spec.podCIDR``/``spec.podCIDRs``, for
  CNIs in Kubernetes IPAM mode (Cilium ``ipam.mode: kubernetes``, Calico ``host-local``
  with ``usePodCidr``): static pools need it (the VPN server routes exactly those
  blocks), and Cilium advertises it over BGP. The API server lets a Node's pod CIDR be
  set once, so a Node that already has one keeps it; the plan starts from the observed
  blocks (:func:`observed_allocations`), and a block outside the pool is reported.
* Objects Tether manages whose pool is gone (or no longer ``bgp``, or switched CNI) are
  deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from tether.netplan.document import HybridNetwork
from tether.netplan.findings import Finding, has_errors
from tether.netplan.model import PoolPlan
from tether.netplan.planner import build_plan
from tether.netplan.render.kube import (
    CALICO_AS_ANNOTATION,
    CALICO_CRD_API,
    MANAGED_BY,
    calico_bgp_objects,
    cilium_bgp_objects,
)
from tether.netplan.rules import check_document

POOL_LABEL = "tether.io/pool"
#: Names the Tether cluster an object belongs to: removal only ever looks at its own.
CLUSTER_LABEL = "tether.io/cluster"
CNI = Literal["cilium", "calico"]


@dataclass(frozen=True)
class Kind:
    """A cluster-scoped resource type Tether applies."""

    api_version: str
    kind: str
    plural: str


KINDS: tuple[Kind, ...] = (
    Kind("cilium.io/v2", "CiliumBGPClusterConfig", "ciliumbgpclusterconfigs"),
    Kind("cilium.io/v2", "CiliumBGPPeerConfig", "ciliumbgppeerconfigs"),
    Kind("cilium.io/v2", "CiliumBGPAdvertisement", "ciliumbgpadvertisements"),
    Kind(CALICO_CRD_API, "IPPool", "ippools"),
    Kind(CALICO_CRD_API, "BGPPeer", "bgppeers"),
)
_BY_KIND = {(k.api_version, k.kind): k for k in KINDS}


def managed_selector(cluster: str) -> dict[str, str]:
    """The label selector of every object Tether manages for ``cluster``."""
    return {**MANAGED_BY, CLUSTER_LABEL: cluster}


def kind_of(obj: Mapping[str, Any]) -> Kind:
    return _BY_KIND[(str(obj["apiVersion"]), str(obj["kind"]))]


@dataclass(frozen=True)
class ObservedNode:
    pod_cidrs: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ManagedObject:
    """An object seen in the cluster with Tether's labels."""

    kind: Kind
    name: str
    pool: str


@dataclass(frozen=True)
class PoolNetwork:
    """The ``NetworkApplied`` condition of one pool, as planned."""

    status: Literal["True", "False"]
    reason: str
    message: str


def failed_condition(missing: Sequence[Kind], problems: Sequence[str]) -> PoolNetwork:
    """A pool's condition after some of its objects could not be applied or deleted.

    ``missing`` are the kinds the API server does not serve (it answered an apply with
    404): their CRDs are not installed, which the condition says by name, as the one thing
    to do first; ``problems`` are the other failures, as the API server gave them."""
    if missing:
        crds = sorted({f"{k.plural}.{k.api_version.split('/')[0]}" for k in missing})
        project = "Calico" if all(k.api_version == CALICO_CRD_API for k in missing) else "Cilium"
        message = (
            f"the cluster does not serve {', '.join(crds)}: install {project}'s CRDs "
            "(the CNI's own install does) and Tether applies the pool's objects at its next pass"
        )
        return PoolNetwork("False", "CRDNotInstalled", "; ".join([message, *problems])[:1000])
    return PoolNetwork("False", "ApplyFailed", "; ".join(problems)[:1000])


@dataclass
class ClusterNetworkPlan:
    #: Objects to server-side apply, with the pool each belongs to.
    apply: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    delete: list[ManagedObject] = field(default_factory=list)
    #: Node name -> merge patch (pod CIDR, Calico AS annotation), with its pool.
    node_patches: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    pools: dict[str, PoolNetwork] = field(default_factory=dict)


def observed_allocations(nodes: Mapping[str, ObservedNode]) -> dict[str, str]:
    """Node -> pod CIDR already set in the cluster: the plan keeps what it can."""
    return {name: node.pod_cidrs[0] for name, node in nodes.items() if node.pod_cidrs}


def plan_pools(
    doc: HybridNetwork, previous: Mapping[str, str]
) -> tuple[tuple[PoolPlan, ...], list[Finding]]:
    """The pools of a checked document (no keys needed: nothing here is a tunnel)."""
    resolved, findings = check_document(doc)
    if has_errors(findings):
        return (), findings
    return build_plan(resolved, findings, {}, previous).pools, findings


def desired_objects(cluster: str, pool: PoolPlan, cni: CNI) -> list[dict[str, Any]]:
    """The BGP objects pool ``pool`` needs in the cluster (none for ``static`` or empty)."""
    if pool.routing != "bgp" or not pool.nodes:
        return []
    if cni == "calico":
        objects = calico_bgp_objects(pool, CALICO_CRD_API)
    else:
        objects = cilium_bgp_objects(pool)
    for obj in objects:
        obj["metadata"]["labels"][CLUSTER_LABEL] = cluster
    return objects


def _node_patch(pool: PoolPlan, cni: CNI, block: str, seen: ObservedNode) -> dict[str, Any]:
    patch: dict[str, Any] = {}
    if not seen.pod_cidrs:
        patch["spec"] = {"podCIDR": block, "podCIDRs": [block]}
    if cni == "calico" and pool.routing == "bgp":
        asn = str(pool.node_asn)
        if seen.annotations.get(CALICO_AS_ANNOTATION) != asn:
            patch["metadata"] = {"annotations": {CALICO_AS_ANNOTATION: asn}}
    return patch


def plan_cluster(
    cluster: str,
    pools: Sequence[PoolPlan],
    cni: Mapping[str, CNI],
    nodes: Mapping[str, ObservedNode],
    managed: Iterable[ManagedObject],
) -> ClusterNetworkPlan:
    """Everything ``cluster`` needs for ``pools`` (module doc). ``cni`` maps a pool to
    its CNI (default ``cilium``); ``managed`` are the objects seen with
    :func:`managed_selector`."""
    out = ClusterNetworkPlan()
    wanted: set[tuple[Kind, str]] = set()
    for pool in pools:
        pool_cni = cni.get(pool.name, "cilium")
        objects = desired_objects(cluster, pool, pool_cni)
        for obj in objects:
            wanted.add((kind_of(obj), obj["metadata"]["name"]))
            out.apply.append((pool.name, obj))
        missing: list[str] = []
        moved: list[str] = []
        for node in pool.nodes:
            seen = nodes.get(node.name)
            if seen is None:
                missing.append(node.name)
                continue
            block = str(node.pod_cidr)
            if seen.pod_cidrs and seen.pod_cidrs[0] != block:
                moved.append(f"{node.name} has {seen.pod_cidrs[0]}, the plan gives {block}")
            patch = _node_patch(pool, pool_cni, block, seen)
            if patch:
                out.node_patches[node.name] = (pool.name, patch)
        out.pools[pool.name] = _condition(pool, pool_cni, len(objects), missing, moved)
    for seen_obj in managed:
        if (seen_obj.kind, seen_obj.name) not in wanted:
            out.delete.append(seen_obj)
    return out


def _condition(
    pool: PoolPlan, cni: CNI, objects: int, missing: list[str], moved: list[str]
) -> PoolNetwork:
    if moved:
        return PoolNetwork(
            "False",
            "PodCIDRConflict",
            "a Node's podCIDR cannot change once set; delete and re-join the node: "
            + "; ".join(moved[:5]),
        )
    if missing:
        return PoolNetwork(
            "False",
            "NodesNotRegistered",
            f"waiting for {len(missing)} Node(s) to register: {', '.join(missing[:5])}",
        )
    parts = [f"podCIDR set on {len(pool.nodes)} node(s)"]
    if objects:
        parts.append(f"{objects} {cni} BGP resource(s) applied")
    return PoolNetwork("True", "Applied", "; ".join(parts))
