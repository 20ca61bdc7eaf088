"""The heartbeat reconciler: silent hosts become Unreachable, state follows reported health.

Level-triggered and crash-safe: every pass derives what to do from the store alone
(``hosts.state``, ``hosts.health``, ``hosts.last_heartbeat``), applies its transitions in
one transaction, each guarded by the host's ``resourceVersion``, and keeps no memory
between passes. A crash or restart loses nothing; two planes running it at once cannot
both apply the same transition (the loser's guard fails and it skips the host); a
transition that is not applied is simply found again on the next pass. A pass costs the
store a fixed number of statements however many hosts it moves
(:func:`~tether.services.heartbeats.transition_hosts`).

Rules, for a host with an agent (hosts made by hand and never heard from are left alone):

* no heartbeat for ``missed_heartbeats`` times ``heartbeat_seconds`` (or none since enrolment
  that long ago), while Registered, Ready, In-Use or Unhealthy → ``HeartbeatMissed``
  (Unreachable) — but only once this plane has itself listened that long: after a restart
  the store's last heartbeats are old because nobody received them, not because the hosts
  went quiet, so the whole fleet must not turn Unreachable at once;
* heard from recently but its state disagrees with its reported health (a heartbeat's
  own transition was lost in a crash, or another process changed the state) →
  ``ChecksPassed`` / ``ChecksFailed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select
from starlette.concurrency import run_in_threadpool

from tether.domain.agent import LIVE_STATES, health_event, silence_cutoff
from tether.domain.states import HostEvent, HostState
from tether.metrics import reconciling
from tether.services.heartbeats import HeartbeatTable, transition_hosts
from tether.store.db import Database
from tether.store.schema import HostAgentRow, HostRow, utcnow

log = logging.getLogger(__name__)

#: At most this many hosts are moved per pass, so one pass stays short.
BATCH = 500


@dataclass(frozen=True)
class Transition:
    host: str
    event: HostEvent
    state: HostState


class HeartbeatReconciler:
    def __init__(
        self,
        db: Database,
        *,
        heartbeat_seconds: float,
        missed_heartbeats: int,
        table: HeartbeatTable | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.heartbeat_seconds = heartbeat_seconds
        self.missed = missed_heartbeats
        self.table = table
        self.clock = clock
        #: When this reconciler (and the plane receiving heartbeats) started.
        self.started = clock()

    def _candidates(self, now: datetime) -> list[tuple[str, str, int, str, datetime | None]]:
        cutoff = silence_cutoff(now, self.heartbeat_seconds, self.missed)
        live = [s.value for s in LIVE_STATES]
        silent = and_(
            HostRow.state.in_(live),
            or_(
                HostRow.last_heartbeat < cutoff,
                and_(HostRow.last_heartbeat.is_(None), HostAgentRow.enrolled_at < cutoff),
            ),
        )
        drifted = and_(
            HostRow.last_heartbeat >= cutoff,
            or_(
                and_(
                    HostRow.health == "Healthy",
                    HostRow.state.in_(["Registered", "Unhealthy", "Unreachable"]),
                ),
                and_(
                    HostRow.health == "Unhealthy",
                    HostRow.state.in_(["Registered", "Ready", "InUse", "Unreachable"]),
                ),
            ),
        )
        # Silence counts only once this plane has listened a whole window (filtered here, so
        # hosts it must not judge yet do not use up the pass's BATCH).
        listened = self.started <= cutoff
        with self.db.session() as session:
            rows = session.execute(
                select(
                    HostRow.name,
                    HostRow.state,
                    HostRow.resource_version,
                    HostRow.health,
                    HostRow.last_heartbeat,
                )
                .join(HostAgentRow, HostAgentRow.host_name == HostRow.name)
                .where(or_(silent, drifted) if listened else drifted)
                .order_by(HostRow.id)
                .limit(BATCH)
            ).all()
        return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    def reconcile_once(self, now: datetime | None = None) -> list[Transition]:
        """One pass; returns the transitions it applied."""
        with reconciling("heartbeats"):
            return self._pass(now or self.clock())

    def _pass(self, now: datetime) -> list[Transition]:
        cutoff = silence_cutoff(now, self.heartbeat_seconds, self.missed)
        moves: dict[str, tuple[HostEvent, int | None]] = {}
        for name, state_text, version, health, last in self._candidates(now):
            event: HostEvent | None
            if last is None or last < cutoff:
                pending = self.table.pending_since(name) if self.table else None
                if pending is not None and pending >= cutoff:
                    continue  # heard from; the flush has not landed yet
                event = HostEvent.HEARTBEAT_MISSED
            else:
                event = health_event(HostState(state_text), health == "Healthy")
                if event is None:
                    continue
            moves[name] = (event, version)
        if not moves:
            return []
        with self.db.session() as session:
            moved = transition_hosts(session, moves, now=now)
        done = []
        for name, (event, _) in moves.items():
            if name not in moved:
                log.info("reconciler skipped %s (%s): changed meanwhile", name, event.value)
                continue
            if self.table is not None:
                self.table.note_state(name, moved[name])
            done.append(Transition(name, event, moved[name]))
        return done

    async def run(self, interval: float, stop: asyncio.Event) -> None:
        """Reconcile every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                moved = await run_in_threadpool(self.reconcile_once)
                for t in moved:
                    log.info("host %s: %s -> %s", t.host, t.event.value, t.state.value)
            except Exception:
                log.exception("heartbeat reconciler pass failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)
