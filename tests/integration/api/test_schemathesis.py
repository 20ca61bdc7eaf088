"""Property-based fuzzing of every operation in the published OpenAPI: no server errors.

The app runs on SQLite with the demo objects loaded, so generated requests hit real
objects as well as missing ones. The event stream is excluded: it is open-ended by
design and has its own test.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tether.api.app import create_app
from tether.domain.resources import Role, TokenCreate
from tether.services import tokens
from tether.settings import Settings
from tether.sim import demo


def _build() -> tuple[Any, dict[str, str]]:
    """The app, its data and an admin token; built at import because the schema needs it."""
    config = Settings()
    data = Path(tempfile.mkdtemp(prefix="tether-fuzz-"))
    config.paths.data_dir = data
    config.database.url = f"sqlite:///{data / 'tether.db'}"
    app = create_app(config)
    with TestClient(app):  # runs the lifespan: migrations
        pass
    with app.state.db.session() as session:
        demo.load(session)
        issued = tokens.issue(
            session, TokenCreate(name="fuzz", role=Role.ADMIN), default_ttl_days=1
        )
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    return schema.exclude(path="/api/v1/events/stream"), {"Authorization": f"Bearer {issued.token}"}


schema, TOKEN = _build()


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_operation_returns_a_server_error(case: Any) -> None:
    case.call_and_validate(headers=TOKEN, checks=[not_a_server_error])
