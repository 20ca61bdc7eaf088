"""The heartbeat path, built for a hundred thousand hosts: coalesced writes.

A heartbeat does not touch the store. It updates an in-memory table (last seen, health,
version, failing checks) and :meth:`HeartbeatTable.flush` writes everything that changed
in one transaction, once a second by default, in a number of statements that does not
grow with the number of hosts: one batched update for the beats, one for changed agent
versions and checks, and for the hosts whose health changes their state (Registered ->
Ready, Ready -> Unhealthy, Unreachable -> Ready, ...) one guarded update per kind of
transition plus their events (:func:`transition_hosts`). A fleet that comes back after
an outage therefore costs the store a few statements per second, not a transaction per
host in the request path.

If the plane dies, at most one flush interval of heartbeats is lost; the reconciler
(:mod:`tether.controllers.heartbeats`) only marks hosts Unreachable after several missed
intervals, so that loss cannot flip a live host, and a lost transition is made again by
the host's next heartbeat.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, select, tuple_, update
from sqlalchemy.orm import Session

from tether.domain.agent import Heartbeat, health_event
from tether.domain.errors import IllegalTransition
from tether.domain.models import EventType, ObjectKind
from tether.domain.states import HostEvent, HostState, next_host_state
from tether.errors import NotFound
from tether.services import events
from tether.services.resources import state_changed
from tether.store.db import Database
from tether.store.schema import HostAgentRow, HostRow, utcnow

log = logging.getLogger(__name__)


@dataclass
class KnownHost:
    """What the table believes about a host's state (refreshed from the store on doubt)."""

    state: HostState
    version: str | None = None
    failing: dict[str, str] = field(default_factory=dict)


@dataclass
class Beat:
    at: datetime
    healthy: bool
    version: str | None
    failing: dict[str, str]


class HeartbeatTable:
    """Heartbeats of every host, in memory, written to the store in batches."""

    def __init__(self, db: Database, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock
        self._known: dict[str, KnownHost] = {}
        self._pending: dict[str, Beat] = {}
        self._lock = threading.Lock()
        self.flushed = 0

    # --- what the agent server asks ------------------------------------------------------

    def cached(self, name: str) -> KnownHost | None:
        """The host's last known state if it is in memory (no store lookup)."""
        return self._known.get(name)

    def known(self, name: str) -> KnownHost | None:
        """The host's last known state, loading it from the store on first sight."""
        host = self._known.get(name)
        if host is not None:
            return host
        with self.db.session() as session:
            row = session.execute(
                select(HostRow.state, HostAgentRow.agent_version, HostAgentRow.failing_checks)
                .outerjoin(HostAgentRow, HostAgentRow.host_name == HostRow.name)
                .where(HostRow.name == name)
            ).one_or_none()
        if row is None:
            return None
        host = KnownHost(HostState(row[0]), row[1], dict(row[2] or {}))
        self._known[name] = host
        return host

    def preload(self) -> int:
        """Load every host's state in one query (at start: no per-host lookup later)."""
        with self.db.session() as session:
            rows = session.execute(
                select(
                    HostRow.name,
                    HostRow.state,
                    HostAgentRow.agent_version,
                    HostAgentRow.failing_checks,
                ).join(HostAgentRow, HostAgentRow.host_name == HostRow.name)
            ).all()
        for name, state, version, failing in rows:
            self._known.setdefault(name, KnownHost(HostState(state), version, dict(failing or {})))
        return len(rows)

    def forget(self, name: str) -> None:
        self._known.pop(name, None)
        with self._lock:
            self._pending.pop(name, None)

    def note_state(self, name: str, state: HostState) -> None:
        host = self._known.get(name)
        if host is not None:
            host.state = state

    def beat(self, name: str, heartbeat: Heartbeat, now: datetime) -> None:
        """Record a heartbeat; the next :meth:`flush` writes it and any state change."""
        host = self.known(name)
        if host is None:
            raise NotFound("host", name)
        # Agents send their version only on a connection's first heartbeat: keep it.
        version = heartbeat.v if heartbeat.v is not None else host.version
        with self._lock:
            self._pending[name] = Beat(now, heartbeat.healthy, version, dict(heartbeat.f))

    # --- writing ------------------------------------------------------------------------

    def pending_since(self, name: str) -> datetime | None:
        with self._lock:
            beat = self._pending.get(name)
        return beat.at if beat else None

    def flush(self) -> int:
        """Write every heartbeat received since the last flush, and the state changes they
        call for, in one transaction; return how many heartbeats were written."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        hosts = cast(Table, HostRow.__table__)
        agents = cast(Table, HostAgentRow.__table__)
        beats = [
            {"n": name, "t": beat.at, "h": "Healthy" if beat.healthy else "Unhealthy"}
            for name, beat in batch.items()
        ]
        changed = []
        moves: dict[str, tuple[HostEvent, int | None]] = {}
        for name, beat in batch.items():
            host = self._known.get(name)
            if host is None:
                continue
            if (host.version, host.failing) != (beat.version, beat.failing):
                changed.append({"n": name, "v": beat.version, "f": beat.failing})
            event = health_event(host.state, beat.healthy)
            if event is not None:
                moves[name] = (event, None)
        try:
            with self.db.session() as session:
                conn = session.connection()
                conn.execute(
                    update(hosts)
                    .where(hosts.c.name == bindparam("n"))
                    .values(last_heartbeat=bindparam("t"), health=bindparam("h")),
                    beats,
                )
                if changed:
                    conn.execute(
                        update(agents)
                        .where(agents.c.host_name == bindparam("n"))
                        .values(agent_version=bindparam("v"), failing_checks=bindparam("f")),
                        changed,
                    )
                moved = transition_hosts(session, moves, now=self.clock())
        except Exception:
            # Put the batch back (newer beats win) so the next flush retries it.
            with self._lock:
                for name, beat in batch.items():
                    self._pending.setdefault(name, beat)
            raise
        # Only once written: a failed flush must not make the retry think nothing changed.
        for name, beat in batch.items():
            host = self._known.get(name)
            if host is not None:
                host.version, host.failing = beat.version, beat.failing
        for name in moves:
            if name in moved:
                self.note_state(name, moved[name])
            else:  # someone else moved it meanwhile: read it again on its next heartbeat
                self._known.pop(name, None)
        self.flushed += len(beats)
        return len(beats)


#: Hosts per ``IN (...)`` list (well below every driver's limit on parameters).
CHUNK = 1000


def transition_hosts(
    session: Session,
    moves: Mapping[str, tuple[HostEvent, int | None]],
    *,
    now: datetime,
) -> dict[str, HostState]:
    """Apply a life-cycle event to many hosts in the caller's transaction; return the new
    state of each host that moved.

    ``moves`` maps a host to its event and the ``resourceVersion`` it must still have
    (``None``: the one read here). A host whose version changed meanwhile, that is gone,
    or for which the event is not allowed is left alone (it is found again later). The
    statements do not grow with the number of hosts: one read per thousand hosts, one
    guarded update per kind of transition, and the events, one batch per pool
    (:func:`events.record_many`).
    """
    names = sorted(moves)
    groups: dict[tuple[HostState, HostState, HostEvent], list[tuple[str, int]]] = {}
    pools: dict[str, str | None] = {}
    for start in range(0, len(names), CHUNK):
        rows = session.execute(
            select(HostRow.name, HostRow.state, HostRow.pool, HostRow.resource_version).where(
                HostRow.name.in_(names[start : start + CHUNK])
            )
        ).all()
        for name, state, pool, version in rows:
            event, expected = moves[name]
            if expected is not None and expected != version:
                continue
            old = HostState(state)
            try:
                new = next_host_state(old, event, assigned=pool is not None)
            except IllegalTransition:
                continue
            if new != old:
                groups.setdefault((old, new, event), []).append((name, version))
                pools[name] = pool
    hosts = cast(Table, HostRow.__table__)
    moved: dict[str, HostState] = {}
    notes: dict[str | None, list[tuple[ObjectKind, str, str, str, EventType]]] = {}
    for (old, new, event), members in groups.items():
        type_, reason, message = state_changed(old, new, event)
        for start in range(0, len(members), CHUNK):
            done = session.execute(
                update(hosts)
                .where(
                    tuple_(hosts.c.name, hosts.c.resource_version).in_(
                        members[start : start + CHUNK]
                    )
                )
                .values(
                    state=new.value,
                    resource_version=hosts.c.resource_version + 1,
                    updated_at=now,
                )
                .returning(hosts.c.name)
            ).scalars()
            for name in done:
                moved[name] = new
                notes.setdefault(pools[name], []).append(
                    (ObjectKind.HOST, name, reason, message, type_)
                )
    for pool, pool_notes in notes.items():
        events.record_many(session, pool_notes, now=now, pool=pool)
    return moved
