"""Events as server-sent events, filterable by object.

Streams read the store rather than an in-process bus, so they see events written by any
plane replica, controller or CLI that shares the database. One poller per process
(:class:`EventHub`) reads new events once per ``TETHER_API_SSE_POLL_SECONDS`` and hands
each to every open stream that wants it: a thousand streams cost one query per interval,
not a thousand. On the same tick it asks the store, in one query, which of the open
streams' tokens were revoked or have expired, and ends those streams: a token that no
longer authenticates receives nothing more. Streams are capped per token and in total
(``TETHER_API_MAX_STREAMS_PER_TOKEN``, ``TETHER_API_MAX_STREAMS``; 429 beyond).

Repeats of an event (its count went up) are sent again with the new count; the SSE
``id`` is ``<event id>.<count>`` so a client can tell a repeat from a new event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from tether.api.deps import Principal, Viewer
from tether.domain.models import Name, ObjectKind
from tether.errors import Invalid, TooManyRequests
from tether.services import events, tokens
from tether.store.db import Database
from tether.store.schema import EventRow, utcnow

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1")

#: A comment line every so often keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 15.0
#: Each poll re-reads this much of the past: an event stamped just before a poll but
#: committed just after it is still caught; the ``seen`` map drops the duplicates.
OVERLAP = timedelta(seconds=2)
#: Frames a stream may have waiting; a client that reads slower than that is cut off
#: (it reconnects with ``since``) rather than growing the plane's memory.
QUEUE_FRAMES = 1000
#: ``since`` may not lie further ahead than this (clock skew between client and plane).
SKEW = timedelta(days=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Frame = tuple[str, str]  # (SSE id, the whole frame)


@dataclass(frozen=True)
class Sent:
    """An event as streams see it: what they filter on, and its frame."""

    event_id: str
    seen_at: datetime
    kind: ObjectKind
    name: str
    pool: str | None
    frame: str

    @classmethod
    def of(cls, row: EventRow) -> Sent:
        event_id = f"{row.id}.{row.count}"
        payload = events.to_event(row).model_dump_json(by_alias=True)
        frame = f"id: {event_id}\nevent: event\ndata: {payload}\n\n"
        return cls(
            event_id, row.last_time, ObjectKind(row.object_kind), row.object_name, row.pool, frame
        )


@dataclass(eq=False)
class Subscription:
    """One open stream: its token, its filter, and frames waiting to be sent."""

    token_id: str
    expires_at: datetime
    kind: ObjectKind | None
    name: str | None
    pool: str | None
    #: Events last seen before this are not sent live (the backlog covers ``since``).
    start: datetime
    queue: asyncio.Queue[Frame | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_FRAMES))
    #: Why the stream ends (a comment sent before it closes), once it must.
    ended: str | None = None

    def wants(self, event: Sent) -> bool:
        return (
            event.seen_at >= self.start
            and (self.kind is None or self.kind is event.kind)
            and self.name in (None, event.name)
            and self.pool in (None, event.pool)
        )

    def end(self, why: str) -> None:
        if self.ended is None:
            self.ended = why
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)

    def offer(self, frame: Frame) -> None:
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.ended = "the client reads too slowly; reconnect with since"


class EventHub:
    """One store poll for every open stream of this process."""

    def __init__(
        self,
        db: Database,
        *,
        poll_seconds: float,
        max_streams: int,
        max_per_token: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.poll_seconds = poll_seconds
        self.max_streams = max_streams
        self.max_per_token = max_per_token
        self.clock = clock
        self.streams: set[Subscription] = set()
        self._cursor = clock()
        self._seen: dict[str, datetime] = {}
        self.polls = 0

    def subscribe(
        self,
        principal: Principal,
        kind: ObjectKind | None,
        name: str | None,
        pool: str | None = None,
        since: datetime | None = None,
    ) -> Subscription:
        if len(self.streams) >= self.max_streams:
            raise TooManyRequests(
                f"{self.max_streams} event streams are open on this plane; try again later",
                field="Authorization",
                rule="streams.total",
            )
        mine = sum(1 for s in self.streams if s.token_id == principal.token_id)
        if mine >= self.max_per_token:
            raise TooManyRequests(
                f"this token has {mine} event streams open, the most one token may hold; "
                "close one first",
                field="Authorization",
                rule="streams.per_token",
            )
        if not self.streams:
            self._cursor = self.clock() - OVERLAP  # idle until now: start from here
            self._seen.clear()
        sub = Subscription(
            principal.token_id, principal.expires_at, kind, name, pool, since or self.clock()
        )
        self.streams.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self.streams.discard(sub)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll while streams are open, until ``stop`` is set (the app's lifetime)."""
        while not stop.is_set():
            if self.streams:
                try:
                    await self.tick()
                except Exception:
                    log.exception("the event stream poll failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_seconds)
        self.close()

    def close(self) -> None:
        """End every open stream: each sends its closing comment and completes its
        response, so a stopping server has no request left to cancel."""
        for sub in list(self.streams):
            sub.end("the plane is shutting down")

    async def tick(self) -> None:
        now = self.clock()
        token_ids = {s.token_id for s in self.streams}
        rows, dead = await run_in_threadpool(self._read, self._cursor, token_ids, now)
        self.polls += 1
        for event in rows:
            if event.event_id in self._seen:
                continue
            self._seen[event.event_id] = event.seen_at
            for sub in self.streams:
                if sub.ended is None and sub.wants(event):
                    sub.offer((event.event_id, event.frame))
        # A full batch: read on from its last event next time, not from now.
        full = len(rows) >= events.STREAM_BATCH
        self._cursor = max(self._cursor, rows[-1].seen_at if full else now - OVERLAP)
        self._seen = {k: t for k, t in self._seen.items() if t >= self._cursor}
        for sub in self.streams:
            if sub.token_id in dead or sub.expires_at <= now:
                sub.end("the token was revoked or has expired")

    def _read(
        self, since: datetime, token_ids: set[str], now: datetime
    ) -> tuple[list[Sent], set[str]]:
        with self.db.session() as session:
            rows = [Sent.of(row) for row in events.changed_since(session, since)]
            return rows, tokens.dead(session, token_ids, now=now)

    def backlog(self, sub: Subscription, since: datetime) -> list[Sent]:
        """A new stream's events since ``since`` (read once, before it goes live)."""
        with self.db.session() as session:
            rows = events.changed_since(session, since, kind=sub.kind, name=sub.name, pool=sub.pool)
            return [Sent.of(row) for row in rows]


async def _frames(
    hub: EventHub, sub: Subscription, since: datetime | None, timeout: float | None
) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    try:
        yield ": stream open\n\n"
        replayed: set[str] = set()
        if since is not None:
            for event in await run_in_threadpool(hub.backlog, sub, since):
                replayed.add(event.event_id)
                yield event.frame
        while sub.ended is None or not sub.queue.empty():
            wait = (
                KEEPALIVE_SECONDS
                if deadline is None
                else min(KEEPALIVE_SECONDS, deadline - loop.time())
            )
            if wait <= 0:
                return
            try:
                item = await asyncio.wait_for(sub.queue.get(), wait)
            except TimeoutError:
                if deadline is None or loop.time() < deadline:
                    yield ": keep-alive\n\n"
                continue
            if item is None:
                break
            if item[0] not in replayed:
                yield item[1]
        yield f": stream closed: {sub.ended}\n\n"
    finally:
        hub.unsubscribe(sub)


def _since(value: datetime | None) -> datetime | None:
    """``since`` in UTC, or a 422: a time the store cannot compare is refused here."""
    if value is None:
        return None
    try:
        since = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(UTC)
    except OverflowError:
        since = EPOCH - timedelta(days=1)
    if not EPOCH <= since <= utcnow() + SKEW:
        raise Invalid(
            "since must be a time between 1970 and now (RFC 3339, with its offset)",
            field="since",
            rule="range",
        )
    return since


def hub_of(request: Request) -> EventHub:
    hub: EventHub = request.app.state.event_hub
    return hub


@router.get(
    "/events/stream",
    tags=["events"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_events(
    request: Request,
    principal: Viewer,
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
    start = _since(since)
    hub = hub_of(request)
    sub = hub.subscribe(principal, kind, name, pool, start)
    return StreamingResponse(
        _frames(hub, sub, start, timeout_seconds),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
        background=BackgroundTask(hub.unsubscribe, sub),
    )
