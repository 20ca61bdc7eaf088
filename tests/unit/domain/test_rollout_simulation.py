"""The rollout planner against seeded random worlds, Cluster API style.

Each run builds a pool (1-8 members, 0-3 spare hosts), a strategy (ExpandFirst,
ContractFirst, or Rolling with random counts or percentages), an action (upgrade,
repave, in place), and a world in which agents apply plans after random delays, some
fail, some hosts are lost and some are slow; then it reconciles until the rollout ends.
After every reconcile the world checks (:mod:`poolsim`):

* no serving member (Node Ready and schedulable, for however short a time) is taken down
  while fewer than ``size - maxUnavailable`` members would stay available, counting
  members that were already unavailable (half the worlds start with every Node just
  turned Ready, younger than ``minReadySeconds``);
* never more than ``maxSurge`` surge members;
* nothing starts while the rollout is not progressing.

And at the end of each run:

* the rollout ends (completed or failed) in bounded time, or waits, saying so, for a
  spare host (none left) or for availability (lost hosts hold it below the budget);
* without failures or lost hosts it completes, with every member on the target and the
  pool at its original size;
* it fails only after ``maxFailedNodes`` failures, or when failed nodes leave nothing
  else to move, and then nothing starts any more;
* no node's drain is started twice for one step.

``TETHER_SIM_RUNS`` sets the number of runs (default 2000).
"""

from __future__ import annotations

import os
import random
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from poolsim import World, make_world, run

from tether.domain.memberops import MemberPhase
from tether.domain.models import UpdateStrategy
from tether.domain.rollout import RolloutState

RUNS = int(os.environ.get("TETHER_SIM_RUNS", "2000"))


def _strategy(rng: random.Random) -> UpdateStrategy:
    kind = rng.choice(["ExpandFirst", "ContractFirst", "Rolling"])
    extra = {
        "min_ready_seconds": rng.choice([0, 5, 30]),
        "max_failed_nodes": rng.choice([1, 2, 3]),
        "node_timeout_seconds": 300,
        "drain_timeout_seconds": 120,
    }
    if kind != "Rolling":
        return UpdateStrategy(type=kind, **extra)
    while True:
        surge = rng.choice([0, 1, 2, "50%"])
        unavailable = rng.choice([0, 1, 2, "25%", "50%"])
        if surge not in (0, "0%") or unavailable not in (0, "0%"):
            return UpdateStrategy(
                type="Rolling", max_surge=surge, max_unavailable=unavailable, **extra
            )


def _world(seed: int) -> World:
    rng = random.Random(seed)
    chaos = rng.random() < 0.5
    return make_world(
        seed,
        size=rng.randint(1, 8),
        spares=rng.randint(0, 3),
        strategy=_strategy(rng),
        action=rng.choice(["upgrade", "repave", "inPlace"]),
        fail_rate=rng.choice([0.02, 0.1]) if chaos else 0.0,
        lose_rate=rng.choice([0.0, 0.0005]) if chaos else 0.0,
        slow_rate=rng.choice([0.0, 0.3]),
        ready_for=timedelta(seconds=rng.choice([3600, 0])),
    )


def _check_run(seed: int, world: World, size: int) -> list[str]:
    problems = [f"seed {seed}: {v}" for v in world.violations[:3]]
    rollout = world.rollout
    assert rollout is not None
    # ExpandFirst with no spare host left waits, as it should (the condition says so).
    no_spare = not [h for h in world.spares if not world.agents[h].lost]
    waits = no_spare and rollout.progress.get("waiting") == "WaitingForSpareHost"
    # A lost member's Node serves nothing: with maxUnavailable 0 (or already at the
    # budget) nothing serving may go down, and the rollout waits, as it should.
    lost = any(world.agents[h].lost for h, m in world.members.items() if m.staying)
    stuck = not rollout.progress.get("busy")
    waits |= lost and stuck and rollout.progress.get("waiting") == "WaitingForAvailability"
    if rollout.state not in (RolloutState.COMPLETED, RolloutState.FAILED) and not waits:
        problems.append(f"seed {seed}: did not end ({rollout.state}, {rollout.progress})")
    clean = world.injected_failures == 0 and not any(a.lost for a in world.agents.values())
    if clean and rollout.state is not RolloutState.COMPLETED and not waits:
        problems.append(f"seed {seed}: failed without failures ({rollout.message})")
    if rollout.state is RolloutState.COMPLETED:
        staying = [m for m in world.members.values() if m.staying]
        if len(staying) != size:
            problems.append(f"seed {seed}: ended with {len(staying)} members, not {size}")
        stale = [
            m.host for m in staying if m.version != "2.0.0" or m.phase is not MemberPhase.ACTIVE
        ]
        if stale:
            problems.append(f"seed {seed}: completed with members not on the target: {stale}")
    if rollout.state is RolloutState.FAILED:
        limit = world.spec.update_strategy.max_failed_nodes
        busy = [h for h, m in world.members.items() if m.op is not None and m.op.failed is None]
        stopped = rollout.message.startswith("stopped") and not busy
        if not rollout.failures or (len(rollout.failures) < limit and not stopped):
            problems.append(f"seed {seed}: failed after {len(rollout.failures)} < {limit}")
    starts = Counter(
        (name, message) for name, reason, message in world.events if reason == "DrainStarted"
    )
    twice = [key for key, n in starts.items() if n > 1]
    if twice:
        problems.append(f"seed {seed}: drain started twice for one step: {twice}")
    return problems


def test_random_worlds_keep_every_invariant() -> None:
    problems: list[str] = []
    outcomes: Counter[str] = Counter()
    for seed in range(RUNS):
        world = _world(seed)
        size = len(world.members)
        run(world)
        outcomes[world.rollout.state.value if world.rollout else "none"] += 1
        problems.extend(_check_run(seed, world, size))
        if len(problems) > 20:
            break
    assert problems == [], "\n".join(problems)
    # The worlds really exercise both ends: most complete, some fail.
    assert outcomes[RolloutState.COMPLETED.value] > RUNS // 2
    assert outcomes[RolloutState.FAILED.value] > 0


@pytest.mark.parametrize("kind", ["ExpandFirst", "ContractFirst"])
def test_a_clean_rollout_moves_one_node_at_a_time(kind: str) -> None:
    world = make_world(7, size=4, spares=1, strategy=UpdateStrategy(type=kind, min_ready_seconds=0))
    run(world)
    assert world.rollout is not None and world.rollout.state is RolloutState.COMPLETED
    started = [
        name for name, reason, _ in world.events if reason in ("NodeUpdateStarted", "Leaving")
    ]
    assert len(started) == 4  # each old node exactly once: updated in place, or replaced


def test_expand_first_without_a_spare_waits_and_says_why() -> None:
    world = make_world(3, size=3, spares=0, strategy=UpdateStrategy(type="ExpandFirst"))
    for _ in range(20):
        world.tick()
        world.step_world(5)
    assert world.rollout is not None
    assert world.rollout.state is RolloutState.PROGRESSING
    assert world.rollout.progress["waiting"] == "WaitingForSpareHost"
    assert all(m.op is None for m in world.members.values())
