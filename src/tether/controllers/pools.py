"""The pool reconciler: every pool converges on its spec, its members and its rollout.

One reconcile of one pool, shaped like Cluster API's MachineDeployment controller:

1. **act**: take the Kubernetes step each member's recorded operation stands at
   (cordon, drain, delete the Node, patch it, uncordon), idempotently
   (:func:`tether.services.clusterops.perform`);
2. **fetch** the pool, its members and what is observed of them, with those outcomes
   (:func:`tether.services.pools.load`);
3. **plan** in memory with pure functions (:func:`tether.domain.poolplan.plan_pool`);
4. **write once**: the plan in one transaction, every row guarded by the version it was
   read with (:func:`tether.services.pools.write`). A conflict throws the plan away and
   the pool is reconciled again at once.

Level-triggered and crash-safe: all progress lives in the store; a step is recorded
before it is taken and advanced only when its effect is seen; a restart continues at
the recorded steps. The uncordon that ends a node's update
(:data:`tether.domain.memberops.EAGER_STEPS`) is taken as soon as a member's operation
reaches it, before the plan, which records it done: it only gives capacity back, and
after a crash before the write it is taken again, harmlessly.

A rollout wave is one write. Each write of a progressing rollout records which hosts go
next once the budget allows (:attr:`tether.domain.rollout.Moves.next`). When the plan
after the uncordons starts exactly those hosts at their cordon, the controller cordons
and drains them at once, plans again from the outcome
(:func:`tether.domain.poolplan.successor`) and writes both plans as one
(:func:`tether.domain.poolplan.combined`): the finished nodes, the started ones and their
node plans. Their intent was on record before the cordon, in the write before; after a
crash before this write the same hosts start again (down members go first), or are
uncordoned if the rollout no longer moves them
(:func:`tether.domain.poolplan.stray_cordons`).

Pools are reconciled when something tells the controller (a person's change, an agent's
report, a Node's change: :meth:`PoolController.poke`), when a plan asks to be looked at
again (a drain in progress, a timer), and every ``resync_seconds`` in any case (changes
made by another plane replica).

Like an informer's cache, the controller keeps each pool as its last write left it
(:func:`tether.services.pools.followed`). A pass that was told only which hosts changed
(:meth:`PoolController.poke_hosts`: an agent's report, a Node's status) or only asked
to look again (a timer) reads those hosts' rows and the pool's and rollout's versions,
not the whole pool (:func:`tether.services.pools.refresh`): at a thousand members the
whole read was most of a pass, and a rollout wave waits for that pass. Any other poke,
every resync, a write conflict and a failed pass read the whole pool again, so what no
one reported is seen within ``resync_seconds`` as before.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime

from sqlalchemy import select

from tether.domain.memberops import Member, StepResult
from tether.domain.poolplan import (
    PoolPlan,
    combined,
    cordons_ahead,
    eager_steps,
    newly_at_steps,
    plan_pool,
    stray_cordons,
    successor,
    with_steps,
)
from tether.errors import Conflict, NotFound
from tether.metrics import reconciling
from tether.services import pools
from tether.services.clusterops import ClusterOps, perform, release_cordon
from tether.store.db import Database
from tether.store.schema import PoolRow, utcnow

__all__ = ["PoolController"]

log = logging.getLogger(__name__)

#: Finds the :class:`ClusterOps` of a cluster (None: not imported or unusable).
OpsFinder = Callable[[str], ClusterOps | None]
#: Told of the desired-state documents a write stored, once per write (host -> hash, or
#: None when cleared): a hundred agents are woken together, not one after another.
DesiredNotify = Callable[[Mapping[str, str | None]], None]


class PoolController:
    """Reconciles every pool (module doc); :meth:`start` runs it in a thread."""

    def __init__(
        self,
        db: Database,
        ops_for: OpsFinder,
        *,
        resync_seconds: float = 5.0,
        clock: Callable[[], datetime] = utcnow,
        on_desired: DesiredNotify | None = None,
    ) -> None:
        self.db = db
        self.ops_for = ops_for
        self.resync_seconds = resync_seconds
        self.clock = clock
        self.on_desired = on_desired
        self._due: list[tuple[float, str]] = []  # (monotonic time, pool) heap
        self._next: dict[str, float] = {}
        self._hosts: dict[str, str] = {}  # host -> pool, as last reconciled
        self._known: dict[str, pools.Loaded] = {}  # pool -> as its last write left it
        self._changed: dict[str, set[str]] = {}  # pool -> hosts reported changed since
        self._whole: set[str] = set()  # pools poked to be read whole during their pass
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Plans written, conflicts met and passes finished (a pass writes up to
        #: ``MAX_ROUNDS`` plans), for logs and benchmarks.
        self.reconciles = 0
        self.conflicts = 0
        self.passes = 0

    # -- scheduling ------------------------------------------------------------------

    def poke(self, names: Iterable[str], delay: float = 0.0, *, whole: bool = True) -> None:
        """Reconcile these pools after ``delay`` seconds (sooner if already due); read
        each whole again unless ``whole`` is False (nothing changed but the time)."""
        at = time.monotonic() + delay
        with self._cond:
            for name in names:
                if whole:
                    self._known.pop(name, None)
                    self._whole.add(name)
                if self._next.get(name, float("inf")) > at:
                    self._next[name] = at
                    heapq.heappush(self._due, (at, name))
            self._cond.notify()

    def poke_hosts(self, hosts: Iterable[str]) -> None:
        """Reconcile the pools of these hosts (an agent reported, a Node changed),
        reading those hosts again."""
        names = set()
        with self._cond:
            for host in hosts:
                name = self._hosts.get(host)
                if name is not None:
                    self._changed.setdefault(name, set()).add(host)
                    names.add(name)
        self.poke(names, whole=False)

    def poke_nodes(self, changed: Mapping[str, str]) -> None:
        """Reconcile the pools of these hosts whose Nodes changed (host -> pool): a host
        its pool's last pass knew is read again alone, any other has its pool read whole."""
        with self._cond:
            whole = {pool for host, pool in changed.items() if self._hosts.get(host) != pool}
        self.poke(whole)
        self.poke_hosts(host for host, pool in changed.items() if pool not in whole)

    def _resync(self) -> None:
        with self.db.session() as session:
            names = list(session.scalars(select(PoolRow.name)))
        self.poke(names)

    def _take(self, timeout: float) -> str | None:
        with self._cond:
            deadline = time.monotonic() + timeout
            while not self._stop.is_set():
                now = time.monotonic()
                while self._due and self._next.get(self._due[0][1]) != self._due[0][0]:
                    heapq.heappop(self._due)  # superseded by an earlier poke
                if self._due and self._due[0][0] <= now:
                    _, name = heapq.heappop(self._due)
                    del self._next[name]
                    return name
                wait = deadline - now
                if self._due:
                    wait = min(wait, self._due[0][0] - now)
                if wait <= 0:
                    return None
                self._cond.wait(wait)
            return None

    # -- one pool --------------------------------------------------------------------

    def reconcile(self, name: str) -> PoolPlan | None:
        """Act, fetch, plan and write pool ``name``; None if it no longer exists.

        When the plan records Kubernetes steps (cordon the next node, uncordon one that
        is done), they are taken at once and the pool planned again from what was just
        written (:func:`tether.services.pools.followed`), up to ``MAX_ROUNDS`` times: a
        node goes from cordon to its plan sent in one reconcile, each step still recorded
        before it is taken."""
        try:
            with reconciling("pools", expected=(NotFound, Conflict)):
                return self._rounds(name)
        except NotFound:
            return None
        except Conflict as exc:
            self.conflicts += 1
            log.debug("pool %s: %s", name, exc.message)
            self.poke([name])  # read whole: someone else wrote
            return None
        finally:
            self.passes += 1

    #: Plans written in one reconcile at most (each after the steps the one before recorded).
    MAX_ROUNDS = 4

    def _rounds(self, name: str) -> PoolPlan:
        with self._cond:  # taken before the store is read: a later report comes again
            known = self._known.pop(name, None)
            changed = self._changed.pop(name, set())
            self._whole.discard(name)
        loaded = self._fetch(name, known, changed)
        for round_ in range(1, self.MAX_ROUNDS + 1):
            written = loaded
            taken = self._eager(written)
            if taken:  # taken before the plan, which records them done
                written = replace(written, input=with_steps(written.input, taken))
            plan = plan_pool(written.input)
            moved = newly_at_steps(written.input, plan)
            if cordons_ahead(written.input, plan, moved):
                # Recorded as next by an earlier write: cordoned and drained now, and
                # recorded with their plans in one write (module doc).
                taken = self._perform(written, moved)
                ahead = successor(written.input, plan, taken, self.clock())
                assert ahead is not None  # cordons_ahead: the plan is followable
                plan = combined(plan, plan_pool(ahead))
                moved = newly_at_steps(written.input, plan)
            with self.db.session() as session:
                pools.write(session, written, plan)
            self._written(name, written, plan)
            if not moved or plan.delete_pool or round_ == self.MAX_ROUNDS:
                break
            outcomes = self._perform(written, moved)
            loaded = pools.followed(written, plan, outcomes, self.clock()) or self._load(
                name, outcomes
            )
        if not plan.delete_pool:
            after = pools.followed(written, plan, {}, self.clock())
            if after is not None:
                with self._cond:
                    if name not in self._whole:  # not poked to be read whole meanwhile
                        self._known[name] = after
        if plan.requeue is not None and not plan.delete_pool:
            self.poke([name], plan.requeue, whole=False)
        return plan

    def _fetch(self, name: str, known: pools.Loaded | None, changed: set[str]) -> pools.Loaded:
        """The pool as the plan starts from, with the Kubernetes steps its members stand at
        taken first (:meth:`_act`). Followed from the last write (``known``), the pool
        shows which members stand at a step: when none does, as between rollout waves,
        the store is not asked (a round trip each pass, on a wave's path)."""
        quiet = known is not None and all(m.external_step is None for m, _ in known.input.members)
        outcomes = {} if quiet else self._act(name)
        if known is not None:
            with self.db.session() as session:
                loaded = pools.refresh(session, known, changed, self.clock(), outcomes)
            if loaded is not None:
                return loaded
            if quiet:  # changed behind the cache: act on what the store says
                outcomes = self._act(name)
        return self._load(name, outcomes)

    def _load(self, name: str, outcomes: Mapping[str, tuple[StepResult, ...]]) -> pools.Loaded:
        with self.db.session() as session:
            return pools.load(session, name, self.clock(), outcomes)

    def _perform(
        self, loaded: pools.Loaded, members: Iterable[Member]
    ) -> dict[str, tuple[StepResult, ...]]:
        """Take the Kubernetes steps these members of the pool stand at."""
        ops = self.ops_for(loaded.cluster)
        timeout = float(loaded.input.spec.update_strategy.drain_timeout_seconds)
        return {m.host: perform(ops, m, timeout) for m in members}

    def _eager(self, loaded: pools.Loaded) -> dict[str, tuple[StepResult, ...]]:
        """Take the steps taken before the plan that records them: uncordons that end an
        operation, and stray cordons (:func:`tether.domain.poolplan.stray_cordons`)."""
        eager = eager_steps(loaded.input)
        taken = self._perform(loaded, eager) if eager else {}
        strays = stray_cordons(loaded.input)
        if strays:
            ops = self.ops_for(loaded.cluster)
            members = {m.host: m for m, _ in loaded.input.members}
            taken.update({host: (release_cordon(ops, members[host]),) for host in strays})
        return taken

    def _written(self, name: str, loaded: pools.Loaded, plan: PoolPlan) -> None:
        """What follows a plan written: counts, the host map, listeners, the log."""
        self.reconciles += 1
        with self._cond:  # poke_hosts reads the map from other threads
            for member, _ in loaded.input.members:
                self._hosts[member.host] = name
        if self.on_desired is not None and plan.documents:
            self.on_desired({h: plan.digest(h) for h in plan.documents})
        for note in plan.events:
            log.info("pool %s: %s %s: %s", name, note.name, note.reason, note.message)

    def _act(self, name: str) -> dict[str, tuple[StepResult, ...]]:
        with self.db.session() as session:
            cluster, members, timeout = pools.members_at_steps(session, name)
        if not members:
            return {}
        ops = self.ops_for(cluster)
        return {m.host: perform(ops, m, timeout) for m in members}

    # -- the thread ------------------------------------------------------------------

    def run(self) -> None:
        next_resync = 0.0
        while not self._stop.is_set():
            if time.monotonic() >= next_resync:
                next_resync = time.monotonic() + self.resync_seconds
                try:
                    self._resync()
                except Exception:
                    log.exception("pool reconciler: listing pools failed")
            name = self._take(max(0.0, next_resync - time.monotonic()))
            if name is None:
                continue
            try:
                self.reconcile(name)
            except Exception:
                log.exception("pool %s: reconcile failed; retrying", name)
                self.poke([name], min(self.resync_seconds, 5.0))

    def start(self) -> PoolController:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="pools", daemon=True)
        self._thread.start()
        return self

    @property
    def thread_id(self) -> int | None:
        """The OS id of the running thread (benchmarks read its CPU time)."""
        return self._thread.native_id if self._thread is not None else None

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
