"""Cordon and drain against a real kube-apiserver.

Pods are bound to nodes by ``spec.nodeName`` (no scheduler runs). No kubelet runs either:
an evicted pod on a node gets a deletionTimestamp and stays ``Terminating`` until its
kubelet confirms, which the simulated kubelet (``finalize_pods=True``) does like a real
one, by deleting it with grace period 0. No disruption controller runs, so tests set a
PodDisruptionBudget's status (``disruptionsAllowed``) themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
from lightkube.models.core_v1 import (
    Container,
    EmptyDirVolumeSource,
    PodSpec,
    Volume,
)
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta, OwnerReference
from lightkube.models.policy_v1 import PodDisruptionBudgetSpec
from lightkube.resources.core_v1 import Node, Pod
from lightkube.resources.policy_v1 import PodDisruptionBudget

from tether.domain.drain import DrainOptions
from tether.kube.client import KubeClient
from tether.kube.errors import NotFound
from tether.services.drain import (
    DrainBlocked,
    DrainProgress,
    DrainTimeout,
    drain_node,
    uncordon,
)
from tether.sim.kubesim import KubeletFleet, SimulatedNode

pytestmark = pytest.mark.integration

Namer = Callable[[str], str]


@pytest.fixture
def node(kube: KubeClient, unique_name: Namer) -> Iterator[tuple[str, KubeletFleet]]:
    name = unique_name("worker")
    fleet = KubeletFleet(kube, finalize_pods=True)
    fleet.register([SimulatedNode(name)])
    with fleet:
        yield name, fleet
    fleet.stop(delete=True)


def pod(
    kube: KubeClient,
    namespace: str,
    name: str,
    node: str,
    *,
    owner: str | None = "ReplicaSet",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    empty_dir: bool = False,
) -> None:
    owners = (
        [
            OwnerReference(
                apiVersion="apps/v1",
                kind=owner,
                name=f"{name}-owner",
                uid="6d0c1a4e-0000-4000-8000-000000000000",
                controller=True,
            )
        ]
        if owner
        else None
    )
    volumes = [Volume(name="scratch", emptyDir=EmptyDirVolumeSource())] if empty_dir else None
    kube.create(
        Pod(
            metadata=ObjectMeta(
                name=name, labels=labels, annotations=annotations, ownerReferences=owners
            ),
            spec=PodSpec(
                nodeName=node,
                volumes=volumes,
                containers=[Container(name="c", image="registry.invalid/app:1")],
            ),
        ),
        namespace=namespace,
    )
    # Play the kubelet: the pod runs (a Pending pod may always be evicted).
    kube.patch(Pod.Status, name, {"status": {"phase": "Running"}}, namespace=namespace)


def pods_on(kube: KubeClient, node: str) -> set[str]:
    return {
        f"{p.metadata.namespace}/{p.metadata.name}"
        for p in kube.list(Pod, namespace="*", fields={"spec.nodeName": node})  # type: ignore[union-attr]
    }


def is_cordoned(kube: KubeClient, node: str) -> bool:
    spec = kube.get(Node, node).spec
    return bool(spec and spec.unschedulable)


def test_drain_skips_daemonset_and_mirror_pods_and_needs_flags_for_the_rest(
    kube: KubeClient, namespace: str, node: tuple[str, KubeletFleet]
) -> None:
    name, _ = node
    pod(kube, namespace, "web", name)
    pod(kube, namespace, "agent", name, owner="DaemonSet")
    pod(
        kube,
        namespace,
        "static",
        name,
        owner=None,
        annotations={"kubernetes.io/config.mirror": "hash"},
    )
    pod(kube, namespace, "cache", name, owner="StatefulSet", empty_dir=True)
    pod(kube, namespace, "bare", name, owner=None)
    steps: list[DrainProgress] = []

    with pytest.raises(DrainBlocked) as blocked:
        drain_node(kube, name, progress=steps.append)
    assert {r.split(":")[0] for r in blocked.value.reasons} == {
        f"{namespace}/bare",
        f"{namespace}/cache",
    }
    assert is_cordoned(kube, name)
    assert len(pods_on(kube, name)) == 5  # nothing evicted
    assert [s.reason for s in steps] == ["Cordoned", "DrainBlocked"]

    steps.clear()
    report = drain_node(
        kube,
        name,
        DrainOptions(delete_emptydir_data=True, force=True, timeout_seconds=60, poll_seconds=0.1),
        progress=steps.append,
    )
    assert sorted(report.evicted) == [f"{namespace}/{p}" for p in ("bare", "cache", "web")]
    assert {s.pod for s in report.skipped} == {f"{namespace}/agent", f"{namespace}/static"}
    # Evicted pods are gone (their simulated kubelet finished the deletion).
    assert pods_on(kube, name) == {f"{namespace}/agent", f"{namespace}/static"}
    reasons = [s.reason for s in steps]
    assert reasons[0] == "DrainSkipped" and reasons[-1] == "Drained"
    assert reasons.count("Evicted") == 3

    assert uncordon(kube, name) is True
    assert not is_cordoned(kube, name)
    assert uncordon(kube, name) is False


class FakeClock:
    """A monotonic clock that only moves when the drain sleeps; hooks run on each sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[int], None] = lambda n: None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.on_sleep(len(self.sleeps))


def budget(kube: KubeClient, namespace: str, allowed: int) -> None:
    """Play the disruption controller: publish the budget's status."""
    pdb = kube.get(PodDisruptionBudget, "db", namespace=namespace)
    assert pdb.metadata is not None
    kube.patch(
        PodDisruptionBudget.Status,
        "db",
        {
            "status": {
                "observedGeneration": pdb.metadata.generation,
                "disruptionsAllowed": allowed,
                "currentHealthy": 1,
                "desiredHealthy": 1 - allowed + 1,
                "expectedPods": 1,
            }
        },
        namespace=namespace,
    )


@pytest.fixture
def guarded(kube: KubeClient, namespace: str, node: tuple[str, KubeletFleet]) -> str:
    name, _ = node
    pod(kube, namespace, "db-0", name, owner="StatefulSet", labels={"app": "db"})
    kube.create(
        PodDisruptionBudget(
            metadata=ObjectMeta(name="db"),
            spec=PodDisruptionBudgetSpec(
                minAvailable=1, selector=LabelSelector(matchLabels={"app": "db"})
            ),
        ),
        namespace=namespace,
    )
    budget(kube, namespace, 0)
    return name


def test_a_budget_refusal_is_retried_with_backoff_until_it_allows(
    kube: KubeClient, namespace: str, guarded: str
) -> None:
    clock = FakeClock()

    def controller(sleeps: int) -> None:
        if sleeps == 3:  # after three refusals, a replica elsewhere became ready
            budget(kube, namespace, 1)

    clock.on_sleep = controller
    steps: list[DrainProgress] = []
    report = drain_node(
        kube,
        guarded,
        DrainOptions(
            timeout_seconds=300, retry_base_seconds=1, retry_max_seconds=10, wait_for_delete=False
        ),
        progress=steps.append,
        clock=clock,
        sleep=clock.sleep,
    )
    assert report.evicted == [f"{namespace}/db-0"]
    assert report.eviction_retries == 3
    assert clock.sleeps == [1, 2, 4]  # exponential backoff, no real waiting
    assert [s.reason for s in steps].count("EvictionRetry") == 3
    assert "disruption budget" in next(s.message for s in steps if s.reason == "EvictionRetry")
    # The eviction was accepted: the pod is Terminating, or already gone when the
    # simulated kubelet (finalize_pods=True) has confirmed the deletion meanwhile.
    with contextlib.suppress(NotFound):
        leftover = kube.get(Pod, "db-0", namespace=namespace)
        assert leftover.metadata is not None and leftover.metadata.deletionTimestamp is not None


def test_a_budget_that_never_allows_times_the_drain_out(
    kube: KubeClient, namespace: str, guarded: str
) -> None:
    clock = FakeClock()
    with pytest.raises(DrainTimeout) as info:
        drain_node(
            kube,
            guarded,
            DrainOptions(timeout_seconds=60, retry_max_seconds=10),
            clock=clock,
            sleep=clock.sleep,
        )
    assert info.value.remaining == [f"{namespace}/db-0"]
    assert clock.now - 1000.0 >= 60
    assert max(clock.sleeps) <= 10
    kube.get(Pod, "db-0", namespace=namespace)  # still there, untouched


def test_terminating_pods_are_waited_for_until_the_timeout(
    kube: KubeClient, namespace: str, unique_name: Namer
) -> None:
    """Without a (simulated) kubelet to confirm, an evicted pod never goes away."""
    name = unique_name("orphan")
    kube.create(Node(metadata=ObjectMeta(name=name)))
    try:
        pod(kube, namespace, "web", name)
        clock = FakeClock()
        with pytest.raises(DrainTimeout) as info:
            drain_node(
                kube,
                name,
                DrainOptions(timeout_seconds=30, poll_seconds=5),
                clock=clock,
                sleep=clock.sleep,
            )
        assert info.value.evicted == [f"{namespace}/web"]
        assert info.value.remaining == [f"{namespace}/web"]
    finally:
        kube.delete(Pod, "web", namespace=namespace, grace_period=0, missing_ok=True)
        kube.delete(Node, name)
    with pytest.raises(NotFound):
        kube.get(Pod, "web", namespace=namespace)
