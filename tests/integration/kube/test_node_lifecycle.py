"""The node life cycle end to end: the real ``tether`` command installs, joins, upgrades
and uninstalls a host under a root prefix, against a real kube-apiserver.

Only the kubelet and systemd are simulated (``--simulate-kubelet``: a recording service
manager that starts a SIMULATED kubelet registering the Node from the generated kubelet
unit and config). Everything the node tool reads from Kubernetes (the server version, the
Node, the pods bound to it) comes from the real API server.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from lightkube.resources.core_v1 import Node, Pod

from tether.kube.client import KubeClient
from tether.node import render
from tether.node.tracker import host_path, load
from tether.sim.envtest import LocalControlPlane

Namer = Callable[[str], str]


def test_install_init_upgrade_uninstall_against_a_real_api_server(
    plane: Any,
    kube: KubeClient,
    kube_cluster: LocalControlPlane,
    namespace: str,
    tmp_path: Path,
    make_source: Callable[..., Any],
    cli_installed: Path,
    joining: Callable[[str], Any],
    run_tether: Callable[..., subprocess.CompletedProcess[str]],
    replicaset_pod: Callable[..., Any],
) -> None:
    tether = run_tether
    join = joining("life")
    cluster, host, grant, doc = join.cluster, join.host, join.grant, join.node_config

    root = cli_installed
    source, _ = make_source()  # the same signed source cli_installed installed from
    keyring_file = tmp_path / "keyring.yaml"

    config = tmp_path / "nodeconfig.yaml"
    config.write_text(yaml.safe_dump(doc))
    simulate = ["--root", str(root), "--simulate-kubelet", str(kube_cluster.kubeconfig)]

    joined = tether("node", "init", "-c", f"file://{config}", *simulate, "-o", "json")
    assert joined.returncode == 0, joined.stdout + joined.stderr
    report = json.loads(joined.stdout)
    assert [p["phase"] for p in report["phases"]][-1] == "wait-ready"
    assert all(p["status"] == "Completed" for p in report["phases"])
    assert "control plane v1.37" in report["phases"][0]["message"]
    assert grant.token not in joined.stdout + joined.stderr

    node = kube.get(Node, host)
    assert node.spec is not None and node.spec.providerID == f"tether://{cluster}/{host}"
    labels = node.metadata.labels if node.metadata else {}
    assert labels is not None and labels["tether.io/compute-type"] == "hybrid"
    kubeconfig = json.loads(host_path(root, render.BOOTSTRAP_KUBECONFIG).read_text())
    assert kubeconfig["clusters"][0]["cluster"]["server"] == kube_cluster.url

    again = tether("node", "init", "-c", f"file://{config}", *simulate, "-o", "json")
    assert again.returncode == 0, again.stderr
    assert all(p["changed"] == [] for p in json.loads(again.stdout)["phases"])

    # Not cordoned: upgrade and uninstall refuse, and change nothing.
    refused = tether("node", "uninstall", *simulate)
    assert refused.returncode == 1
    assert "is not cordoned" in refused.stdout
    assert host_path(root, "/usr/local/bin/kubelet").is_file()

    kube.patch(Node, host, {"spec": {"unschedulable": True}})
    replicaset_pod(kube, "web-1", namespace, host)
    upgrade = ["node", "upgrade", "1.35.1", "--source", str(source), "--keyring",
               str(keyring_file), "--arch", "amd64", *simulate]  # fmt: skip
    refused = tether(*upgrade)
    assert refused.returncode == 1
    assert f"1 pod(s) still run ({namespace}/web-1)" in refused.stdout
    assert load(root).kubernetes_version == "1.34.2"

    kube.delete(Pod, "web-1", namespace=namespace, grace_period=0)
    upgraded = tether(*upgrade, "-o", "json")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert load(root).kubernetes_version == "1.35.1"

    removed = tether("node", "uninstall", *simulate, "-o", "json")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert load(root).entries == []
    for path in ("/usr/local/bin/kubelet", render.KUBELET_UNIT, render.KUBELET_CONFIG):
        assert not host_path(root, path).exists()
