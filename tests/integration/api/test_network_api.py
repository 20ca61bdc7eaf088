"""Network rules applied to the plane's objects, and documents checked and planned over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from fastapi.testclient import TestClient

EXAMPLE = Path(__file__).parents[3] / "examples" / "hybrid-network.yaml"

CLUSTER: dict[str, Any] = {
    "name": "prod",
    "spec": {
        "kubernetesVersion": "1.34",
        "vpcCIDR": "10.226.0.0/16",
        "serviceCIDR": "172.20.0.0/16",
        "remoteNodeNetworks": ["10.80.0.0/16"],
        "remotePodNetworks": ["10.85.0.0/16"],
    },
}


def pool(name: str, node: str, pods: str, public_ip: str) -> dict[str, Any]:
    return {
        "name": name,
        "spec": {
            "cluster": "prod",
            "site": "dc1",
            "nodeCIDR": node,
            "podCIDR": pods,
            "vpnServer": {"publicIP": public_ip, "insideIP": node.replace(".0/24", ".1")},
        },
    }


def test_cluster_network_rules_refuse_with_every_finding(
    client: TestClient, admin: dict[str, str]
) -> None:
    spec = {
        **CLUSTER["spec"],
        "remoteNodeNetworks": ["10.226.128.0/17", "8.8.8.0/24"],  # overlaps VPC; not private
    }
    response = client.post("/api/v1/clusters", json={"name": "prod", "spec": spec}, headers=admin)
    assert response.status_code == 422
    body = response.json()
    rules = {d["rule"] for d in body["details"]}
    assert {"cluster.remote-vpc-overlap", "cluster.remote-private"} <= rules
    assert all(d["field"].startswith("spec.remoteNodeNetworks[") for d in body["details"])
    assert client.get("/api/v1/clusters", headers=admin).json()["items"] == []


def test_overlapping_pools_are_refused_and_nothing_changes(
    client: TestClient, admin: dict[str, str]
) -> None:
    assert client.post("/api/v1/clusters", json=CLUSTER, headers=admin).status_code == 201
    assert client.post("/api/v1/sites", json={"name": "dc1"}, headers=admin).status_code == 201
    first = pool("a", "10.80.1.0/24", "10.85.0.0/18", "203.0.113.5")
    assert client.post("/api/v1/pools", json=first, headers=admin).status_code == 201
    clash = pool("b", "10.80.1.0/24", "10.85.64.0/18", "203.0.113.6")
    response = client.post("/api/v1/pools", json=clash, headers=admin)
    assert response.status_code == 422
    assert response.json()["rule"] == "pool.overlap"
    outside = pool("c", "10.81.1.0/24", "10.85.128.0/18", "203.0.113.7")
    response = client.post("/api/v1/pools", json=outside, headers=admin)
    assert (response.json()["field"], response.json()["rule"]) == (
        "spec.nodeCIDR",
        "pool.node-cidr-in-remote",
    )
    names = [p["name"] for p in client.get("/api/v1/pools", headers=admin).json()["items"]]
    assert names == ["a"]
    document = client.get("/api/v1/clusters/prod/network", headers=admin).json()
    assert document["kind"] == "HybridNetwork"
    assert [p["name"] for p in document["pools"]] == ["a"]


def test_check_returns_the_cli_finding_list(client: TestClient, admin: dict[str, str]) -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    ok = client.post("/api/v1/network/check", json=document, headers=admin)
    assert ok.status_code == 200 and ok.json()["valid"] is True
    document["pools"][0]["nodeCIDR"] = document["cluster"]["vpcCIDR"]
    bad = client.post("/api/v1/network/check", json=document, headers=admin)
    assert bad.status_code == 422
    findings = bad.json()["findings"]
    assert findings and set(findings[0]) == {"rule", "path", "message", "severity"}
    assert any(f["path"] == "pools[dc1].nodeCIDR" for f in findings)


def test_plan_returns_configs_without_secrets(client: TestClient, admin: dict[str, str]) -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    response = client.post("/api/v1/network/plan", json={"document": document}, headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["summary"] and body["allocations"]["nodes"]
    assert not any(path.endswith("secrets.conf") for path in body["files"])
    assert "secret =" not in response.text
    assert any("swanctl.conf" in path for path in body["files"])


def test_an_old_error_in_another_pool_does_not_block_a_change(
    client: TestClient, admin: dict[str, str]
) -> None:
    from sqlalchemy import update

    from tether.store.schema import PoolRow

    assert client.post("/api/v1/clusters", json=CLUSTER, headers=admin).status_code == 201
    assert client.post("/api/v1/sites", json={"name": "dc1"}, headers=admin).status_code == 201
    for body in (
        pool("a", "10.80.1.0/24", "10.85.0.0/18", "203.0.113.5"),
        pool("b", "10.80.2.0/24", "10.85.64.0/18", "203.0.113.6"),
    ):
        assert client.post("/api/v1/pools", json=body, headers=admin).status_code == 201
    # Pool b goes bad behind the API's back (say, data from before a rule existed).
    with client.app.state.db.session() as s:  # type: ignore[attr-defined]
        row = s.query(PoolRow).filter_by(name="b").one()
        s.execute(
            update(PoolRow)
            .where(PoolRow.name == "b")
            .values(spec={**row.spec, "podCIDR": "192.168.0.0/18"})
        )
    current = client.get("/api/v1/pools/a", headers=admin).json()
    body = {"resourceVersion": current["resourceVersion"], "spec": current["spec"]}
    assert client.put("/api/v1/pools/a", json=body, headers=admin).status_code == 200


def test_a_stale_delete_is_refused(client: TestClient, admin: dict[str, str]) -> None:
    assert client.post("/api/v1/sites", json={"name": "dc9"}, headers=admin).status_code == 201
    site = client.get("/api/v1/sites/dc9", headers=admin).json()
    body = {"resourceVersion": site["resourceVersion"], "spec": {"location": "x"}}
    assert client.put("/api/v1/sites/dc9", json=body, headers=admin).status_code == 200
    stale = client.delete("/api/v1/sites/dc9?resourceVersion=1", headers=admin)
    assert stale.status_code == 409 and stale.json()["field"] == "resourceVersion"
    assert client.get("/api/v1/sites/dc9", headers=admin).status_code == 200
