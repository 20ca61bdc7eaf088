"""Pools that run themselves, end to end: hosts join and leave through the pool
reconciler, a new profile version rolls out only once approved, a pool is deleted.

Real: the plane with its controllers (SQLite and PostgreSQL), the agent processes over
mutual TLS, the plane's artifact mirror, the kube-apiserver (Nodes, cordons, drains,
Node deletion). SIMULATED: each host's kubelet and systemd (``python -m tether.sim.agent``).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tether.agent.identity import Identity
from tether.kube.client import KubeClient
from tether.kube.resources import Node
from tether.node.mirror import sync
from tether.sim.envtest import LocalControlPlane

from .conftest import Plane, RouteNetns, host_events, import_cluster, ready, unique

pytestmark = [pytest.mark.integration, pytest.mark.controllers]

LAYERS: dict[str, Any] = {
    "os": {"image": "debian-12", "sysctls": {"vm.max_map_count": "262144"}},
    "kubernetes": {"version": "1.34.2", "kubeletConfig": {"maxPods": "{{ pods }}"}},
}
VARIABLES = [{"name": "pods", "type": "number", "default": 110}]


class Fleet:
    """A cluster, a pool and hosts run by simulated-kubelet agents."""

    def __init__(
        self, plane: Plane, cp: LocalControlPlane, tmp_path: Path, make_source: Callable[..., Any]
    ) -> None:
        self.plane, self.cp, self.tmp = plane, cp, tmp_path
        source, keyring = make_source()
        for version in ("1.34.2", "1.35.1"):
            sync(version, source=str(source), to=plane.settings.artifacts_dir, keyring=keyring,
                 arch="amd64")  # fmt: skip
        self.cluster = import_cluster(plane, cp)
        self.profile = unique("std")
        self.pool = f"{self.cluster}-pool"
        self.publish("1.0.0", LAYERS)
        self.call(
            "POST",
            "/api/v1/pools",
            201,
            json={
                "name": self.pool,
                "spec": {
                    "cluster": self.cluster,
                    "site": "dc1",
                    "nodeCIDR": "10.80.1.0/24",
                    "podCIDR": "10.85.0.0/18",
                    "vpnServer": {"publicIP": "203.0.113.5", "insideIP": "10.80.1.1"},
                    "profile": {"name": self.profile, "version": "1.0.0"},
                    "nodeLabels": {"tier": "edge"},
                    "updateStrategy": {"type": "ContractFirst", "minReadySeconds": 0},
                },
            },
        )
        self.hosts: list[str] = []
        self.configs: dict[str, Path] = {}
        self.agents: dict[str, subprocess.Popen[bytes]] = {}

    def boot(self, host: str) -> None:
        """Start the host's agent (its config written by :meth:`add_agent`)."""
        self.agents[host] = self.plane.start_agent(
            self.configs[host], simulate_kubelet=self.cp.kubeconfig
        )

    def call(self, method: str, path: str, status: int, **kwargs: Any) -> Any:
        response = self.plane.api.request(method, path, **kwargs)
        assert response.status_code == status, response.text
        return response.json() if response.content else None

    def publish(self, version: str, layers: dict[str, Any]) -> None:
        spec = {"version": version, "layers": layers, "variables": VARIABLES}
        self.call("POST", "/api/v1/profiles", 201, json={"name": self.profile, "spec": spec})

    def add_agent(
        self, ip: str, *, spec: dict[str, Any] | None = None, uses: int = 1, **config: Any
    ) -> str:
        """An agent's host with node IP ``ip``, ``spec`` added to the host's spec and
        ``config`` to the agent's; its activation allows ``uses`` enrolments."""
        host = unique("edge")
        path = self.plane.agent_config(
            host,
            self.plane.activation(uses=uses),
            **config,
            desired={"enabled": True},
            node={
                "root": str(self.tmp / f"{host}-root"),
                "keyring": str(self.tmp / "keyring.yaml"),
                "readyTimeout": 60,
                "retrySeconds": 1,
            },
        )
        self.configs[host] = path
        self.boot(host)
        ready(self.plane, host)
        view = self.call("GET", f"/api/v1/hosts/{host}", 200)
        spec = {**view["spec"], "nodeIP": ip, **(spec or {})}
        self.call(
            "PUT",
            f"/api/v1/hosts/{host}",
            200,
            json={"resourceVersion": view["resourceVersion"], "spec": spec},
        )
        self.hosts.append(host)
        return host

    def pool_view(self) -> dict[str, Any]:
        view: dict[str, Any] = self.call("GET", f"/api/v1/pools/{self.pool}", 200)
        return view

    def wait_state(self, state: str, timeout: float = 120) -> None:
        self.plane.wait_for(
            lambda: self.pool_view()["status"]["state"] == state,
            timeout,
            f"pool {state}: {self.pool_view()['status']}",
        )

    def wait_completed(self, rollout: str) -> None:
        """Until the rollout completes and the pool is Ready again."""
        self.plane.wait_for(
            lambda: self.call("GET", f"/api/v1/rollouts/{rollout}", 200)["state"] == "Completed",
            240,
            f"rollout {rollout} completed",
        )
        self.wait_state("Ready")

    def reasons(self, **params: str) -> list[tuple[str, str]]:
        items = self.plane.api.get(
            "/api/v1/events", params={"pool": self.pool, "limit": 1000, **params}
        ).json()["items"]
        return [(e["objectName"], e["reason"]) for e in items]


@pytest.fixture
def fleet(
    plane: Plane,
    kube_cluster: LocalControlPlane,
    tmp_path: Path,
    make_source: Callable[..., Any],
) -> Fleet:
    return Fleet(plane, kube_cluster, tmp_path, make_source)


def test_hosts_join_roll_out_after_approval_and_leave(fleet: Fleet, kube: KubeClient) -> None:
    a, b = fleet.add_agent("10.80.1.11"), fleet.add_agent("10.80.1.12")
    for host in (a, b):
        fleet.call("POST", f"/api/v1/pools/{fleet.pool}/hosts", 201, json={"host": host})
    fleet.wait_state("Ready")
    for host in (a, b):
        node = kube.get(Node, host)
        assert node.metadata is not None and node.metadata.labels is not None
        assert node.metadata.labels["tether.io/pool"] == fleet.pool
        assert node.metadata.labels["tier"] == "edge"
        assert node.status is not None and node.status.nodeInfo is not None
        assert node.status.nodeInfo.kubeletVersion == "v1.34.2"
    listed = {
        h["name"]: h
        for h in fleet.call("GET", "/api/v1/hosts", 200, params={"pool": fleet.pool})["items"]
    }
    assert {listed[h]["status"]["member"]["phase"] for h in (a, b)} == {"Active"}
    assert {listed[h]["status"]["plan"]["state"] for h in (a, b)} == {"Applied"}

    # A newer version is only available; nothing moves until it is approved.
    upgraded = {**LAYERS, "kubernetes": {**LAYERS["kubernetes"], "version": "1.35.1"}}
    fleet.publish("1.1.0", upgraded)
    status = fleet.pool_view()["status"]
    assert status["updateAvailable"] == "1.1.0"
    assert status["update"]["action"] == "upgrade"
    rollout = fleet.call("POST", f"/api/v1/pools/{fleet.pool}/rollouts", 201, json={"to": "1.1.0"})
    assert rollout["state"] == "PendingApproval"
    assert rollout["nodes"] == {a: "upgrade", b: "upgrade"}
    before = {h: fleet.call("GET", f"/api/v1/hosts/{h}/desired", 200)["hash"] for h in (a, b)}
    for _ in range(2):  # two reconciles pass, and change nothing on the nodes
        seen = fleet.pool_view()["status"]["observedAt"]
        fleet.plane.wait_for(
            lambda last=seen: fleet.pool_view()["status"]["observedAt"] != last, 30
        )
    after = {h: fleet.call("GET", f"/api/v1/hosts/{h}/desired", 200)["hash"] for h in (a, b)}
    assert before == after
    assert fleet.pool_view()["status"]["state"] == "Ready"

    fleet.call("POST", f"/api/v1/rollouts/{rollout['name']}/approve", 200)
    fleet.wait_completed(rollout["name"])
    for host in (a, b):
        node = kube.get(Node, host)
        assert node.status is not None and node.status.nodeInfo is not None
        assert node.status.nodeInfo.kubeletVersion == "v1.35.1"
        assert not (node.spec and node.spec.unschedulable)
    events = fleet.reasons()
    for host in (a, b):  # each node drained exactly once, cordoned and uncordoned
        assert events.count((host, "DrainStarted")) == 1
        assert (host, "Uncordoned") in events
    assert (rollout["name"], "RolloutCompleted") in events

    # Leaving: cordon, drain, uninstall, Node deleted, host Ready again.
    fleet.call("DELETE", f"/api/v1/pools/{fleet.pool}/hosts/{a}", 202)
    fleet.plane.wait_for(
        lambda: (
            fleet.call("GET", f"/api/v1/hosts/{a}", 200)["status"]["state"] == "Ready"
            and fleet.call("GET", f"/api/v1/hosts/{a}", 200)["spec"].get("pool") is None
        ),
        120,
        f"{a} released",
    )
    assert all((n.metadata.name if n.metadata else "") != a for n in kube.list(Node))
    assert (a, "Left") in fleet.reasons()

    # Deleting the pool removes its last host first, then the pool.
    response = fleet.plane.api.delete(f"/api/v1/pools/{fleet.pool}")
    assert response.status_code == 202, response.text
    assert response.json()["status"]["state"] == "Deleting"
    fleet.plane.wait_for(
        lambda: fleet.plane.api.get(f"/api/v1/pools/{fleet.pool}").status_code == 404,
        120,
        "pool deleted",
    )
    assert fleet.call("GET", f"/api/v1/hosts/{b}", 200)["status"]["state"] == "Ready"


def test_a_host_with_its_own_vpn_server_keeps_its_vpc_route_until_it_leaves(
    fleet: Fleet, route_netns: RouteNetns
) -> None:
    """HostSpec.vpnServerIP -> the join plan's route -> the agent's kernel table (a real
    namespace), put back after a hand deletion, removed when the host leaves."""
    host = fleet.add_agent(
        "10.80.1.11", spec={"vpnServerIP": "10.80.1.200"}, ipCommand=route_netns.ip
    )
    fleet.call("POST", f"/api/v1/pools/{fleet.pool}/hosts", 201, json={"host": host})
    vpc = "10.226.0.0/16"

    def routed() -> bool:
        return route_netns.routes().get(vpc) == "10.80.1.200"

    fleet.plane.wait_for(routed, 60, "the VPC route installed")
    fleet.wait_state("Ready")
    desired = fleet.call("GET", f"/api/v1/hosts/{host}/desired", 200)
    assert desired["document"]["routes"] == [{"destination": vpc, "via": "10.80.1.200"}]
    assert desired["appliedResult"]["routes"] == {f"{vpc} via 10.80.1.200": "present"}

    def reported(reason: str) -> int:
        """How often the host reported ``reason``: the agent changes the kernel's table
        first, saves its state, then posts the event, so the test waits for it."""
        events = host_events(fleet.plane, host)
        return sum(e["count"] for e in events if e["reason"] == reason)

    route_netns.delete(vpc)
    fleet.plane.wait_for(routed, 10, "the VPC route restored by a heartbeat")
    # The same event again counts up (one row, count 2).
    fleet.plane.wait_for(lambda: reported("RouteInstalled") == 2, 10, "RouteInstalled twice")

    fleet.call("DELETE", f"/api/v1/pools/{fleet.pool}/hosts/{host}", 202)
    fleet.plane.wait_for(lambda: vpc not in route_netns.routes(), 120, "the route removed")
    fleet.plane.wait_for(lambda: reported("RouteRemoved") > 0, 10, "RouteRemoved reported")


def test_a_new_os_image_reimages_the_node_and_it_enrols_again(
    fleet: Fleet, kube: KubeClient
) -> None:
    """A profile version with another ``os.image``: the rollout drains the node and sends
    the re-image plan; the agent reports it; the plane resets the host's enrolment with
    that report. The SIMULATED agent then re-images itself (its kubelet stops, its state
    and node root are emptied, it starts again), enrols again under its name with the
    same activation, rejoins and turns Ready."""
    host = fleet.add_agent("10.80.1.11", uses=2)
    fleet.call("POST", f"/api/v1/pools/{fleet.pool}/hosts", 201, json={"host": host})
    fleet.wait_state("Ready")
    old = Identity(Path(yaml.safe_load(fleet.configs[host].read_text())["stateDir"]))
    kept = fleet.tmp / "old-identity"
    kept.mkdir()
    shutil.copy2(old.cert_path, kept / "agent.crt")
    shutil.copy2(old.key_path, kept / "agent.key")

    fleet.publish("1.1.0", {**LAYERS, "os": {**LAYERS["os"], "image": "debian-13"}})
    assert fleet.pool_view()["status"]["update"]["action"] == "repave"
    rollout = fleet.call("POST", f"/api/v1/pools/{fleet.pool}/rollouts", 201, json={"to": "1.1.0"})
    fleet.call("POST", f"/api/v1/rollouts/{rollout['name']}/approve", 200)
    fleet.wait_completed(rollout["name"])
    node = kube.get(Node, host)
    assert node.status is not None and node.status.nodeInfo is not None
    assert node.status.nodeInfo.kubeletVersion == "v1.34.2"
    events = fleet.reasons()
    for reason in ("DrainStarted", "EnrolmentReset", "Reimaged", "NodeDeleted"):
        assert events.count((host, reason)) == 1, reason
    # Enrolled twice; the re-image plan ran once: it was dropped when the host enrolled again.
    own = [e["reason"] for e in host_events(fleet.plane, host)]
    assert own.count("Enrolled") == 2 and own.count("NodeReimageRequestCompleted") == 1
    plan = fleet.call("GET", f"/api/v1/hosts/{host}/desired", 200)
    assert plan["document"]["node"]["action"] == "join"
    with fleet.plane.client(kept / "agent.crt", kept / "agent.key") as client:
        refused = client.get(f"/agent/v1/hosts/{host}/desired")
    assert refused.status_code == 401, refused.text  # the old system's certificate is revoked
