"""The agent keeps its desired state's static routes in a real network namespace.

Real: the agent's code, ``ip`` and the kernel's routing table of a namespace. The plane is
the in-memory one of the agent's unit tests (this file is about the host side; the pool
path from ``HostSpec.vpnServerIP`` to the route is ``test_pools.py``'s).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tether.agent.runner import Agent

from ...unit.agent.test_agent_unit import FakePlane, VirtualClock, make_agent
from .conftest import RouteNetns

pytestmark = pytest.mark.integration

ROUTE = {"destination": "10.226.0.0/16", "via": "10.80.1.200"}
UNIT = "etc/systemd/system/tether-routes.service"


def agent_in(ns: RouteNetns, tmp_path: Path, plane: FakePlane, clock: VirtualClock) -> Agent:
    config = {"ipCommand": ns.ip, "node": {"root": str(tmp_path / "root")}}
    agent = make_agent(tmp_path, plane, clock, config)
    agent.start()
    return agent


def started(ns: RouteNetns, tmp_path: Path) -> tuple[Agent, FakePlane, VirtualClock]:
    """An enrolled agent keeping routes in ``ns``, its plane and its clock."""
    clock = VirtualClock()
    plane = FakePlane(clock, lifetime=86400)
    return agent_in(ns, tmp_path, plane, clock), plane, clock


def last_beat(plane: FakePlane) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(plane.beats[-1][1])
    return body


def test_routes_installed_restored_after_drift_and_reboot_and_removed(
    route_netns: RouteNetns, tmp_path: Path
) -> None:
    agent, plane, clock = started(route_netns, tmp_path)
    result = agent.apply({"routes": [ROUTE]})
    assert result["ok"] is True
    assert result["routes"] == {"10.226.0.0/16 via 10.80.1.200": "present"}
    assert route_netns.routes()["10.226.0.0/16"] == "10.80.1.200"
    unit = (tmp_path / "root" / UNIT).read_text()
    assert "ExecStart=/sbin/ip route replace 10.226.0.0/16 via 10.80.1.200" in unit
    assert (tmp_path / "root/etc/systemd/system/multi-user.target.wants/tether-routes.service")\
        .is_symlink()  # fmt: skip

    # Deleted by hand: the next heartbeat puts it back, and counts it as a passing check.
    route_netns.delete("10.226.0.0/16")
    clock.sleep(agent.step())
    agent.step()
    assert route_netns.routes()["10.226.0.0/16"] == "10.80.1.200"
    assert last_beat(plane)["n"] == 1 and "f" not in last_beat(plane)
    assert [e["reason"] for e in plane.events] == ["RouteInstalled", "RouteInstalled"]

    # A reboot: the table is empty, the plane is out of reach; the stored document is enough.
    route_netns.delete("10.226.0.0/16")
    plane.down = True
    again = agent_in(route_netns, tmp_path, plane, clock)
    again.step()
    assert route_netns.routes()["10.226.0.0/16"] == "10.80.1.200"

    # A document without routes (the host left its pool): the route and the unit go.
    plane.down = False
    agent.apply({})
    assert "10.226.0.0/16" not in route_netns.routes()
    assert not (tmp_path / "root" / UNIT).exists()
    assert plane.events[-1]["reason"] == "RouteRemoved"


def test_a_route_that_cannot_be_installed_fails_the_heartbeat_check(
    route_netns: RouteNetns, tmp_path: Path
) -> None:
    agent, plane, _ = started(route_netns, tmp_path)
    unreachable = {"destination": "10.226.0.0/16", "via": "192.168.77.1"}  # on no link
    result = agent.apply({"routes": [unreachable]})
    report = result["routes"]["10.226.0.0/16 via 192.168.77.1"]
    assert report.startswith("error: ip route replace") and "invalid gateway" in report
    agent.step()
    beat = last_beat(plane)
    assert beat["n"] == 1
    assert "10.226.0.0/16 via 192.168.77.1" in beat["f"]["vpn-route"]


def test_a_bad_routes_entry_is_refused_naming_the_field(
    route_netns: RouteNetns, tmp_path: Path
) -> None:
    agent, _, _ = started(route_netns, tmp_path)
    result = agent.apply({"routes": [{"destination": "10.226.0.1/16", "via": "10.80.1.200"}]})
    assert result == {
        "ok": False,
        "retryable": False,
        "message": "routes[0].destination: must be an IPv4 CIDR without host bits",
    }
    assert "10.226.0.0/16" not in route_netns.routes()
