"""A SIMULATED cluster and fleet of agents for the pool reconciler, in one process.

For benchmarks and scale tests of rollouts (``bench/repave.py``): the real pool
reconciler and the real store run; the cluster's Kubernetes steps and the hosts' agents
are simulated here. :class:`SimulatedFleet` is the reconciler's
:class:`~tether.services.clusterops.ClusterOps` (a cordon or uncordon shows in the host's
Node status at once, as the nodes controller would record it; drains finish at once) and
its desired-state listener: every plan a host is sent is applied ``plan_seconds(action)``
later, when the agent's report and the new Node status (the plan's kubelet version,
Ready) are written and the reconciler is told.

The simulation's own store work (reading a sent plan's action, recording a cordon in the
Node status, as the nodes controller would from its watch) runs on the fleet's thread in
batches, so the reconciler's thread, whose CPU time the benchmark reports as the plane's,
spends nothing on it: a real cordon is one API call, a real plan is read by the agent.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from functools import cache
from typing import Any

from sqlalchemy import Select, delete, select, update

from tether.domain.agent import AppliedReport
from tether.domain.memberops import Step, StepOutcome, StepResult
from tether.services import desired
from tether.store.bulk import among, among_param
from tether.store.db import Database
from tether.store.schema import DesiredStateRow, HostAgentRow, NodeStatusRow, utcnow

__all__ = ["SimulatedFleet"]

_NODE_PLAN = DesiredStateRow.document["node"]


@cache
def _plans(dialect: str) -> Select[Any]:
    """A plan's hash, action and Kubernetes version, per host of ``hosts``: the fields the
    simulation acts on, picked out by the store (a node plan's document is kilobytes)."""
    return select(
        DesiredStateRow.host_name,
        DesiredStateRow.hash,
        _NODE_PLAN["action"].as_string(),
        _NODE_PLAN["version"].as_string(),
    ).where(among_param(dialect, DesiredStateRow.host_name, "hosts"))


class SimulatedFleet:
    """SIMULATED Kubernetes steps and agents (module doc)."""

    def __init__(
        self,
        db: Database,
        plan_seconds: Callable[[str], float],
        on_applied: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        self.db = db
        self.plan_seconds = plan_seconds
        self.on_applied = on_applied
        self._due: list[tuple[float, str, str]] = []
        self._sent: list[tuple[str, str, float]] = []  # plans written (when), not yet read
        self._cordons: dict[str, bool] = {}  # Node -> unschedulable, not yet recorded
        self._gone: dict[str, str] = {}  # Node deleted -> its cluster (a join makes it again)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="simulated-fleet", daemon=True)
        self.applied = 0

    # -- ClusterOps ------------------------------------------------------------------

    def _schedulable(self, node: str, cordoned: bool, step: Step) -> StepResult:
        with self._cond:
            self._cordons[node] = cordoned
            self._cond.notify()
        return StepResult(step, StepOutcome.DONE)

    def cordon(self, node: str) -> StepResult:
        return self._schedulable(node, True, Step.CORDON)

    def uncordon(self, node: str) -> StepResult:
        return self._schedulable(node, False, Step.UNCORDON)

    def drain(self, node: str, timeout_seconds: float) -> StepResult:
        return StepResult(Step.DRAIN, StepOutcome.DONE, "no pods (simulated)")

    def delete_node(self, node: str) -> StepResult:
        with self.db.session() as session:
            gone = session.execute(
                delete(NodeStatusRow)
                .where(NodeStatusRow.host_name == node)
                .returning(NodeStatusRow.cluster)
            ).scalar()
        if gone is not None:
            with self._cond:
                self._gone[node] = gone
        return StepResult(Step.DELETE_NODE, StepOutcome.DONE)

    def patch_node(
        self,
        node: str,
        labels: Mapping[str, str | None],
        taints: Sequence[Mapping[str, str]],
        managed: Sequence[str],
    ) -> StepResult:
        return StepResult(Step.PATCH_NODE, StepOutcome.DONE)

    # -- agents ----------------------------------------------------------------------

    def sent(self, changes: Mapping[str, str | None]) -> None:
        """Plans were written for these hosts (the reconciler's ``on_desired``)."""
        at = time.monotonic()
        with self._cond:
            self._sent.extend((host, digest, at) for host, digest in changes.items() if digest)
            self._cond.notify()

    def _schedule(self, sent: list[tuple[str, str, float]], cordons: dict[str, bool]) -> list[str]:
        """Record the cordons and queue the sent plans by their actions' durations, from
        when each was sent (an agent hears of its plan then: the simulation's own reading
        of the plan is not the plane's time); return the Nodes whose status changed."""
        with self.db.session() as session:
            for cordoned in (True, False):
                nodes = [node for node, value in cordons.items() if value is cordoned]
                if nodes:
                    session.execute(
                        update(NodeStatusRow)
                        .where(among(session, NodeStatusRow.host_name, nodes))
                        .values(unschedulable=cordoned, observed_at=utcnow())
                    )
            plans = _plans(session.get_bind().dialect.name)
            actions = {
                host: action
                for host, _, action, _ in session.execute(
                    plans, {"hosts": [host for host, _, _ in sent]}
                )
            }
        with self._cond:
            for host, digest, at in sent:
                action = str(actions.get(host))
                heapq.heappush(self._due, (at + self.plan_seconds(action), host, digest))
        return list(cordons)

    def apply_plans(self, batch: Sequence[tuple[str, str]]) -> list[str]:
        """The agents of these hosts apply these plans (host, hash) now: report them
        applied and show the Node the plan leaves (tests call it to step a rollout by
        hand); return the hosts whose plan was still current."""
        done, reimaged = [], []
        # The Nodes' new status, as the nodes controller records what its watch saw: the
        # hosts whose Nodes changed alike in one statement.
        nodes: dict[tuple[tuple[str, object], ...], list[str]] = {}
        with self.db.session() as session:
            # What each agent reads from its own desired state, in one query for the batch.
            current = {
                host: (digest, action, version)
                for host, digest, action, version in session.execute(
                    _plans(session.get_bind().dialect.name), {"hosts": [host for host, _ in batch]}
                )
            }
            for host, digest in batch:
                if current.get(host, ("",))[0] != digest:
                    continue  # superseded by a newer plan
                _, action, version = current[host]
                values: dict[str, object] = {}
                if action in ("join", "upgrade"):
                    values["kubelet_version"] = f"v{version}"
                    values["ready"] = True
                if action == "reboot":
                    values["ready_since"] = utcnow() - timedelta(microseconds=1)
                if action == "reimage":  # the old system is gone: its kubelet too
                    values["ready"] = False
                    reimaged.append(host)
                nodes.setdefault(tuple(sorted(values.items())), []).append(host)
                done.append(host)
            # The agents' reports, as the agent plane writes those that arrive together.
            desired.report_applied_many(
                session,
                [
                    (host, AppliedReport(hash=current[host][0], result={"ok": True}))
                    for host in done
                ],
                now=utcnow(),
            )
            # A SIMULATED re-image: the new image enrols again at once (no certificate).
            for host in reimaged:
                session.execute(
                    update(HostAgentRow)
                    .where(HostAgentRow.host_name == host)
                    .values(enrolled_at=utcnow(), reenrol_allowed=False)
                )
                desired.drop_reimage(session, host)
            with self._cond:
                made = {h: self._gone.pop(h) for h in done if h in self._gone}
            for host, cluster in made.items():  # a join registers a deleted Node again
                session.add(NodeStatusRow(host_name=host, cluster=cluster, observed_at=utcnow()))
            session.flush()
            for change, hosts in nodes.items():
                session.execute(
                    update(NodeStatusRow)
                    .where(among(session, NodeStatusRow.host_name, hosts))
                    .values(observed_at=utcnow(), **dict(change))
                )
        self.applied += len(done)
        return done

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                now = time.monotonic()
                sent, self._sent = self._sent, []
                cordons, self._cordons = self._cordons, {}
                batch = []
                while self._due and self._due[0][0] <= now:
                    _, host, digest = heapq.heappop(self._due)
                    batch.append((host, digest))
                if not (sent or cordons or batch):
                    wait = self._due[0][0] - now if self._due else 0.5
                    self._cond.wait(min(wait, 0.5))
                    continue
            done = self._schedule(sent, cordons) if sent or cordons else []
            done += self.apply_plans(batch) if batch else []
            if done and self.on_applied is not None:
                self.on_applied(done)

    def start(self) -> SimulatedFleet:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(10)
