"""Generic repository operations over resource rows, with optimistic concurrency.

An update names the ``resource_version`` it read; the write is a single
``UPDATE ... WHERE id = :id AND resource_version = :seen`` so two writers racing on the
same object cannot both win, on SQLite or PostgreSQL.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Select, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tether.domain.base import INT64_MAX
from tether.errors import Conflict, Invalid, NotFound
from tether.store.schema import ResourceMixin, utcnow

T = TypeVar("T")
ResT = TypeVar("ResT", bound=ResourceMixin)


def encode_continue(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{last_id}".encode()).decode().rstrip("=")


def decode_continue(token: str | None) -> int:
    """Decode a page token; a token the server did not make is a clear 422, never a 500."""
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        prefix, _, value = text.partition(":")
        if prefix != "id" or not value.isdigit() or int(value) > INT64_MAX:
            raise ValueError(text)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Invalid(
            "not a continue token issued by this server", field="continue", rule="token"
        ) from None


def page(
    session: Session,
    query: Select[Any],
    id_column: Any,
    *,
    limit: int,
    continue_token: str | None,
    newest_first: bool = False,
) -> tuple[list[Any], str | None]:
    """Run ``query`` keyset-paginated by id: stable under inserts, O(limit) per page;
    ``newest_first`` walks from the highest id down."""
    after = decode_continue(continue_token)
    if newest_first:
        if after:
            query = query.where(id_column < after)
        query = query.order_by(id_column.desc())
    else:
        query = query.where(id_column > after).order_by(id_column)
    rows = session.scalars(query.limit(limit + 1))
    items: list[Any] = list(rows)
    more = len(items) > limit
    items = items[:limit]
    next_token = encode_continue(int(getattr(items[-1], "id"))) if more else None  # noqa: B009
    return items, next_token


def by_host(session: Session, row_cls: type[T], names: Sequence[str]) -> dict[str, T]:
    """Rows of a per-host table (keyed by ``host_name``) for these hosts, by host name."""
    if not names:
        return {}
    key = "host_name"  # every per-host table's key column
    rows = session.scalars(select(row_cls).where(getattr(row_cls, key).in_(names)))
    return {str(getattr(row, key)): row for row in rows}


def get_by(
    session: Session, row_cls: type[T], kind: str, name: str, *where: ColumnElement[bool]
) -> T:
    row = session.scalars(select(row_cls).where(*where)).one_or_none()
    if row is None:
        raise NotFound(kind, name)
    return row


def get_named(session: Session, row_cls: type[ResT], kind: str, name: str) -> ResT:
    return get_by(session, row_cls, kind, name, row_cls.name == name)


def insert(session: Session, row: T, kind: str, name: str) -> T:
    """Insert ``row``; a duplicate key is a 409 rather than an integrity error."""
    session.add(row)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict(f"{kind} {name!r} already exists", field="name", rule="unique") from None
    return row


def update_checked(
    session: Session,
    row: ResT,
    kind: str,
    expected_version: int | None,
    values: Mapping[str, Any],
) -> ResT:
    """Write ``values`` if the row still has ``expected_version`` (None: unconditional)."""
    row_cls = type(row)
    seen = row.resource_version if expected_version is None else expected_version
    stmt = (
        update(row_cls)
        .where(row_cls.id == row.id, row_cls.resource_version == seen)
        .values(resource_version=seen + 1, updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    if session.execute(stmt).rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(
            f"{kind} {row.name!r} was changed by someone else (you sent resourceVersion "
            f"{seen}): read it again and retry",
            field="resourceVersion",
            rule="current",
        )
    session.refresh(row)
    return row


def delete_checked(session: Session, row: ResT, kind: str, expected_version: int | None) -> None:
    """Delete ``row``; with ``expected_version``, only if it still has that version.

    Like :func:`update_checked`, the version check is in the statement itself, so a
    change committed by someone else after the caller read the object makes this a
    409, not a lost update. Without a version the caller asked for no such check (a
    heartbeat landing meanwhile must not make a plain delete fail).
    """
    row_cls = type(row)
    where = [row_cls.id == row.id]
    if expected_version is not None:
        where.append(row_cls.resource_version == expected_version)
    stmt = delete(row_cls).where(*where).execution_options(synchronize_session=False)
    try:
        with session.begin_nested():
            deleted = session.execute(stmt).rowcount  # type: ignore[attr-defined]
    except IntegrityError:
        raise Conflict(
            f"{kind} {row.name!r} is still referenced by other objects",
            field="name",
            rule="in_use",
        ) from None
    if deleted != 1:
        raise Conflict(
            f"{kind} {row.name!r} was changed or deleted by someone else meanwhile: "
            "read it again and retry",
            field="resourceVersion",
            rule="current",
        )
    session.expunge(row)
