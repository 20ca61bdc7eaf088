"""A join end to end, the way a real kubelet joins: ``tether node init`` writes the
bootstrap kubeconfig with a token the plane minted; the kubelet authenticates with it
(not with the admin's credentials), asks for ``system:node:<host>`` with a CSR, which
Tether's CSR approver approves and the signer signs; then the kubelet registers its Node
and reports it Ready with its own certificate, under the Node authorizer and
NodeRestriction; the Node is read back from the API.

Real: kube-apiserver (``--authorization-mode`` with Node and RBAC,
``--enable-admission-plugins=NodeRestriction``), the plane's bootstrap token, the node
tool's init phases, Tether's CSR approver (with Tether's stored credentials). SIMULATED
(no kube-controller-manager and no kubelet run in the test control plane): the kubelet
(``tether.sim.kubelet_host.BootstrappingKubeletHost``) and the CSR signer
(``tether.sim.signer.SimulatedSigner``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from lightkube.resources.certificates_v1 import CertificateSigningRequest
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node

from tether.controllers.csr import CSRApprover
from tether.kube.client import KubeClient
from tether.kube.errors import Forbidden
from tether.node import render
from tether.node.actions import NodeEnv, init
from tether.node.credentials import token_source
from tether.node.install import install
from tether.node.kubeview import KubeNodeView
from tether.node.nodeconfig import parse_node_config
from tether.node.tracker import host_path
from tether.sim.envtest import LocalControlPlane
from tether.sim.kubelet_host import BootstrappingKubeletHost, SimulatedFacts
from tether.sim.signer import SimulatedSigner

pytestmark = pytest.mark.integration

Namer = Callable[[str], str]


def _apiserver_flags(cp: LocalControlPlane) -> list[str]:
    assert cp.apiserver_pid is not None
    argv = Path(f"/proc/{cp.apiserver_pid}/cmdline").read_bytes().split(b"\0")
    return [a.decode() for a in argv if a]


def test_a_host_joins_with_its_bootstrap_token_through_tethers_approver(
    plane: Any,
    kube: KubeClient,
    kube_cluster: LocalControlPlane,
    unique_name: Namer,
    tmp_path: Path,
    make_source: Callable[..., Any],
    joining: Callable[[str], Any],
) -> None:
    flags = _apiserver_flags(kube_cluster)
    assert "--enable-admission-plugins=NodeRestriction" in flags
    (authz,) = [f.split("=", 1)[1] for f in flags if f.startswith("--authorization-mode=")]
    assert {"Node", "RBAC"} <= set(authz.split(","))

    join = joining("join")
    cluster, host, grant = join.cluster, join.host, join.grant
    source, keyring = make_source()
    root = tmp_path / "root"
    install("1.34.2", root=root, source=str(source), keyring=keyring, arch="amd64")
    config = parse_node_config(join.node_config)
    kubelet_kubeconfig = host_path(root, render.KUBELET_KUBECONFIG)

    kubelet = BootstrappingKubeletHost(root, timeout=60)
    env = NodeEnv(
        root=root,
        host=kubelet,
        view=KubeNodeView(kube_cluster.url, kube_cluster.ca_cert_pem.decode(), kubelet_kubeconfig),
        facts=SimulatedFacts(),
        ready_timeout=60,
        poll_seconds=0.5,
    )
    signer = SimulatedSigner(kube, kube_cluster.ca, resync_seconds=2)
    try:
        with plane.client(cluster) as tether:
            approver = CSRApprover(plane.db, cluster, tether, resync_seconds=2)
            approver.start()
            signer.start()
            try:
                report = init(config, env, token=token_source(config))
            finally:
                approver.stop()
                signer.stop()
        assert report.ok, report.as_dict()

        # The kubelet asked with the bootstrap token; Tether approved; the signer signed.
        csrs = [
            c
            for c in kube.list(CertificateSigningRequest)
            if c.spec.username == f"system:bootstrap:{grant.token_id}"
        ]
        assert len(csrs) == 1
        csr = csrs[0]
        assert csr.metadata is not None and csr.metadata.name in signer.signed
        assert f"system:bootstrappers:tether:host:{host}" in (csr.spec.groups or [])
        conditions = [(c.type, c.reason) for c in (csr.status.conditions if csr.status else [])]
        assert conditions == [("Approved", "TetherApproved")]
        assert [n for n, d in approver.decided] == [csr.metadata.name]

        # The kubelet's kubeconfig holds its own certificate, from the cluster CA: no
        # token, no admin.
        bootstrap = json.loads(host_path(root, render.BOOTSTRAP_KUBECONFIG).read_text())
        assert bootstrap["users"][0]["user"] == {"token": grant.token}
        user = json.loads(kubelet_kubeconfig.read_text())["users"][0]["user"]
        assert set(user) == {"client-certificate-data", "client-key-data"}
        cert = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
        assert cert.subject.rfc4514_string() == f"CN=system:node:{host},O=system:nodes"
        cert.verify_directly_issued_by(kube_cluster.ca.cert)

        # The Node, read back with the admin's credentials: registered and Ready.
        node = kube.get(Node, host)
        assert node.spec is not None and node.spec.providerID == f"tether://{cluster}/{host}"
        ready = list((node.status.conditions if node.status else None) or [])
        assert [(c.type, c.status) for c in ready if c.type == "Ready"] == [("Ready", "True")]
        labels = node.metadata.labels if node.metadata else None
        assert labels is not None and labels["tether.io/compute-type"] == "hybrid"
        assert report.phases[-1]["message"] == f"node {host} is Ready (kubelet v1.34.2)"

        # Those writes were judged as system:node:<host>: the same credentials may not
        # register anybody else's Node.
        with KubeClient(kubelet_kubeconfig) as as_node, pytest.raises(Forbidden):
            as_node.create(Node.from_dict({"metadata": {"name": unique_name("other")}}))
    finally:
        kubelet.close()
        kube.delete(Lease, host, namespace="kube-node-lease", missing_ok=True)
        kube.delete(Node, host, missing_ok=True)
