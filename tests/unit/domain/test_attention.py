"""What needs attention and how a site's network looks: the pure rules."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tether.domain import resources as r
from tether.domain.attention import STUCK_AFTER, needs_attention, site_status

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def host(name: str = "h1", **status: Any) -> r.Host:
    return r.Host.model_validate(
        {
            "name": name,
            "id": name,
            "resourceVersion": 1,
            "createdAt": NOW,
            "updatedAt": NOW,
            "spec": {"site": "dc1", "pool": "p1"},
            "status": {"state": "InUse", "health": "Healthy", **status},
        }
    )


def rollout(state: str, updated_ago: timedelta, **progress: Any) -> r.Rollout:
    return r.Rollout(
        name="p1-1",
        pool="p1",
        state=state,
        origin="profile",
        action="upgrade",
        progress={"updated": 1, "total": 3, "busy": {}, "waiting": "", **progress},
        message="2 node(s) failed" if state == "Failed" else "",
        updated_at=NOW - updated_ago,
        resource_version=3,
    )


def reasons(
    hosts: Sequence[r.Host] = (), rollouts: Sequence[r.Rollout] = ()
) -> list[tuple[str, str]]:
    return [(i.name, i.reason) for i in needs_attention(hosts, rollouts, NOW).items]


FAILED_PLAN = {"state": "Failed", "hash": "ab", "message": "node IP is not on this host"}
NODE = {"kubeletVersion": "v1.34.2", "observedAt": NOW}


def test_healthy_hosts_and_a_moving_rollout_need_nothing() -> None:
    ok = host(plan={"state": "Applied", "hash": "ab"}, node={**NODE, "ready": True})
    joining = host("h2", plan={"state": "Pending", "hash": "cd"})
    moving = rollout("Progressing", timedelta(hours=1), busy={"h1": "Drain"})
    found = needs_attention([ok, joining], [moving], NOW)
    assert (found.count, found.items) == (0, [])


def test_a_failed_join_plan_needs_attention_with_its_message() -> None:
    failed = host(plan=FAILED_PLAN, member={"pool": "p1", "phase": "Joining", "operation": "join"})
    (item,) = needs_attention([failed], [], NOW).items
    assert (item.kind, item.name, item.reason, item.pool, item.site) == (
        "Host",
        "h1",
        "PlanFailed",
        "p1",
        "dc1",
    )
    assert item.message == "join plan failed: node IP is not on this host"


@pytest.mark.parametrize("state", ["Unhealthy", "Unreachable"])
def test_unhealthy_and_unreachable_hosts_need_attention(state: str) -> None:
    sick = host(state=state, failingChecks={"tunnel-a": "no SA"})
    assert reasons([sick]) == [("h1", f"Host{state}")]


def test_an_unhealthy_host_says_which_checks_fail() -> None:
    sick = host(state="Unhealthy", failingChecks={"disk": "/ is 97% full"})
    assert (
        needs_attention([sick], [], NOW).items[0].message == "failing checks: disk: / is 97% full"
    )


@pytest.mark.parametrize("ready", [False, None])
def test_a_node_not_ready_needs_attention_unless_an_operation_takes_it_down(
    ready: bool | None,
) -> None:
    idle = host(node={**NODE, "ready": ready, "reason": "KubeletNotReady"})
    assert reasons([idle]) == [("h1", "NodeNotReady")]
    upgrading = {"pool": "p1", "phase": "Active", "operation": "update", "step": "Reboot"}
    assert reasons([host(node={**NODE, "ready": ready}, member=upgrading)]) == []
    failed = {**upgrading, "failed": "drain timed out"}
    assert reasons([host(node={**NODE, "ready": ready}, member=failed)]) == [("h1", "NodeNotReady")]


def test_a_failed_rollout_needs_attention() -> None:
    assert reasons(rollouts=[rollout("Failed", timedelta(0))]) == [("p1-1", "RolloutFailed")]


def test_a_rollout_waiting_unchanged_for_long_is_stuck() -> None:
    waiting = {"waiting": "WaitingForSpareHost"}
    just_now = rollout("Progressing", STUCK_AFTER - timedelta(seconds=1), **waiting)
    assert reasons(rollouts=[just_now]) == []
    stuck = rollout("Progressing", STUCK_AFTER, **waiting)
    (item,) = needs_attention([], [stuck], NOW).items
    assert (item.reason, item.pool) == ("RolloutStuck", "p1")
    assert "WaitingForSpareHost for 10 min" in item.message
    paused = rollout("Paused", STUCK_AFTER * 3, **waiting)
    assert reasons(rollouts=[paused]) == []  # a person paused it: nothing is stuck


def test_every_problem_of_a_host_is_counted() -> None:
    both = host(state="Unreachable", plan=FAILED_PLAN)
    found = needs_attention([both, host("h0", state="Unhealthy")], [], NOW)
    assert found.count == 3
    assert [(i.name, i.reason) for i in found.items] == [
        ("h0", "HostUnhealthy"),
        ("h1", "PlanFailed"),
        ("h1", "HostUnreachable"),
    ]


def test_site_network_health_from_check_names() -> None:
    failing = {
        "h1": {"tunnel-vpn1": "IKE SA down", "disk": "full"},
        "h2": {"BGP-router": "session Idle", "ipsec": "child SA missing"},
    }
    status = site_status({"InUse": 2, "Ready": 1, "Unpaired": 0}, failing, ["p1"])
    assert status.hosts == {"InUse": 2, "Ready": 1}
    assert status.pools == ["p1"]
    assert status.tunnel is not None and status.tunnel.status == "Failing"
    assert status.tunnel.hosts == {
        "h1": "tunnel-vpn1: IKE SA down",
        "h2": "ipsec: child SA missing",
    }
    assert status.bgp is not None and status.bgp.hosts == {"h2": "BGP-router: session Idle"}


def test_site_network_health_without_failures_is_known_only_from_live_hosts() -> None:
    live = site_status({"InUse": 1}, {"h1": {"disk": "full"}}, [])
    assert live.tunnel is not None and live.tunnel.status == "NoFailuresReported"
    silent = site_status({"Unreachable": 2, "Registered": 1}, {}, [])
    assert silent.tunnel is not None and silent.tunnel.status == "Unknown"
    assert silent.bgp is not None and silent.bgp.status == "Unknown"
