"""Many rows in one statement (:mod:`tether.store.bulk`), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import pytest
from sqlalchemy import Table, event, select

from tether.store.bulk import insert_many
from tether.store.db import Database
from tether.store.schema import EventRow

pytestmark = pytest.mark.integration

EVENTS = cast(Table, EventRow.__table__)


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


def test_rows_land_as_given_in_their_order_in_one_statement(db: Database) -> None:
    at = datetime(2026, 12, 2, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    rows = [_row(i, at, None if i % 3 == 0 else "pool") for i in range(250)]
    statements: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        statements.append("many" if many else statement)

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        with db.session() as s:
            insert_many(s.connection(), EVENTS, rows)
            insert_many(s.connection(), EVENTS, [])  # nothing to do: no statement
    finally:
        event.remove(db.engine, "before_cursor_execute", note)
    with db.session() as s:
        got = list(s.scalars(select(EventRow).order_by(EventRow.id)))
    assert [(r.object_name, r.message, r.count, r.pool) for r in got] == [
        (r["object_name"], r["message"], r["count"], r["pool"]) for r in rows
    ]
    assert got[7].first_time == at.astimezone(UTC) and got[7].last_time.tzinfo is not None
    assert got[7].last_time == at + timedelta(seconds=7)
    if db.engine.dialect.name == "postgresql":
        assert len(statements) == 1 and "unnest" in statements[0]
    else:
        assert statements == ["many"]


def test_rows_with_different_columns_are_refused_before_anything_is_sent(db: Database) -> None:
    at = datetime.now(UTC)
    short = _row(1, at, "pool")
    del short["pool"]
    with db.session() as s:
        with pytest.raises(ValueError, match="every row needs the columns"):
            insert_many(s.connection(), EVENTS, [_row(0, at, "pool"), short])
        assert s.scalars(select(EventRow)).all() == []
