"""Shared fixtures: a fresh database on each backend, an app, tokens.

PostgreSQL comes from ``TETHER_TEST_POSTGRES_URL`` (``make test`` starts a throw-away
server and sets it). Without it the PostgreSQL cases skip with the reason printed,
except under ``CI=true`` where a missing PostgreSQL is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tether.settings import Settings
from tether.store.db import Database, migrate

IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_URL = os.environ.get("TETHER_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def require_postgres() -> str:
    if POSTGRES_URL:
        return POSTGRES_URL
    reason = "PostgreSQL: TETHER_TEST_POSTGRES_URL is not set (make test starts one as root)"
    if IN_CI:
        pytest.fail(f"{reason}; under CI=true this is a failure, not a skip")
    pytest.skip(reason)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to a new, empty database on each backend (one per test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tether.db'}"
        return
    base = make_url(require_postgres())
    name = f"tether_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database.connect(database_url)
    migrate(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    settings = Settings()
    settings.paths.data_dir = tmp_path / "data"
    settings.database.url = database_url
    return settings
