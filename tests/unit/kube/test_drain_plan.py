"""Drain planning (pure): kubectl drain's rules, and eviction backoff."""

from __future__ import annotations

from tether.domain.drain import DrainOptions, PodAction, PodFacts, plan_drain, retry_delay

PODS = [
    PodFacts("app", "web-1", controller_kind="ReplicaSet", controller_name="web-7f9"),
    PodFacts("kube-system", "cilium-x", controller_kind="DaemonSet", controller_name="cilium"),
    PodFacts("kube-system", "etcd-node", mirror=True),
    PodFacts(
        "app", "cache-0", controller_kind="StatefulSet", controller_name="cache", empty_dir=True
    ),
    PodFacts("app", "bare"),
    PodFacts("app", "job-done", phase="Succeeded"),
    PodFacts("app", "leaving", controller_kind="ReplicaSet", controller_name="x", terminating=True),
]


def actions(plan_options: DrainOptions) -> dict[str, PodAction]:
    return {d.pod.key: d.action for d in plan_drain(PODS, plan_options).decisions}


def test_default_drain_is_blocked_by_emptydir_and_unmanaged_pods() -> None:
    plan = plan_drain(PODS, DrainOptions())
    assert not plan.ok
    assert {d.pod.key for d in plan.blocked} == {"app/cache-0", "app/bare"}
    assert actions(DrainOptions()) == {
        "app/web-1": PodAction.EVICT,
        "kube-system/cilium-x": PodAction.SKIP,
        "kube-system/etcd-node": PodAction.SKIP,
        "app/cache-0": PodAction.BLOCK,
        "app/bare": PodAction.BLOCK,
        "app/job-done": PodAction.EVICT,
        "app/leaving": PodAction.WAIT,
    }
    reasons = {d.pod.key: d.reason for d in plan.decisions}
    assert "emptyDir" in reasons["app/cache-0"]
    assert "force" in reasons["app/bare"]
    assert reasons["kube-system/cilium-x"] == "managed by DaemonSet cilium"


def test_flags_allow_emptydir_and_unmanaged_pods() -> None:
    plan = plan_drain(PODS, DrainOptions(delete_emptydir_data=True, force=True))
    assert plan.ok
    assert [d.pod.key for d in plan.evict] == [
        "app/bare",
        "app/cache-0",
        "app/job-done",
        "app/web-1",
    ]
    assert [d.pod.key for d in plan.wait] == ["app/leaving"]


def test_backoff_doubles_caps_and_honours_retry_after() -> None:
    options = DrainOptions(retry_base_seconds=1, retry_max_seconds=10)
    assert [retry_delay(a, options) for a in range(6)] == [1, 2, 4, 8, 10, 10]
    assert retry_delay(0, options, retry_after=5) == 5
    assert retry_delay(10_000, options) == 10
