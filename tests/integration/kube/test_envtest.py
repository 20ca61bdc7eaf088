"""LocalControlPlane itself: pinning, identities, and a clean stop."""

from __future__ import annotations

import base64
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lightkube.models.certificates_v1 import CertificateSigningRequestSpec
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.core_v1 import Container, PodSpec
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.certificates_v1 import CertificateSigningRequest
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap, Node, Pod

from tether.kube.client import KubeClient
from tether.kube.errors import Forbidden, NotFound
from tether.sim.envtest import (
    CONTAINERD2_VERSION,
    CRICTL_VERSION,
    ETCD_VERSION,
    KUBE_VERSION,
    KUBELET_PREVIOUS,
    BinariesNotFoundError,
    LocalControlPlane,
    default_bin_dir,
    find_binaries,
)
from tether.sim.kubesim import KubeletFleet, SimulatedNode

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "build-kube.sh"


def test_versions_match_the_build_script() -> None:
    text = SCRIPT.read_text()
    assert re.search(rf'^KUBE_VERSION="{re.escape(KUBE_VERSION)}"$', text, re.M)
    assert re.search(rf'^ETCD_VERSION="{re.escape(ETCD_VERSION)}"$', text, re.M)
    assert re.search(rf'^KUBELET_PREVIOUS="{re.escape(KUBELET_PREVIOUS)}"$', text, re.M)
    assert re.search(rf'^CONTAINERD2_VERSION="{re.escape(CONTAINERD2_VERSION)}"$', text, re.M)
    assert re.search(rf'^CRICTL_VERSION="{re.escape(CRICTL_VERSION)}"$', text, re.M)


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


def test_missing_controller_binary_is_named(tmp_path: Path) -> None:
    for name in ("kube-apiserver", "etcd"):
        (tmp_path / name).write_text("#!/bin/sh\n")
        (tmp_path / name).chmod(0o755)
    with pytest.raises(BinariesNotFoundError, match=r"kube-controller-manager, .*kube-scheduler"):
        find_binaries(tmp_path)
    assert find_binaries(tmp_path, components=()).kube_apiserver == tmp_path / "kube-apiserver"


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


def _csr(name: str, node: str) -> CertificateSigningRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}"),
        ]
    )
    pem = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    return CertificateSigningRequest(
        metadata=ObjectMeta(name=name),
        spec=CertificateSigningRequestSpec(
            request=base64.b64encode(pem).decode(),
            signerName="kubernetes.io/kube-apiserver-client-kubelet",
            usages=["digital signature", "client auth"],
        ),
    )


def _until(check: Callable[[], object], what: str, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_full_control_plane_signs_collects_and_schedules(
    kube_full_cluster: LocalControlPlane,
) -> None:
    """kube-controller-manager signs approved kubelet CSRs with the cluster CA and
    collects orphans; kube-scheduler binds pods to a Ready node."""
    suffix = uuid.uuid4().hex[:8]
    with KubeClient(kube_full_cluster.kubeconfig) as kube:
        # CSR signing: approval is someone else's (Tether's approver); signing is kcm's.
        name = f"csr-{suffix}"
        kube.create(_csr(name, f"edge-{suffix}"))
        kube.set_csr_approval(name, approved=True, reason="Test", message="approved by the test")

        def issued() -> bytes | None:
            status = kube.get(CertificateSigningRequest, name).status
            return base64.b64decode(status.certificate) if status and status.certificate else None

        cert = x509.load_pem_x509_certificate(_until(issued, "the signed certificate"))  # type: ignore[arg-type]
        ca = x509.load_pem_x509_certificate(kube_full_cluster.ca_cert_pem)
        assert cert.issuer == ca.subject
        assert cert.subject.rfc4514_string() == f"CN=system:node:edge-{suffix},O=system:nodes"

        # Garbage collection: a dependent goes with its owner.
        owner = kube.create(
            ConfigMap(metadata=ObjectMeta(name=f"owner-{suffix}")), namespace="default"
        )
        assert owner.metadata is not None and owner.metadata.uid is not None
        ref = OwnerReference(
            apiVersion="v1", kind="ConfigMap", name=f"owner-{suffix}", uid=owner.metadata.uid
        )
        kube.create(
            ConfigMap(metadata=ObjectMeta(name=f"dependent-{suffix}", ownerReferences=[ref])),
            namespace="default",
        )
        kube.delete(ConfigMap, f"owner-{suffix}", namespace="default")

        def collected() -> bool:
            try:
                kube.get(ConfigMap, f"dependent-{suffix}", namespace="default")
            except NotFound:
                return True
            return False

        _until(collected, "the garbage collector")

        # Scheduling: a pod without a node lands on the only Ready node.
        node = f"sched-{suffix}"
        with KubeletFleet(kube) as fleet:
            fleet.register([SimulatedNode(name=node)])
            fleet.start()
            pod = Pod(
                metadata=ObjectMeta(name=f"p-{suffix}"),
                spec=PodSpec(
                    containers=[Container(name="c", image="registry.invalid/none:1")],
                    nodeSelector={"kubernetes.io/hostname": node},
                ),
            )
            kube.create(pod, namespace="default")

            def bound() -> str | None:
                spec = kube.get(Pod, f"p-{suffix}", namespace="default").spec
                return spec.nodeName if spec else None

            assert _until(bound, "the scheduler") == node
            kube.delete(Pod, f"p-{suffix}", namespace="default", grace_period=0)
            fleet.stop(delete=True)
