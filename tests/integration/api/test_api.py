"""The REST API on both backends: auth, roles, error shape, audit, paging, streaming."""

from __future__ import annotations

import json
import threading

import pytest
from fastapi.testclient import TestClient

from tether.domain.resources import Role

from ...conftest import wait_until
from .conftest import make_token

CLUSTER = {
    "name": "prod",
    "spec": {
        "kubernetesVersion": "1.34",
        "vpcCIDR": "10.226.0.0/16",
        "serviceCIDR": "172.20.0.0/16",
        "remoteNodeNetworks": ["10.80.0.0/16"],
        "remotePodNetworks": ["10.85.0.0/16"],
    },
}
ERROR_KEYS = {"code", "message"}


def test_health_is_open_and_everything_else_needs_a_token(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    for path in ("/api/v1/clusters", "/api/v1/events", "/api/v1/whoami"):
        response = client.get(path)
        assert response.status_code == 401
        assert response.json()["field"] == "Authorization"
    bad = client.get("/api/v1/clusters", headers={"Authorization": "Bearer tth_nope_nope"})
    assert bad.status_code == 401


def test_roles_limit_what_a_token_may_do(client: TestClient, admin: dict[str, str]) -> None:
    viewer = make_token(client, Role.VIEWER)
    operator = make_token(client, Role.OPERATOR)
    assert client.post("/api/v1/clusters", json=CLUSTER, headers=viewer).status_code == 403
    assert client.post("/api/v1/clusters", json=CLUSTER, headers=operator).status_code == 201
    assert client.get("/api/v1/clusters/prod", headers=viewer).status_code == 200
    assert client.get("/api/v1/audit", headers=operator).status_code == 403
    assert client.get("/api/v1/audit", headers=admin).status_code == 200


def test_bad_input_names_the_field_and_changes_nothing(
    client: TestClient, admin: dict[str, str]
) -> None:
    bad = {"name": "prod", "spec": {**CLUSTER["spec"], "serviceCIDR": "172.20.0.1/16"}}
    response = client.post("/api/v1/clusters", json=bad, headers=admin)
    assert response.status_code == 422
    body = response.json()
    assert body["field"] == "spec.serviceCIDR" and body["rule"] and ERROR_KEYS <= set(body)
    assert client.get("/api/v1/clusters", headers=admin).json()["items"] == []
    garbage = client.post(
        "/api/v1/clusters",
        content=b"{not json",
        headers={**admin, "Content-Type": "application/json"},
    )
    assert garbage.status_code == 422 and garbage.json()["code"] == "invalid"


def test_stale_update_is_409_with_the_error_shape(
    client: TestClient, admin: dict[str, str]
) -> None:
    client.post("/api/v1/clusters", json=CLUSTER, headers=admin)
    update = {"resourceVersion": 1, "spec": {**CLUSTER["spec"], "kubernetesVersion": "1.35"}}
    assert client.put("/api/v1/clusters/prod", json=update, headers=admin).status_code == 200
    stale = client.put("/api/v1/clusters/prod", json=update, headers=admin)
    assert stale.status_code == 409
    assert stale.json()["field"] == "resourceVersion"


def test_every_mutation_is_audited_with_its_result(
    client: TestClient, admin: dict[str, str]
) -> None:
    client.post("/api/v1/clusters", json=CLUSTER, headers=admin)
    client.post("/api/v1/clusters", json=CLUSTER, headers=admin)  # 409
    client.delete("/api/v1/clusters/prod")  # no token
    records = client.get("/api/v1/audit", headers=admin).json()["items"]
    summary = [(r["action"], r["statusCode"], r["result"]) for r in records]
    assert summary == [
        ("POST", 201, "success"),
        ("POST", 409, "failure"),
        ("DELETE", 401, "denied"),
    ]
    assert records[0]["actor"].startswith("token:t-admin:")
    assert records[2]["actor"] == "anonymous"


def test_tokens_are_shown_once_and_stored_hashed(client: TestClient, admin: dict[str, str]) -> None:
    created = client.post("/api/v1/tokens", json={"name": "ci", "role": "operator"}, headers=admin)
    assert created.status_code == 201
    secret = created.json()["token"]
    listed = client.get("/api/v1/tokens", headers=admin).text
    # tth_<id>_<secret>: the secret is base64url and may hold "_" itself.
    assert secret not in listed and secret.split("_", 2)[2] not in listed
    whoami = client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {secret}"}).json()
    assert whoami["role"] == "operator"
    client.delete(f"/api/v1/tokens/{created.json()['id']}", headers=admin)
    revoked = client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {secret}"})
    assert revoked.status_code == 401


def test_list_filters_and_paging(client: TestClient, admin: dict[str, str]) -> None:
    for i in range(5):
        client.post("/api/v1/sites", json={"name": f"s{i}"}, headers=admin)
    first = client.get("/api/v1/sites?limit=2", headers=admin).json()
    assert [s["name"] for s in first["items"]] == ["s0", "s1"] and first["continue"]
    second = client.get(f"/api/v1/sites?limit=2&continue={first['continue']}", headers=admin).json()
    assert [s["name"] for s in second["items"]] == ["s2", "s3"]
    too_big = client.get("/api/v1/sites?limit=100000", headers=admin)
    assert too_big.status_code == 422 and too_big.json()["field"] == "limit"
    events = client.get("/api/v1/events?kind=Site&name=s3", headers=admin).json()["items"]
    assert [(e["objectName"], e["reason"]) for e in events] == [("s3", "Created")]


def test_event_stream_sends_new_events_for_the_chosen_object(
    client: TestClient, admin: dict[str, str]
) -> None:
    def make_sites() -> None:
        hub = client.app.state.event_hub  # type: ignore[attr-defined]
        # Until the stream has subscribed: it sends what happens from then on.
        wait_until(lambda: hub.streams, 30, "the stream subscribed", interval=0.01)
        for name in ("other", "watched"):
            client.post("/api/v1/sites", json={"name": name}, headers=admin)

    threading.Thread(target=make_sites).start()
    received = []
    with client.stream(
        "GET", "/api/v1/events/stream?kind=Site&name=watched&timeoutSeconds=30", headers=admin
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append(json.loads(line[6:]))
                break
    assert [(e["objectName"], e["reason"]) for e in received] == [("watched", "Created")]


@pytest.mark.parametrize("path", ["/nope", "/api/v1/clusters/missing"])
def test_unknown_things_are_404_in_the_error_shape(
    client: TestClient, admin: dict[str, str], path: str
) -> None:
    response = client.get(path, headers=admin)
    assert response.status_code == 404 and ERROR_KEYS <= set(response.json())
