"""Cordon, drain and uncordon a node through the Eviction API.

The pure part (which pods go, which stay, which block, how long to back off) is
:mod:`tether.domain.drain`; this module talks to the API server and reports progress.

``drain_node``:

1. cordons the node (``spec.unschedulable``);
2. lists the pods bound to it and plans; if any pod blocks, it stops before evicting
   anything (``DrainBlocked``; the node stays cordoned);
3. evicts each pod through the Eviction API, which honours PodDisruptionBudgets. A
   ``429`` means a budget allows no disruption now: that pod is retried with
   exponential backoff (``retry_delay``) while the others proceed;
4. waits until every evicted (or already terminating) pod is gone: deleted, or replaced
   by a pod with another UID. An evicted pod stays ``Terminating`` until its kubelet
   confirms the containers stopped; with ``wait_for_delete=False`` an accepted eviction
   counts as done;
5. gives up with ``DrainTimeout`` when the per-drain timeout passes.

Every step is reported through *progress* (the API turns it into Host events).
*clock* and *sleep* are injectable so tests can exercise backoff and timeouts without
waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from tether.domain.drain import (
    DrainOptions,
    plan_drain,
    retry_delay,
)
from tether.domain.kubeapi import DrainReport, PodOutcome
from tether.errors import Conflict
from tether.kube.client import ALL_NAMESPACES, KubeClient
from tether.kube.errors import NotFound, TooManyRequests
from tether.kube.facts import pod_facts
from tether.kube.resources import Node, Pod

__all__ = [
    "DrainBlocked",
    "DrainProgress",
    "DrainStep",
    "DrainTimeout",
    "cordon",
    "drain_node",
    "drain_step",
    "pod_facts",
    "set_unschedulable",
    "uncordon",
]


class DrainBlocked(Conflict):
    code = "drain_blocked"

    def __init__(self, node: str, reasons: list[str]) -> None:
        super().__init__(
            f"drain of {node} refused, nothing evicted (node stays cordoned): "
            + "; ".join(reasons),
            field="node",
            rule="drain_blocked",
        )
        self.reasons = reasons


class DrainTimeout(Conflict):
    code = "drain_timeout"

    def __init__(self, node: str, timeout: float, remaining: list[str], evicted: list[str]) -> None:
        super().__init__(
            f"drain of {node} did not finish within {timeout:g}s; still there: "
            + ", ".join(remaining),
            field="timeoutSeconds",
            rule="drain_timeout",
        )
        self.remaining = remaining
        self.evicted = evicted


@dataclass(frozen=True)
class DrainProgress:
    reason: str  # CamelCase, an event reason
    message: str
    warning: bool = False


Progress = Callable[[DrainProgress], None]


def _ignore(_: DrainProgress) -> None:
    return None


def set_unschedulable(client: KubeClient, node: str, unschedulable: bool) -> bool:
    """Set or clear *node*'s ``spec.unschedulable``; True if that changed it."""
    before = client.get(Node, node)
    was = bool(before.spec is not None and before.spec.unschedulable)
    if was == unschedulable:
        return False
    client.patch(Node, node, {"spec": {"unschedulable": True if unschedulable else None}})
    return True


def cordon(client: KubeClient, node: str) -> bool:
    """Mark *node* unschedulable; True if it was schedulable before."""
    return set_unschedulable(client, node, True)


def uncordon(client: KubeClient, node: str) -> bool:
    """Make *node* schedulable again; True if it was cordoned."""
    return set_unschedulable(client, node, False)


def _gone(client: KubeClient, key: str, uid: str | None) -> bool:
    namespace, name = key.split("/", 1)
    try:
        pod = client.get(Pod, name, namespace=namespace)
    except NotFound:
        return True
    return pod.metadata is not None and pod.metadata.uid != uid


def drain_node(
    client: KubeClient,
    node: str,
    options: DrainOptions | None = None,
    *,
    progress: Progress = _ignore,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> DrainReport:
    """Cordon and drain *node* (steps and semantics: module doc)."""
    options = options or DrainOptions()
    started = clock()
    deadline = started + options.timeout_seconds
    if cordon(client, node):
        progress(DrainProgress("Cordoned", f"node {node} cordoned"))
    listed = client.list(Pod, namespace=ALL_NAMESPACES, fields={"spec.nodeName": node})
    facts = [pod_facts(p) for p in listed]
    uids = {
        f.key: (p.metadata.uid if p.metadata else None) for f, p in zip(facts, listed, strict=True)
    }
    plan = plan_drain(facts, options)
    why = {d.pod.key: d.reason for d in plan.decisions}
    if not plan.ok:
        reasons = [f"{d.pod.key}: {d.reason}" for d in plan.blocked]
        progress(DrainProgress("DrainBlocked", "; ".join(reasons), warning=True))
        raise DrainBlocked(node, reasons)
    skipped = [PodOutcome(pod=d.pod.key, reason=d.reason) for d in plan.skip]
    if skipped:
        progress(
            DrainProgress(
                "DrainSkipped",
                "left on the node: " + "; ".join(f"{s.pod} ({s.reason})" for s in skipped),
            )
        )
    pending = {d.pod.key: d for d in plan.evict}
    progress(
        DrainProgress(
            "DrainStarted",
            f"{len(pending)} pod(s) to evict from node {node}, {len(plan.wait)} to wait for",
        )
    )
    attempts = dict.fromkeys(pending, 0)
    next_try = dict.fromkeys(pending, started)
    evicted: list[str] = []
    retries = 0
    while pending:
        now = clock()
        if now >= deadline:
            progress(
                DrainProgress("DrainTimeout", f"not evicted: {', '.join(sorted(pending))}", True)
            )
            raise DrainTimeout(node, options.timeout_seconds, sorted(pending), evicted)
        for key in sorted(pending):
            if next_try[key] > now:
                continue
            namespace, name = key.split("/", 1)
            try:
                client.evict(name, namespace, grace_period=options.grace_period_seconds)
            except NotFound:
                del pending[key]  # gone already
                continue
            except TooManyRequests as exc:
                delay = retry_delay(attempts[key], options, exc.retry_after)
                attempts[key] += 1
                retries += 1
                next_try[key] = clock() + delay
                progress(
                    DrainProgress(
                        "EvictionRetry",
                        f"{key}: {exc.message or 'a disruption budget forbids it now'}; "
                        f"retrying in {delay:g}s",
                    )
                )
                continue
            del pending[key]
            evicted.append(key)
            progress(DrainProgress("Evicted", f"{key} evicted ({why[key]})"))
        if pending:
            wake = min(next_try[k] for k in pending)
            sleep(max(0.0, min(wake, deadline) - clock()))
    waiting = [*evicted, *(d.pod.key for d in plan.wait)]
    if options.wait_for_delete:
        remaining = list(waiting)
        while remaining:
            remaining = [k for k in remaining if not _gone(client, k, uids.get(k))]
            if not remaining:
                break
            if clock() >= deadline:
                progress(
                    DrainProgress(
                        "DrainTimeout", f"still terminating: {', '.join(remaining)}", True
                    )
                )
                raise DrainTimeout(node, options.timeout_seconds, remaining, evicted)
            sleep(min(options.poll_seconds, max(0.0, deadline - clock())))
    seconds = clock() - started
    progress(
        DrainProgress(
            "Drained",
            f"node {node} drained: {len(evicted)} evicted, {len(skipped)} left on the node",
        )
    )
    return DrainReport(
        node=node, evicted=evicted, skipped=skipped, eviction_retries=retries, seconds=seconds
    )


@dataclass(frozen=True)
class DrainStep:
    """One non-blocking pass of a drain (for a reconciler that comes back later)."""

    done: bool
    blocked: list[str]
    evicted: list[str]
    remaining: list[str]

    @property
    def message(self) -> str:
        if self.blocked:
            return "blocked: " + "; ".join(self.blocked)
        if self.remaining:
            return f"{len(self.remaining)} pod(s) still to go: " + ", ".join(self.remaining[:5])
        return f"drained ({len(self.evicted)} evicted this pass)"


def drain_step(client: KubeClient, node: str, options: DrainOptions | None = None) -> DrainStep:
    """Cordon *node*, evict every pod an eviction is due for, and say what is left.

    Idempotent and non-blocking: a pod a disruption budget protects (429) or one still
    terminating is "remaining", and the caller runs the step again later. A pod that
    blocks the drain (emptyDir without ``delete_emptydir_data``, unmanaged without
    ``force``) stops it with nothing evicted. A Node that does not exist is drained."""
    options = options or DrainOptions()
    try:
        cordon(client, node)
    except NotFound:
        return DrainStep(done=True, blocked=[], evicted=[], remaining=[])
    listed = client.list(Pod, namespace=ALL_NAMESPACES, fields={"spec.nodeName": node})
    plan = plan_drain([pod_facts(p) for p in listed], options)
    if not plan.ok:
        return DrainStep(
            done=False,
            blocked=[f"{d.pod.key}: {d.reason}" for d in plan.blocked],
            evicted=[],
            remaining=[],
        )
    evicted: list[str] = []
    remaining: list[str] = [d.pod.key for d in plan.wait] if options.wait_for_delete else []
    for decision in plan.evict:
        namespace, name = decision.pod.key.split("/", 1)
        try:
            client.evict(name, namespace, grace_period=options.grace_period_seconds)
        except NotFound:
            continue
        except TooManyRequests:
            remaining.append(decision.pod.key)
            continue
        evicted.append(decision.pod.key)
        if options.wait_for_delete:
            remaining.append(decision.pod.key)
    return DrainStep(done=not remaining, blocked=[], evicted=evicted, remaining=sorted(remaining))
