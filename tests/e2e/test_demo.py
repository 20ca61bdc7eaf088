"""``tether demo`` with a local control plane: its pool hosts receive join plans and turn
into Ready Nodes (SIMULATED kubelets and artifacts, real agents, plane and API server)."""

from __future__ import annotations

import time

import httpx


def test_demo_pool_hosts_join_the_local_cluster(
    kube_binaries: None, demo_process: tuple[str, str]
) -> None:
    url, token = demo_process
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    pool_hosts: list[str] = []
    deadline = time.monotonic() + 120
    results: dict[str, dict[str, object]] = {}
    while time.monotonic() < deadline:
        hosts = api.get("/api/v1/hosts").json()["items"]
        pool_hosts = sorted(h["name"] for h in hosts if h["spec"].get("pool"))
        for name in pool_hosts:
            status = api.get(f"/api/v1/hosts/{name}/desired")
            if status.status_code == 200 and status.json().get("inSync"):
                results[name] = status.json()["appliedResult"]
        if len(pool_hosts) == 4 and len(results) == 4 and all(r["ok"] for r in results.values()):
            break
        time.sleep(1)
    assert len(pool_hosts) == 4, pool_hosts
    assert sorted(results) == pool_hosts, results
    assert all(r["ok"] and r["message"] == "join done" for r in results.values()), results
    events = api.get("/api/v1/events", params={"kind": "Host", "name": pool_hosts[0]}).json()
    reasons = [e["reason"] for e in events["items"]]
    assert "NodeInstallInstallCompleted" in reasons
    assert "NodeInitWaitReadyCompleted" in reasons
    spare = api.get("/api/v1/hosts", params={"limit": 100}).json()["items"]
    assert any(h["spec"].get("pool") is None for h in spare)  # one spare host per site
