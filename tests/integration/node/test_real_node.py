"""A real node: the real kubelet, containerd and runc join through Tether, run a
workload, are upgraded and uninstalled, on a full local control plane.

The tests of this module run in order on one node (each needs the previous one's end
state): join, workload, upgrade, uninstall. The node lives in its own network namespace
(see :mod:`tether.sim.realnode`) with every path under a temporary root; the module's
first fixture snapshots the host, and the uninstall test compares the host with it.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.certificates_v1 import CertificateSigningRequest
from lightkube.resources.core_v1 import Node

from tether.node.supervisor import SupervisorHost
from tether.node.tracker import load
from tether.services.drain import DrainOptions, drain_node, uncordon
from tether.sim.envtest import KUBE_VERSION, KUBELET_PREVIOUS, NodeBinaries
from tether.sim.realnode import (
    Mirror,
    NodeNet,
    RealPlane,
    cni_config,
    echo_deployment,
    host_snapshot,
    node_config,
    node_network,
    node_ready,
    real_plane,
    run,
    running_echo_pod,
    tether_argv,
    wait_for,
)

from .conftest import require

pytestmark = pytest.mark.integration

HOST = "edge-real-1"


@dataclass
class RealNode:
    root: Path
    net: NodeNet
    plane: RealPlane
    mirror: Mirror
    config: Path
    cert: Path
    key: Path
    binaries: NodeBinaries

    def tether(self, *args: str, netns: bool = True) -> subprocess.CompletedProcess[str]:
        argv = tether_argv(*args, "--root", str(self.root))
        return subprocess.run(
            self.net.argv(argv) if netns else argv,
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip

    def install(self, version: str) -> subprocess.CompletedProcess[str]:
        return self.tether(
            "node", "install", version, "--source", self.plane.source,
            "--keyring", str(self.mirror.keyring), "--ca", str(self.plane.server.ca_bundle),
            "--cert", str(self.cert), "--key", str(self.key), netns=False,
        )  # fmt: skip

    def kubectl(self, *args: str) -> str:
        return run([str(self.binaries.kubectl), "--kubeconfig", str(self.plane.cp.kubeconfig),
                    *args], timeout=120)  # fmt: skip

    def node(self) -> Node:
        return self.plane.kube.get(Node, HOST)


@pytest.fixture(scope="module")
def before() -> dict[str, Any]:
    """The host before anything of this module ran."""
    require()
    return host_snapshot()


@pytest.fixture(scope="module")
def net(before: dict[str, Any]) -> Iterator[NodeNet]:
    with node_network() as network:
        yield network


@pytest.fixture(scope="module")
def plane(
    net: NodeNet, real_mirror: Mirror, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealPlane]:
    with real_plane(tmp_path_factory.mktemp("plane"), net, real_mirror.path, HOST) as p:
        yield p


@pytest.fixture(scope="module")
def node(
    plane: RealPlane, net: NodeNet, real_mirror: Mirror, node_binaries: NodeBinaries
) -> Iterator[RealNode]:
    # Short: containerd's sockets live under it (a unix socket path has 107 bytes).
    root = Path(tempfile.mkdtemp(prefix="tn-", dir="/tmp"))
    token = root.parent / f"{root.name}.token"
    token.write_text(plane.bootstrap_token() + "\n")
    token.chmod(0o600)
    config = root.parent / f"{root.name}.nodeconfig.yaml"
    config.write_text(yaml.safe_dump(node_config(plane, net, token)))
    cert, key = plane.host_identity()
    real = RealNode(root, net, plane, real_mirror, config, cert, key, node_binaries)
    try:
        yield real
    finally:
        # Whatever happened: no node process outlives the module.
        if load(root).entries:
            real.tether("node", "uninstall", "--force", "--reason", "test teardown")
        host = SupervisorHost(root)
        for unit in ("kubelet", "containerd"):
            with contextlib.suppress(Exception):
                host.stop(unit)
        shutil.rmtree(root, ignore_errors=True)
        for extra in (token, config):
            extra.unlink(missing_ok=True)


def test_a_real_node_joins_through_tethers_approver_and_the_controller_managers_signer(
    node: RealNode,
) -> None:
    installed = node.install(KUBELET_PREVIOUS.rsplit(".", 1)[0])  # "1.36": the newest 1.36
    assert installed.returncode == 0, installed.stdout + installed.stderr
    cni_config(node.root, node.net)
    done = node.tether("node", "init", "-c", f"file://{node.config}", "--ready-timeout", "180")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no systemd as PID 1" in done.stdout  # validation said what this host needs

    assert node_ready(node.plane.kube, HOST)
    kube_node = node.node()
    assert kube_node.status is not None and kube_node.status.nodeInfo is not None
    assert kube_node.status.nodeInfo.kubeletVersion == f"v{KUBELET_PREVIOUS}"
    assert kube_node.metadata is not None and kube_node.metadata.labels is not None
    assert kube_node.metadata.labels["tether.io/compute-type"] == "hybrid"
    assert kube_node.spec is not None and kube_node.spec.providerID == f"tether://real/{HOST}"
    # Nothing taints it: the node lifecycle controller lifted not-ready.
    assert not [t.key for t in kube_node.spec.taints or []]

    # Both kubelet certificates: approved by Tether, signed by kube-controller-manager.
    def csrs() -> dict[str, CertificateSigningRequest]:
        mine = {}
        for csr in node.plane.kube.list(CertificateSigningRequest):
            if csr.spec.username in (f"system:node:{HOST}",) or any(
                g.endswith(f":host:{HOST}") for g in csr.spec.groups or []
            ):
                mine[csr.spec.signerName] = csr
        return mine if len(mine) == 2 else {}

    for signer, csr in wait_for(csrs, "the client and serving CSRs", 60).items():
        conditions = {c.type: c.reason for c in csr.status.conditions or []}
        assert conditions.get("Approved") == "TetherApproved", (signer, conditions)
        issued = wait_for(
            lambda csr=csr: (
                node.plane.kube.get(CertificateSigningRequest, csr.metadata.name).status.certificate
            ),
            f"the {signer} certificate",
            60,
        )
        assert b"BEGIN CERTIFICATE" in base64.b64decode(issued)


def test_a_deployment_answers_on_its_pod_ip_and_the_api_server_reaches_the_kubelet(
    node: RealNode,
) -> None:
    node.plane.kube.create(echo_deployment(HOST), namespace="default")
    pod = wait_for(lambda: running_echo_pod(node.plane.kube), "the echo pod to run", 180)
    assert pod.spec.nodeName == HOST  # the scheduler bound it
    pod_ip = pod.status.podIP
    assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network(node.net.pod_cidr)
    with urllib.request.urlopen(f"http://{pod_ip}:8080/hello", timeout=10) as resp:
        body = resp.read().decode()
    assert body == f"echo from {pod.metadata.name}: /hello\n"
    # Through the API server to the kubelet (its serving certificate approved by Tether).
    logs = node.kubectl("logs", "-n", "default", pod.metadata.name)
    assert "request GET /hello" in logs
    said = node.kubectl("exec", "-n", "default", pod.metadata.name, "--", "/echo", "print", "hi")
    assert said.strip() == "hi"


def test_upgrade_moves_the_real_node_to_the_new_kubelet_after_cordon_and_drain(
    node: RealNode,
) -> None:
    refused = node.tether("node", "upgrade", KUBE_VERSION, "--source", node.plane.source,
                          "--keyring", str(node.mirror.keyring), "--ca",
                          str(node.plane.server.ca_bundle), "--cert", str(node.cert),
                          "--key", str(node.key))  # fmt: skip
    assert refused.returncode == 1 and "is not cordoned" in refused.stdout
    report = drain_node(node.plane.kube, HOST, DrainOptions(timeout_seconds=120))
    assert len(report.evicted) == 1 and report.evicted[0].startswith("default/echo-")
    done = node.tether("node", "upgrade", KUBE_VERSION, "--source", node.plane.source,
                       "--keyring", str(node.mirror.keyring), "--ca",
                       str(node.plane.server.ca_bundle), "--cert", str(node.cert),
                       "--key", str(node.key), "--ready-timeout", "180")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert node_ready(node.plane.kube, HOST)
    kube_node = node.node()
    assert kube_node.status.nodeInfo.kubeletVersion == f"v{KUBE_VERSION}"
    assert load(node.root).kubernetes_version == KUBE_VERSION
    assert uncordon(node.plane.kube, HOST)

    wait_for(
        lambda: running_echo_pod(node.plane.kube), "the echo pod back on the upgraded node", 180
    )


def test_uninstall_leaves_the_host_as_it_found_it(node: RealNode, before: dict[str, Any]) -> None:
    node.plane.kube.delete(Deployment, "echo", namespace="default")
    drain_node(node.plane.kube, HOST, DrainOptions(timeout_seconds=120))
    done = node.tether("node", "uninstall")
    assert done.returncode == 0, done.stdout + done.stderr
    assert load(node.root).entries == []
    # The machine is shared: what others' tests do comes and goes, a leak stays.
    for _ in range(5):
        after = host_snapshot()
        if after == before:
            break
        time.sleep(2)
    assert after == before, {k: (before[k], after[k]) for k in before if after[k] != before[k]}
    # Inside the node's namespace too: no kubelet or CNI chains.
    chains = run(node.net.argv(["iptables-save"]))
    assert not [line for line in chains.splitlines() if line.startswith((":KUBE-", ":CNI-"))]
    print(json.dumps({"uninstall": done.stdout}, indent=2))
