"""A rollout survives the plane being killed (SIGKILL) again and again.

A real ``tether serve`` process (with its controllers) rolls a pool of simulated-kubelet
agents to a new Kubernetes version on the real kube-apiserver, and is killed at 20
seeded random moments and started again each time. Afterwards:

* the rollout completed, and every node runs the new version, schedulable;
* no node was cordoned, drained, sent a plan or uncordoned twice for one step, and no
  step's event is missing (each node's steps appear once each, in order);
* a watch on the Nodes never saw more than ``maxUnavailable`` (1) of the pool's nodes
  cordoned or NotReady at once, although the rollout starts while every Node is younger
  than ``minReadySeconds``.

Real: the plane process, SQLite or PostgreSQL, the kube-apiserver, the agent processes
over mutual TLS. SIMULATED: each host's kubelet and systemd.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tether.domain.agent import ActivationCreate
from tether.domain.kubeapi import ImportRequest
from tether.domain.resources import Role, TokenCreate
from tether.kube.client import KubeClient
from tether.kube.resources import Node
from tether.node.mirror import sync
from tether.services import activations, kubeimport, tokens
from tether.sim.envtest import LocalControlPlane
from tether.store.db import Database, migrate

from .conftest import free_port, unique

pytestmark = [pytest.mark.integration]

KILLS = 20
SEED = int(os.environ.get("TETHER_CRASH_SEED", "20261201"))
#: What each node goes through in an upgrade, in order: every one exactly once.
STEPS = ["NodeUpdateStarted", "Cordoned", "DrainStarted", "Drained", "PlanSent", "NodeReady",
         "Uncordoned", "Updated"]  # fmt: skip


class PlaneProcess:
    """``tether serve`` as a child process that the test kills and starts again."""

    def __init__(self, tmp: Path, database_url: str) -> None:
        self.tmp = tmp
        self.api_port, self.agent_port = free_port(), free_port()
        self.env = {
            **os.environ,
            "TETHER_DATA_DIR": str(tmp / "data"),
            "TETHER_DATABASE_URL": database_url,
            "TETHER_API_PORT": str(self.api_port),
            "TETHER_AGENT_PORT": str(self.agent_port),
            "TETHER_AGENT_HEARTBEAT_SECONDS": "1",
            "TETHER_AGENT_MISSED_HEARTBEATS": "10",
            "TETHER_AGENT_LONG_POLL_SECONDS": "2",
            "TETHER_CONTROLLERS_RESCAN_SECONDS": "0.5",
            "TETHER_CONTROLLERS_POOL_RESYNC_SECONDS": "1",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self) -> None:
        log = (self.tmp / f"plane-{self.starts}.log").open("wb")
        self.starts += 1
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tether.cli", "serve"], env=self.env, stdout=log, stderr=log
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.proc.poll() is None, "the plane exited on start"
            time.sleep(0.1)
        raise AssertionError("the plane did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class NodeWatch(threading.Thread):
    """Samples the pool's Nodes from a watch: the most seen cordoned or NotReady at once."""

    def __init__(self, kubeconfig: Path, pool: str) -> None:
        super().__init__(daemon=True)
        self.kubeconfig, self.pool = kubeconfig, pool
        self.down: dict[str, bool] = {}
        self.why: dict[str, str] = {}
        self.worst = 0
        self.worst_seen: dict[str, str] = {}
        self.samples = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        with KubeClient(self.kubeconfig) as client:
            while not self.stop_event.is_set():
                listed = client.list(Node, labels={"tether.io/pool": self.pool})
                for node in listed:
                    self._see(node)
                with client.watch(
                    Node,
                    labels={"tether.io/pool": self.pool},
                    resource_version=listed.resource_version,
                    timeout_seconds=2,
                ) as watch:
                    for event in watch:
                        self._see(event.object, deleted=event.type == "DELETED")

    def _see(self, node: Node, *, deleted: bool = False) -> None:
        name = node.metadata.name if node.metadata else ""
        ready = (
            next(
                (c.status for c in (node.status.conditions or []) if c.type == "Ready"),
                "Unknown",
            )
            if node.status
            else "Unknown"
        )
        cordoned = bool(node.spec and node.spec.unschedulable)
        self.down[name] = not deleted and (cordoned or ready != "True")
        self.why[name] = f"cordoned={cordoned} ready={ready}"
        self.samples += 1
        if sum(self.down.values()) > self.worst:
            self.worst = sum(self.down.values())
            self.worst_seen = {n: self.why[n] for n, down in self.down.items() if down}


@pytest.fixture
def crashing_plane(tmp_path: Path, database_url: str) -> Iterator[PlaneProcess]:
    plane = PlaneProcess(tmp_path, database_url)
    db = Database.connect(database_url)
    migrate(db.engine)
    db.dispose()
    try:
        yield plane
    finally:
        plane.stop()


def test_a_rollout_survives_twenty_kills_of_the_plane(
    crashing_plane: PlaneProcess,
    database_url: str,
    kube_cluster: LocalControlPlane,
    tmp_path: Path,
    make_source: Callable[..., Any],
) -> None:
    plane = crashing_plane
    rng = random.Random(SEED)
    db = Database.connect(database_url)
    agents: list[subprocess.Popen[bytes]] = []
    watch: NodeWatch | None = None
    try:
        source, keyring = make_source()
        for version in ("1.34.2", "1.35.1"):
            sync(version, source=str(source), to=tmp_path / "data" / "artifacts",
                 keyring=keyring, arch="amd64")  # fmt: skip
        with db.session() as s:
            token = tokens.issue(s, TokenCreate(name="t", role=Role.ADMIN), default_ttl_days=1)
        plane.start()
        api = httpx.Client(
            base_url=plane.url, headers={"Authorization": f"Bearer {token.token}"}, timeout=30
        )

        def call(method: str, path: str, status: int, **kwargs: Any) -> Any:
            for _ in range(50):  # the plane may be restarting
                try:
                    response = api.request(method, path, **kwargs)
                    break
                except httpx.TransportError:
                    time.sleep(0.3)
            assert response.status_code == status, response.text
            return response.json() if response.content else None

        cluster, profile, pool = unique("c"), unique("p"), unique("pool")
        with db.session() as s:
            kubeimport.import_cluster(
                s,
                cluster,
                ImportRequest(
                    kubeconfig=kube_cluster.kubeconfig.read_text(),
                    spec={
                        "vpcCIDR": "10.226.0.0/16",
                        "remoteNodeNetworks": ["10.80.0.0/16"],
                        "remotePodNetworks": ["10.85.0.0/16"],
                    },
                ),
                data_dir=tmp_path / "data",
            )
        call("POST", "/api/v1/sites", 201, json={"name": "dc1"})
        for version, kube in (("1.0.0", "1.34.2"), ("2.0.0", "1.35.1")):
            layers = {"os": {"image": "debian-12"}, "kubernetes": {"version": kube}}
            spec = {"version": version, "layers": layers}
            call("POST", "/api/v1/profiles", 201, json={"name": profile, "spec": spec})
        call(
            "POST",
            "/api/v1/pools",
            201,
            json={
                "name": pool,
                "spec": {
                    "cluster": cluster,
                    "site": "dc1",
                    "nodeCIDR": "10.80.1.0/24",
                    "podCIDR": "10.85.0.0/18",
                    "vpnServer": {"publicIP": "203.0.113.5", "insideIP": "10.80.1.1"},
                    "profile": {"name": profile, "version": "1.0.0"},
                    # The rollout is approved right after the pool turns Ready: with
                    # 3 s (more than a Ready condition's 1 s timestamp resolution) its
                    # Nodes are surely younger than minReadySeconds then, serving but
                    # not yet available, and none may be taken down for free.
                    "updateStrategy": {"type": "ContractFirst", "minReadySeconds": 3},
                },
            },
        )
        with db.session() as s:
            issued = activations.create(
                s, ActivationCreate(site="dc1", expires_in="1h", max_registrations=4), actor="t"
            )
        hosts = [unique("edge") for _ in range(4)]
        for n, host in enumerate(hosts):
            config = {
                "server": f"https://127.0.0.1:{plane.agent_port}",
                "caFile": str(tmp_path / "data" / "pki" / "ca" / "active" / "ca.crt"),
                "stateDir": str(tmp_path / f"agent-{host}"),
                "name": host,
                "activation": {"id": issued.id, "code": issued.code},
                "heartbeatSeconds": 1,
                "longPollSeconds": 2,
                "maxBackoffSeconds": 1,
                "desired": {"enabled": True},
                "node": {
                    "root": str(tmp_path / f"{host}-root"),
                    "keyring": str(tmp_path / "keyring.yaml"),
                    "readyTimeout": 60,
                    "retrySeconds": 1,
                },
            }
            path = tmp_path / f"{host}.yaml"
            path.write_text(yaml.safe_dump(config))
            log = (tmp_path / f"{host}.log").open("wb")
            agents.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "tether.sim.agent",
                        "--kubeconfig",
                        str(kube_cluster.kubeconfig),
                        f"--address=10.80.1.{20 + n}/24",
                        "--config",
                        str(path),
                    ],
                    stdout=log,
                    stderr=log,
                )
            )

        def host_ready(host: str) -> bool:
            return bool(call("GET", f"/api/v1/hosts/{host}", 200)["status"]["state"] == "Ready")

        def wait(what: Callable[[], bool], timeout: float, message: str) -> None:
            deadline = time.monotonic() + timeout
            while not what():
                assert time.monotonic() < deadline, message
                time.sleep(0.3)

        for host in hosts:
            wait(lambda h=host: _quiet(host_ready, h), 60, f"{host} enrolled")
            call("POST", f"/api/v1/pools/{pool}/hosts", 201, json={"host": host})
        wait(
            lambda: call("GET", f"/api/v1/pools/{pool}", 200)["status"]["state"] == "Ready",
            120,
            "pool Ready",
        )
        watch = NodeWatch(kube_cluster.kubeconfig, pool)
        watch.start()
        rollout = call("POST", f"/api/v1/pools/{pool}/rollouts", 201, json={"to": "2.0.0"})
        call("POST", f"/api/v1/rollouts/{rollout['name']}/approve", 200)

        def state() -> str:
            return str(call("GET", f"/api/v1/rollouts/{rollout['name']}", 200)["state"])

        kills = 0
        while kills < KILLS:
            time.sleep(rng.uniform(0.05, 1.5))
            plane.kill()
            kills += 1
            plane.start()
        wait(lambda: state() in ("Completed", "Failed"), 240, "rollout ended")
        final = call("GET", f"/api/v1/rollouts/{rollout['name']}", 200)
        assert final["state"] == "Completed", final
        with KubeClient(kube_cluster.kubeconfig) as kube:
            for host in hosts:
                node = kube.get(Node, host)
                assert node.status is not None and node.status.nodeInfo is not None
                assert node.status.nodeInfo.kubeletVersion == "v1.35.1"
                assert not (node.spec and node.spec.unschedulable)
        watch.stop_event.set()
        assert watch.samples > 0
        assert watch.worst <= 1, f"{watch.worst} nodes were down at once: {watch.worst_seen}"
        items = call("GET", "/api/v1/events", 200, params={"pool": pool, "limit": 1000})["items"]
        for host in hosts:  # every step of the upgrade once, in order, none repeated
            mine = [e for e in items if e["objectName"] == host]
            start = next(i for i, e in enumerate(mine) if e["reason"] == "NodeUpdateStarted")
            steps = [e for e in mine[start:] if e["reason"] in STEPS]
            assert [e["reason"] for e in steps] == STEPS, f"{host}: {steps}"
            assert all(e["count"] == 1 for e in steps), f"{host}: {steps}"
        assert plane.starts == KILLS + 1
    finally:
        if watch is not None:
            watch.stop_event.set()
        for proc in agents:
            proc.terminate()
        for proc in agents:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        db.dispose()


def _quiet(check: Callable[[str], bool], host: str) -> bool:
    try:
        return check(host)
    except AssertionError:
        return False
