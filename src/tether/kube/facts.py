"""Facts the pure rules need, read from Kubernetes objects (a pure translation)."""

from __future__ import annotations

from tether.domain.drain import MIRROR_ANNOTATION, PodFacts
from tether.domain.nodehealth import NodeSnapshot, node_ready
from tether.kube.resources import Node, Pod

__all__ = ["node_snapshot", "pod_facts"]


def pod_facts(pod: Pod) -> PodFacts:
    meta, spec, status = pod.metadata, pod.spec, pod.status
    assert meta is not None
    controller = next((o for o in meta.ownerReferences or [] if o.controller), None)
    volumes = spec.volumes if spec is not None else None
    return PodFacts(
        namespace=meta.namespace or "",
        name=meta.name or "",
        controller_kind=controller.kind if controller else None,
        controller_name=controller.name if controller else None,
        mirror=MIRROR_ANNOTATION in (meta.annotations or {}),
        empty_dir=any(v.emptyDir is not None for v in volumes or []),
        phase=status.phase if status is not None else None,
        terminating=meta.deletionTimestamp is not None,
    )


def node_snapshot(node: Node) -> NodeSnapshot | None:
    """A Node's readiness and the Ready condition's reason.

    ``None`` when the Node has no Ready condition yet: it is still registering, which
    counts as "not joined", not as NotReady.
    """
    conditions = (node.status.conditions if node.status is not None else None) or []
    ready = next((c for c in conditions if c.type == "Ready"), None)
    if ready is None:
        return None
    info = node.status.nodeInfo if node.status is not None else None
    return NodeSnapshot(
        ready=node_ready([(ready.type, ready.status)]),
        reason=ready.reason or "",
        ready_since=ready.lastTransitionTime,
        unschedulable=bool(node.spec is not None and node.spec.unschedulable),
        kubelet_version=info.kubeletVersion if info is not None else "",
    )
