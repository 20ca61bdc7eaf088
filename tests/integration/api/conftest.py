from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tether.api.app import create_app
from tether.controllers.pools import PoolController
from tether.domain.agent import AppliedReport
from tether.domain.resources import Role, TokenCreate
from tether.services import desired, tokens
from tether.settings import Settings
from tether.sim.seed import CLUSTER
from tether.store.schema import HostRow, utcnow


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def make_token(client: TestClient, role: Role) -> dict[str, str]:
    with client.app.state.db.session() as s:  # type: ignore[attr-defined]
        issued = tokens.issue(s, TokenCreate(name=f"t-{role.value}", role=role), default_ttl_days=1)
    return {"Authorization": f"Bearer {issued.token}"}


@pytest.fixture
def admin(client: TestClient) -> dict[str, str]:
    return make_token(client, Role.ADMIN)


CA = "-----BEGIN CERTIFICATE-----\nYXBp\n-----END CERTIFICATE-----\n"


def layers(kube: str, **extra: Any) -> dict[str, Any]:
    return {"os": {"image": "debian-12"}, "kubernetes": {"version": kube, **extra}}


def post(client: TestClient, headers: dict[str, str], path: str, body: Any, status: int) -> Any:
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == status, response.text
    return response.json()


@pytest.fixture
def pool(client: TestClient, admin: dict[str, str]) -> str:
    cluster = {**CLUSTER, "caBundle": CA}
    post(client, admin, "/api/v1/clusters", {"name": "prod", "spec": cluster}, 201)
    post(client, admin, "/api/v1/sites", {"name": "dc1"}, 201)
    variables = [{"name": "pods", "type": "number", "default": 110}]
    for version, kube in (("1.0.0", "1.34.2"), ("1.1.0", "1.35.1")):
        spec = {
            "version": version,
            "layers": layers(kube, kubeletConfig={"maxPods": "{{ pods }}"}),
            "variables": variables,
        }
        post(client, admin, "/api/v1/profiles", {"name": "std", "spec": spec}, 201)
    spec = {
        "cluster": "prod",
        "site": "dc1",
        "nodeCIDR": "10.80.1.0/24",
        "podCIDR": "10.85.0.0/18",
        "vpnServer": {"publicIP": "203.0.113.5", "insideIP": "10.80.1.1"},
        "profile": {"name": "std", "version": "1.0.0"},
    }
    post(client, admin, "/api/v1/pools", {"name": "dc1", "spec": spec}, 201)
    return "dc1"


def add_host(client: TestClient, name: str, ip: str, **row: Any) -> None:
    """A host of site dc1 straight in the store (Ready, healthy, in no pool by default)."""
    with client.app.state.db.session() as s:  # type: ignore[attr-defined]
        s.add(
            HostRow(
                **{
                    "name": name,
                    "host_id": name,
                    "site": "dc1",
                    "pool": None,
                    "state": "Ready",
                    "health": "Healthy",
                    "inventory": {},
                    "spec": {"site": "dc1", "nodeIP": ip},
                    **row,
                }
            )
        )


def fail_a_join(
    client: TestClient,
    admin: dict[str, str],
    pool: str,
    controller: PoolController,
    host: str,
    message: str,
) -> None:
    """Add ``host`` (new, at 10.80.1.11) to ``pool``; its agent reports the join plan
    failed with ``message``, a failure it will not retry."""
    add_host(client, host, "10.80.1.11")
    post(client, admin, f"/api/v1/pools/{pool}/hosts", {"host": host}, 201)
    controller.reconcile(pool)  # the join plan goes out
    plan = client.get(f"/api/v1/hosts/{host}/desired", headers=admin).json()
    assert plan["document"]["node"]["action"] == "join"
    with client.app.state.db.session() as s:  # type: ignore[attr-defined]
        desired.report_applied(
            s,
            host,
            AppliedReport(
                hash=plan["hash"], result={"ok": False, "retryable": False, "message": message}
            ),
            now=utcnow(),
        )
    controller.poke_hosts([host])  # as the agent plane tells the reconciler of a report
