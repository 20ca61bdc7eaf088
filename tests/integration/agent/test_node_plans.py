"""Node plans from the plane: a real agent process runs join and uninstall plans from its
desired-state channel, reports each phase as an event, and after a SIGKILL in the middle
of a plan resumes to the same end state.

Real: the plane (SQLite and PostgreSQL), its mutual-TLS agent server serving the artifact
mirror, the agent process, the kube-apiserver. SIMULATED: the kubelet and systemd
(``python -m tether.sim.agent``).
"""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube.resources.core_v1 import Node

from tether.kube.client import KubeClient
from tether.node import render
from tether.node.actions import KUBELET_PORTS
from tether.node.mirror import sync
from tether.node.tracker import host_path, load
from tether.sim.envtest import LocalControlPlane

from .conftest import (
    Plane,
    assign,
    host_events,
    import_cluster,
    make_pool,
    node_config,
    ready,
    unique,
)

pytestmark = pytest.mark.integration


class Site:
    """One host with a simulated-kubelet agent in a pool of an imported cluster."""

    def __init__(
        self,
        plane: Plane,
        cp: LocalControlPlane,
        tmp_path: Path,
        make_source: Callable[..., Any],
        node_config_doc: Callable[..., dict[str, Any]],
    ) -> None:
        self.plane, self.cp = plane, cp
        source, keyring = make_source()
        sync("1.34.2", source=str(source), to=plane.settings.artifacts_dir, keyring=keyring,
             arch="amd64")  # fmt: skip
        self.cluster = import_cluster(plane, cp)
        pool = make_pool(plane, self.cluster)
        self.host = unique("edge")
        self.root = tmp_path / f"{self.host}-root"
        self.config = plane.agent_config(
            self.host,
            plane.activation(),
            desired={"enabled": True},
            node={
                "root": str(self.root),
                "keyring": str(tmp_path / "keyring.yaml"),
                "readyTimeout": 60,
                "retrySeconds": 1,
            },
        )
        self.start()
        ready(plane, self.host)
        assign(plane, self.host, pool)
        doc = node_config(node_config_doc, cp, self.cluster, self.host, {})
        del doc["spec"]["credentials"]  # the agent's own certificate
        self.node_config = doc

    def start(self) -> None:
        self.plane.start_agent(self.config, simulate_kubelet=self.cp.kubeconfig)

    def set_plan(self, plan: dict[str, Any]) -> str:
        response = self.plane.api.put(
            f"/api/v1/hosts/{self.host}/desired", json={"document": {"node": plan}}
        )
        assert response.status_code == 200, response.text
        digest: str = response.json()["hash"]
        return digest

    def applied(self, digest: str, *, ok: bool = True, timeout: float = 90) -> dict[str, Any]:
        def done() -> bool:
            status = self.plane.api.get(f"/api/v1/hosts/{self.host}/desired").json()
            result = status.get("appliedResult") or {}
            return bool(status.get("appliedHash") == digest and result.get("ok") is ok)

        self.plane.wait_for(done, timeout, f"plan {digest[:8]} applied ok={ok}")
        result: dict[str, Any] = self.plane.api.get(f"/api/v1/hosts/{self.host}/desired").json()[
            "appliedResult"
        ]
        return result

    def reasons(self) -> list[str]:
        return [e["reason"] for e in host_events(self.plane, self.host)]

    def join(self) -> str:
        return self.set_plan(
            {"action": "join", "version": "1.34.2", "nodeConfig": self.node_config}
        )


@pytest.fixture
def site(
    plane: Plane,
    kube_cluster: LocalControlPlane,
    tmp_path: Path,
    make_source: Callable[..., Any],
    node_config_doc: Callable[..., dict[str, Any]],
) -> Site:
    return Site(plane, kube_cluster, tmp_path, make_source, node_config_doc)


def _joined(site: Site, kube: KubeClient) -> None:
    node = kube.get(Node, site.host)
    assert node.spec is not None
    assert node.spec.providerID == f"tether://{site.cluster}/{site.host}"
    conditions = {c.type: c.status for c in (node.status.conditions if node.status else None) or []}
    assert conditions["Ready"] == "True"
    tracker = load(site.root)
    for path in (render.KUBELET_CONFIG, render.KUBELET_UNIT, render.BOOTSTRAP_KUBECONFIG):
        entry = tracker.get(path)
        assert entry is not None and not entry.foreign
    assert host_path(site.root, "/usr/local/bin/kubelet").is_file()


def test_a_join_plan_installs_joins_and_reports_every_phase(site: Site, kube: KubeClient) -> None:
    result = site.applied(site.join())
    assert result["action"] == "join" and result["message"] == "join done"
    assert [p["phase"] for p in result["phases"]] == [
        "install", "validation", "system-settings", "containerd-config", "kubelet-config",
        "kubeconfig", "systemd-units", "start", "wait-ready",
    ]  # fmt: skip
    _joined(site, kube)
    reasons = site.reasons()
    for reason in ("NodeInstallInstallCompleted", "NodeInitKubeconfigCompleted",
                   "NodeInitWaitReadyCompleted", "BootstrapTokenMinted"):  # fmt: skip
        assert reason in reasons


@pytest.mark.parametrize(
    "kill_after", ["NodeInstallInstallCompleted", "NodeInitKubeletConfigStarted"]
)
def test_killed_during_a_plan_the_agent_resumes_to_the_same_end(
    site: Site, kube: KubeClient, kill_after: str
) -> None:
    digest = site.join()
    site.plane.wait_for(lambda: kill_after in site.reasons(), 60, kill_after)
    agent = site.plane.processes[-1]
    agent.send_signal(signal.SIGKILL)
    agent.wait(10)
    assert "NodeInitWaitReadyCompleted" not in site.reasons()

    site.start()
    result = site.applied(digest)
    assert result["ok"] is True
    _joined(site, kube)
    if kill_after.startswith("NodeInit"):
        assert "resumedAfter" in result  # the init journal saw the interrupted run


def test_an_uninstall_plan_waits_for_the_drain_then_removes_everything(
    site: Site, kube: KubeClient
) -> None:
    site.applied(site.join())
    digest = site.set_plan({"action": "uninstall"})
    refused = site.applied(digest, ok=False)
    assert "not cordoned" in refused["message"]
    assert "NodeUninstallPreflightFailed" in site.reasons()
    assert host_path(site.root, "/usr/local/bin/kubelet").is_file()

    kube.patch(Node, site.host, {"spec": {"unschedulable": True}})
    done = site.applied(digest)  # retried every retrySeconds until the node is drained
    assert done["message"] == "uninstall done"
    assert load(site.root).entries == []
    assert not host_path(site.root, render.KUBELET_UNIT).exists()
    config = yaml.safe_load(site.config.read_text())
    assert Path(config["node"]["root"]) == site.root


def test_a_permanent_failure_is_reported_once_and_not_run_again(
    site: Site, kube: KubeClient
) -> None:
    """An upgrade that would move containerd 1.x to 2.x without allowContainerdMajor can
    never succeed as written: the agent reports it once and does not run it again every
    retrySeconds (1 s here), until the document changes."""
    site.applied(site.join())
    kube.patch(Node, site.host, {"spec": {"unschedulable": True}})
    digest = site.set_plan({"action": "upgrade", "version": "1.36.0"})
    refused = site.applied(digest, ok=False)
    assert "from 1.7.28 to 2.1.4" in refused["message"]
    assert refused["retryable"] is False
    time.sleep(5)  # five retry intervals
    events = host_events(site.plane, site.host)
    failed = [e["count"] for e in events if e["reason"] == "NodeUpgradeValidationFailed"]
    assert failed == [1]  # repeats of an event are counted, not listed
    assert load(site.root).kubernetes_version == "1.34.2"


def test_a_simulated_host_never_probes_the_machine_it_runs_on(site: Site, kube: KubeClient) -> None:
    """The simulated agent's validation asks simulated facts, not this machine: a real
    kubelet holding ports 10250 and 10248 here (two listening sockets stand in for it)
    does not stop a simulated node from joining."""
    held: list[socket.socket] = []
    for port in KUBELET_PORTS:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
            sock.listen()
        except OSError:  # a real kubelet holds it already: just as good
            sock.close()
            continue
        held.append(sock)
    try:
        digest = site.join()
        site.plane.wait_for(
            lambda: (
                {"NodeInitValidationCompleted", "NodeInitValidationFailed"} & set(site.reasons())
            ),
            60,
            "validation ran",
        )
    finally:
        for sock in held:
            sock.close()
    assert "NodeInitValidationFailed" not in site.reasons()
    assert site.applied(digest)["ok"] is True
    _joined(site, kube)
