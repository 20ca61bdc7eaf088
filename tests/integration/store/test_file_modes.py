"""The plane's data directory and SQLite files are private whatever the umask."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether.domain import resources as r
from tether.files import private_dir
from tether.services import resources as svc
from tether.store.db import Database, migrate


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 0 for the test: whatever is created gets exactly the mode asked for."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_sqlite_files_are_0600_and_the_data_dir_0700(tmp_path: Path, open_umask: None) -> None:
    data = private_dir(tmp_path / "data")
    db = Database.connect(f"sqlite:///{data / 'tether.db'}")
    try:
        migrate(db.engine)
        with db.session() as s:
            svc.create_site(s, r.SiteCreate(name="dc1"))
        files = {p.name: mode(p) for p in data.iterdir()}
    finally:
        db.dispose()
    assert mode(data) == 0o700
    assert files == {"tether.db": 0o600, "tether.db-wal": 0o600, "tether.db-shm": 0o600}


def test_a_loose_existing_data_dir_and_database_are_tightened(
    tmp_path: Path, open_umask: None
) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o777)
    (data / "tether.db").touch(mode=0o666)
    private_dir(data)
    db = Database.connect(f"sqlite:///{data / 'tether.db'}")
    db.dispose()
    assert (mode(data), mode(data / "tether.db")) == (0o700, 0o600)
