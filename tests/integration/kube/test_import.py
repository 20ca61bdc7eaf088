"""Importing a cluster through the API against a real kube-apiserver, and the RBAC it installs."""

from __future__ import annotations

import base64
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import DaemonSet
from lightkube.resources.core_v1 import Namespace, Node, Secret, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import ClusterRole, ClusterRoleBinding

from tether.domain.resources import Role
from tether.kube.client import KubeClient
from tether.kube.errors import Forbidden
from tether.services.kubeconn import kubeconfig_path
from tether.sim.envtest import LocalControlPlane

pytestmark = pytest.mark.integration

Namer = Callable[[str], str]
Auth = Callable[[Role], dict[str, str]]


def test_import_records_the_cluster_and_stores_tethers_own_credentials(
    api: TestClient,
    auth: Auth,
    kube_cluster: LocalControlPlane,
    data_dir: Path,
    unique_name: Namer,
) -> None:
    name = unique_name("imp")
    operator = auth(Role.OPERATOR)
    body = {"kubeconfig": kube_cluster.kubeconfig.read_text(), "spec": {"vpcCIDR": "10.226.0.0/16"}}
    response = api.post(f"/api/v1/clusters/{name}/import", json=body, headers=operator)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["created"] is True
    assert result["serverVersion"] == "v1.37.2"
    spec = result["cluster"]["spec"]
    assert spec["kubernetesVersion"] == "1.37"
    assert spec["apiEndpoint"] == kube_cluster.url
    assert spec["caBundle"] == kube_cluster.ca_cert_pem.decode().strip()
    assert spec["serviceCIDR"] == "10.0.0.0/24"  # from the cluster's ServiceCIDR
    assert spec["vpcCIDR"] == "10.226.0.0/16"
    assert "Namespace/tether-system" in result["installed"]
    assert "ClusterRoleBinding/tether:kubelet-bootstrap" in result["installed"]

    # The stored kubeconfig: 0600, Tether's service account token, not the admin's cert.
    path = kubeconfig_path(data_dir, name)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = yaml.safe_load(path.read_text())
    user = stored["users"][0]["user"]
    assert set(user) == {"token"}
    ca = base64.b64decode(stored["clusters"][0]["cluster"]["certificate-authority-data"])
    assert ca == kube_cluster.ca_cert_pem
    assert kube_cluster.kubeconfig.read_text() not in path.read_text()

    events = api.get(
        "/api/v1/events", params={"kind": "Cluster", "name": name}, headers=operator
    ).json()["items"]
    assert [e["reason"] for e in events] == ["Created", "Imported"]

    # Re-importing updates in place and is otherwise a no-op.
    again = api.post(f"/api/v1/clusters/{name}/import", json=body, headers=operator)
    assert again.status_code == 200, again.text
    assert again.json()["created"] is False
    assert again.json()["cluster"]["resourceVersion"] == result["cluster"]["resourceVersion"]


def test_installed_rbac_is_least_privilege(
    api: TestClient,
    auth: Auth,
    kube: KubeClient,
    kube_cluster: LocalControlPlane,
    data_dir: Path,
    unique_name: Namer,
) -> None:
    name = unique_name("rbac")
    body = {"kubeconfig": kube_cluster.kubeconfig.read_text(), "spec": {"vpcCIDR": "10.0.8.0/22"}}
    assert (
        api.post(
            f"/api/v1/clusters/{name}/import", json=body, headers=auth(Role.OPERATOR)
        ).status_code
        == 200
    )
    kube.get(Namespace, "tether-system")
    kube.get(ServiceAccount, "tether", namespace="tether-system")
    role = kube.get(ClusterRole, "tether:controller")
    assert role.metadata is not None and role.metadata.labels == {
        "app.kubernetes.io/managed-by": "tether"
    }
    binding = kube.get(ClusterRoleBinding, "tether:kubelet-bootstrap")
    assert binding.roleRef.name == "system:node-bootstrapper"
    assert [s.name for s in binding.subjects or []] == ["system:bootstrappers:tether"]

    with KubeClient(kubeconfig_path(data_dir, name)) as tether:
        tether.list(Node)  # what the nodes controller does
        with pytest.raises(Forbidden):
            tether.list(Secret, namespace="kube-system")  # may create/delete tokens, never read
        with pytest.raises(Forbidden):
            tether.get(Secret, "anything", namespace="kube-system")
        with pytest.raises(Forbidden):
            tether.list(Namespace)
        with pytest.raises(Forbidden):  # DaemonSets only by name, only the CNI ones
            tether.patch(
                DaemonSet,
                "kube-proxy",
                {"metadata": {"labels": {"x": "y"}}},
                namespace="kube-system",
            )
        with pytest.raises(Forbidden):
            tether.create(Namespace(metadata=ObjectMeta(name=unique_name("nope"))))


def test_import_refusals_change_nothing(
    api: TestClient,
    auth: Auth,
    kube_cluster: LocalControlPlane,
    data_dir: Path,
    unique_name: Namer,
    tmp_path: Path,
    write_kubeconfig: Callable[..., Path],
) -> None:
    name = unique_name("bad")
    operator = auth(Role.OPERATOR)
    admin_config = kube_cluster.kubeconfig.read_text()

    missing_vpc = api.post(
        f"/api/v1/clusters/{name}/import", json={"kubeconfig": admin_config}, headers=operator
    )
    assert missing_vpc.status_code == 422
    assert missing_vpc.json()["field"] == "spec.vpcCIDR"

    exec_config = yaml.safe_dump(
        {
            "clusters": [{"name": "c", "cluster": {"server": kube_cluster.url}}],
            "users": [
                {"name": "u", "user": {"exec": {"command": "/bin/sh", "args": ["-c", "id"]}}}
            ],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
    )
    refused = api.post(
        f"/api/v1/clusters/{name}/import",
        json={"kubeconfig": exec_config, "spec": {"vpcCIDR": "10.0.0.0/16"}},
        headers=operator,
    )
    assert refused.status_code == 422
    assert refused.json()["rule"] == "self_contained_kubeconfig"

    bad_token = write_kubeconfig(
        tmp_path / "bad",
        kube_cluster.url,
        {"token": "abcdef.0123456789abcdef"},
        kube_cluster.ca_cert_pem,
    )
    unauthorized = api.post(
        f"/api/v1/clusters/{name}/import",
        json={"kubeconfig": bad_token.read_text(), "spec": {"vpcCIDR": "10.0.0.0/16"}},
        headers=operator,
    )
    assert unauthorized.status_code == 422
    assert unauthorized.json()["rule"] == "kube_credentials"

    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = write_kubeconfig(
        tmp_path / "down", f"https://127.0.0.1:{port}", {"token": "t"}, kube_cluster.ca_cert_pem
    )
    unreachable = api.post(
        f"/api/v1/clusters/{name}/import",
        json={"kubeconfig": down.read_text(), "spec": {"vpcCIDR": "10.0.0.0/16"}},
        headers=operator,
    )
    assert unreachable.status_code == 502
    assert unreachable.json()["code"] == "cluster_unreachable"

    viewer = api.post(
        f"/api/v1/clusters/{name}/import",
        json={"kubeconfig": admin_config},
        headers=auth(Role.VIEWER),
    )
    assert viewer.status_code == 403

    assert api.get(f"/api/v1/clusters/{name}", headers=operator).status_code == 404
    assert not kubeconfig_path(data_dir, name).exists()
