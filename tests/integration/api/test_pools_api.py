"""Pools, rollouts and profile diffs through the HTTP API, on SQLite and PostgreSQL.

The pool reconciler runs by hand here (one ``reconcile`` per step, no cluster to act on):
these tests are about what people may do and what they are told."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tether.controllers.pools import PoolController
from tether.domain.agent import AppliedReport
from tether.domain.resources import Role
from tether.services import desired
from tether.store.schema import HostRow, PoolMemberRow, utcnow

from .conftest import make_token

pytestmark = pytest.mark.integration

CA = "-----BEGIN CERTIFICATE-----\nYXBp\n-----END CERTIFICATE-----\n"


def _layers(kube: str, **extra: Any) -> dict[str, Any]:
    return {"os": {"image": "debian-12"}, "kubernetes": {"version": kube, **extra}}


def _post(client: TestClient, headers: dict[str, str], path: str, body: Any, status: int) -> Any:
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == status, response.text
    return response.json()


@pytest.fixture
def pool(client: TestClient, admin: dict[str, str]) -> str:
    cluster = {
        "kubernetesVersion": "1.37",
        "apiEndpoint": "https://10.226.0.10:6443",
        "caBundle": CA,
        "vpcCIDR": "10.226.0.0/16",
        "serviceCIDR": "172.20.0.0/16",
        "remoteNodeNetworks": ["10.80.0.0/16"],
        "remotePodNetworks": ["10.85.0.0/16"],
    }
    _post(client, admin, "/api/v1/clusters", {"name": "prod", "spec": cluster}, 201)
    _post(client, admin, "/api/v1/sites", {"name": "dc1"}, 201)
    variables = [{"name": "pods", "type": "number", "default": 110}]
    for version, kube in (("1.0.0", "1.34.2"), ("1.1.0", "1.35.1")):
        spec = {
            "version": version,
            "layers": _layers(kube, kubeletConfig={"maxPods": "{{ pods }}"}),
            "variables": variables,
        }
        _post(client, admin, "/api/v1/profiles", {"name": "std", "spec": spec}, 201)
    spec = {
        "cluster": "prod",
        "site": "dc1",
        "nodeCIDR": "10.80.1.0/24",
        "podCIDR": "10.85.0.0/18",
        "vpnServer": {"publicIP": "203.0.113.5", "insideIP": "10.80.1.1"},
        "profile": {"name": "std", "version": "1.0.0"},
    }
    _post(client, admin, "/api/v1/pools", {"name": "dc1", "spec": spec}, 201)
    return "dc1"


def test_a_profile_or_pool_that_renders_an_invalid_node_is_refused(
    client: TestClient, admin: dict[str, str], pool: str
) -> None:
    reserved = _layers("1.34.2", kubeletConfig={"providerID": "x"})
    refused = _post(
        client,
        admin,
        "/api/v1/profiles",
        {"name": "bad", "spec": {"version": "1.0.0", "layers": reserved}},
        422,
    )
    assert refused["rule"] == "renders_valid_node"
    assert refused["field"] == "spec.layers.kubernetes.kubeletConfig"
    assert "providerID" in refused["message"]
    view = client.get(f"/api/v1/pools/{pool}", headers=admin).json()
    bad = {**view["spec"], "variables": {"pods": "many"}}
    response = client.put(
        f"/api/v1/pools/{pool}",
        json={"resourceVersion": view["resourceVersion"], "spec": bad},
        headers=admin,
    )
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "spec.variables.pods"
    bad_profiles = client.get("/api/v1/profiles", params={"name": "bad"}, headers=admin)
    assert bad_profiles.json()["items"] == []


def test_profile_diff_names_each_field_and_its_action(
    client: TestClient, admin: dict[str, str], pool: str
) -> None:
    diff = client.get(
        "/api/v1/profiles/std/diff", params={"from": "1.0.0", "to": "1.1.0"}, headers=admin
    ).json()
    assert diff["action"] == "upgrade"
    assert [(c["field"], c["action"]) for c in diff["changes"]] == [
        ("kubernetes.version", "upgrade")
    ]
    status = client.get(f"/api/v1/pools/{pool}", headers=admin).json()["status"]
    assert status["updateAvailable"] == "1.1.0"
    assert status["update"]["action"] == "upgrade"


def test_rollouts_need_an_operator_and_move_only_as_allowed(
    client: TestClient, admin: dict[str, str], pool: str
) -> None:
    viewer = make_token(client, Role.VIEWER)
    denied = client.post(f"/api/v1/pools/{pool}/rollouts", json={"to": "1.1.0"}, headers=viewer)
    assert denied.status_code == 403
    missing = _post(client, admin, f"/api/v1/pools/{pool}/rollouts", {"to": "9.9.9"}, 422)
    assert missing["field"] == "to"
    made = _post(client, admin, f"/api/v1/pools/{pool}/rollouts", {"to": "1.1.0"}, 201)
    assert (made["state"], made["fromVersion"], made["toVersion"]) == (
        "PendingApproval",
        "1.0.0",
        "1.1.0",
    )
    name = made["name"]
    assert client.post(f"/api/v1/rollouts/{name}/approve", headers=viewer).status_code == 403
    not_yet = _post(client, admin, f"/api/v1/rollouts/{name}/resume", None, 409)
    assert "cannot resume" in not_yet["message"] and "approve" in not_yet["message"]
    approved = _post(client, admin, f"/api/v1/rollouts/{name}/approve", None, 200)
    assert approved["state"] == "Progressing" and approved["approvedBy"].startswith("token:")
    pool_view = client.get(f"/api/v1/pools/{pool}", headers=admin).json()
    assert pool_view["spec"]["profile"]["version"] == "1.1.0"  # the pool's new target
    assert _post(client, admin, f"/api/v1/rollouts/{name}/pause", None, 200)["state"] == "Paused"
    again = _post(client, admin, f"/api/v1/pools/{pool}/rollouts", {"to": "1.0.0"}, 409)
    assert again["rule"] == "one_rollout_at_a_time"
    back = _post(client, admin, f"/api/v1/rollouts/{name}/rollback", None, 200)
    assert (back["state"], back["toVersion"], back["rollbackOf"]) == ("Progressing", "1.0.0", name)
    listed = client.get("/api/v1/rollouts", params={"pool": pool}, headers=admin).json()
    assert {(r["name"], r["state"]) for r in listed["items"]} == {
        (name, "Aborted"),
        (back["name"], "Progressing"),
    }
    events = client.get("/api/v1/events", params={"pool": pool}, headers=admin).json()["items"]
    reasons = [(e["objectName"], e["reason"]) for e in events]
    for reason in ("RolloutCreated", "RolloutApproved", "RolloutPaused", "RolloutAborted"):
        assert (name, reason) in reasons
    audit = client.get("/api/v1/audit", headers=admin).json()["items"]
    assert {a["target"] for a in audit if a["action"] == "POST"} >= {
        f"/api/v1/rollouts/{name}/approve",
        f"/api/v1/rollouts/{name}/rollback",
    }


def test_a_failed_plan_shows_on_the_host_and_the_pool(
    client: TestClient, admin: dict[str, str], pool: str
) -> None:
    db = client.app.state.db  # type: ignore[attr-defined]
    with db.session() as s:
        s.add(
            HostRow(
                name="edge-1",
                host_id="edge-1",
                site="dc1",
                pool=None,
                state="Ready",
                health="Healthy",
                inventory={},
                spec={"site": "dc1", "nodeIP": "10.80.1.11"},
            )
        )
    _post(client, admin, f"/api/v1/pools/{pool}/hosts", {"host": "edge-1"}, 201)
    controller = PoolController(db, lambda _: None)
    controller.reconcile(pool)  # the join plan goes out
    plan = client.get("/api/v1/hosts/edge-1/desired", headers=admin).json()
    assert plan["document"]["node"]["action"] == "join"
    with db.session() as s:  # the agent reports a failure it will not retry
        desired.report_applied(
            s,
            "edge-1",
            AppliedReport(
                hash=plan["hash"],
                result={"ok": False, "retryable": False, "message": "disk full"},
            ),
            now=utcnow(),
        )
    controller.reconcile(pool)
    host = client.get("/api/v1/hosts/edge-1", headers=admin).json()
    assert host["status"]["plan"]["state"] == "Failed"
    assert "disk full" in host["status"]["plan"]["message"]
    assert host["status"]["health"] == "Unhealthy"  # not Healthy while its plan failed
    assert host["status"]["member"]["failed"].startswith("the plan failed: disk full")
    status = client.get(f"/api/v1/pools/{pool}", headers=admin).json()["status"]
    assert status["state"] == "Degraded"
    plans = next(c for c in status["conditions"] if c["type"] == "PlansApplied")
    assert (plans["status"], plans["reason"]) == ("False", "PlanFailed")
    assert "edge-1" in plans["message"]
    events = client.get("/api/v1/events", params={"pool": pool}, headers=admin).json()["items"]
    assert ("edge-1", "JoinFailed", "Warning") in {
        (e["objectName"], e["reason"], e["type"]) for e in events
    }
    with db.session() as s:
        assert s.get(PoolMemberRow, "edge-1").phase == "Joining"
