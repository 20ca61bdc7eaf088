"""What the dashboard and Prometheus read, through the HTTP API, on SQLite and PostgreSQL:
what needs attention, hosts with their Node and checks, sites with their network health,
events newest first, the audit log newest first, ``/metrics`` and request ids."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tether.controllers.pools import PoolController
from tether.domain.models import ObjectKind
from tether.domain.resources import Role
from tether.services import events
from tether.store.schema import HostAgentRow, NodeStatusRow, utcnow

from .conftest import add_host, fail_a_join, make_token, post

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(client: TestClient, admin: dict[str, str], pool: str) -> str:
    """Pool dc1 with: edge-1 whose join failed, edge-2 silent (Unreachable) reporting a
    failing tunnel check, edge-3 in the pool with its Node NotReady, edge-4 fine."""
    db = client.app.state.db  # type: ignore[attr-defined]
    fail_a_join(client, admin, pool, PoolController(db, lambda _: None), "edge-1", "disk full")
    now = utcnow()
    add_host(
        client,
        "edge-2",
        "10.80.1.12",
        state="Unreachable",
        last_heartbeat=now - timedelta(minutes=5),
    )
    add_host(
        client,
        "edge-3",
        "10.80.1.13",
        state="InUse",
        pool=pool,
        last_heartbeat=now - timedelta(seconds=20),
    )
    add_host(client, "edge-4", "10.80.1.14", last_heartbeat=now - timedelta(seconds=2))
    with db.session() as s:
        s.add(
            HostAgentRow(
                host_name="edge-2",
                failing_checks={"tunnel-vpn1": "no IKE SA", "disk": "full"},
                enrolled_at=now,
            )
        )
        s.add(
            NodeStatusRow(
                host_name="edge-3",
                cluster="prod",
                ready=False,
                reason="KubeletNotReady",
                kubelet_version="v1.34.2",
                observed_at=now,
            )
        )
    return pool


def test_attention_counts_a_failed_join_a_silent_host_and_a_node_not_ready(
    client: TestClient, admin: dict[str, str], fleet: str
) -> None:
    viewer = make_token(client, Role.VIEWER)
    found = client.get("/api/v1/attention", headers=viewer).json()
    assert [(i["name"], i["reason"]) for i in found["items"]] == [
        ("edge-1", "PlanFailed"),
        ("edge-2", "HostUnreachable"),
        ("edge-3", "NodeNotReady"),
    ]
    assert found["count"] == 3
    failed = found["items"][0]
    assert (failed["pool"], failed["site"]) == (fleet, "dc1")
    assert failed["message"] == "join plan failed: disk full"
    assert client.get("/api/v1/attention").status_code == 401


def test_hosts_show_their_node_and_failing_checks(
    client: TestClient, admin: dict[str, str], fleet: str
) -> None:
    node = client.get("/api/v1/hosts/edge-3", headers=admin).json()["status"]["node"]
    assert (node["ready"], node["reason"], node["kubeletVersion"]) == (
        False,
        "KubeletNotReady",
        "v1.34.2",
    )
    silent = client.get("/api/v1/hosts/edge-2", headers=admin).json()["status"]
    assert silent["failingChecks"] == {"tunnel-vpn1": "no IKE SA", "disk": "full"}
    assert silent["node"] is None


def test_sites_show_hosts_by_state_pools_and_tunnel_health(
    client: TestClient, admin: dict[str, str], fleet: str
) -> None:
    post(client, admin, "/api/v1/sites", {"name": "empty"}, 201)
    sites = {
        s["name"]: s["status"] for s in client.get("/api/v1/sites", headers=admin).json()["items"]
    }
    dc1 = sites["dc1"]
    assert dc1["hosts"] == {"InUse": 2, "Ready": 1, "Unreachable": 1}
    assert dc1["pools"] == [fleet]
    assert dc1["tunnel"] == {"status": "Failing", "hosts": {"edge-2": "tunnel-vpn1: no IKE SA"}}
    assert dc1["bgp"] == {"status": "NoFailuresReported", "hosts": {}}
    assert sites["empty"]["tunnel"]["status"] == "Unknown"
    one = client.get("/api/v1/sites/dc1", headers=admin).json()["status"]
    assert one == dc1


def test_events_newest_first_a_repeat_moves_up(client: TestClient, admin: dict[str, str]) -> None:
    db = client.app.state.db  # type: ignore[attr-defined]
    now = utcnow()
    with db.session() as s:
        for n, reason in enumerate(("First", "Second", "Third")):
            events.record(
                s, ObjectKind.SITE, "dc9", reason, reason.lower(), now=now + timedelta(seconds=n)
            )
        events.record(s, ObjectKind.SITE, "dc9", "First", "first", now=now + timedelta(seconds=5))
    newest = client.get(
        "/api/v1/events", params={"name": "dc9", "order": "newest", "limit": 2}, headers=admin
    ).json()
    assert [(e["reason"], e["count"]) for e in newest["items"]] == [("First", 2), ("Third", 1)]
    assert newest["continue"] is None
    oldest = client.get("/api/v1/events", params={"name": "dc9"}, headers=admin).json()
    assert [e["reason"] for e in oldest["items"]] == ["First", "Second", "Third"]
    paged = client.get(
        "/api/v1/events",
        params={"order": "newest", "continue": "aWQ6MQ"},
        headers=admin,
    )
    assert paged.status_code == 422
    assert (paged.json()["field"], paged.json()["rule"]) == ("continue", "order")


def test_audit_newest_first_in_pages(client: TestClient, admin: dict[str, str]) -> None:
    for name in ("a1", "a2", "a3"):
        post(client, admin, "/api/v1/sites", {"name": name}, 201)
    first = client.get(
        "/api/v1/audit", params={"order": "newest", "limit": 2}, headers=admin
    ).json()
    assert [a["target"] for a in first["items"]] == ["/api/v1/sites"] * 2
    ids = [a["id"] for a in first["items"]]
    assert ids == sorted(ids, reverse=True)
    rest = client.get(
        "/api/v1/audit",
        params={"order": "newest", "limit": 2, "continue": first["continue"]},
        headers=admin,
    ).json()
    assert rest["items"] and all(a["id"] < min(ids) for a in rest["items"])


Samples = dict[str, list[tuple[dict[str, str], float]]]


def _scrape(client: TestClient, headers: dict[str, str]) -> Samples:
    """Every sample of ``/metrics`` by sample name (``x_bucket``, ``x_total``, ...)."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def test_metrics_need_a_token_and_count_the_store(
    client: TestClient, admin: dict[str, str], fleet: str
) -> None:
    assert client.get("/metrics").status_code == 401
    viewer = make_token(client, Role.VIEWER)
    client.get(f"/api/v1/pools/{fleet}", headers=viewer)
    metrics = _scrape(client, viewer)
    hosts = {(labels["site"], labels["state"]): v for labels, v in metrics["tether_hosts"]}
    assert hosts == {("dc1", "InUse"): 2, ("dc1", "Ready"): 1, ("dc1", "Unreachable"): 1}
    plans = {labels["state"]: v for labels, v in metrics["tether_host_plans"]}
    assert plans == {"Pending": 0, "Failed": 1, "Applied": 0}
    ages = {labels["le"]: v for labels, v in metrics["tether_host_heartbeat_age_seconds_bucket"]}
    assert (ages["5"], ages["15"], ages["30"], ages["300"], ages["+Inf"]) == (1, 1, 2, 2, 3)
    attention = {labels["reason"]: v for labels, v in metrics["tether_attention_items"]}
    assert attention == {"PlanFailed": 1, "HostUnreachable": 1, "NodeNotReady": 1}
    assert [v for _, v in metrics["tether_pools"]] == [1]
    latency = metrics["tether_http_request_duration_seconds_count"]
    routes = {labels["route"] for labels, _ in latency}
    assert "/api/v1/pools/{name}" in routes  # the template, never the raw path
    assert not any(fleet in route for route in routes)
    assert {"pools", "nodes", "csr", "heartbeats"} <= {
        labels["controller"] for labels, _ in metrics["tether_reconcile_errors_total"]
    }


def test_every_response_carries_a_request_id(client: TestClient, admin: dict[str, str]) -> None:
    mine = client.get("/api/v1/whoami", headers={**admin, "X-Request-ID": "trace-7f3a"})
    assert mine.headers["x-request-id"] == "trace-7f3a"
    made = [client.get("/healthz").headers["x-request-id"] for _ in range(2)]
    assert len(set(made)) == 2 and all(made)
    odd = client.get("/healthz", headers={"X-Request-ID": 'no spaces; or quotes"'})
    assert odd.headers["x-request-id"] != 'no spaces; or quotes"'
