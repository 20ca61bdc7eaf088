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
    assert any(f["path"] == "pools[0].nodeCIDR" for f in findings)


def test_plan_returns_configs_without_secrets(client: TestClient, admin: dict[str, str]) -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    response = client.post("/api/v1/network/plan", json={"document": document}, headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["summary"] and body["allocations"]["nodes"]
    assert not any(path.endswith("secrets.conf") for path in body["files"])
    assert "secret =" not in response.text
    assert any("swanctl.conf" in path for path in body["files"])
