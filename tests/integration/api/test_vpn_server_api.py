"""A host made its site's VPN server through the API, and the plane's VPN server pass
(:func:`tether.services.vpnservers.reconcile_vpn_servers`) on the store of each backend."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tether.services.vpnservers import reconcile_vpn_servers
from tether.store.db import Database
from tether.store.schema import DesiredStateRow, VpnKeyRow

from .conftest import add_host, post

ENDPOINT = {"vpnEndpoint": {"publicIP": "198.51.100.10"}}


def db_of(client: TestClient) -> Database:
    db: Database = client.app.state.db  # type: ignore[attr-defined]
    return db


def put_spec(
    client: TestClient, admin: dict[str, str], kind: str, name: str, **changes: Any
) -> Any:
    """PUT ``kind/name`` with its spec changed by ``changes``; the response."""
    current = client.get(f"/api/v1/{kind}/{name}", headers=admin).json()
    spec = {**current["spec"], **changes}
    body = {"resourceVersion": current["resourceVersion"], "spec": spec}
    return client.put(f"/api/v1/{kind}/{name}", json=body, headers=admin)


def make_vpn_server(client: TestClient, admin: dict[str, str], name: str = "vpn1") -> None:
    add_host(client, name, "10.80.1.1")
    response = put_spec(client, admin, "hosts", name, role="vpn-server")
    assert response.status_code == 200, response.text
    assert response.json()["spec"]["role"] == "vpn-server"


def condition(client: TestClient, admin: dict[str, str], pool: str) -> dict[str, str]:
    status = client.get(f"/api/v1/pools/{pool}", headers=admin).json()["status"]
    return next(c for c in status["conditions"] if c["type"] == "VPNServerConfigured")


def keys(client: TestClient) -> list[str]:
    with db_of(client).session() as s:
        return list(s.scalars(select(VpnKeyRow.key)))


def test_the_role_is_refused_in_a_pool_and_twice_at_a_site_and_nothing_changes(
    client: TestClient, admin: dict[str, str], pool: str
) -> None:
    make_vpn_server(client, admin, "vpn1")
    add_host(client, "vpn2", "10.80.1.2")
    before = client.get("/api/v1/hosts/vpn2", headers=admin).json()

    second = put_spec(client, admin, "hosts", "vpn2", role="vpn-server")
    assert second.status_code == 422, second.text
    error = second.json()
    assert (error["field"], error["rule"]) == ("spec.role", "one_per_site")
    assert "'vpn1'" in error["message"]

    wrong = put_spec(client, admin, "hosts", "vpn2", role="vpn-router")
    assert wrong.status_code == 422, wrong.text
    assert "spec.role" in wrong.text

    # A vpn-server host is never a node: not through the pool's hosts, not by its spec.
    joined = client.post(f"/api/v1/pools/{pool}/hosts", json={"host": "vpn1"}, headers=admin)
    assert joined.status_code == 422, joined.text
    assert (joined.json()["field"], joined.json()["rule"]) == ("spec.pool", "not_vpn_server")
    both = put_spec(client, admin, "hosts", "vpn2", role="vpn-server", pool=pool)
    assert both.status_code == 422, both.text
    assert both.json()["field"] in {"spec.role", "spec.pool"}

    assert client.get("/api/v1/hosts/vpn2", headers=admin).json() == before
    assert client.get("/api/v1/hosts/vpn1", headers=admin).json()["spec"].get("pool") is None
    # The role is given back: the first host gives it up, the second takes it.
    assert put_spec(client, admin, "hosts", "vpn1", role=None).status_code == 200
    assert put_spec(client, admin, "hosts", "vpn2", role="vpn-server").status_code == 200


def test_the_pass_pushes_each_change_once_and_never_shows_the_keys(
    client: TestClient, admin: dict[str, str], pool: str
) -> None:
    db = db_of(client)
    make_vpn_server(client, admin)

    # No cloud VPN endpoint yet: nothing to render, and the pool says which field.
    first = reconcile_vpn_servers(db)
    assert first.pushed == {}
    assert first.problems[pool].startswith("cluster.vpnEndpoint")
    cond = condition(client, admin, pool)
    assert (cond["status"], cond["reason"]) == ("False", "PlanInvalid")
    assert cond["message"].startswith("cluster.vpnEndpoint")
    assert client.get("/api/v1/hosts/vpn1/desired", headers=admin).status_code == 404

    assert put_spec(client, admin, "clusters", "prod", **ENDPOINT).status_code == 200
    pushed = reconcile_vpn_servers(db)
    assert list(pushed.pushed) == ["vpn1"]
    shown = client.get("/api/v1/hosts/vpn1/desired", headers=admin).json()
    assert shown["hash"] == pushed.pushed["vpn1"]
    section = shown["document"]["vpnServer"]
    assert (section["pool"], section["site"]) == (pool, "dc1")
    assert "10.85.0.0/18" in section["files"]["swanctl/swanctl.conf"]
    assert section["files"]["swanctl/secrets.conf"] == "******"
    made = keys(client)
    assert len(made) == 2 and all(len(k) == 64 for k in made)
    with db.session() as s:  # the agent's copy holds the keys the plane made
        stored = s.get(DesiredStateRow, "vpn1")
        assert stored is not None
        secrets_conf = stored.document["vpnServer"]["files"]["swanctl/secrets.conf"]
        assert all(k in secrets_conf for k in made)
        written_at = stored.updated_at
    cond = condition(client, admin, pool)
    assert (cond["status"], cond["reason"]) == ("True", "Pushed")

    # Unchanged plan: no write, same keys, no new event.
    def pushes() -> int:
        found = client.get(f"/api/v1/events?kind=Pool&name={pool}", headers=admin).json()
        return sum(e["count"] for e in found["items"] if e["reason"] == "VPNServerConfigPushed")

    assert pushes() == 1
    assert reconcile_vpn_servers(db).pushed == {}
    with db.session() as s:
        again = s.get(DesiredStateRow, "vpn1")
        assert again is not None and again.updated_at == written_at
    assert keys(client) == made and pushes() == 1

    # A changed pod CIDR is a new document, with the same keys.
    assert put_spec(client, admin, "pools", pool, podCIDR="10.85.64.0/18").status_code == 200
    moved = reconcile_vpn_servers(db)
    assert list(moved.pushed) == ["vpn1"] and moved.pushed["vpn1"] != pushed.pushed["vpn1"]
    shown = client.get("/api/v1/hosts/vpn1/desired", headers=admin).json()
    assert "10.85.64.0/18" in shown["document"]["vpnServer"]["files"]["swanctl/swanctl.conf"]
    assert keys(client) == made and pushes() == 2

    # The keys are in no answer of the people's API and in no event.
    answers = [
        client.get(path, headers=admin).text
        for path in (
            "/api/v1/hosts/vpn1/desired",
            "/api/v1/hosts/vpn1",
            f"/api/v1/pools/{pool}",
            "/api/v1/events?limit=1000",
        )
    ]
    assert not [k for k in made if any(k in text for text in answers)]
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(VpnKeyRow)) == 2

    # The keys go with the pool (it has no hosts: deleted at once), so a pool made again
    # under its name gets new ones.
    assert client.delete(f"/api/v1/pools/{pool}", headers=admin).status_code == 204
    assert keys(client) == []


def test_a_site_with_pools_of_two_clusters_gets_no_document_and_says_why(
    client: TestClient, admin: dict[str, str], pool: str
) -> None:
    db = db_of(client)
    assert put_spec(client, admin, "clusters", "prod", **ENDPOINT).status_code == 200
    other = client.get("/api/v1/clusters/prod", headers=admin).json()["spec"]
    post(client, admin, "/api/v1/clusters", {"name": "prod2", "spec": other}, 201)
    spec = {
        "cluster": "prod2",
        "site": "dc1",
        "nodeCIDR": "10.80.1.0/24",
        "podCIDR": "10.85.0.0/18",
        "vpnServer": {"publicIP": "203.0.113.6", "insideIP": "10.80.1.1"},
    }
    post(client, admin, "/api/v1/pools", {"name": "dc1b", "spec": spec}, 201)
    make_vpn_server(client, admin)

    done = reconcile_vpn_servers(db)
    assert done.pushed == {}
    for name in (pool, "dc1b"):
        cond = condition(client, admin, name)
        assert cond["status"] == "False"
        assert cond["message"].startswith("spec.site: site dc1 has pools dc1, dc1b")
    assert client.get("/api/v1/hosts/vpn1/desired", headers=admin).status_code == 404
