"""One store poll feeds every open event stream; streams end with their token."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import event as sa_event

from tether.api.deps import Principal
from tether.api.stream import EventHub, Subscription
from tether.domain.models import ObjectKind
from tether.domain.resources import Role, TokenCreate
from tether.errors import TooManyRequests
from tether.services import events, tokens
from tether.store.db import Database
from tether.store.schema import utcnow


def principal(db: Database, name: str, ttl_days: int = 1) -> Principal:
    with db.session() as s:
        issued = tokens.issue(
            s, TokenCreate(name=name, role=Role.VIEWER), default_ttl_days=ttl_days
        )
    return Principal(f"token:{name}", Role.VIEWER, issued.id, issued.expires_at)


def hub(db: Database, **caps: int) -> EventHub:
    return EventHub(
        db,
        poll_seconds=0.1,
        max_streams=caps.get("max_streams", 1000),
        max_per_token=caps.get("max_per_token", 1000),
    )


def drain(sub: Subscription) -> list[str | None]:
    items: list[str | None] = []
    while not sub.queue.empty():
        item = sub.queue.get_nowait()
        items.append(None if item is None else item[0])
    return items


def test_one_query_per_tick_feeds_every_stream(db: Database) -> None:
    statements: list[str] = []
    sa_event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))

    async def main() -> tuple[list[list[str | None]], list[list[str | None]]]:
        events_hub = hub(db)
        viewer = principal(db, "v")
        sites = [events_hub.subscribe(viewer, ObjectKind.SITE, None) for _ in range(50)]
        hosts = [events_hub.subscribe(viewer, ObjectKind.HOST, "h1") for _ in range(50)]
        with db.session() as s:
            events.record(s, ObjectKind.SITE, "dc1", "Created", "made")
            events.record(s, ObjectKind.HOST, "h2", "Created", "made")
        statements.clear()
        for _ in range(3):
            await events_hub.tick()
        assert events_hub.polls == 3
        return [drain(s) for s in sites], [drain(s) for s in hosts]

    sites, hosts = asyncio.run(main())
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 3 * 2  # per tick: new events, and which tokens died
    assert all(items == ["1.1"] for items in sites)  # once each, not once per tick
    assert all(items == [] for items in hosts)  # h2 is not the host they watch


def test_streams_are_capped_per_token_and_in_total(db: Database) -> None:
    events_hub = hub(db, max_streams=3, max_per_token=2)
    one, two = principal(db, "one"), principal(db, "two")
    events_hub.subscribe(one, None, None)
    events_hub.subscribe(one, None, None)
    with pytest.raises(TooManyRequests) as per_token:
        events_hub.subscribe(one, None, None)
    assert per_token.value.rule == "streams.per_token"
    last = events_hub.subscribe(two, None, None)
    with pytest.raises(TooManyRequests) as total:
        events_hub.subscribe(two, None, None)
    assert total.value.rule == "streams.total"
    events_hub.unsubscribe(last)
    events_hub.subscribe(two, None, None)


def test_a_revoked_or_expired_token_ends_its_streams(db: Database) -> None:
    async def main() -> list[str | None]:
        events_hub = hub(db)
        revoked, live = principal(db, "revoked"), principal(db, "live")
        expiring = principal(db, "expiring")
        soon = Principal(
            expiring.name, expiring.role, expiring.token_id, utcnow() + timedelta(seconds=0.2)
        )
        subs = [events_hub.subscribe(p, None, None) for p in (revoked, live, soon)]
        with db.session() as s:
            tokens.revoke(s, revoked.token_id)
        await asyncio.sleep(0.3)
        await events_hub.tick()
        return [s.ended for s in subs]

    ended = asyncio.run(main())
    gone = "the token was revoked or has expired"
    assert ended == [gone, None, gone]
