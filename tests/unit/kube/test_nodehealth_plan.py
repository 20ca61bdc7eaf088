"""Node readiness -> host health (pure, level-triggered)."""

from __future__ import annotations

from tether.domain.nodehealth import HostSnapshot, NodeSnapshot, node_ready, plan_health
from tether.domain.states import HostEvent, HostState

READY, NOT_READY, UNKNOWN = (
    NodeSnapshot(True),
    NodeSnapshot(False, "KubeletNotReady"),
    NodeSnapshot(None),
)


def host(
    name: str, state: HostState = HostState.IN_USE, health: str = "Unknown", pool: str | None = "p"
) -> HostSnapshot:
    return HostSnapshot(name, pool, state, health, 1)


def test_node_ready_reads_the_ready_condition() -> None:
    assert node_ready([("MemoryPressure", "False"), ("Ready", "True")]) is True
    assert node_ready([("Ready", "False")]) is False
    assert node_ready([("Ready", "Unknown")]) is None
    assert node_ready([]) is None


def test_not_ready_node_makes_host_unhealthy() -> None:
    plan = plan_health(
        [host("a", health="Healthy"), host("b", health="Healthy")],
        {"a": READY, "b": NOT_READY},
    )
    assert [(h.host, h.event, h.new_state, h.health) for h in plan.hosts] == [
        ("b", HostEvent.CHECKS_FAILED, HostState.UNHEALTHY, "Unhealthy")
    ]
    assert "KubeletNotReady" in plan.hosts[0].message


def test_recovery_and_idempotence() -> None:
    hosts = [host("a", health="Healthy"), host("b", HostState.UNHEALTHY, "Unhealthy")]
    plan = plan_health(hosts, {"a": READY, "b": READY})
    assert [(h.host, h.new_state) for h in plan.hosts] == [("b", HostState.IN_USE)]
    # Planning again from the result changes nothing.
    again = plan_health(
        [host("a", health="Healthy"), host("b", health="Healthy")], {"a": READY, "b": READY}
    )
    assert again.empty


def test_unknown_counts_as_not_ready_and_missing_nodes_change_nothing() -> None:
    plan = plan_health([host("a", health="Healthy"), host("b")], {"a": UNKNOWN})
    assert [h.host for h in plan.hosts] == ["a"]
    assert plan.hosts[0].health == "Unhealthy"


def test_unreachable_hosts_keep_their_state() -> None:
    plan = plan_health([host("a", HostState.UNREACHABLE, "Unhealthy")], {"a": READY})
    assert [(h.new_state, h.event, h.health) for h in plan.hosts] == [
        (HostState.UNREACHABLE, None, "Healthy")
    ]


def test_hosts_in_no_pool_are_ignored() -> None:
    assert plan_health([host("x", pool=None)], {"x": NOT_READY}).empty
