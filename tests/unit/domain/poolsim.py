"""A simulated world for the pool planner: hosts, agents and Nodes that react to plans.

The planner (:func:`tether.domain.poolplan.plan_pool`) is pure; this module plays every
other part in memory, the way Cluster API tests its rollout planner: agents apply the
documents they are sent after a random delay (sometimes failing), Nodes turn Ready or
not, hosts get lost, and the "controller" performs Kubernetes steps and writes plans
back. Each :meth:`World.tick` is one reconcile; :attr:`World.violations` collects every
broken invariant. A host's node target can be made invalid (:attr:`World.no_target`, or
for a while by a :class:`TargetOutage`), as a host with no node IP makes it.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from tether.domain import poolplan
from tether.domain.agent import document_hash
from tether.domain.memberops import (
    Member,
    MemberPhase,
    NodeObs,
    Observed,
    Step,
    StepOutcome,
    StepResult,
)
from tether.domain.models import PoolSpec, UpdateStrategy
from tether.domain.nodeplan import NodeTarget
from tether.domain.poolplan import (
    PoolInput,
    PoolPlan,
    Spare,
    eager_steps,
    plan_pool,
    with_steps,
)
from tether.domain.profiles import Action
from tether.domain.rollout import RolloutOrigin, RolloutRecord, RolloutState, bounds
from tether.domain.states import HostState, PoolState

START = datetime(2026, 1, 1, tzinfo=UTC)


def spec_for(
    version: str, *, image: str = "img-1", labels: dict[str, str] | None = None
) -> dict[str, Any]:
    """A node target's spec, shaped as :func:`tether.domain.nodeplan.node_target` makes it."""
    return {
        "cluster": {
            "name": "c",
            "apiServerEndpoint": "https://k:6443",
            "certificateAuthority": "CA",
            "serviceCIDR": "172.20.0.0/16",
            "eksLabels": False,
        },
        "node": {"ip": "10.0.0.1", "nodeCIDR": "10.0.0.0/24", "labels": labels or {}, "taints": []},
        "os": {"image": image, "cloudInit": {}, "sysctls": {}, "kernelModules": [], "files": []},
        "kubernetes": {
            "version": version,
            "kubeletConfig": {},
            "kubeletExtraArgs": {},
            "containerdConfig": "",
        },
    }


def pool_spec(strategy: UpdateStrategy, **extra: Any) -> PoolSpec:
    return PoolSpec.model_validate(
        {
            "cluster": "c",
            "site": "s",
            "nodeCIDR": "10.0.0.0/24",
            "podCIDR": "10.1.0.0/16",
            "vpnServer": {"publicIP": "1.2.3.4", "insideIP": "10.0.0.254"},
            "profile": {"name": "p", "version": "1.0.0"},
            "updateStrategy": strategy.model_dump(by_alias=True, exclude_none=True),
            **extra,
        }
    )


@dataclass
class SimNode:
    ready: bool
    ready_since: datetime
    kubelet: str
    unschedulable: bool = False


@dataclass
class Agent:
    """One host's agent: applies a document some time after it changes."""

    lost: bool = False
    slow: float = 1.0
    due: datetime | None = None
    applied_hash: str | None = None
    ok: bool | None = None
    message: str = ""
    enrolled_at: datetime | None = None  # a re-imaged host enrols again (with the plan)


@dataclass(frozen=True)
class TargetOutage:
    """``host``'s target cannot be computed from ``start`` until ``end`` (None: for good)."""

    host: str
    start: datetime
    end: datetime | None
    problem: str = "host.spec.nodeIP: the host reports no address inside the node CIDR"


@dataclass
class World:
    rng: random.Random
    spec: PoolSpec
    target_spec: dict[str, Any]
    target_version: str
    members: dict[str, Member]
    nodes: dict[str, SimNode]
    agents: dict[str, Agent]
    spares: list[str]
    rollout: RolloutRecord | None
    fail_rate: float = 0.0
    lose_rate: float = 0.0
    slow_rate: float = 0.0
    drain_pending_rate: float = 0.3
    now: datetime = START
    docs: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    state: PoolState = PoolState.READY
    events: list[tuple[str, str, str]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    drains: Counter[tuple[str, str]] = field(default_factory=Counter)
    released: set[str] = field(default_factory=set)
    injected_failures: int = 0
    no_target: dict[str, str] = field(default_factory=dict)  # host: why its target is invalid
    outage: TargetOutage | None = None
    #: Chance that the plane dies after cordoning the hosts named next and before the
    #: write that records them (:func:`~tether.domain.poolplan.cordons_ahead`), and of
    #: what a person does before it restarts (:attr:`acts_meanwhile`).
    crash_rate: float = 0.0
    acts_meanwhile: tuple[str, ...] = ()
    crashes: int = 0
    _targets: dict[str, NodeTarget] = field(default_factory=dict)

    # -- the world as the plane sees it ----------------------------------------------

    def target(self, host: str) -> NodeTarget | None:
        if host in self.no_target:
            return None
        if host not in self._targets:
            self._targets[host] = NodeTarget(host, self.target_version, self.target_spec)
        return self._targets[host]

    def observed(self, host: str, external: tuple[StepResult, ...]) -> Observed:
        agent = self.agents[host]
        node = self.nodes.get(host)
        doc = self.docs.get(host)
        return Observed(
            host_state=HostState.UNREACHABLE if agent.lost else HostState.IN_USE,
            healthy=not agent.lost,
            doc_hash=document_hash(doc) if doc is not None else None,
            applied_hash=agent.applied_hash,
            applied_ok=agent.ok,
            applied_retryable=False,
            applied_message=agent.message,
            node=None
            if node is None
            else NodeObs(
                ready=node.ready and not agent.lost,
                ready_since=node.ready_since,
                unschedulable=node.unschedulable,
                kubelet_version=node.kubelet,
            ),
            external=external,
            target=self.target(host),
            target_problem=self.no_target.get(host),
            enrolled_at=agent.enrolled_at,
        )

    def _external(self, member: Member) -> tuple[StepResult, ...]:
        """The controller's Kubernetes steps for a member (performed before planning)."""
        results: list[StepResult] = []
        while (result := self._external_one(member)) is not None:
            results.append(result)
            if result.outcome is not StepOutcome.DONE or member.op is None:
                break
            member = replace(member, op=replace(member.op, index=member.op.index + 1))
        return tuple(results)

    def _external_one(self, member: Member) -> StepResult | None:
        op = member.op
        if op is None or op.failed is not None or op.step is None:
            return None
        node = self.nodes.get(member.host)
        step = op.step
        if step is Step.CORDON:
            if node is not None:
                node.unschedulable = True
        elif step is Step.UNCORDON:
            if node is not None:
                node.unschedulable = False
        elif step is Step.DRAIN:
            self.drains[(member.host, op.key)] += 1
            if self.rng.random() < self.drain_pending_rate:
                return StepResult(step, StepOutcome.PENDING, "pods terminating")
        elif step is Step.DELETE_NODE:
            self.nodes.pop(member.host, None)
        elif step is not Step.PATCH_NODE:
            return None
        return StepResult(step, StepOutcome.DONE)

    # -- one reconcile ---------------------------------------------------------------

    def tick(self) -> PoolPlan:
        inputs = [(m, self.observed(h, self._external(m))) for h, m in sorted(self.members.items())]
        spares = [Spare(h, self.target(h)) for h in self.spares if not self.agents[h].lost]
        inp = PoolInput(
            name="pool",
            spec=self.spec,
            state=self.state,
            deleting=False,
            members=inputs,
            now=self.now,
            target_key="key-2",
            rollout=self.rollout,
            spares=spares,
            new_rollout_name="pool-2",
        )
        # As the controller does: an uncordon an operation reaches, and stray cordons,
        # are taken before the plan.
        taken = {m.host: self._external(m) for m in eager_steps(inp)}
        for host in poolplan.stray_cordons(inp):
            self.nodes[host].unschedulable = False
            taken[host] = (StepResult(Step.UNCORDON, StepOutcome.DONE),)
        if taken:
            inp = with_steps(inp, taken)
        bound = bounds(self.spec.update_strategy, self._size())
        plan = plan_pool(inp)
        self._check(inp, plan, bound)
        moved = poolplan.newly_at_steps(inp, plan)
        if poolplan.cordons_ahead(inp, plan, moved):  # cordoned and drained before the one write
            taken = {m.host: self._external(m) for m in moved}
            if self.crash_rate and self.rng.random() < self.crash_rate:
                self._crash()
                return plan
            ahead = poolplan.successor(inp, plan, taken, self.now)
            assert ahead is not None
            # Checked above, before the cordons: the second plan starts no member the
            # first could not (its candidates and budget are the first's, those it
            # started now busy), so what it adds needs no check of its own.
            plan = poolplan.combined(plan, plan_pool(ahead))
        self._apply(plan)
        return plan

    def _crash(self) -> None:
        """The plane died before its write; a person may act before it restarts."""
        self.crashes += 1
        act = self.rng.choice(self.acts_meanwhile) if self.acts_meanwhile else "nothing"
        if act != "nothing" and self.rollout is not None:
            state = {"pause": RolloutState.PAUSED, "abort": RolloutState.ABORTED}[act]
            self.rollout = self.rollout.with_state(state, self.now, f"{act} (simulated)")

    def _size(self) -> int:
        return sum(1 for m in self.members.values() if m.staying and not m.surge)

    def _serves(self, host: str, member: Member) -> bool:
        """The member's Node serves workloads: Ready and schedulable (however recently)."""
        node = self.nodes.get(host)
        return (
            member.phase is MemberPhase.ACTIVE
            and member.staying
            and node is not None
            and node.ready
            and not node.unschedulable
            and not self.agents[host].lost  # a lost host's Node stops serving
        )

    def _available_after(self, plan: PoolPlan) -> tuple[int, set[str]]:
        """Members available (serving for minReadySeconds) after the plan, and the serving
        members the plan newly took down (updated disruptively, or made to leave)."""
        after = {**self.members, **{h: m for h, m in plan.members.items() if m is not None}}
        for host, m in plan.members.items():
            if m is None:
                after.pop(host, None)
        newly_down: set[str] = set()
        available = 0
        min_ready = timedelta(seconds=self.spec.update_strategy.min_ready_seconds)
        for host, m in after.items():
            node = self.nodes.get(host)
            down_now = m.op is not None and (m.op.failed is not None or m.op.takes_node_down)
            before = self.members.get(host)
            started_now = m.op is not None and (before is None or before.op is None)
            if self._serves(host, m) and not down_now:
                assert node is not None
                available += self.now - node.ready_since >= min_ready
            elif before is not None and self._serves(host, before) and started_now and down_now:
                newly_down.add(host)
        return available, newly_down

    def _check(self, inp: PoolInput, plan: PoolPlan, bound: Any) -> None:
        available, newly_down = self._available_after(plan)
        if newly_down and available < bound.min_available:
            self.violations.append(
                f"{self.now}: took {sorted(newly_down)} down with {available} available, "
                f"min available {bound.min_available}"
            )
        surge = sum(
            1
            for m in {**self.members, **{h: m for h, m in plan.members.items() if m}}.values()
            if m.surge
        )
        if surge > bound.max_surge:
            self.violations.append(f"{self.now}: {surge} surge members > {bound.max_surge}")
        if self.rollout is not None and self.rollout.state is not RolloutState.PROGRESSING:
            started = [e for e in plan.events if e.reason == "NodeUpdateStarted"]
            if started:
                self.violations.append(f"{self.now}: started {started} while {self.rollout.state}")
        moved = [e.name for e in plan.events if e.reason == "NodeUpdateStarted"]
        if set(moved) & set(self.no_target):
            self.violations.append(f"{self.now}: moved {moved} without a valid target")
        if plan.rollout is not None and plan.rollout.state is RolloutState.COMPLETED:
            staying = [h for h, m in self.members.items() if m.staying]
            if set(staying) & set(self.no_target):
                self.violations.append(f"{self.now}: completed with invalid targets")

    def _apply(self, plan: PoolPlan) -> None:
        for host, member in plan.members.items():
            if member is None:
                self.members.pop(host, None)
            else:
                self.members[host] = member
        for host, doc in plan.documents.items():
            self.docs[host] = doc
            agent = self.agents[host]
            agent.due = self.now + timedelta(seconds=self.rng.uniform(1, 20) * agent.slow)
        for host in plan.assign:
            self.spares.remove(host)
        for host in plan.release:
            self.released.add(host)
            self.spares.append(host)
        if plan.rollout is not None:
            self.rollout = plan.rollout
        self.state = plan.state
        for e in plan.events:
            self.events.append((e.name, e.reason, e.message))

    # -- the rest of the world moves on ----------------------------------------------

    def resume(self) -> None:
        """``tether rollout resume`` of a failed rollout: its failed node operations go
        again, and its failures are cleared."""
        rollout = self.rollout
        assert rollout is not None
        for host, member in self.members.items():
            op = member.op
            if op is not None and op.failed is not None and op.rollout == rollout.name:
                self.members[host] = replace(member, op=op.retried(self.now))
        self.rollout = replace(self.rollout, failures={}).with_state(
            RolloutState.PROGRESSING, self.now, "resumed"
        )

    def step_world(self, dt: float) -> None:
        self.now += timedelta(seconds=dt)
        outage = self.outage
        if outage is not None and outage.start <= self.now:
            if outage.end is None or self.now < outage.end:
                self.no_target[outage.host] = outage.problem
            else:
                self.no_target.pop(outage.host, None)
        for host, agent in self.agents.items():
            if agent.lost:
                continue
            if self.rng.random() < self.lose_rate:
                agent.lost = True
                continue
            doc = self.docs.get(host)
            if doc is None or agent.due is None or self.now < agent.due:
                continue
            digest = document_hash(doc)
            if agent.applied_hash == digest:
                continue
            agent.applied_hash = digest
            if self.rng.random() < self.fail_rate:
                self.injected_failures += 1
                agent.ok, agent.message = False, "simulated failure"
                continue
            agent.ok, agent.message = True, ""
            self._run(host, doc["node"])

    def _run(self, host: str, plan: dict[str, Any]) -> None:
        action = plan["action"]
        node = self.nodes.get(host)
        if action == "join":
            version = "v" + plan["version"]
            if node is None:
                self.nodes[host] = SimNode(True, self.now, version)
            else:
                if node.kubelet != version or not node.ready:
                    node.ready_since = self.now
                node.ready, node.kubelet = True, version
        elif action == "upgrade" and node is not None:
            node.kubelet, node.ready_since = "v" + plan["version"], self.now
        elif action == "reboot" and node is not None:
            node.ready_since = self.now
        elif action == "uninstall" and node is not None:
            node.ready = False
        elif action == "reimage":  # the new image's first boot enrols; no kubelet yet
            self.agents[host].enrolled_at = self.now
            if node is not None:
                node.ready = False


def make_world(
    seed: int,
    *,
    size: int,
    spares: int,
    strategy: UpdateStrategy,
    action: str = "upgrade",
    fail_rate: float = 0.0,
    lose_rate: float = 0.0,
    slow_rate: float = 0.0,
    ready_for: timedelta = timedelta(hours=1),
) -> World:
    """A pool of ``size`` Active members on 1.33 and an approved rollout to the new spec;
    their Nodes have been Ready for ``ready_for`` (less than ``minReadySeconds``: the pool
    has just turned Ready)."""
    rng = random.Random(seed)
    old = spec_for("1.33")
    new = {
        "upgrade": spec_for("1.34"),
        "repave": spec_for("1.33", image="img-2"),
        "inPlace": spec_for("1.33", labels={"tier": "gold"}),
    }[action]
    old_target = NodeTarget("x", "1.0.0", old)
    members = {
        f"h{i:03d}": Member(
            host=f"h{i:03d}",
            phase=MemberPhase.ACTIVE,
            spec=old,
            spec_hash=old_target.hash,
            version="1.0.0",
        )
        for i in range(size)
    }
    spare_names = [f"s{i:03d}" for i in range(spares)]
    agents = {
        h: Agent(slow=5.0 if rng.random() < slow_rate else 1.0) for h in [*members, *spare_names]
    }
    for host in members:
        doc = {"node": {"action": "join", "version": "1.33", "step": "initial"}}
        agents[host].applied_hash, agents[host].ok = document_hash(doc), True
    world = World(
        rng=rng,
        spec=pool_spec(strategy),
        target_spec=new,
        target_version="2.0.0",
        members=members,
        nodes={h: SimNode(True, START - ready_for, "v1.33") for h in members},
        agents=agents,
        spares=spare_names,
        rollout=RolloutRecord(
            name="pool-1",
            pool="pool",
            state=RolloutState.PROGRESSING,
            origin=RolloutOrigin.PROFILE,
            target_key="key-2",
            action=Action(action),
        ),
        fail_rate=fail_rate,
        lose_rate=lose_rate,
        slow_rate=slow_rate,
    )
    for host in members:
        world.docs[host] = {"node": {"action": "join", "version": "1.33", "step": "initial"}}
    return world


def run(world: World, *, max_ticks: int = 5000) -> World:
    """Reconcile and let the world move until the rollout ends (or ``max_ticks``)."""
    for _ in range(max_ticks):
        world.tick()
        if world.rollout is not None and world.rollout.state in (
            RolloutState.COMPLETED,
            RolloutState.FAILED,
        ):
            break
        world.step_world(world.rng.choice([0.5, 1, 2, 5, 10]))
    return world


__all__ = ["TargetOutage", "World", "make_world", "run"]
