"""The Kubernetes steps of a pool member's operation, against the member's cluster.

The pool reconciler records a step (cordon, drain, delete the Node, patch its labels and
taints, uncordon) before taking it, then performs it here, idempotently, and plans again
with the outcome (:class:`~tether.domain.memberops.StepResult`): ``Done``, ``Pending``
(a drain waiting for pods, the cluster unreachable: try again later) or ``Failed``
(a pod blocks the drain: a person must look).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from tether.domain.drain import DrainOptions
from tether.domain.frozen import evolve
from tether.domain.memberops import Member, Step, StepOutcome, StepResult
from tether.kube.client import KubeClient
from tether.kube.errors import KubeError, NotFound
from tether.kube.resources import Node
from tether.services.drain import cordon, drain_step, uncordon

__all__ = ["ClusterOps", "KubeClusterOps", "perform", "release_cordon"]


class ClusterOps(Protocol):
    """What the pool reconciler asks of a cluster (one member's Node at a time)."""

    def cordon(self, node: str) -> StepResult: ...
    def uncordon(self, node: str) -> StepResult: ...
    def drain(self, node: str, timeout_seconds: float) -> StepResult: ...
    def delete_node(self, node: str) -> StepResult: ...
    def patch_node(
        self,
        node: str,
        labels: Mapping[str, str | None],
        taints: Sequence[Mapping[str, str]],
        managed: Sequence[str],
    ) -> StepResult: ...


def _done(step: Step, message: str = "") -> StepResult:
    return StepResult(step, StepOutcome.DONE, message)


class KubeClusterOps:
    """:class:`ClusterOps` over a real API server."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client

    def cordon(self, node: str) -> StepResult:
        try:
            cordon(self.client, node)
        except NotFound:
            return _done(Step.CORDON, "no Node to cordon")
        return _done(Step.CORDON)

    def uncordon(self, node: str) -> StepResult:
        try:
            uncordon(self.client, node)
        except NotFound:
            return _done(Step.UNCORDON, "no Node to uncordon")
        return _done(Step.UNCORDON)

    def drain(self, node: str, timeout_seconds: float) -> StepResult:
        options = DrainOptions(timeout_seconds=timeout_seconds, delete_emptydir_data=True)
        step = drain_step(self.client, node, options)
        if step.blocked:
            return StepResult(Step.DRAIN, StepOutcome.FAILED, step.message)
        return StepResult(
            Step.DRAIN, StepOutcome.DONE if step.done else StepOutcome.PENDING, step.message
        )

    def delete_node(self, node: str) -> StepResult:
        try:
            self.client.delete(Node, node)
        except NotFound:
            return _done(Step.DELETE_NODE, "the Node was gone already")
        return _done(Step.DELETE_NODE)

    def patch_node(
        self,
        node: str,
        labels: Mapping[str, str | None],
        taints: Sequence[Mapping[str, str]],
        managed: Sequence[str],
    ) -> StepResult:
        """Set the pool's labels and taints; taints of others (the node lifecycle
        controller's, a cordon's) are kept. Guarded by the Node's resourceVersion."""
        try:
            current = self.client.get(Node, node)
        except NotFound:
            return _done(Step.PATCH_NODE, "no Node to label")
        owned = set(managed) | {t["key"] for t in taints}
        kept = [
            t.to_dict()
            for t in (current.spec.taints if current.spec and current.spec.taints else [])
            if t.key not in owned
        ]
        meta = current.metadata
        body: dict[str, Any] = {
            "metadata": {
                "labels": dict(labels),
                "resourceVersion": meta.resourceVersion if meta else None,
            },
            "spec": {"taints": kept + [dict(t) for t in taints]},
        }
        self.client.patch(Node, node, body, patch_type="merge")
        return _done(Step.PATCH_NODE)


def _node_meta(
    member: Member,
) -> tuple[dict[str, str | None], list[dict[str, str]], list[str]]:
    """The label changes (None removes), the taints the member's target wants on its Node,
    and the keys of the taints the pool set before (replaced, not kept)."""
    op = member.op
    assert op is not None
    assert op.target is not None
    new = op.target.spec["node"]
    old = (member.spec or {}).get("node", {})
    labels: dict[str, str | None] = {
        k: None for k in old.get("labels", {}) if k not in new["labels"]
    }
    labels.update(new["labels"])
    managed = [t["key"] for t in old.get("taints", [])]
    return labels, list(new.get("taints", [])), managed


def perform(
    ops: ClusterOps | None, member: Member, timeout_seconds: float
) -> tuple[StepResult, ...]:
    """Take the Kubernetes step ``member``'s operation stands at, and the ones right after
    it while each is done (cordon then drain), so the plan moves past them in one go."""
    results: list[StepResult] = []
    while (result := _perform_one(ops, member, timeout_seconds)) is not None:
        results.append(result)
        op = member.op
        if result.outcome is not StepOutcome.DONE or op is None:
            break
        member = evolve(member, op=evolve(op, index=op.index + 1))
    return tuple(results)


def _perform_one(
    ops: ClusterOps | None, member: Member, timeout_seconds: float
) -> StepResult | None:
    step = member.external_step
    if step is None:
        return None
    return _take(ops, step, member, timeout_seconds)


def release_cordon(ops: ClusterOps | None, member: Member) -> StepResult:
    """Uncordon ``member``'s Node outside any operation (a stray cordon:
    :func:`tether.domain.poolplan.stray_cordons`)."""
    return _take(ops, Step.UNCORDON, member, 0.0)


def _take(ops: ClusterOps | None, step: Step, member: Member, timeout_seconds: float) -> StepResult:
    if ops is None:
        return StepResult(step, StepOutcome.PENDING, "the pool's cluster is not imported")
    node = member.host
    try:
        if step is Step.CORDON:
            return ops.cordon(node)
        if step is Step.UNCORDON:
            return ops.uncordon(node)
        if step is Step.DRAIN:
            return ops.drain(node, timeout_seconds)
        if step is Step.DELETE_NODE:
            return ops.delete_node(node)
        labels, taints, managed = _node_meta(member)
        return ops.patch_node(node, labels, taints, managed)
    except KubeError as exc:
        return StepResult(step, StepOutcome.PENDING, f"the cluster did not answer: {exc}")
