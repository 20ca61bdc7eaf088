from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tether.api.app import create_app
from tether.domain.resources import Role, TokenCreate
from tether.services import tokens
from tether.settings import Settings


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
