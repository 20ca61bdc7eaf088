"""The Kubernetes endpoints of the REST API, end to end against a real kube-apiserver."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from lightkube.models.core_v1 import Container, PodSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Node, Pod
from typer.testing import CliRunner

from tether.cli.client import Client, Response
from tether.cli.main import app
from tether.domain.resources import Role
from tether.kube.client import KubeClient
from tether.sim.kubesim import KubeletFleet, SimulatedNode

pytestmark = pytest.mark.integration

Namer = Callable[[str], str]


class InProcessClient(Client):
    """The CLI's client with the plane's app in this process (``api``) for a transport."""

    def __init__(self, api: TestClient) -> None:
        super().__init__("http://testserver", None)
        self.api = api

    def exchange(self, method: str, path: str, params: Any, json: Any) -> Response:
        answer = self.api.request(method, path, params=params, json=json)
        return Response(answer.status_code, answer.reason_phrase, answer.content)


@pytest.fixture
def api(api: TestClient, auth: Callable[[Role], dict[str, str]]) -> TestClient:
    """The conftest's API, every request as an operator."""
    api.headers.update(auth(Role.OPERATOR))
    return api


def test_host_operations_through_the_api(
    api: TestClient,
    plane: Any,
    kube: KubeClient,
    unique_name: Namer,
    replicaset_pod: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = unique_name("api")
    host, spare = unique_name("edge"), unique_name("spare")
    not_imported = api.post(f"/api/v1/clusters/{cluster}/hybrid/enable", json={})
    assert not_imported.status_code == 404  # no such cluster yet
    plane.import_cluster(cluster)
    plane.pool(cluster, f"{cluster}-p", [host], spare=(spare,))

    fleet = KubeletFleet(kube, finalize_pods=True)
    fleet.register([SimulatedNode(host, cluster=cluster)])
    namespace = unique_name("apps")
    kube.create(Namespace(metadata=ObjectMeta(name=namespace)))
    replicaset_pod(kube, "web-1", namespace, host)
    with fleet:
        grant = api.post(f"/api/v1/hosts/{host}/bootstrap-token", json={"ttlSeconds": 600})
        assert grant.status_code == 201, grant.text
        assert grant.json()["cluster"] == cluster and "." in grant.json()["token"]
        refused = api.post(f"/api/v1/hosts/{spare}/bootstrap-token", json={})
        assert refused.status_code == 422 and refused.json()["field"] == "spec.pool"

        plan = api.post(
            f"/api/v1/clusters/{cluster}/hybrid/enable", json={"eksLabels": True, "dryRun": True}
        )
        assert plan.status_code == 200, plan.text
        assert plan.json()["dryRun"] is True and plan.json()["hybridNodes"] == [host]

        assert api.post(f"/api/v1/hosts/{host}/cordon").json() == {"node": host, "changed": True}
        assert api.post(f"/api/v1/hosts/{host}/cordon").json()["changed"] is False
        assert api.post(f"/api/v1/hosts/{host}/uncordon").json()["changed"] is True

        drained = api.post(
            f"/api/v1/hosts/{host}/drain",
            json={"timeoutSeconds": 60, "deleteEmptyDirData": False, "force": False},
        )
        assert drained.status_code == 200, drained.text
        assert drained.json()["evicted"] == [f"{namespace}/web-1"]
        spec = kube.get(Node, host).spec
        assert spec is not None and spec.unschedulable
        reasons = [e.reason for e in plane.events("Host", host)]
        for reason in ("BootstrapTokenMinted", "Cordoned", "Uncordoned", "Evicted", "Drained"):
            assert reason in reasons

        blocked_pod = Pod(
            metadata=ObjectMeta(name="bare"),
            spec=PodSpec(nodeName=host, containers=[Container(name="c", image="x/y:1")]),
        )
        kube.create(blocked_pod, namespace=namespace)
        blocked = api.post(f"/api/v1/hosts/{host}/drain", json={})
        assert blocked.status_code == 409 and blocked.json()["code"] == "drain_blocked"
        kube.delete(Pod, "bare", namespace=namespace, grace_period=0)

        # `tether host drain` shows each step above a bar of the pods evicted.
        assert api.post(f"/api/v1/hosts/{host}/uncordon").json()["changed"] is True
        replicaset_pod(kube, "web-2", namespace, host)
        cli = InProcessClient(api)
        monkeypatch.setattr(Client, "from_config", classmethod(lambda cls, timeout=30.0: cli))
        drained_by_cli = CliRunner().invoke(app, ["host", "drain", host, "--timeout", "60"])
        assert drained_by_cli.exit_code == 0, drained_by_cli.output
        assert f"DrainStarted: 1 pod(s) to evict from node {host}" in drained_by_cli.stderr
        assert f"Evicted: {namespace}/web-2 evicted" in drained_by_cli.stderr
        assert f"draining {host}" in drained_by_cli.stderr and "1/1" in drained_by_cli.stderr
        assert f"{namespace}/web-2" in drained_by_cli.stdout  # the report
    fleet.stop(delete=True)
    kube.delete(Namespace, namespace)

    other = unique_name("noimport")
    with plane.db.session() as s:
        from tether.domain import resources as r
        from tether.services import resources as svc

        svc.create_cluster(
            s,
            r.ClusterCreate.model_validate(
                {
                    "name": other,
                    "spec": {
                        "kubernetesVersion": "1.37",
                        "vpcCIDR": "10.0.0.0/16",
                        "serviceCIDR": "10.1.0.0/16",
                    },
                }
            ),
        )
    response = api.post(f"/api/v1/clusters/{other}/hybrid/enable", json={})
    assert response.status_code == 409 and response.json()["code"] == "not_imported"
