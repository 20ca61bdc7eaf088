"""Node readiness -> host and pool health (pure, level-triggered)."""

from __future__ import annotations

from tether.domain.nodehealth import (
    HostSnapshot,
    NodeSnapshot,
    PoolSnapshot,
    node_ready,
    plan_health,
)
from tether.domain.states import HostEvent, HostState, PoolEvent, PoolState

READY, NOT_READY, UNKNOWN = (
    NodeSnapshot(True),
    NodeSnapshot(False, "KubeletNotReady"),
    NodeSnapshot(None),
)


def host(
    name: str, state: HostState = HostState.IN_USE, health: str = "Unknown", pool: str = "p"
) -> HostSnapshot:
    return HostSnapshot(name, pool, state, health, 1)


def test_node_ready_reads_the_ready_condition() -> None:
    assert node_ready([("MemoryPressure", "False"), ("Ready", "True")]) is True
    assert node_ready([("Ready", "False")]) is False
    assert node_ready([("Ready", "Unknown")]) is None
    assert node_ready([]) is None


def test_not_ready_node_makes_host_unhealthy_and_pool_degraded() -> None:
    plan = plan_health(
        [PoolSnapshot("p", PoolState.READY, 3)],
        [host("a", health="Healthy"), host("b", health="Healthy")],
        {"a": READY, "b": NOT_READY},
    )
    assert [(h.host, h.event, h.new_state, h.health) for h in plan.hosts] == [
        ("b", HostEvent.CHECKS_FAILED, HostState.UNHEALTHY, "Unhealthy")
    ]
    assert "KubeletNotReady" in plan.hosts[0].message
    (pool,) = plan.pools
    assert (pool.events, pool.new_state) == ((PoolEvent.NODE_NOT_READY,), PoolState.DEGRADED)
    assert pool.message == "not Ready: b"


def test_recovery_and_idempotence() -> None:
    pools = [PoolSnapshot("p", PoolState.DEGRADED, 3)]
    hosts = [host("a", health="Healthy"), host("b", HostState.UNHEALTHY, "Unhealthy")]
    plan = plan_health(pools, hosts, {"a": READY, "b": READY})
    assert [(h.host, h.new_state) for h in plan.hosts] == [("b", HostState.IN_USE)]
    assert plan.pools[0].new_state is PoolState.READY
    # Planning again from the result changes nothing.
    again = plan_health(
        [PoolSnapshot("p", PoolState.READY, 4)],
        [host("a", health="Healthy"), host("b", health="Healthy")],
        {"a": READY, "b": READY},
    )
    assert again.empty


def test_pending_pool_provisions_then_follows_nodes() -> None:
    pools = [PoolSnapshot("p", PoolState.PENDING, 1)]
    waiting = plan_health(pools, [host("a"), host("b")], {"a": READY})
    assert waiting.pools[0].events == (PoolEvent.HOSTS_ASSIGNED,)
    assert waiting.pools[0].new_state is PoolState.PROVISIONING
    assert "waiting for nodes to join: b" in waiting.pools[0].message
    ready = plan_health(pools, [host("a"), host("b")], {"a": READY, "b": READY})
    assert ready.pools[0].events == (PoolEvent.HOSTS_ASSIGNED, PoolEvent.ALL_NODES_READY)
    assert ready.pools[0].new_state is PoolState.READY


def test_unknown_counts_as_not_ready_and_missing_nodes_change_nothing() -> None:
    plan = plan_health(
        [PoolSnapshot("p", PoolState.READY, 1)],
        [host("a", health="Healthy"), host("b")],
        {"a": UNKNOWN},
    )
    assert [h.host for h in plan.hosts] == ["a"]
    assert plan.pools[0].new_state is PoolState.DEGRADED


def test_unreachable_hosts_keep_state_deleting_pools_stay() -> None:
    plan = plan_health(
        [PoolSnapshot("p", PoolState.DELETING, 1)],
        [host("a", HostState.UNREACHABLE, "Unhealthy")],
        {"a": READY},
    )
    assert [(h.new_state, h.event, h.health) for h in plan.hosts] == [
        (HostState.UNREACHABLE, None, "Healthy")
    ]
    assert plan.pools == ()


def test_hosts_of_other_pools_and_empty_pools_are_ignored() -> None:
    plan = plan_health(
        [PoolSnapshot("p", PoolState.PENDING, 1)], [host("x", pool="elsewhere")], {"x": NOT_READY}
    )
    assert plan.empty
