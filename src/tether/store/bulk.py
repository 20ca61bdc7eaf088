"""Many rows in one statement.

With psycopg, an executemany of an INSERT is one statement per row (pipelined, but each
still bound, sent and executed): a rollout wave records hundreds of events in one write,
and those rows were a large part of it. SQLAlchemy's multi-row VALUES form compiles a
bind parameter per value, which costs more than it saves. On PostgreSQL,
:func:`insert_many` sends one array per column and inserts the rows with ``unnest``: one
statement whose shape does not depend on the row count, so psycopg prepares it once.
SQLite keeps the DBAPI's executemany (in process: no round trip to save).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Insert, Table, bindparam, func, insert, select
from sqlalchemy.dialects.postgresql import ARRAY

__all__ = ["insert_many"]

_UNNESTS: dict[tuple[str, tuple[str, ...]], Insert] = {}


def _unnest_insert(table: Table, columns: tuple[str, ...]) -> Insert:
    """``INSERT INTO table (columns) SELECT unnest(:a), unnest(:b), ...``: set-returning
    functions side by side in one select list run in step, row by row."""
    key = (table.name, columns)
    statement = _UNNESTS.get(key)
    if statement is None:
        arrays = [
            func.unnest(bindparam(name, type_=ARRAY(table.c[name].type))).label(name)
            for name in columns
        ]
        statement = insert(table).from_select(list(columns), select(*arrays))
        _UNNESTS[key] = statement
    return statement


def insert_many(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (each with the same keys) into ``table`` in one statement on
    PostgreSQL, with the DBAPI's executemany elsewhere (module doc)."""
    if not rows:
        return
    columns = tuple(rows[0])
    for row in rows:
        if tuple(row) != columns:
            raise ValueError(f"insert_many: every row needs the columns {columns}")
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), list(rows))
        return
    conn.execute(
        _unnest_insert(table, columns), {name: [row[name] for row in rows] for name in columns}
    )
