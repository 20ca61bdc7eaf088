"""The rollout's availability budget counts every node it takes down, fresh ones too.

A Node Ready for less than ``minReadySeconds`` is not yet *available* (Cluster API's
rule: the rollout waits for it before going on), but it serves workloads: cordoning it
takes a serving node down like any other. The crash test of the pool reconciler
(``tests/integration/agent/test_rollout_crash.py``) saw 2 and 4 nodes cordoned at once
with ``maxUnavailable`` 1 because a rollout approved right after its pool turned Ready
found every Node younger than ``minReadySeconds`` and took them all down as "already
unavailable". Only members that serve nothing (NotReady or cordoned) are free to move.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from poolsim import make_world

from tether.domain.models import UpdateStrategy
from tether.domain.poolplan import PoolPlan
from tether.domain.profiles import Action
from tether.domain.rollout import Bounds, Candidate, may_surge, plan_moves

#: The crash test's strategy: one node at a time, each available for 1 s before the next.
CONTRACT_FIRST = UpdateStrategy(type="ContractFirst", min_ready_seconds=1)
HALF_SECOND = timedelta(seconds=0.5)


def _started(plan: PoolPlan) -> list[str]:
    return sorted(e.name for e in plan.events if e.reason == "NodeUpdateStarted")


def test_a_rollout_approved_on_fresh_nodes_takes_none_down_until_they_are_available() -> None:
    # The pool just turned Ready: every Node has been Ready for 0.5 s.
    world = make_world(1, size=4, spares=0, strategy=CONTRACT_FIRST, ready_for=HALF_SECOND)

    plan = world.tick()

    assert _started(plan) == []
    assert all(m.op is None for m in world.members.values())
    assert plan.rollout is not None
    assert plan.rollout.progress["waiting"] == "WaitingForAvailability"

    world.now += timedelta(seconds=1)  # every Node has now been Ready for 1.5 s
    plan = world.tick()

    assert _started(plan) == ["h000"]
    assert [h for h, m in world.members.items() if m.op is not None] == ["h000"]


def _candidate(host: str, *, available: bool, down: bool, surge: bool = False) -> Candidate:
    """An old member to upgrade, or (``surge``) a surge member that runs the target."""
    return Candidate(
        host=host,
        up_to_date=surge,
        available=available,
        down=down,
        busy=False,
        surge=surge,
        leaving=False,
        action=Action.NONE if surge else Action.UPGRADE,
    )


BUDGET_ONE = Bounds(size=4, max_surge=0, max_unavailable=1, min_ready_seconds=1, max_failed_nodes=1)


@pytest.mark.parametrize(
    ("nodes", "updated"),
    [
        # (available, down) per member h0..h3
        pytest.param([(True, False)] * 4, ["h0"], id="all available: one"),
        pytest.param([(False, False)] * 4, [], id="all serving, none available yet: none"),
        pytest.param(
            [(False, True), (False, False), (True, False), (True, False)],
            ["h0"],
            id="a NotReady one moves free; a fresh serving one waits",
        ),
        pytest.param(
            [(False, True), (False, True), (True, False), (True, False)],
            ["h0", "h1"],
            id="every node already down moves free",
        ),
        pytest.param(
            [(False, False), (True, False), (True, False), (True, False)],
            ["h0"],
            id="three available: the fresh one moves within the budget",
        ),
    ],
)
def test_plan_moves_takes_a_serving_node_down_only_within_the_budget(
    nodes: list[tuple[bool, bool]], updated: list[str]
) -> None:
    members = [_candidate(f"h{i}", available=a, down=d) for i, (a, d) in enumerate(nodes)]
    moves = plan_moves(members, BUDGET_ONE, spares=0)
    assert list(moves.update) == updated
    assert moves.waiting == ("" if updated else "WaitingForAvailability")


def test_a_surge_partner_does_not_replace_a_fresh_serving_node_below_the_budget() -> None:
    """ExpandFirst: the surge host is available, the old ones serve but are fresh; taking
    one away would leave 1 available of the 4 that must stay (maxUnavailable 0)."""
    bound = Bounds(size=4, max_surge=1, max_unavailable=0, min_ready_seconds=30, max_failed_nodes=1)
    old = [_candidate(f"h{i}", available=False, down=False) for i in range(4)]
    surge = _candidate("s0", available=True, down=False, surge=True)
    moves = plan_moves([*old, surge], bound, spares=0)
    assert (moves.leave, moves.update) == ((), ())

    old = [_candidate(f"h{i}", available=True, down=False) for i in range(4)]
    moves = plan_moves([*old, surge], bound, spares=0)  # 30 s later: all five available
    assert (moves.leave, moves.update) == ((("h0", "s0"),), ())


@pytest.mark.parametrize(
    ("strategy", "surges"),
    [
        (UpdateStrategy(type="Rolling", max_surge=0, max_unavailable=1), False),
        (UpdateStrategy(type="Rolling", max_surge="0%", max_unavailable="10%"), False),
        (UpdateStrategy(type="Rolling", max_surge="1%", max_unavailable=0), True),
        (UpdateStrategy(type="ExpandFirst"), True),
        (CONTRACT_FIRST, False),
    ],
)
def test_only_a_strategy_that_can_surge_takes_spare_hosts(
    strategy: UpdateStrategy, surges: bool
) -> None:
    """The pool's store reads spare hosts each pass only for a strategy that may add one
    (maxSurge rounds up: 1% of a pool of one is a host)."""
    assert may_surge(strategy) is surges
