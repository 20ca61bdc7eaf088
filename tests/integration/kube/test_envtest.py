"""LocalControlPlane itself: pinning, identities, and a clean stop."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node

from tether.kube.client import KubeClient
from tether.kube.errors import Forbidden
from tether.sim.envtest import (
    ETCD_VERSION,
    KUBE_VERSION,
    BinariesNotFoundError,
    LocalControlPlane,
    default_bin_dir,
    find_binaries,
)

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "build-kube.sh"


def test_versions_match_the_build_script() -> None:
    text = SCRIPT.read_text()
    assert re.search(rf'^KUBE_VERSION="{re.escape(KUBE_VERSION)}"$', text, re.M)
    assert re.search(rf'^ETCD_VERSION="{re.escape(ETCD_VERSION)}"$', text, re.M)


def test_print_dir_matches_default_bin_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TETHER_KUBE_BIN_DIR", raising=False)
    monkeypatch.setenv("TETHER_KUBE_CACHE", str(tmp_path))
    out = subprocess.run(
        ["bash", str(SCRIPT), "--print-dir"], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert Path(out) == default_bin_dir() == tmp_path / KUBE_VERSION


def test_missing_binaries_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(BinariesNotFoundError, match=r"build-kube\.sh"):
        find_binaries(tmp_path)


def test_cached_versions_file(kube_cluster: LocalControlPlane) -> None:
    versions = find_binaries().etcd.parent / "VERSIONS"
    if versions.exists():  # absent when TETHER_KUBE_BIN_DIR points at other binaries
        assert versions.read_text().split() == [
            f"kube-apiserver=v{KUBE_VERSION}",
            f"etcd=v{ETCD_VERSION}",
        ]


def test_simulated_kubelet_identity_registers_its_node_and_lease(
    kube_cluster: LocalControlPlane, kube: KubeClient
) -> None:
    """A node's identity (system:node:<name> in system:nodes) may register only itself.

    That is the Node authorizer + NodeRestriction admission, both on here.
    """
    config = kube_cluster.add_user("system:node:edge-a", ["system:nodes"])
    with KubeClient(config) as as_node:
        as_node.create(Node(metadata=ObjectMeta(name="edge-a")))
        as_node.create(
            Lease(
                metadata=ObjectMeta(name="edge-a", namespace="kube-node-lease"),
                spec=LeaseSpec(holderIdentity="edge-a", leaseDurationSeconds=40),
            )
        )
        renewed = as_node.patch(
            Lease,
            "edge-a",
            {"spec": {"renewTime": "2030-01-01T00:00:00.000000Z"}},
            namespace="kube-node-lease",
        )
        assert renewed.spec is not None
        assert renewed.spec.renewTime is not None
        with pytest.raises(Forbidden):
            as_node.create(Node(metadata=ObjectMeta(name="edge-b")))
    kube.delete(Node, "edge-a")
    kube.delete(Lease, "edge-a", namespace="kube-node-lease")


def test_start_stop_leaves_nothing_behind(kube_cluster: LocalControlPlane) -> None:
    """A second, independent control plane (the session one keeps running)."""
    cp = LocalControlPlane()
    with cp:
        work = cp.work_dir
        assert cp.running
        assert cp.kubeconfig.exists()
        with KubeClient(cp.kubeconfig) as client:
            assert client.server_version().semver == KUBE_VERSION
    assert not cp.running
    assert not work.exists()
    cp.stop()  # idempotent
