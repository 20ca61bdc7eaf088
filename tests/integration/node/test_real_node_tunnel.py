"""The seed's whole path on one machine: a hybrid cluster end to end.

kube-apiserver listens in the VPC namespace of a network testbed (:mod:`tether.nettest`:
strongSwan with userspace ESP between the cloud gateway and the site's VPN server, BIRD
for the pod routes); a real node (kubelet, containerd, runc) sits on the site's node
network behind that VPN server. The node reaches the API server through the IPsec
tunnel to join; from the VPC, its pod's IP answers through the tunnel (the pod CIDR
routed as planned, by BGP), and ``kubectl logs`` and ``exec`` through the API server
reach the kubelet the same way.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube.resources.core_v1 import Node

from tether.netplan import load_document
from tether.nettest import missing_requirements as bed_missing
from tether.nettest import open_testbed
from tether.node.supervisor import SupervisorHost
from tether.node.tracker import load
from tether.sim.envtest import KUBE_VERSION, NodeBinaries
from tether.sim.realnode import (
    Mirror,
    cni_config,
    echo_deployment,
    node_config,
    real_plane,
    run,
    running_echo_pod,
    site_node,
    tether_argv,
    wait_for,
)

from .conftest import IN_CI, require

pytestmark = pytest.mark.integration

HOST = "edge-site-1"
NETWORK: dict[str, Any] = {
    "apiVersion": "tether.io/v1alpha1",
    "kind": "HybridNetwork",
    "cluster": {
        "name": "real",
        "vpcCIDR": "10.226.0.0/16",
        "serviceCIDR": "172.20.0.0/16",
        "remoteNodeNetworks": ["10.80.0.0/16"],
        "remotePodNetworks": ["10.85.0.0/16"],
        "vpnEndpoint": {"publicIP": "198.51.100.10", "secondaryPublicIP": "198.51.100.11"},
    },
    "pools": [
        {
            "name": "pool1",
            "site": "site1",
            "nodeCIDR": "10.80.1.0/24",
            "podCIDR": "10.85.0.0/18",
            "podCIDRMaskPerNode": 24,
            "routing": "bgp",
            "nodeASN": 64512,
            "vpnServer": {
                "publicIP": "203.0.113.5",
                "insideIP": "10.80.1.1",
                "isMainRouter": True,
                "asn": 64513,
            },
            "nodes": [{"name": HOST, "ip": "10.80.1.11"}],
        }
    ],
}


@pytest.fixture
def testbed_requirements() -> None:
    missing = bed_missing()
    if missing:
        reason = "the network testbed needs: " + "; ".join(missing)
        if IN_CI:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)


def test_a_real_node_behind_a_site_vpn_joins_and_is_reached_through_the_tunnel(
    testbed_requirements: None,
    real_mirror: Mirror,
    node_binaries: NodeBinaries,
    tmp_path: Path,
) -> None:
    require()
    doc, findings = load_document(NETWORK)
    assert doc is not None, findings
    with (
        open_testbed(doc, host_link=True, real_nodes={HOST}) as bed,
        _node(bed, real_mirror, node_binaries, tmp_path) as (plane, net),
    ):
        before = bed.tunnel_packets()
        # The node reached the API server through the tunnel: it joined.
        node = plane.kube.get(Node, HOST)
        assert node.status is not None and node.status.nodeInfo is not None
        assert node.status.nodeInfo.kubeletVersion == f"v{KUBE_VERSION}"

        plane.kube.create(echo_deployment(HOST), namespace="default")
        pod = wait_for(lambda: running_echo_pod(plane.kube), "the echo pod", 180)
        pod_ip = pod.status.podIP
        assert ipaddress.ip_address(pod_ip) in ipaddress.ip_network(net.pod_cidr)

        # From the VPC, through the tunnel, to the pod on its own IP.
        fetch = (
            "import urllib.request, sys;"
            f"print(urllib.request.urlopen('http://{pod_ip}:8080/from-vpc', timeout=10)"
            ".read().decode(), end='')"
        )
        vpc = ["nsenter", f"--net=/run/netns/{bed.topology.vpc_ns}", "--"]
        said = run([*vpc, sys.executable, "-c", fetch])
        assert said == f"echo from {pod.metadata.name}: /from-vpc\n"
        # The API server (in the VPC) reaches the kubelet through the tunnel.
        kubectl = [str(node_binaries.kubectl), "--kubeconfig", str(plane.cp.kubeconfig)]
        logs = run([*kubectl, "logs", "-n", "default", pod.metadata.name])
        assert "request GET /from-vpc" in logs
        out = run([*kubectl, "exec", "-n", "default", pod.metadata.name, "--",
                   "/echo", "print", "through the tunnel"])  # fmt: skip
        assert out.strip() == "through the tunnel"
        after = bed.tunnel_packets()
        assert all(after[p] > before[p] for p in after), (before, after)


@contextlib.contextmanager
def _node(bed: Any, mirror: Mirror, binaries: NodeBinaries, tmp: Path) -> Iterator[Any]:
    """Install from the local mirror, join through the tunnel; uninstall afterwards."""
    net = site_node(bed, 0, 0)
    root = Path(tempfile.mkdtemp(prefix="tn-", dir="/tmp"))
    with real_plane(tmp / "plane", net, mirror.path, HOST, testbed=bed) as plane:
        token = tmp / "token"
        token.write_text(plane.bootstrap_token() + "\n")
        config = tmp / "nodeconfig.yaml"
        config.write_text(yaml.safe_dump(node_config(plane, net, token)))
        try:
            run(tether_argv("node", "install", KUBE_VERSION, "--source", str(mirror.path),
                            "--keyring", str(mirror.keyring), "--root", str(root)))  # fmt: skip
            cni_config(root, net)
            done = subprocess.run(
                net.argv(tether_argv("node", "init", "-c", f"file://{config}", "--root",
                                     str(root), "--ready-timeout", "240")),
                capture_output=True, text=True, timeout=600, check=False,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            yield plane, net
        finally:
            if load(root).entries:
                run(net.argv(tether_argv("node", "uninstall", "--root", str(root), "--force",
                                         "--reason", "test teardown")), check=False)  # fmt: skip
            host = SupervisorHost(root)
            for unit in ("kubelet", "containerd"):
                with contextlib.suppress(Exception):
                    host.stop(unit)
            shutil.rmtree(root, ignore_errors=True)
