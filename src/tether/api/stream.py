"""Events as server-sent events, filterable by object.

The stream polls the store rather than an in-process bus, so it sees events written by
any plane replica, controller or CLI that shares the database. Repeats of an event
(its count went up) are sent again with the new count; the SSE ``id`` is
``<event id>.<count>`` so a client can tell a repeat from a new event.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from tether.api.deps import DB, Config, Viewer
from tether.domain.models import Name, ObjectKind
from tether.services import events
from tether.store.db import Database
from tether.store.schema import utcnow

router = APIRouter(prefix="/api/v1")

#: A comment line every so often keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 15.0


#: Each poll re-reads this much of the past: an event stamped just before a poll but
#: committed just after it is still caught; the ``sent`` set drops the duplicates.
OVERLAP = timedelta(seconds=2)


def _batch(
    db: Database, since: datetime, kind: ObjectKind | None, name: str | None, pool: str | None
) -> list[tuple[str, datetime, str]]:
    with db.session() as session:
        return [
            (
                f"{row.id}.{row.count}",
                row.last_time,
                events.to_event(row).model_dump_json(by_alias=True),
            )
            for row in events.changed_since(session, since, kind=kind, name=name, pool=pool)
        ]


async def _frames(
    request: Request,
    db: Database,
    *,
    since: datetime,
    kind: ObjectKind | None,
    name: str | None,
    pool: str | None,
    poll: float,
    timeout: float | None,
) -> AsyncIterator[str]:
    sent: dict[str, datetime] = {}
    started = last_write = time.monotonic()
    cursor = since
    yield ": stream open\n\n"
    while not await request.is_disconnected():
        polled_at = utcnow()
        for event_id, seen_at, payload in await run_in_threadpool(
            _batch, db, cursor, kind, name, pool
        ):
            if event_id not in sent:
                sent[event_id] = seen_at
                last_write = time.monotonic()
                yield f"id: {event_id}\nevent: event\ndata: {payload}\n\n"
        cursor = max(cursor, polled_at - OVERLAP)
        sent = {k: t for k, t in sent.items() if t >= cursor}
        if timeout is not None and time.monotonic() - started >= timeout:
            return
        if time.monotonic() - last_write >= KEEPALIVE_SECONDS:
            last_write = time.monotonic()
            yield ": keep-alive\n\n"
        await asyncio.sleep(poll)


@router.get(
    "/events/stream",
    tags=["events"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_events(
    request: Request,
    db: DB,
    settings: Config,
    _: Viewer,
    kind: Annotated[ObjectKind | None, Query()] = None,
    name: Annotated[str | None, Query(max_length=253)] = None,
    pool: Annotated[
        Name | None, Query(description="A pool's events and those of its hosts and rollouts.")
    ] = None,
    since: Annotated[
        datetime | None, Query(description="Also send events seen since then (default: now).")
    ] = None,
    timeout_seconds: Annotated[
        float | None,
        Query(alias="timeoutSeconds", gt=0, le=86400, description="Close the stream after this."),
    ] = None,
) -> StreamingResponse:
    start = since or utcnow()
    if start.tzinfo is None:
        start = start.replace(tzinfo=utcnow().tzinfo)
    frames = _frames(
        request,
        db,
        since=start,
        kind=kind,
        name=name,
        pool=pool,
        poll=settings.api.sse_poll_seconds,
        timeout=timeout_seconds,
    )
    return StreamingResponse(
        frames, media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )
