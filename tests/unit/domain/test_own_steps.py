"""The pool planner reads its own cordons and uncordons.

A Node's schedulability reaches the store only when the nodes controller's watch reports
it, a moment after the API server accepted the controller's cordon or uncordon. The
planner takes the accepted step as in effect at once, so the next node of a rollout
starts in the pass that uncordons the last one instead of a pass later.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from poolsim import World, make_world

from tether.domain.memberops import (
    Member,
    NodeObs,
    Observed,
    Operation,
    OpKind,
    Step,
    StepOutcome,
    StepResult,
    as_left_by_own_steps,
    update_steps,
)
from tether.domain.models import UpdateStrategy
from tether.domain.profiles import Action
from tether.domain.states import HostState


@dataclass
class WatchBehind(World):
    """The simulated world, with the store's Node status one pass behind the cluster."""

    before: dict[str, bool] = field(default_factory=dict)

    def _external(self, member: Member) -> tuple[StepResult, ...]:
        node = self.nodes.get(member.host)
        if node is not None:
            self.before[member.host] = node.unschedulable
        return super()._external(member)

    def observed(self, host: str, external: tuple[StepResult, ...]) -> Observed:
        obs = super().observed(host, external)
        if obs.node is not None and host in self.before:
            obs = replace(obs, node=replace(obs.node, unschedulable=self.before.pop(host)))
        return obs


def test_the_next_node_starts_in_the_pass_that_uncordons_the_last() -> None:
    strategy = UpdateStrategy.model_validate(
        {"type": "Rolling", "maxSurge": 0, "maxUnavailable": 1, "minReadySeconds": 0}
    )
    base = make_world(7, size=3, spares=0, strategy=strategy)
    world = WatchBehind(**{f.name: getattr(base, f.name) for f in fields(World) if f.init})
    seen = []
    for _ in range(300):
        plan = world.tick()
        uncordoned = [e.name for e in plan.events if e.reason == "Uncordoned"]
        if uncordoned:
            started = [e.name for e in plan.events if e.reason == "NodeUpdateStarted"]
            seen.append((uncordoned, started))
        if len(seen) == 2:
            break
        world.step_world(1.0)
    assert seen == [(["h000"], ["h001"]), (["h001"], ["h002"])]
    assert world.violations == []


def test_only_steps_the_api_server_accepted_count() -> None:
    node = NodeObs(ready=True, unschedulable=True)
    done = StepResult(Step.UNCORDON, StepOutcome.DONE)
    failed = StepResult(Step.UNCORDON, StepOutcome.FAILED, "forbidden")
    drained = StepResult(Step.DRAIN, StepOutcome.DONE)
    obs = Observed(HostState.IN_USE, node=node, external=(drained, done))
    assert as_left_by_own_steps(obs).node == NodeObs(ready=True, unschedulable=False)
    stays = Observed(HostState.IN_USE, node=node, external=(failed,))
    assert as_left_by_own_steps(stays) is stays
    cordoned = Observed(
        HostState.IN_USE,
        node=NodeObs(ready=True),
        external=(StepResult(Step.CORDON, StepOutcome.DONE),),
    )
    assert as_left_by_own_steps(cordoned).node == NodeObs(ready=True, unschedulable=True)
    gone = Observed(HostState.IN_USE, node=None, external=(done,))
    assert as_left_by_own_steps(gone) is gone


def test_an_uncordon_is_taken_before_the_plan_so_no_plan_records_it_as_intent() -> None:
    """The uncordon that ends a node's update gives capacity back: the controller takes
    it as soon as the operation reaches it (``eager_steps``) and the plan records it done,
    with the next node's cordon, in one write instead of two."""
    strategy = UpdateStrategy.model_validate(
        {"type": "Rolling", "maxSurge": 0, "maxUnavailable": 1, "minReadySeconds": 0}
    )
    world = make_world(11, size=4, spares=0, strategy=strategy)
    uncordoned: list[str] = []
    for _ in range(400):
        plan = world.tick()
        at_uncordon = [
            h for h, m in plan.members.items() if m and m.op and m.op.step is Step.UNCORDON
        ]
        assert at_uncordon == []  # the plan comes after the step, never before it
        uncordoned += [e.name for e in plan.events if e.reason == "Uncordoned"]
        if len(uncordoned) == 4:
            break
        world.step_world(1.0)
    assert sorted(uncordoned) == ["h000", "h001", "h002", "h003"]
    assert world.violations == []


def test_only_an_operation_with_its_uncordon_before_its_next_send_can_reach_it_in_a_pass() -> None:
    """``eager_steps`` advances only these: a plan sent in a pass is not reported applied
    in that pass, so an uncordon behind a send is a pass away at least."""
    now = datetime(2026, 12, 2, tzinfo=UTC)

    def reach(steps: tuple[Step, ...]) -> list[bool]:
        at = range(len(steps) + 1)  # the last: done
        return [
            Operation(OpKind.UPDATE, Action.UPGRADE, steps, i, now, now).eager_before_send
            for i in at
        ]

    upgrade = update_steps(Action.UPGRADE, version_changes=True, meta_changes=False)
    assert upgrade[2:] == (Step.SEND_UPGRADE, Step.WAIT_APPLIED, Step.WAIT_READY, Step.UNCORDON)
    assert reach(upgrade) == [False, False, False, True, True, True, False]
    reboot = update_steps(Action.REBOOT, version_changes=False, meta_changes=False)
    assert reboot[3:5] == (Step.WAIT_APPLIED, Step.SEND_REBOOT)
    assert reach(reboot) == [False, False, False, False, False, True, True, True, False]
    repave = update_steps(Action.REPAVE, version_changes=True, meta_changes=False)
    assert Step.UNCORDON not in repave and not any(reach(repave))
