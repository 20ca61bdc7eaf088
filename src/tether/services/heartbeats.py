"""The heartbeat path, built for a hundred thousand hosts: coalesced writes.

A heartbeat does not touch the store. It updates an in-memory table (last seen, health,
version, failing checks) and :meth:`HeartbeatTable.flush` writes everything that changed
in one batch, once a second by default: the store sees one transaction per second
however many hosts beat. Only what must be durable at once goes to the store at once:
a heartbeat whose health changes the host's state (Registered → Ready, Ready →
Unhealthy, Unreachable → Ready, ...) applies that transition in its own transaction,
with its event, before the heartbeat is answered.

If the plane dies, at most one flush interval of "last seen" times is lost; the
reconciler (:mod:`tether.controllers.heartbeats`) only marks hosts Unreachable after
several missed intervals, so that loss cannot flip a live host.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from tether.domain.agent import Heartbeat, health_event
from tether.domain.states import HostEvent, HostState
from tether.errors import Conflict, NotFound
from tether.services import resources as svc
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

    def beat(self, name: str, heartbeat: Heartbeat, now: datetime) -> HostEvent | None:
        """Record a heartbeat; return the life-cycle event it calls for, if any.

        The caller applies a returned event with :meth:`apply` (a store transaction)
        before answering; everything else waits for the next :meth:`flush`.
        """
        host = self.known(name)
        if host is None:
            raise NotFound("host", name)
        healthy = heartbeat.healthy
        # Agents send their version only on a connection's first heartbeat: keep it.
        version = heartbeat.v if heartbeat.v is not None else host.version
        with self._lock:
            self._pending[name] = Beat(now, healthy, version, dict(heartbeat.f))
        return health_event(host.state, healthy)

    def apply(self, name: str, event: HostEvent) -> HostState | None:
        """Apply a health transition now, in its own transaction; return the new state."""
        try:
            with self.db.session() as session:
                host = svc.transition_host(session, name, event)
                self._write_beat(session, name)
        except (Conflict, NotFound) as exc:  # someone else moved it: re-read next time
            log.info("heartbeat transition %s for %s not applied: %s", event.value, name, exc)
            self._known.pop(name, None)
            return None
        self.note_state(name, host.status.state)
        return host.status.state

    def _write_beat(self, session: Session, name: str) -> None:
        with self._lock:
            beat = self._pending.get(name)
        if beat is not None:
            session.execute(
                update(HostRow)
                .where(HostRow.name == name)
                .values(last_heartbeat=beat.at, health="Healthy" if beat.healthy else "Unhealthy")
                .execution_options(synchronize_session=False)
            )

    # --- writing ------------------------------------------------------------------------

    def pending_since(self, name: str) -> datetime | None:
        with self._lock:
            beat = self._pending.get(name)
        return beat.at if beat else None

    def flush(self) -> int:
        """Write every heartbeat received since the last flush in one transaction."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        hosts = cast(Table, HostRow.__table__)
        agents = cast(Table, HostAgentRow.__table__)
        beats = [
            {
                "n": name,
                "t": beat.at,
                "h": "Healthy" if beat.healthy else "Unhealthy",
            }
            for name, beat in batch.items()
        ]
        changed = []
        for name, beat in batch.items():
            host = self._known.get(name)
            if host is not None and (host.version, host.failing) != (beat.version, beat.failing):
                changed.append({"n": name, "v": beat.version, "f": beat.failing})
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
        self.flushed += len(beats)
        return len(beats)
