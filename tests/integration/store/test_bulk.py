"""Many rows in one statement (:mod:`tether.store.bulk`), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest
from sqlalchemy import Table, event, select
from sqlalchemy.exc import StatementError

from tether.sim.seed import seed_running_pool
from tether.store.bulk import among, insert_many, update_many
from tether.store.db import Database
from tether.store.schema import EventRow, PoolMemberRow

pytestmark = pytest.mark.integration

EVENTS = cast(Table, EventRow.__table__)


MEMBERS = cast(Table, PoolMemberRow.__table__)


def _row(i: int, at: datetime, pool: str | None) -> dict[str, Any]:
    return {
        "object_kind": "Host",
        "object_name": f"h{i:04d}",
        "type": "Normal",
        "reason": "Cordoned",
        "message": f"cordoned, 'quoted' \"twice\", {{braces}}, comma, ünïcode #{i}",
        "count": i + 1,
        "first_time": at,
        "last_time": at + timedelta(seconds=i),
        "pool": pool,
    }


@contextmanager
def _sent(db: Database) -> Iterator[list[str]]:
    """The statements sent meanwhile ("many" for an executemany)."""
    statements: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        statements.append("many" if many else statement)

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", note)


def test_rows_land_as_given_in_their_order_in_one_statement(db: Database) -> None:
    at = datetime(2026, 12, 2, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    rows = [_row(i, at, None if i % 3 == 0 else "pool") for i in range(250)]
    with _sent(db) as statements, db.session() as s:
        insert_many(s.connection(), EVENTS, rows)
        insert_many(s.connection(), EVENTS, [])  # nothing to do: no statement
    with db.session() as s:
        got = list(s.scalars(select(EventRow).order_by(EventRow.id)))
    assert [(r.object_name, r.message, r.count, r.pool) for r in got] == [
        (r["object_name"], r["message"], r["count"], r["pool"]) for r in rows
    ]
    assert got[7].first_time == at.astimezone(UTC) and got[7].last_time.tzinfo is not None
    assert got[7].last_time == at + timedelta(seconds=7)
    if db.engine.dialect.name == "postgresql":
        assert len(statements) == 1 and "jsonb_array_elements" in statements[0]
    else:
        assert statements == ["many"]


def test_a_value_every_row_shares_is_sent_once_and_lands_in_every_row(db: Database) -> None:
    """A write's time and pool are the same in each of its rows: bound once, not an
    array; rows alike in every column still land as many times as given."""
    at = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    varying = [_row(i, at, "pool") | {"last_time": at, "count": 1} for i in range(5)]
    alike = [_row(9, at, None) | {"last_time": at, "count": 1} for _ in range(3)]
    with _sent(db) as statements, db.session() as s:
        insert_many(s.connection(), EVENTS, varying)
        insert_many(s.connection(), EVENTS, alike)
    with db.session() as s:
        got = list(s.scalars(select(EventRow).order_by(EventRow.id)))
    assert [(r.object_name, r.message, r.pool, r.count) for r in got] == [
        (r["object_name"], r["message"], r["pool"], 1) for r in varying + alike
    ]
    assert {(r.first_time, r.last_time) for r in got} == {(at, at)}
    if db.engine.dialect.name == "postgresql":
        # object_name and message vary; the other seven columns are bound once
        assert statements[0].count("jsonb_array_elements") == 2
        assert statements[1].count("jsonb_array_elements") == 1  # one array gives the count


def test_rows_with_different_columns_are_refused_before_anything_is_sent(db: Database) -> None:
    at = datetime.now(UTC)
    short = _row(1, at, "pool")
    del short["pool"]
    with db.session() as s:
        with pytest.raises(ValueError, match="every row needs the same keys"):
            insert_many(s.connection(), EVENTS, [_row(0, at, "pool"), short])
        assert s.scalars(select(EventRow)).all() == []


def test_a_naive_time_in_any_row_is_refused_and_nothing_lands(db: Database) -> None:
    at = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
    rows = [_row(i, at, "pool") for i in range(4)]
    rows[2]["last_time"] = datetime(2026, 12, 2, 10, 0)  # no zone: which one is meant?
    with db.session() as s:
        with pytest.raises(
            StatementError if db.engine.dialect.name == "sqlite" else ValueError,
            match="naive datetime",
        ):
            insert_many(s.connection(), EVENTS, rows)
        assert s.scalars(select(EventRow)).all() == []


def test_guarded_updates_count_the_rows_whose_guard_held(db: Database) -> None:
    """The pool reconciler's member write: each row names its host and the version it
    was read at; one whose version moved is not updated, and the count says so."""
    seed_running_pool(db, 4)
    with db.session() as s:
        query = select(PoolMemberRow.host_name, PoolMemberRow.resource_version)
        seen = dict(s.execute(query).all())
    op = {"kind": "update", "steps": ["cordon"], "note": "'quoted' \"twice\" {braces}"}
    rows = [
        {"op": op, "step": "cordon", "resource_version": v + 1, "_host": h, "_seen": v}
        for h, v in sorted(seen.items())
    ]
    rows[3]["_seen"] += 7  # read at a version the row no longer has
    rows[1]["op"], rows[1]["step"] = None, None
    guard = {"host_name": "_host", "resource_version": "_seen"}
    with db.session() as s:
        assert update_many(s.connection(), MEMBERS, rows, guard) == 3
        assert update_many(s.connection(), MEMBERS, [], guard) == 0
    with db.session() as s:
        got = {m.host_name: m for m in s.scalars(select(PoolMemberRow))}
    assert [got[h].op for h in sorted(seen)] == [op, None, op, None]
    assert [got[h].step for h in sorted(seen)] == ["cordon", None, "cordon", None]
    versions = [got[h].resource_version - seen[h] for h in sorted(seen)]
    assert versions == [1, 1, 1, 0]


def test_rows_naming_the_same_row_twice_are_refused(db: Database) -> None:
    """One statement would apply one of the two, not the second after the first."""
    at = datetime.now(UTC)
    with db.session() as s:
        insert_many(s.connection(), EVENTS, [_row(0, at, "pool")])
        first = s.scalars(select(EventRow.id)).one()
        twice = [{"count": 5, "_id": first}, {"count": 6, "_id": first}]
        with pytest.raises(ValueError, match="name the same row twice"):
            update_many(s.connection(), EVENTS, twice, {"id": "_id"})
        assert s.scalars(select(EventRow.count)).one() == 1


def test_among_finds_the_rows_with_one_statement_text_whatever_the_count(db: Database) -> None:
    """On PostgreSQL ``= ANY(:array)``: the text does not grow with the values, so psycopg
    prepares it once; elsewhere an IN list."""
    at = datetime.now(UTC)
    with db.session() as s:
        insert_many(s.connection(), EVENTS, [_row(i, at, "pool") for i in range(80)])
    found = []
    with _sent(db) as statements, db.session() as s:
        for names in (["h0003", "h0077", "nobody"], [f"h{i:04d}" for i in range(0, 80, 2)]):
            query = select(EventRow.object_name).where(among(s, EventRow.object_name, names))
            found.append(sorted(s.scalars(query)))
        assert s.scalars(select(EventRow.id).where(among(s, EventRow.id, []))).all() == []
    assert found == [["h0003", "h0077"], [f"h{i:04d}" for i in range(0, 80, 2)]]
    if db.engine.dialect.name == "postgresql":
        assert statements[0] == statements[1] and "ANY" in statements[0]
    else:
        assert statements[0] != statements[1]
