"""Many rows, or many values, in one statement.

With psycopg, an executemany is one statement per row (pipelined, but each still bound,
sent and executed): a rollout wave writes a hundred member rows and hundreds of events in
one transaction, and those statements were a large part of it. SQLAlchemy's multi-row
VALUES form compiles a bind parameter per value, which costs more than it saves. On
PostgreSQL these functions send each column's values as one JSON array and expand them
row by row in SQL: one statement whose shape does not depend on the row count, so
psycopg prepares it once. A column whose value is the same in every row (a write's
time, a pool's name) is bound once, not repeated in an array. SQLite keeps the DBAPI's
executemany (in process: no round trip to save).

For the same reason :func:`among` asks PostgreSQL for ``column = ANY(:array)`` where
``column IN (:a, :b, ...)`` would bind a parameter per value: a hundred hosts' names make
a new statement text each time, which psycopg neither caches nor prepares.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any

import msgspec
from sqlalchemy import (
    JSON,
    ColumnElement,
    Connection,
    DateTime,
    Executable,
    Subquery,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import QueryableAttribute, Session

__all__ = ["among", "among_param", "insert_many", "update_many"]

#: Built statements by (kind, table, parameter names, matched columns, columns bound once).
_BUILT: dict[
    tuple[str, str, tuple[str, ...], tuple[tuple[str, str], ...], frozenset[str]], Executable
] = {}


Column = ColumnElement[Any] | QueryableAttribute[Any]


def among(bind: Connection | Session, column: Column, values: Iterable[Any]) -> ColumnElement[bool]:
    """``column`` is one of ``values``: one array parameter on PostgreSQL (module doc)."""
    expr = _expression(column)
    values = list(values)
    if _dialect(bind) == "postgresql":
        return expr == any_(bindparam(None, values, type_=ARRAY(expr.type)))
    return expr.in_(values)


def among_param(dialect: str, column: Column, key: str) -> ColumnElement[bool]:
    """:func:`among` for a statement built once for ``dialect``: its values are bound as
    parameter ``key`` (a list) when it runs."""
    expr = _expression(column)
    if dialect == "postgresql":
        return expr == any_(bindparam(key, type_=ARRAY(expr.type)))
    return expr.in_(bindparam(key, expanding=True))


def _expression(column: Column) -> ColumnElement[Any]:
    return column.expression if isinstance(column, QueryableAttribute) else column


def _dialect(bind: Connection | Session) -> str:
    if isinstance(bind, Session):
        return bind.get_bind().dialect.name
    return bind.dialect.name


def _columns(rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    columns = tuple(rows[0])
    for row in rows:
        if tuple(row) != columns:
            raise ValueError(f"every row needs the same keys, in order: {columns}")
    return columns


def _elements(table: Table, param: str, column: str) -> ColumnElement[Any]:
    """One column's values, row by row, from one JSON array (:func:`_values`): the
    elements themselves for a JSON column, else their text cast to the column's type.
    Not a typed array: psycopg writes an array's text form by checking and escaping
    every element with regular expressions, which cost more than the statement saved."""
    values = cast(bindparam(param, type_=Text), JSONB)
    if isinstance(table.c[column].type, JSON):
        return func.jsonb_array_elements(values)
    return cast(func.jsonb_array_elements_text(values), table.c[column].type)


def _arrays(table: Table, params: Sequence[tuple[str, str]], once: frozenset[str]) -> Subquery:
    """``SELECT f(:a) AS a, f(:b) AS b, ...`` for (parameter, column) pairs
    (:func:`_elements`): set-returning functions side by side in one select list run in
    step, row by row. A parameter of ``once`` is one value, the same in every row."""
    return select(
        *[
            (
                bindparam(param, type_=table.c[column].type)
                if param in once
                else _elements(table, param, column)
            ).label(param)
            for param, column in params
        ]
    ).subquery("v")


#: JSON text of a column's values: msgspec's encoder writes a hundred operations (90 kB)
#: in a tenth of the time ``json.dumps`` takes, and times as RFC 3339 with their offset,
#: which PostgreSQL reads.
_ENCODE = msgspec.json.Encoder().encode


@cache
def _holds_times(column: ColumnElement[Any]) -> bool:
    kind = column.type
    return isinstance(kind, DateTime) or isinstance(getattr(kind, "impl", None), DateTime)


def _json_array(column: ColumnElement[Any], values: list[Any]) -> str:
    """``values`` as one JSON array's text; a naive time is refused, as a UTC column
    refuses it one row at a time."""
    if _holds_times(column) and any(isinstance(v, datetime) and v.tzinfo is None for v in values):
        raise ValueError("naive datetime given to a UTC column")
    return _ENCODE(values).decode()


def _values(
    table: Table, rows: Sequence[Mapping[str, Any]], params: Sequence[tuple[str, str]]
) -> tuple[frozenset[str], dict[str, Any]]:
    """The parameters bound once and every parameter's value: where every row has the
    same scalar value (a write's time, a pool's name), that value, bound once
    (:func:`_arrays`); else the rows' values as one JSON array (:func:`_elements`). One
    parameter stays an array whatever: the rows' count comes from the arrays."""
    columns = {param: [row[param] for row in rows] for param, _ in params}
    once = set()
    for param, column in params:
        values = columns[param]
        first = values[0]
        if isinstance(table.c[column].type, JSON) or isinstance(first, (dict, list)):
            continue
        if isinstance(first, datetime) and first.tzinfo is None:
            continue  # refused with the arrays (:func:`_json_array`)
        if values.count(first) == len(values):
            once.add(param)
    if len(once) == len(params):
        once.discard(params[0][0])
    sent = {}
    for param, column in params:
        values = columns[param]
        sent[param] = values[0] if param in once else _json_array(table.c[column], values)
    return frozenset(once), sent


def insert_many(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (each with the same keys, column names) into ``table`` in one
    statement on PostgreSQL (module doc)."""
    if not rows:
        return
    columns = _columns(rows)
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), list(rows))
        return
    params = [(c, c) for c in columns]
    once, values = _values(table, rows, params)
    key = ("insert", table.name, columns, (), once)
    statement = _BUILT.get(key)
    if statement is None:
        arrays = _arrays(table, params, once)
        statement = _BUILT[key] = insert(table).from_select(
            list(columns), select(*[arrays.c[c] for c in columns])
        )
    conn.execute(statement, values)


def update_many(
    conn: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    match: Mapping[str, str],
) -> int:
    """Update the rows of ``table`` that ``rows`` name, in one statement on PostgreSQL
    (module doc), and return how many were updated.

    ``match`` maps a column to the key of ``rows`` its value must equal (``{"id":
    "_id", "version": "_seen"}``: a guarded write); every other key of a row is a column
    set to the row's value. Rows must name distinct rows: in one statement, a second
    update of a row is not applied after the first (ValueError)."""
    if not rows:
        return 0
    columns = _columns(rows)
    matched = tuple(match.items())
    named = {tuple(row[param] for _, param in matched) for row in rows}
    if len(named) != len(rows):
        raise ValueError(f"rows name the same row twice (by {', '.join(match)})")
    if conn.dialect.name != "postgresql":
        where = [table.c[column] == bindparam(param) for column, param in matched]
        return int(conn.execute(update(table).where(*where), list(rows)).rowcount)
    guards = {param: column for column, param in matched}
    params = [(name, guards.get(name, name)) for name in columns]
    once, values = _values(table, rows, params)
    key = ("update", table.name, columns, matched, once)
    statement = _BUILT.get(key)
    if statement is None:
        arrays = _arrays(table, params, once)
        statement = _BUILT[key] = (
            update(table)
            .where(*[table.c[column] == arrays.c[param] for column, param in matched])
            .values({name: arrays.c[name] for name in columns if name not in guards})
        )
    return int(conn.execute(statement, values).rowcount)
