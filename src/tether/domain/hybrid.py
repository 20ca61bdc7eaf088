"""Hybrid mode as a pure plan: which labels and affinities to add to (or take off) a cluster.

The service layer observes Nodes and DaemonSets, turns them into the facts below, calls
:func:`plan_hybrid`, and applies the resulting merge patches. Everything that decides
*what* changes lives here, so it is tested without an API server.

What enabling hybrid mode means for a cluster:

- **Hybrid nodes** are Nodes whose name is a Tether host assigned to a pool of the
  cluster, or whose ``spec.providerID`` is ``tether://<cluster>/<node>``. Each gets
  ``tether.io/compute-type=hybrid`` (and ``eks.amazonaws.com/compute-type=hybrid`` when
  asked), and, when its host is known, ``node-restriction.kubernetes.io/tether-site`` and
  ``node-restriction.kubernetes.io/tether-pool``. The NodeRestriction admission plugin
  refuses ``node-restriction.kubernetes.io/`` labels from a kubelet, so a node cannot
  move itself to another site or pool to attract that site's workloads.
- **CNI DaemonSets** (Cilium, Calico) get a required node affinity
  ``tether.io/compute-type In (hybrid)``: they run on hybrid nodes only.
- **Cloud-only DaemonSets** (the VPC CNI ``aws-node``) get
  ``tether.io/compute-type NotIn (hybrid)``. ``kube-proxy`` is needed everywhere and is
  left alone.

Reversibility: Tether records what it added in an annotation on each object it changed
(:data:`LABELS_ANNOTATION` on Nodes, :data:`AFFINITY_ANNOTATION` on DaemonSets).
Disabling takes off exactly that: labels Tether added are removed, labels Tether
overwrote get their previous value back, the affinity requirement Tether added is
removed from every node selector term (terms and structures that only existed for it go
too). Labels or requirements that were there before Tether came are never recorded and
so never removed. Planning twice from the same observations gives the same result, and
planning against objects that already match gives an empty plan (idempotence).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "AFFINITY_ANNOTATION",
    "CLOUD_ONLY_DAEMONSETS",
    "CNI_DAEMONSETS",
    "COMPUTE_TYPE_LABEL",
    "EKS_COMPUTE_TYPE_LABEL",
    "HYBRID",
    "LABELS_ANNOTATION",
    "POOL_LABEL",
    "SITE_LABEL",
    "DaemonSetFacts",
    "DaemonSetPatch",
    "DaemonSetRole",
    "HybridHost",
    "HybridPlan",
    "NodeFacts",
    "NodePatch",
    "merge_patch",
    "plan_hybrid",
    "provider_id",
    "with_requirement",
    "without_requirement",
]

HYBRID = "hybrid"
COMPUTE_TYPE_LABEL = "tether.io/compute-type"
EKS_COMPUTE_TYPE_LABEL = "eks.amazonaws.com/compute-type"
SITE_LABEL = "node-restriction.kubernetes.io/tether-site"
POOL_LABEL = "node-restriction.kubernetes.io/tether-pool"
#: On a Node: JSON ``{label: {"value": v, "previous": old-or-null}}`` of what Tether set.
LABELS_ANNOTATION = "tether.io/hybrid-labels"
#: On a DaemonSet: JSON of the node selector requirement Tether added to every term.
AFFINITY_ANNOTATION = "tether.io/hybrid-affinity"

#: (namespace, name) of the CNI DaemonSets that must run on hybrid nodes only.
CNI_DAEMONSETS: tuple[tuple[str, str], ...] = (
    ("kube-system", "cilium"),
    ("calico-system", "calico-node"),
    ("kube-system", "calico-node"),
)
#: (namespace, name) of DaemonSets that only work on cloud nodes (the VPC CNI).
CLOUD_ONLY_DAEMONSETS: tuple[tuple[str, str], ...] = (("kube-system", "aws-node"),)

_REQUIRED = "requiredDuringSchedulingIgnoredDuringExecution"


def provider_id(cluster: str, node: str) -> str:
    """The ``spec.providerID`` a Tether node carries: ``tether://<cluster>/<node>``."""
    return f"tether://{cluster}/{node}"


# Facts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class HybridHost:
    """A Tether host assigned to a pool of the cluster (its node name is the host name)."""

    name: str
    site: str
    pool: str


@dataclass(frozen=True)
class NodeFacts:
    """What the planner needs to know about a Node."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    provider_id: str | None = None
    resource_version: str | None = None


class DaemonSetRole(StrEnum):
    CNI = "cni"  # must run on hybrid nodes only
    CLOUD_ONLY = "cloud-only"  # must never run on hybrid nodes


@dataclass(frozen=True)
class DaemonSetFacts:
    """A DaemonSet: its pod template's ``affinity`` (JSON, as the API returns it)."""

    namespace: str
    name: str
    role: DaemonSetRole
    affinity: Mapping[str, Any] | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    resource_version: str | None = None


# Plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodePatch:
    """Label changes for one Node, as a JSON merge patch (with its resourceVersion)."""

    node: str
    set: Mapping[str, str]
    removed: tuple[str, ...]
    patch: Mapping[str, Any]

    def describe(self) -> str:
        parts = []
        if self.set:
            parts.append("set " + ", ".join(f"{k}={v}" for k, v in sorted(self.set.items())))
        if self.removed:
            parts.append("removed " + ", ".join(sorted(self.removed)))
        return f"node {self.node}: " + ("; ".join(parts) or "updated Tether's record")


@dataclass(frozen=True)
class DaemonSetPatch:
    """An affinity change for one DaemonSet, as a JSON merge patch."""

    namespace: str
    name: str
    role: DaemonSetRole
    requirement: Mapping[str, Any] | None  # what Tether now requires; None: reverted
    patch: Mapping[str, Any]

    def describe(self) -> str:
        target = f"daemonset {self.namespace}/{self.name}"
        if self.requirement is None:
            return f"{target}: removed Tether's node affinity"
        req = self.requirement
        values = ",".join(req.get("values") or [])
        return f"{target}: pods require {req['key']} {req['operator']} ({values})"


@dataclass(frozen=True)
class HybridPlan:
    nodes: tuple[NodePatch, ...] = ()
    daemonsets: tuple[DaemonSetPatch, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.nodes and not self.daemonsets


# JSON merge patch ----------------------------------------------------------------------


def merge_patch(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> Any:
    """The RFC 7386 merge patch turning ``old`` into ``new`` (``None`` deletes).

    Lists are replaced whole, which is what a merge patch does with them.
    """
    if not new:
        return None
    if not old:
        return copy.deepcopy(dict(new))
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if before == value:
            continue
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            patch[key] = merge_patch(before, value)
        else:
            patch[key] = copy.deepcopy(value)
    return patch


# Node labels ---------------------------------------------------------------------------


def _owned_labels(annotations: Mapping[str, str]) -> dict[str, dict[str, str | None]]:
    """Parse :data:`LABELS_ANNOTATION`; anything unreadable counts as "owns nothing"."""
    raw = annotations.get(LABELS_ANNOTATION)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    owned: dict[str, dict[str, str | None]] = {}
    if isinstance(data, dict):
        for key, entry in data.items():
            if isinstance(entry, dict) and isinstance(entry.get("value"), str):
                previous = entry.get("previous")
                owned[str(key)] = {
                    "value": entry["value"],
                    "previous": previous if isinstance(previous, str) else None,
                }
    return owned


def _encode(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def desired_labels(
    node: NodeFacts, cluster: str, hosts: Mapping[str, HybridHost], *, eks_labels: bool
) -> dict[str, str]:
    """The hybrid labels ``node`` should carry (empty for a cloud node)."""
    host = hosts.get(node.name)
    if host is None and node.provider_id != provider_id(cluster, node.name):
        return {}
    labels = {COMPUTE_TYPE_LABEL: HYBRID}
    if eks_labels:
        labels[EKS_COMPUTE_TYPE_LABEL] = HYBRID
    if host is not None:
        labels[SITE_LABEL] = host.site
        labels[POOL_LABEL] = host.pool
    return labels


def plan_node(node: NodeFacts, desired: Mapping[str, str]) -> NodePatch | None:
    """Patch ``node`` towards ``desired`` labels, recording what Tether owns; None if done."""
    labels = node.labels
    owned = _owned_labels(node.annotations)
    changes: dict[str, str | None] = {}
    new_owned: dict[str, dict[str, str | None]] = {}
    for key, value in desired.items():
        current = labels.get(key)
        if key in owned:
            new_owned[key] = {"value": value, "previous": owned[key]["previous"]}
        elif current == value:
            continue  # someone else's identical label: not Tether's to remove later
        else:
            new_owned[key] = {"value": value, "previous": current}
        if current != value:
            changes[key] = value
    for key, entry in owned.items():
        if key in desired:
            continue
        if labels.get(key) == entry["value"]:
            changes[key] = entry["previous"]  # None removes the label
        # else: changed by someone since; leave it and forget it
    annotation = _encode(new_owned) if new_owned else None
    if not changes and annotation == node.annotations.get(LABELS_ANNOTATION):
        return None
    metadata: dict[str, Any] = {}
    if node.resource_version:
        metadata["resourceVersion"] = node.resource_version
    if changes:
        metadata["labels"] = changes
    if annotation != node.annotations.get(LABELS_ANNOTATION):
        metadata["annotations"] = {LABELS_ANNOTATION: annotation}
    return NodePatch(
        node=node.name,
        set={k: v for k, v in changes.items() if v is not None},
        removed=tuple(sorted(k for k, v in changes.items() if v is None)),
        patch={"metadata": metadata},
    )


# DaemonSet affinity --------------------------------------------------------------------


def requirement_for(role: DaemonSetRole) -> dict[str, Any]:
    """The node selector requirement a DaemonSet of ``role`` gets in hybrid mode."""
    operator = "In" if role is DaemonSetRole.CNI else "NotIn"
    return {"key": COMPUTE_TYPE_LABEL, "operator": operator, "values": [HYBRID]}


def _terms(affinity: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    node_affinity = (affinity or {}).get("nodeAffinity") or {}
    required = node_affinity.get(_REQUIRED) or {}
    return list(required.get("nodeSelectorTerms") or [])


def has_everywhere(affinity: Mapping[str, Any] | None, req: Mapping[str, Any]) -> bool:
    """Whether every node selector term already carries ``req`` (and there is one)."""
    terms = _terms(affinity)
    return bool(terms) and all(req in (t.get("matchExpressions") or []) for t in terms)


def with_requirement(affinity: Mapping[str, Any] | None, req: Mapping[str, Any]) -> dict[str, Any]:
    """``affinity`` with ``req`` ANDed into every required node selector term.

    Terms are ORed, the expressions of a term ANDed, so the requirement goes into each
    term; with no terms, one term holding only ``req`` is created.
    """
    result = copy.deepcopy(dict(affinity or {}))
    node_affinity = result.setdefault("nodeAffinity", {})
    required = node_affinity.get(_REQUIRED) or {}
    node_affinity[_REQUIRED] = required
    terms = list(required.get("nodeSelectorTerms") or [])
    if not terms:
        terms = [{"matchExpressions": [dict(req)]}]
    else:
        for term in terms:
            expressions = list(term.get("matchExpressions") or [])
            if req not in expressions:
                term["matchExpressions"] = [*expressions, dict(req)]
    required["nodeSelectorTerms"] = terms
    return result


def without_requirement(
    affinity: Mapping[str, Any] | None, req: Mapping[str, Any]
) -> dict[str, Any]:
    """``affinity`` with ``req`` taken out of every term; emptied structures removed.

    A term left with nothing is dropped (an empty term would match no node); with no
    terms left the required block goes, and then empty ``nodeAffinity``.
    """
    result = copy.deepcopy(dict(affinity or {}))
    node_affinity = result.get("nodeAffinity")
    if not isinstance(node_affinity, dict):
        return result
    required = node_affinity.get(_REQUIRED)
    if not isinstance(required, dict):
        return result
    kept: list[dict[str, Any]] = []
    changed = False
    for term in required.get("nodeSelectorTerms") or []:
        expressions = list(term.get("matchExpressions") or [])
        remaining = [e for e in expressions if e != req]
        if len(remaining) == len(expressions):
            kept.append(term)
            continue
        changed = True
        new_term = dict(term)
        if remaining:
            new_term["matchExpressions"] = remaining
        else:
            new_term.pop("matchExpressions", None)
        if new_term:
            kept.append(new_term)
    if not changed:
        return result
    if kept:
        required["nodeSelectorTerms"] = kept
    else:
        del node_affinity[_REQUIRED]
        if not node_affinity:
            del result["nodeAffinity"]
    return result


def _owned_requirement(annotations: Mapping[str, str]) -> dict[str, Any] | None:
    raw = annotations.get(AFFINITY_ANNOTATION)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if isinstance(data, dict) and {"key", "operator"} <= set(data):
        return data
    return None


def plan_daemonset(ds: DaemonSetFacts, *, enable: bool) -> DaemonSetPatch | None:
    """Patch ``ds`` for hybrid mode on (``enable``) or off; None if it already matches."""
    desired = requirement_for(ds.role) if enable else None
    current = dict(ds.affinity or {})
    affinity = copy.deepcopy(current)
    owned = _owned_requirement(ds.annotations)
    if owned is not None and owned != desired:
        affinity = without_requirement(affinity, owned)
        owned = None
    if desired is not None and not (owned is None and has_everywhere(affinity, desired)):
        affinity = with_requirement(affinity, desired)
        owned = desired
    annotation = _encode(owned) if owned is not None else None
    old_annotation = ds.annotations.get(AFFINITY_ANNOTATION)
    if affinity == current and annotation == old_annotation:
        return None
    metadata: dict[str, Any] = {}
    if ds.resource_version:
        metadata["resourceVersion"] = ds.resource_version
    if annotation != old_annotation:
        metadata["annotations"] = {AFFINITY_ANNOTATION: annotation}
    patch: dict[str, Any] = {"metadata": metadata}
    if affinity != current:
        patch["spec"] = {"template": {"spec": {"affinity": merge_patch(current, affinity)}}}
    return DaemonSetPatch(
        namespace=ds.namespace, name=ds.name, role=ds.role, requirement=owned, patch=patch
    )


# The whole plan ------------------------------------------------------------------------


def daemonset_roles() -> dict[tuple[str, str], DaemonSetRole]:
    """Every DaemonSet hybrid mode touches, with its role."""
    roles = dict.fromkeys(CNI_DAEMONSETS, DaemonSetRole.CNI)
    roles.update(dict.fromkeys(CLOUD_ONLY_DAEMONSETS, DaemonSetRole.CLOUD_ONLY))
    return roles


def plan_hybrid(
    *,
    cluster: str,
    enable: bool,
    nodes: Iterable[NodeFacts],
    daemonsets: Sequence[DaemonSetFacts],
    hosts: Iterable[HybridHost] = (),
    eks_labels: bool = False,
) -> HybridPlan:
    """Everything to change so the cluster is in hybrid mode (``enable``) or out of it.

    ``hosts`` are the Tether hosts assigned to pools of ``cluster``. Disabling ignores
    them: it takes off whatever Tether recorded adding.
    """
    by_name = {h.name: h for h in hosts}
    node_patches = []
    for node in sorted(nodes, key=lambda n: n.name):
        desired = desired_labels(node, cluster, by_name, eks_labels=eks_labels) if enable else {}
        patch = plan_node(node, desired)
        if patch is not None:
            node_patches.append(patch)
    ds_patches = []
    for ds in sorted(daemonsets, key=lambda d: (d.namespace, d.name)):
        ds_patch = plan_daemonset(ds, enable=enable)
        if ds_patch is not None:
            ds_patches.append(ds_patch)
    return HybridPlan(nodes=tuple(node_patches), daemonsets=tuple(ds_patches))
