"""The people's API against careless and hostile requests, on both backends.

Bodies are bounded before they are read and the token is checked before the body is
parsed; out-of-range numbers, booleans as numbers, unknown keys, broken or deep JSON and
far-away times are refused with a 4xx naming the field, in the error shape; refusals and
failed changes reach the audit log, attributed to the token that sent them, and
anonymous refusals are rate-limited there.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tether.api.app import create_app
from tether.api.limits import MAX_JSON_DEPTH
from tether.domain.resources import Role
from tether.settings import Settings

from .conftest import make_token

INT64_OVER = str(1 << 63)
JSON = {"Content-Type": "application/json"}


def nested(depth: int) -> dict[str, object]:
    doc: dict[str, object] = {"leaf": 1}
    for _ in range(depth - 1):
        doc = {"a": doc}
    return doc


def refusal(response: object, status: int, field: str, rule: str | None = None) -> None:
    """``response`` is a ``status`` in the error shape naming ``field`` (and ``rule``)."""
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert {"code", "message"} <= set(body) and body["code"] != "http_error", body
    assert body["field"] == field, body
    if rule is not None:
        assert body["rule"] == rule, body


def audit_rows(client: TestClient, admin: dict[str, str]) -> list[tuple[str, str, str, int]]:
    items = client.get("/api/v1/audit?limit=1000", headers=admin).json()["items"]
    return [(r["actor"], r["action"], r["target"], r["statusCode"]) for r in items]


# Sizes -----------------------------------------------------------------------------------


def test_an_oversize_body_is_refused_before_it_is_read_or_authenticated(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    big = b"x" * (settings.api.max_body_bytes + 1)
    response = client.post("/api/v1/sites", content=big, headers=JSON)
    refusal(response, 413, "body", "max_bytes")
    assert response.headers["connection"] == "close"

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(3):
            yield b"x" * settings.api.max_body_bytes
        yield b'"}'

    streamed = client.post("/api/v1/sites", content=chunks(), headers={**admin, **JSON})
    refusal(streamed, 413, "body", "max_bytes")
    assert client.get("/api/v1/sites", headers=admin).json()["items"] == []


def test_a_desired_state_document_has_its_own_limit(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    client.post("/api/v1/sites", json={"name": "dc1"}, headers=admin)
    client.post("/api/v1/hosts", json={"name": "h1", "spec": {"site": "dc1"}}, headers=admin)
    blob = "y" * settings.api.max_desired_state_bytes
    response = client.put("/api/v1/hosts/h1/desired", json={"document": {"b": blob}}, headers=admin)
    refusal(response, 413, "body", "max_bytes")
    small = client.put("/api/v1/hosts/h1/desired", json={"document": {"b": "y"}}, headers=admin)
    assert small.status_code == 200, small.text


def test_the_body_is_not_parsed_before_the_token_is_checked(client: TestClient) -> None:
    for body in (b"{not json", b"[" * 100_000, b'{"name": "\xff"}'):
        response = client.post("/api/v1/sites", content=body, headers=JSON)
        refusal(response, 401, "Authorization", "required")


# Numbers, booleans, keys ---------------------------------------------------------------------


def test_numbers_beyond_64_bits_are_422_naming_the_field(
    client: TestClient, admin: dict[str, str]
) -> None:
    client.post("/api/v1/sites", json={"name": "dc1"}, headers=admin)
    deleted = client.delete(f"/api/v1/sites/dc1?resourceVersion={INT64_OVER}", headers=admin)
    refusal(deleted, 422, "resourceVersion")
    put = client.put(
        "/api/v1/sites/dc1", json={"resourceVersion": int(INT64_OVER), "spec": {}}, headers=admin
    )
    refusal(put, 422, "resourceVersion", "int64_range")
    cursor = base64.urlsafe_b64encode(f"id:{INT64_OVER}".encode()).decode().rstrip("=")
    refusal(client.get(f"/api/v1/sites?continue={cursor}", headers=admin), 422, "continue")
    assert client.get("/api/v1/sites/dc1", headers=admin).json()["resourceVersion"] == 1


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/activations", {"site": "dc1", "expiresIn": True}, "expiresIn"),
        ("/api/v1/activations", {"site": "dc1", "maxRegistrations": True}, "maxRegistrations"),
        ("/api/v1/tokens", {"name": "t", "role": "viewer", "ttlDays": True}, "ttlDays"),
    ],
)
def test_booleans_are_not_numbers(
    client: TestClient, admin: dict[str, str], path: str, body: dict[str, object], field: str
) -> None:
    client.post("/api/v1/sites", json={"name": "dc1"}, headers=admin)
    refusal(client.post(path, json=body, headers=admin), 422, field, "bool_not_number")
    assert client.get("/api/v1/activations", headers=admin).json()["items"] == []


def test_network_plan_refuses_unknown_keys(client: TestClient, admin: dict[str, str]) -> None:
    response = client.post("/api/v1/network/plan", json={"document": {}, "bogus": 1}, headers=admin)
    refusal(response, 422, "bogus", "extra_forbidden")


# JSON ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        (b'{"name": "\xff\xfe"}', "body", "json.utf8"),
        (b'{"name": "s1",', "body", "json.syntax"),
        (b'{"name": NaN}', "body", "json.syntax"),
        (b"[" * 100_000, "body", "json.depth"),
        (json.dumps(nested(MAX_JSON_DEPTH + 1)).encode(), "a", "json.depth"),
    ],
)
def test_broken_json_is_422_naming_the_body(
    client: TestClient, admin: dict[str, str], body: bytes, field: str, rule: str
) -> None:
    response = client.post("/api/v1/sites", content=body, headers={**admin, **JSON})
    refusal(response, 422, field, rule)


def test_a_document_too_deep_to_serve_back_is_never_stored(
    client: TestClient, admin: dict[str, str]
) -> None:
    client.post("/api/v1/sites", json={"name": "dc1"}, headers=admin)
    client.post("/api/v1/hosts", json={"name": "h1", "spec": {"site": "dc1"}}, headers=admin)
    deep = client.put("/api/v1/hosts/h1/desired", json={"document": nested(300)}, headers=admin)
    refusal(deep, 422, "document", "json.depth")
    assert client.get("/api/v1/hosts/h1/desired", headers=admin).status_code == 404
    fits = nested(MAX_JSON_DEPTH - 2)
    ok = client.put("/api/v1/hosts/h1/desired", json={"document": fits}, headers=admin)
    assert ok.status_code == 200, ok.text
    assert client.get("/api/v1/hosts/h1/desired", headers=admin).json()["document"] == fits


def test_missing_bodies_and_unknown_paths_name_their_field(
    client: TestClient, admin: dict[str, str]
) -> None:
    refusal(client.post("/api/v1/sites", headers=admin), 422, "body", "missing")
    refusal(client.get("/api/v1/nope", headers=admin), 404, "path")
    refusal(client.patch("/api/v1/sites", headers=admin), 405, "method")


@pytest.mark.parametrize(
    "since", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "1969-12-31T00:00:00Z"]
)
def test_stream_since_out_of_range_is_422(
    client: TestClient, admin: dict[str, str], since: str
) -> None:
    response = client.get(
        "/api/v1/events/stream", params={"since": since, "timeoutSeconds": 1}, headers=admin
    )
    refusal(response, 422, "since", "range")


# Secrets -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["token", "access_token", "t"])
def test_a_token_in_a_query_string_is_refused(
    client: TestClient, admin: dict[str, str], name: str
) -> None:
    token = admin["Authorization"].split()[1]
    response = client.get(f"/api/v1/whoami?{name}={token}", headers=admin)
    refusal(response, 422, name, "token_in_query")
    assert token not in response.text


# Audit -------------------------------------------------------------------------------------


def test_refusals_are_audited_and_attributed_to_the_token_that_sent_them(
    client: TestClient, admin: dict[str, str]
) -> None:
    viewer = make_token(client, Role.VIEWER)
    viewer_id = viewer["Authorization"].split("_")[1]
    assert client.post("/api/v1/sites", json={"name": "s"}, headers=viewer).status_code == 403
    client.delete(f"/api/v1/tokens/{viewer_id}", headers=admin)
    assert client.get("/api/v1/sites", headers=viewer).status_code == 401
    rows = audit_rows(client, admin)
    actor = f"token:t-viewer:{viewer_id}"
    assert (actor, "POST", "/api/v1/sites", 403) in rows
    assert (actor, "GET", "/api/v1/sites", 401) in rows


def test_a_change_that_ends_in_a_server_error_is_audited(settings: Settings) -> None:
    app = create_app(settings)

    def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/api/v1/boom", boom, methods=["POST"])
    with TestClient(app, raise_server_exceptions=False) as client:
        headers = make_token(client, Role.ADMIN)
        assert client.post("/api/v1/boom", headers=headers).status_code == 500
        rows = audit_rows(client, headers)
    assert [(a, t, s) for a, _, t, s in rows if t == "/api/v1/boom"] == [
        (rows[0][0], "/api/v1/boom", 500)
    ]
    assert rows[0][0].startswith("token:t-admin:")


def _app(settings: Settings) -> FastAPI:
    settings.audit.anonymous_burst = 5
    settings.audit.anonymous_per_second = 0.001
    return create_app(settings)


def test_anonymous_refusals_are_rate_limited_in_the_audit(settings: Settings) -> None:
    with TestClient(_app(settings)) as client:
        for _ in range(40):
            assert client.post("/api/v1/sites", json={"name": "x"}).status_code == 401
        admin = make_token(client, Role.ADMIN)
        before_flush = audit_rows(client, admin)
        client.app.state.auditor.flush()  # type: ignore[attr-defined]
        rows = audit_rows(client, admin)
    anonymous = [r for r in before_flush if r[0] == "anonymous"]
    assert len(anonymous) == 5
    summaries = [r for r in rows if r[1] == "SUPPRESSED"]
    assert [(a, s) for a, _, _, s in summaries] == [("anonymous", 429)]
    assert summaries[0][2].startswith("35 refusals from testclient")
