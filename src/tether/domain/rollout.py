"""Rollouts: the stored object, its states, and the pure planner that decides which nodes move.

A rollout takes a pool's members from what they run to the pool's target (a new profile
version, or a changed pool spec), under the pool's update strategy. It is created
``PendingApproval`` and nothing changes on a node until a person approves it.

The planner (:func:`plan_moves`) follows Cluster API's MachineDeployment rolling update:

* **available** members: Node Ready for at least ``minReadySeconds``, schedulable, no
  disruptive operation in progress;
* **down** members serve nothing: Node missing, not Ready, or cordoned. A member that is
  neither (its Node turned Ready less than ``minReadySeconds`` ago) is not available yet
  but serves, so taking it down costs availability like taking an available one;
* with ``D`` the pool's size (members, not counting surge members), at least
  ``D - maxUnavailable`` members stay available whenever the planner takes a serving one
  down (members that were unavailable before count against the budget too: one that
  stays so while the rollout waits is failed by the pool planner, see
  :mod:`tether.domain.poolplan`), and at most ``maxSurge`` surge members exist at once;
* **surge**: a spare Ready host of the site joins with the target; once it is available
  it is paired with an old member, which then leaves the pool;
* **in place**: an old member is cordoned, drained, updated and uncordoned; members
  already down go first (moving them takes nothing more down), and members reserved as a
  surge member's partner are not touched;
* ``inPlace`` and ``none`` changes take nothing down: they apply to every member at once;
* the old members that update next once the budget lets them are named
  (:attr:`Moves.next`, up to ``maxUnavailable``): the rollout records them, so the
  controller may cordon them ahead of the write that starts them;
* a member whose target cannot be computed is never moved, but it serves (or not) like
  any other and counts towards availability.

Pure: the caller passes the clock's reading.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from tether.domain.frozen import evolve
from tether.domain.models import IntOrPercent, UpdateStrategy, UpdateStrategyType
from tether.domain.profiles import Action

__all__ = [
    "ACTIVE_STATES",
    "Bounds",
    "Candidate",
    "Moves",
    "RolloutOrigin",
    "RolloutRecord",
    "RolloutState",
    "bounds",
    "may_surge",
    "plan_moves",
]


class RolloutState(StrEnum):
    PENDING_APPROVAL = "PendingApproval"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    COMPLETED = "Completed"
    FAILED = "Failed"
    ABORTED = "Aborted"
    SUPERSEDED = "Superseded"


#: States in which a rollout still owns its pool's updates.
ACTIVE_STATES = frozenset(
    {
        RolloutState.PENDING_APPROVAL,
        RolloutState.PROGRESSING,
        RolloutState.PAUSED,
        RolloutState.FAILED,
    }
)
TERMINAL_STATES = frozenset({RolloutState.COMPLETED, RolloutState.ABORTED, RolloutState.SUPERSEDED})

#: (state, verb) -> new state: what a person may do to a rollout.
VERBS: Mapping[tuple[RolloutState, str], RolloutState] = {
    (RolloutState.PENDING_APPROVAL, "approve"): RolloutState.PROGRESSING,
    (RolloutState.PROGRESSING, "pause"): RolloutState.PAUSED,
    (RolloutState.PAUSED, "resume"): RolloutState.PROGRESSING,
    (RolloutState.FAILED, "resume"): RolloutState.PROGRESSING,
    (RolloutState.PENDING_APPROVAL, "abort"): RolloutState.ABORTED,
    (RolloutState.PROGRESSING, "abort"): RolloutState.ABORTED,
    (RolloutState.PAUSED, "abort"): RolloutState.ABORTED,
    (RolloutState.FAILED, "abort"): RolloutState.ABORTED,
}


class RolloutOrigin(StrEnum):
    PROFILE = "profile"  # `tether pool rollout --to VERSION`
    POOL_SPEC = "poolSpec"  # the pool's spec changed what its nodes run
    ROLLBACK = "rollback"  # `tether rollout rollback`


@dataclass(frozen=True)
class RolloutRecord:
    """A rollout as the planner sees it (the store keeps the same fields)."""

    name: str
    pool: str
    state: RolloutState
    origin: RolloutOrigin
    target_key: str
    action: Action
    from_version: str | None = None
    to_version: str | None = None
    changes: tuple[Mapping[str, Any], ...] = ()
    rollback_of: str | None = None
    created_by: str = ""
    approved_by: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: The members and the action each needs, as planned when the rollout was made.
    nodes: Mapping[str, str] = field(default_factory=dict)
    #: failures counted towards maxFailedNodes (node: message); cleared by resume.
    failures: Mapping[str, str] = field(default_factory=dict)
    #: updated, total, and what each busy node is doing (written by the reconciler).
    progress: Mapping[str, Any] = field(default_factory=dict)
    message: str = ""
    resource_version: int = 0

    def with_state(self, state: RolloutState, now: datetime, message: str = "") -> RolloutRecord:
        finished = now if state in TERMINAL_STATES | {RolloutState.FAILED} else None
        started = self.started_at or (now if state is RolloutState.PROGRESSING else None)
        return evolve(self, state=state, finished_at=finished, started_at=started, message=message)


@dataclass(frozen=True)
class Bounds:
    """The strategy resolved against a pool of ``size`` members."""

    size: int
    max_surge: int
    max_unavailable: int
    min_ready_seconds: int
    max_failed_nodes: int

    @property
    def min_available(self) -> int:
        return max(0, self.size - self.max_unavailable)


def _resolve(value: IntOrPercent | None, size: int, *, round_up: bool) -> int:
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    share = int(value.rstrip("%")) * size / 100
    return math.ceil(share) if round_up else math.floor(share)


def may_surge(strategy: UpdateStrategy) -> bool:
    """Whether a rollout under ``strategy`` ever adds a spare host as a surge member
    (maxSurge rounds up: a pool of one surges by one if by anything)."""
    return bounds(strategy, 1).max_surge > 0


def bounds(strategy: UpdateStrategy, size: int) -> Bounds:
    """maxSurge rounds up, maxUnavailable down (as Kubernetes does); if both come out 0
    for a small pool, maxUnavailable becomes 1 so the rollout can move."""
    kind = strategy.type
    if kind is UpdateStrategyType.EXPAND_FIRST:
        surge, unavailable = max(1, _resolve(strategy.max_surge, size, round_up=True)), 0
    elif kind is UpdateStrategyType.CONTRACT_FIRST:
        surge, unavailable = 0, max(1, _resolve(strategy.max_unavailable, size, round_up=False))
    else:
        surge = _resolve(strategy.max_surge, size, round_up=True)
        unavailable = _resolve(strategy.max_unavailable, size, round_up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
    return Bounds(
        size=size,
        max_surge=surge,
        max_unavailable=unavailable,
        min_ready_seconds=strategy.min_ready_seconds,
        max_failed_nodes=strategy.max_failed_nodes,
    )


@dataclass(frozen=True)
class Candidate:
    """A member as the move planner sees it."""

    host: str
    up_to_date: bool  # runs the target (or is moving to it)
    available: bool
    down: bool  # serves nothing now (module doc): moving it costs no availability
    busy: bool  # an operation is in progress
    surge: bool  # joined as a surge member and not yet paired with an old one
    leaving: bool
    action: Action  # what moving it to the target needs (none when up to date)
    #: False: its target cannot be computed, so it is not moved (it still counts as
    #: available or not, and the pool planner fails the rollout on it).
    movable: bool = True


@dataclass(frozen=True)
class Moves:
    update: tuple[str, ...] = ()  # start updating these members in place
    join_spares: int = 0  # this many spare hosts join as surge members
    leave: tuple[tuple[str, str], ...] = ()  # (old member that leaves, surge member it pairs)
    waiting: str = ""  # why nothing (more) moves, for the pool's condition
    #: The old members that update next, in order, once the budget lets them (up to
    #: maxUnavailable of them): recorded with the rollout, so that the controller may
    #: cordon them before the write that starts them (module doc of
    #: :mod:`tether.controllers.pools`).
    next: tuple[str, ...] = ()


def _within_budget(member: Candidate, available: int, bounds: Bounds) -> bool:
    """Whether taking ``member`` down leaves ``D - maxUnavailable`` members available, of
    the ``available`` now; one already down is free (module doc)."""
    return member.down or available - int(member.available) >= bounds.min_available


def plan_moves(
    members: Sequence[Candidate], bounds: Bounds, *, spares: int, allow_disruption: bool = True
) -> Moves:
    """Which members move next (rules: module doc). ``spares``: Ready hosts free to join.

    ``allow_disruption`` False (paused, failed, aborted) starts nothing new."""
    if not allow_disruption:
        return Moves(waiting="the rollout is not progressing")
    staying = [m for m in members if not m.leaving]
    old = [m for m in staying if not m.up_to_date and not m.busy and m.movable]
    gentle = [m for m in old if not m.action.drains and m.action is not Action.RESTART]
    if gentle:  # nothing goes down: every such member at once
        return Moves(update=tuple(m.host for m in gentle))
    available = sum(1 for m in staying if m.available)
    surge_ready = [m for m in staying if m.surge and m.available and not m.busy]
    surge_total = sum(1 for m in staying if m.surge)
    leave: list[tuple[str, str]] = []
    # Old members, those down first: pairing or updating them takes nothing more down.
    queue = sorted(old, key=lambda m: (not m.down, m.available, m.host))
    for partner in surge_ready:
        if not queue:
            break
        victim = queue[0]
        if not _within_budget(victim, available, bounds):
            break
        queue.pop(0)
        leave.append((victim.host, partner.host))
        available -= int(victim.available)
    # Surge: spare hosts join while old members remain without a surge partner.
    unpaired_surge = surge_total - len(leave)
    uncovered = len(queue) - unpaired_surge
    join = max(0, min(bounds.max_surge - unpaired_surge, spares, uncovered))
    reserved = unpaired_surge + join if bounds.max_surge > 0 else 0
    # In place: what is not reserved for a surge partner, within the availability budget.
    update: list[str] = []
    unreserved = queue[: max(0, len(queue) - reserved)]
    for member in unreserved:
        if not _within_budget(member, available, bounds):
            break
        update.append(member.host)
        available -= int(member.available)
    after = unreserved[len(update) : len(update) + max(1, bounds.max_unavailable)]
    waiting = ""
    if not (update or join or leave) and (queue or unpaired_surge):
        if bounds.max_surge > 0 and not spares and uncovered > 0 and bounds.max_unavailable == 0:
            waiting = "WaitingForSpareHost"
        else:
            waiting = "WaitingForAvailability"
    return Moves(
        update=tuple(update),
        join_spares=join,
        leave=tuple(leave),
        waiting=waiting,
        next=tuple(m.host for m in after),
    )
