"""Pools, rollouts and profile diffs through the HTTP API, on SQLite and PostgreSQL.

The pool reconciler runs by hand here (one ``reconcile`` per step, no cluster to act on):
these tests are about what people may do and what they are told."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from tether.controllers.pools import PoolController
from tether.domain.resources import Role
from tether.store.schema import PoolMemberRow

from .conftest import add_host, fail_a_join, layers, make_token, post

pytestmark = pytest.mark.integration


def test_a_profile_or_pool_that_renders_an_invalid_node_is_refused(
    client: TestClient, admin: dict[str, str], pool: str
) -> None:
    reserved = layers("1.34.2", kubeletConfig={"providerID": "x"})
    refused = post(
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
    missing = post(client, admin, f"/api/v1/pools/{pool}/rollouts", {"to": "9.9.9"}, 422)
    assert missing["field"] == "to"
    made = post(client, admin, f"/api/v1/pools/{pool}/rollouts", {"to": "1.1.0"}, 201)
    assert (made["state"], made["fromVersion"], made["toVersion"]) == (
        "PendingApproval",
        "1.0.0",
        "1.1.0",
    )
    name = made["name"]
    assert client.post(f"/api/v1/rollouts/{name}/approve", headers=viewer).status_code == 403
    not_yet = post(client, admin, f"/api/v1/rollouts/{name}/resume", None, 409)
    assert "cannot resume" in not_yet["message"] and "approve" in not_yet["message"]
    approved = post(client, admin, f"/api/v1/rollouts/{name}/approve", None, 200)
    assert approved["state"] == "Progressing" and approved["approvedBy"].startswith("token:")
    pool_view = client.get(f"/api/v1/pools/{pool}", headers=admin).json()
    assert pool_view["spec"]["profile"]["version"] == "1.1.0"  # the pool's new target
    assert post(client, admin, f"/api/v1/rollouts/{name}/pause", None, 200)["state"] == "Paused"
    again = post(client, admin, f"/api/v1/pools/{pool}/rollouts", {"to": "1.0.0"}, 409)
    assert again["rule"] == "one_rollout_at_a_time"
    back = post(client, admin, f"/api/v1/rollouts/{name}/rollback", None, 200)
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
    controller = PoolController(db, lambda _: None)
    fail_a_join(client, admin, pool, controller, "edge-1", "disk full")
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


def test_a_pass_reads_and_writes_only_the_members_that_changed(
    client: TestClient, admin: dict[str, str], pool: str
) -> None:
    """A pass re-reads (and parses) only member rows changed since the last pass, and
    writes all changed members in one batched statement, whatever their number."""
    db = client.app.state.db  # type: ignore[attr-defined]
    controller = PoolController(db, lambda _: None)
    hosts = [f"edge-{n}" for n in range(1, 5)]
    for n, host in enumerate(hosts):
        add_host(client, host, f"10.80.1.{11 + n}")
        post(client, admin, f"/api/v1/pools/{pool}/hosts", {"host": host}, 201)
    seen: list[tuple[str, Any, bool]] = []

    def note(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        seen.append((" ".join(statement.split()), params, many))

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        controller.reconcile(pool)  # every member is new: all are read
        assert _members_read(seen) == [set(hosts)]
        seen.clear()
        controller.reconcile(pool)  # nothing changed since
        assert _members_read(seen) == []
        for host in hosts[:3]:
            response = client.delete(f"/api/v1/pools/{pool}/hosts/{host}", headers=admin)
            assert response.status_code == 202, response.text
        controller.poke([pool])  # as the API tells the reconciler of a change
        seen.clear()
        controller.reconcile(pool)
    finally:
        event.remove(db.engine, "before_cursor_execute", note)
    # The three asked to leave are read again; edge-4 comes from memory.
    assert _members_read(seen) == [set(hosts[:3])]
    updates = [s for s in seen if s[0].startswith("UPDATE pool_members")]
    # Each plan written is one statement, an executemany on SQLite (the first records the
    # three cordons; the pool is planned again after the controller tries them) ...
    sqlite = db.engine.dialect.name == "sqlite"
    assert updates and all(many is sqlite for _, _, many in updates)
    first = updates[0][1] if sqlite else [updates[0][1]]
    assert set().union(*map(_hosts_in, first)) == set(hosts[:3])  # ... of the three
    with db.session() as s:
        phases = {h: s.get(PoolMemberRow, h).phase for h in hosts}
    assert phases == {**dict.fromkeys(hosts[:3], "Leaving"), "edge-4": "Joining"}


def _hosts_in(params: Any) -> set[str]:
    """The test's host names among a statement's parameters: named or positional, alone,
    in a list (``= ANY``) or in a JSON array (:mod:`tether.store.bulk` on PostgreSQL)."""
    found: set[str] = set()
    for value in params.values() if isinstance(params, dict) else params:
        if isinstance(value, str) and value.startswith("["):
            value = json.loads(value)
        for item in value if isinstance(value, list | tuple) else [value]:
            if str(item).startswith("edge-"):
                found.add(str(item))
    return found


def _members_read(seen: list[tuple[str, Any, bool]]) -> list[set[str]]:
    """The hosts named by each whole-row read of pool members by host."""
    return [
        _hosts_in(params)
        for statement, params, _ in seen
        if statement.startswith("SELECT")
        and "pool_members.spec" in statement
        and ("pool_members.host_name IN" in statement or "host_name = ANY" in statement)
    ]
