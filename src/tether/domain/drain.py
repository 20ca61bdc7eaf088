"""Draining a node, planned purely: which pods to evict, which to skip, which block it.

The rules are ``kubectl drain``'s, so operators meet no surprises:

- **mirror pods** (static pods the kubelet runs from files, annotated
  ``kubernetes.io/config.mirror``) are skipped: the API cannot remove them;
- **DaemonSet pods** are skipped: the DaemonSet controller would put them straight back,
  and they tolerate the ``unschedulable`` taint;
- pods already **terminating** are not evicted again, only waited for;
- **finished** pods (``Succeeded``/``Failed``) are evicted whatever they are;
- pods with **emptyDir** volumes block the drain unless ``delete_emptydir_data``: their
  local data is lost with them;
- pods **no controller manages** block the drain unless ``force``: nothing recreates
  them elsewhere.

A drain that has any blocking pod evicts nothing (the node stays cordoned), so the
operator decides with the full list in hand.

Retrying: an eviction refused with 429 (a PodDisruptionBudget allows no disruption
now) is retried after :func:`retry_delay` until the drain's deadline.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "MIRROR_ANNOTATION",
    "DrainOptions",
    "DrainPlan",
    "PodAction",
    "PodDecision",
    "PodFacts",
    "plan_drain",
    "remaining_workloads",
    "retry_delay",
]

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
_FINISHED = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class PodFacts:
    """What the planner needs to know about a pod on the node."""

    namespace: str
    name: str
    controller_kind: str | None = None  # kind of the ownerReference with controller=true
    controller_name: str | None = None
    mirror: bool = False
    empty_dir: bool = False
    phase: str | None = None
    terminating: bool = False  # metadata.deletionTimestamp is set

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class DrainOptions:
    timeout_seconds: float = 300.0
    """Give up (DrainTimeout) when pods are still there after this long."""
    delete_emptydir_data: bool = False
    """Evict pods with emptyDir volumes (their local data is lost)."""
    force: bool = False
    """Evict pods no controller manages (they are not recreated anywhere)."""
    grace_period_seconds: int | None = None
    """Override each pod's termination grace period (None: the pod's own)."""
    wait_for_delete: bool = True
    """Wait until evicted pods are gone; False: done once every eviction was accepted."""
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 10.0
    poll_seconds: float = 1.0
    """How often to look whether evicted pods are gone."""


class PodAction(StrEnum):
    EVICT = "Evict"
    SKIP = "Skip"  # left on the node on purpose
    WAIT = "Wait"  # already terminating: wait for it, do not evict again
    BLOCK = "Block"  # stops the drain until the operator allows it


@dataclass(frozen=True)
class PodDecision:
    pod: PodFacts
    action: PodAction
    reason: str


@dataclass(frozen=True)
class DrainPlan:
    decisions: tuple[PodDecision, ...]

    def _with(self, action: PodAction) -> list[PodDecision]:
        return [d for d in self.decisions if d.action is action]

    @property
    def evict(self) -> list[PodDecision]:
        return self._with(PodAction.EVICT)

    @property
    def skip(self) -> list[PodDecision]:
        return self._with(PodAction.SKIP)

    @property
    def wait(self) -> list[PodDecision]:
        return self._with(PodAction.WAIT)

    @property
    def blocked(self) -> list[PodDecision]:
        return self._with(PodAction.BLOCK)

    @property
    def ok(self) -> bool:
        """No pod blocks the drain."""
        return not self.blocked


def decide_pod(pod: PodFacts, options: DrainOptions) -> PodDecision:
    if pod.mirror:
        return PodDecision(pod, PodAction.SKIP, "mirror pod of a static pod")
    if pod.controller_kind == "DaemonSet":
        return PodDecision(pod, PodAction.SKIP, f"managed by DaemonSet {pod.controller_name}")
    if pod.terminating:
        return PodDecision(pod, PodAction.WAIT, "already terminating")
    if pod.phase in _FINISHED:
        return PodDecision(pod, PodAction.EVICT, f"finished ({pod.phase})")
    if pod.empty_dir and not options.delete_emptydir_data:
        return PodDecision(
            pod,
            PodAction.BLOCK,
            "uses emptyDir volumes whose data would be lost (allow with deleteEmptyDirData)",
        )
    if pod.controller_kind is None and not options.force:
        return PodDecision(
            pod,
            PodAction.BLOCK,
            "not managed by a controller, so nothing would recreate it (allow with force)",
        )
    owner = f"{pod.controller_kind} {pod.controller_name}" if pod.controller_kind else "nothing"
    return PodDecision(pod, PodAction.EVICT, f"managed by {owner}")


def plan_drain(pods: Iterable[PodFacts], options: DrainOptions) -> DrainPlan:
    """Decide for every pod on the node; sorted by namespace/name for stable output."""
    ordered = sorted(pods, key=lambda p: (p.namespace, p.name))
    return DrainPlan(tuple(decide_pod(p, options) for p in ordered))


def retry_delay(attempt: int, options: DrainOptions, retry_after: float | None = None) -> float:
    """Seconds to wait before eviction attempt ``attempt + 1`` (``attempt`` from 0).

    Exponential from ``retry_base_seconds``, capped at ``retry_max_seconds``; a server
    ``Retry-After`` hint is a lower bound.
    """
    factor = float(2 ** min(max(attempt, 0), 30))
    delay = min(options.retry_max_seconds, options.retry_base_seconds * factor)
    return max(delay, retry_after or 0.0)


def remaining_workloads(pods: Iterable[PodFacts]) -> list[PodFacts]:
    """The pods that keep a node from counting as drained: all but mirror pods, DaemonSet
    pods and finished pods (what a completed drain leaves behind), sorted."""
    return [
        d.pod
        for d in plan_drain(pods, DrainOptions(force=True, delete_emptydir_data=True)).decisions
        if d.action is not PodAction.SKIP and d.pod.phase not in _FINISHED
    ]
