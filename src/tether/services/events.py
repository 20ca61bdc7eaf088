"""Recording and reading events. Repeats of the same event are counted, not duplicated."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from functools import cache, lru_cache
from typing import Any, cast

from sqlalchemy import Select, Table, bindparam, select, update
from sqlalchemy.orm import Session

from tether.domain.models import (
    EVENT_MESSAGE_MAX,
    EVENT_NAME_MAX,
    EVENT_REASON_PATTERN,
    EventSpec,
    EventType,
    ObjectKind,
)
from tether.domain.resources import Event
from tether.errors import Invalid
from tether.store.bulk import among_param, insert_many
from tether.store.repo import page
from tether.store.schema import EventRow, HostRow, RolloutRow, utcnow

#: Most events one read of :func:`changed_since` returns.
STREAM_BATCH = 1000
#: An identical event within this window bumps the count of the earlier one.
DEDUP_WINDOW = timedelta(minutes=10)


def record(
    session: Session,
    kind: ObjectKind,
    name: str,
    reason: str,
    message: str,
    type: EventType = EventType.NORMAL,
    *,
    now: datetime | None = None,
    pool: str | None = None,
) -> EventRow:
    """Record an event in the caller's transaction, so it lands only if the change lands
    (:func:`record_many`'s rule: a recent identical event is counted again).

    ``pool`` files it under a pool's stream too; a pool's own events and those of a host
    in a pool are filed there without being told."""
    now = now or utcnow()
    if pool is None:
        pool = _pool_of(session, kind, name)
    record_many(session, [(kind, name, reason, message, type)], now=now, pool=pool)
    return session.scalars(
        select(EventRow)
        .where(
            EventRow.object_kind == kind.value,
            EventRow.object_name == name,
            EventRow.type == type.value,
            EventRow.reason == reason,
            EventRow.message == message,
        )
        .order_by(EventRow.id.desc())
        .limit(1)
        .execution_options(populate_existing=True)
    ).one()


_EVENTS = cast(Table, EventRow.__table__)


@cache
def _recent(dialect: str) -> Select[Any]:
    """:func:`record_many`'s search for recent repeats, built once per kind of store: it
    runs for every report of an applied plan, and building it cost more than running it."""
    return select(
        _EVENTS.c.id,
        _EVENTS.c.object_kind,
        _EVENTS.c.object_name,
        _EVENTS.c.type,
        _EVENTS.c.reason,
        _EVENTS.c.message,
    ).where(
        # kind and name: the (object_kind, object_name) index finds them
        among_param(dialect, _EVENTS.c.object_kind, "kinds"),
        among_param(dialect, _EVENTS.c.object_name, "names"),
        among_param(dialect, _EVENTS.c.reason, "reasons"),
        _EVENTS.c.last_time >= bindparam("since", type_=_EVENTS.c.last_time.type),
    )


_REPEATED = (
    update(_EVENTS)
    .where(_EVENTS.c.id == bindparam("event_id"))
    .values(
        count=_EVENTS.c.count + bindparam("repeats"),
        last_time=bindparam("at", type_=_EVENTS.c.last_time.type),
    )
)


_REASON = re.compile(EVENT_REASON_PATTERN)


@lru_cache(maxsize=1024)  # reasons are a few dozen words from code
def _plain_reason(reason: str) -> bool:
    return _REASON.fullmatch(reason) is not None


def _checked(
    note: tuple[ObjectKind, str, str, str, EventType],
) -> tuple[str, str, str, str, str]:
    """(kind, name, type, reason, message) of a note as :class:`EventSpec` stores it.

    A rollout wave records hundreds of events, nearly all already in that form (a few
    comparisons tell: built in code, of the known kinds, stripped, within the lengths);
    only any other note goes through the model, which normalises it or refuses it, naming
    the rule. Building the model for each took 4 us."""
    kind, name, reason, message, type_ = note
    if (
        type(kind) is ObjectKind
        and type(type_) is EventType
        and type(name) is str
        and type(message) is str
        and type(reason) is str
        and 0 < len(name) <= EVENT_NAME_MAX
        and len(message) <= EVENT_MESSAGE_MAX
        and name.strip() == name
        and message.strip() == message
        and _plain_reason(reason)
    ):
        return (kind.value, name, type_.value, reason, message)
    spec = EventSpec(object_kind=kind, object_name=name, type=type_, reason=reason, message=message)
    return (spec.object_kind.value, spec.object_name, spec.type.value, spec.reason, spec.message)


def record_many(
    session: Session,
    notes: Sequence[tuple[ObjectKind, str, str, str, EventType]],
    *,
    now: datetime,
    pool: str | None,
) -> None:
    """Record many events of one pool at once: an event identical to one recorded within
    :data:`DEDUP_WINDOW` (kind, name, type, reason and message) counts on the latest of
    those; one query finds the recent repeats of all of them, new ones are inserted in one
    statement. The messages are checked like any event's (:class:`EventSpec`)."""
    if not notes:
        return
    keys = [_checked(note) for note in notes]
    session.flush()  # events the session still holds count as recent repeats too
    conn = session.connection()
    recent = conn.execute(
        _recent(conn.dialect.name),
        {
            "kinds": sorted({key[0] for key in keys}),
            "names": sorted({key[1] for key in keys}),
            "reasons": sorted({key[3] for key in keys}),
            "since": now - DEDUP_WINDOW,
        },
    ).all()
    # The latest of identical recent events is the one a repeat counts on.
    seen = {tuple(r[1:]): r.id for r in sorted(recent, key=lambda r: r.id)}
    bumps: dict[int, int] = {}
    new: dict[tuple[str, ...], dict[str, object]] = {}
    for key in keys:
        if key in seen:
            bumps[seen[key]] = bumps.get(seen[key], 0) + 1
        elif key in new:
            new[key]["count"] = int(str(new[key]["count"])) + 1
        else:
            new[key] = {
                "object_kind": key[0],
                "object_name": key[1],
                "type": key[2],
                "reason": key[3],
                "message": key[4],
                "count": 1,
                "first_time": now,
                "last_time": now,
                "pool": pool,
            }
    if bumps:
        conn.execute(
            _REPEATED, [{"event_id": i, "repeats": n, "at": now} for i, n in bumps.items()]
        )
    insert_many(conn, _EVENTS, list(new.values()))


def _pool_of(session: Session, kind: ObjectKind, name: str) -> str | None:
    if kind is ObjectKind.POOL:
        return name
    if kind is ObjectKind.HOST:
        return session.scalars(select(HostRow.pool).where(HostRow.name == name)).first()
    if kind is ObjectKind.ROLLOUT:
        return session.scalars(select(RolloutRow.pool).where(RolloutRow.name == name)).first()
    return None


def to_event(row: EventRow) -> Event:
    return Event.model_validate(row, from_attributes=True)


def list_events(
    session: Session,
    *,
    kind: ObjectKind | None = None,
    name: str | None = None,
    type: EventType | None = None,
    pool: str | None = None,
    limit: int,
    continue_token: str | None,
    newest: bool = False,
) -> tuple[list[Event], str | None]:
    """Events oldest first, a page at a time; or, with ``newest``, the ``limit`` events
    seen last (by last time, so a repeat moves up), newest first, in one page."""
    if newest and continue_token:
        raise Invalid(
            "order=newest returns one page (the newest events); it takes no continue token",
            field="continue",
            rule="order",
        )
    query = select(EventRow)
    if pool is not None:
        query = query.where(EventRow.pool == pool)
    if kind is not None:
        query = query.where(EventRow.object_kind == kind.value)
    if name is not None:
        query = query.where(EventRow.object_name == name)
    if type is not None:
        query = query.where(EventRow.type == type.value)
    if newest:
        query = query.order_by(EventRow.last_time.desc(), EventRow.id.desc()).limit(limit)
        return [to_event(r) for r in session.scalars(query)], None
    rows, token = page(session, query, EventRow.id, limit=limit, continue_token=continue_token)
    return [to_event(r) for r in rows], token


def changed_since(
    session: Session,
    since: datetime,
    *,
    kind: ObjectKind | None = None,
    name: str | None = None,
    pool: str | None = None,
) -> Sequence[EventRow]:
    """Events created or repeated at or after ``since``, oldest first (for streaming)."""
    query = select(EventRow).where(EventRow.last_time >= since)
    if pool is not None:
        query = query.where(EventRow.pool == pool)
    if kind is not None:
        query = query.where(EventRow.object_kind == kind.value)
    if name is not None:
        query = query.where(EventRow.object_name == name)
    return session.scalars(
        query.order_by(EventRow.last_time, EventRow.id).limit(STREAM_BATCH)
    ).all()
