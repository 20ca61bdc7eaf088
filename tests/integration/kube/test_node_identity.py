"""Bootstrap tokens and the CSR approver against a real kube-apiserver.

No kube-controller-manager runs, so nobody signs an approved CSR: these tests check the
Approved/Denied conditions the approver writes, not certificates.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from lightkube.models.certificates_v1 import CertificateSigningRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.certificates_v1 import CertificateSigningRequest
from lightkube.resources.core_v1 import Node, Secret

from tether.controllers.csr import CSRApprover
from tether.domain.nodeidentity import KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER
from tether.kube.client import KubeClient
from tether.kube.errors import Forbidden
from tether.services.nodeidentity import mint_bootstrap_token
from tether.sim.envtest import LocalControlPlane

pytestmark = pytest.mark.integration

Namer = Callable[[str], str]
Waiter = Callable[..., None]


def csr_pem(
    node: str,
    *,
    orgs: Sequence[str] = ("system:nodes",),
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    subject.append(x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node}"))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(subject))
    if dns or ips:
        import ipaddress

        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    pem = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    return base64.b64encode(pem).decode()


def submit(client: KubeClient, name: str, signer: str, request: str, usages: list[str]) -> None:
    client.create(
        CertificateSigningRequest(
            metadata=ObjectMeta(name=name),
            spec=CertificateSigningRequestSpec(request=request, signerName=signer, usages=usages),
        )
    )


def conditions(kube: KubeClient, name: str) -> list[tuple[str, str]]:
    csr = kube.get(CertificateSigningRequest, name)
    return [(c.type, c.reason or "") for c in (csr.status.conditions if csr.status else None) or []]


def test_bootstrap_token_is_a_standard_secret_and_can_only_create_csrs(
    plane: Any,
    kube: KubeClient,
    kube_cluster: LocalControlPlane,
    unique_name: Namer,
    tmp_path: Path,
    write_kubeconfig: Callable[..., Path],
) -> None:
    cluster = unique_name("nid")
    plane.import_cluster(cluster)
    host = unique_name("edge")
    plane.pool(cluster, f"{cluster}-p", [host])
    with plane.client(cluster) as tether, plane.db.session() as s:
        grant = mint_bootstrap_token(s, host, client=tether)
    assert grant.cluster == cluster and grant.api_endpoint == kube_cluster.url
    token_id, secret = grant.token.split(".")
    assert len(token_id) == 6 and len(secret) == 16
    stored = kube.get(Secret, f"bootstrap-token-{token_id}", namespace="kube-system")
    assert stored.type == "bootstrap.kubernetes.io/token"
    data = {k: base64.b64decode(v).decode() for k, v in (stored.data or {}).items()}
    assert data["token-id"] == token_id and data["token-secret"] == secret
    assert data["usage-bootstrap-authentication"] == "true"
    assert data["auth-extra-groups"] == (
        f"system:bootstrappers:tether,system:bootstrappers:tether:host:{host}"
    )
    assert data["expiration"].endswith("Z")
    minted = [e for e in plane.events("Host", host) if e.reason == "BootstrapTokenMinted"]
    assert len(minted) == 1 and secret not in minted[0].message

    config = write_kubeconfig(
        tmp_path / "bootstrap", kube_cluster.url, {"token": grant.token}, kube_cluster.ca_cert_pem
    )
    with KubeClient(config) as as_token:
        name = unique_name("csr")
        submit(
            as_token,
            name,
            KUBELET_CLIENT_SIGNER,
            csr_pem(host),
            ["digital signature", "client auth"],
        )
        csr = kube.get(CertificateSigningRequest, name)
        assert csr.spec.username == f"system:bootstrap:{token_id}"
        assert f"system:bootstrappers:tether:host:{host}" in (csr.spec.groups or [])
        with pytest.raises(Forbidden):
            as_token.list(Node)


def test_approver_approves_only_what_a_host_may_have(
    plane: Any,
    kube: KubeClient,
    kube_cluster: LocalControlPlane,
    unique_name: Namer,
    tmp_path: Path,
    write_kubeconfig: Callable[..., Path],
    wait_for: Waiter,
) -> None:
    cluster = unique_name("csr")
    plane.import_cluster(cluster)
    host, other, spare = unique_name("edge"), unique_name("edge"), unique_name("spare")
    inventory = {"nics": [{"name": "eth0", "addresses": ["10.80.1.11/24"]}], "hostname": host}
    plane.pool(cluster, f"{cluster}-p", {host: inventory, other: {}}, spare=(spare,))
    with plane.client(cluster) as tether, plane.db.session() as s:
        grant = mint_bootstrap_token(s, host, client=tether)
    token_config = write_kubeconfig(
        tmp_path / "t", kube_cluster.url, {"token": grant.token}, kube_cluster.ca_cert_pem
    )
    client_usages = ["digital signature", "client auth"]
    serving_usages = ["digital signature", "server auth"]
    names = {
        k: unique_name(k)
        for k in ("client", "stolen", "serving", "badip", "spare", "foreign", "renewal")
    }
    with KubeClient(token_config) as as_token:
        submit(as_token, names["client"], KUBELET_CLIENT_SIGNER, csr_pem(host), client_usages)
        # The same token asking for another host's identity.
        submit(as_token, names["stolen"], KUBELET_CLIENT_SIGNER, csr_pem(other), client_usages)
    with KubeClient(kube_cluster.add_user(f"system:node:{host}", ["system:nodes"])) as as_node:
        submit(
            as_node,
            names["serving"],
            KUBELET_SERVING_SIGNER,
            csr_pem(host, dns=[host], ips=["10.80.1.11"]),
            serving_usages,
        )
        submit(
            as_node,
            names["badip"],
            KUBELET_SERVING_SIGNER,
            csr_pem(host, dns=[host], ips=["10.99.0.1"]),
            serving_usages,
        )
        submit(as_node, names["renewal"], KUBELET_CLIENT_SIGNER, csr_pem(host), client_usages)
    with KubeClient(kube_cluster.add_user(f"system:node:{spare}", ["system:nodes"])) as as_spare:
        submit(as_spare, names["spare"], KUBELET_CLIENT_SIGNER, csr_pem(spare), client_usages)
    cloud = unique_name("ip-10-0-0")
    with KubeClient(kube_cluster.add_user(f"system:node:{cloud}", ["system:nodes"])) as as_cloud:
        submit(
            as_cloud,
            names["foreign"],
            KUBELET_SERVING_SIGNER,
            csr_pem(cloud, dns=[cloud]),
            serving_usages,
        )

    with plane.client(cluster) as tether:  # Tether's own credentials: RBAC must allow approving
        approver = CSRApprover(plane.db, cluster, tether, resync_seconds=2)
        approver.start()
        try:
            decided = {n for n in names.values() if n != names["foreign"]}
            wait_for(lambda: decided <= {n for n, _ in approver.decided})
        finally:
            approver.stop()

    assert conditions(kube, names["client"]) == [("Approved", "TetherApproved")]
    assert conditions(kube, names["renewal"]) == [("Approved", "TetherApproved")]
    assert conditions(kube, names["serving"]) == [("Approved", "TetherApproved")]
    assert conditions(kube, names["stolen"]) == [("Denied", "RequesterMismatch")]
    assert conditions(kube, names["badip"]) == [("Denied", "SANsNotKnown")]
    assert conditions(kube, names["spare"]) == [("Denied", "HostNotInCluster")]
    assert conditions(kube, names["foreign"]) == []  # not Tether's to judge: still pending

    host_events = [(e.type, e.reason) for e in plane.events("Host", host)]
    assert host_events.count(("Normal", "CSRApproved")) == 3
    assert ("Warning", "CSRDenied") in host_events
    denied = [e for e in plane.events("Host", host) if e.reason == "CSRDenied"]
    assert any("10.99.0.1" in e.message for e in denied)

    # A restart finds nothing left to decide (the verdicts live in the CSRs).
    with plane.client(cluster) as tether:
        again = CSRApprover(plane.db, cluster, tether)
        again.loop.on_list(list(tether.list(CertificateSigningRequest)))
        assert again.decided == []
        # With deny_foreign the cloud node's CSR would be denied too.
        strict = CSRApprover(plane.db, cluster, tether, deny_foreign=True)
        strict.loop.on_list(
            [
                c
                for c in tether.list(CertificateSigningRequest)
                if c.metadata and c.metadata.name == names["foreign"]
            ]
        )
    assert conditions(kube, names["foreign"]) == [("Denied", "UnknownNode")]
