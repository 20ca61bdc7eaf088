"""The pool reconciler's pure core: from what is stored and observed to one plan to write.

Shaped like Cluster API's MachineDeployment controller: the controller fetches a
:class:`PoolInput` (the pool, its members and what was observed of each: applied plan
results, the Node, the outcome of the Kubernetes step it just performed), and
:func:`plan_pool` computes everything that must change, in memory: member records and
their operations (:mod:`tether.domain.memberops`), desired-state documents, hosts to
assign and release, the rollout (:mod:`tether.domain.rollout`), the pool's status (each
condition from its own pure function, with reason and message, and the state from the
conditions) and the events. The controller writes that plan in one transaction, then
performs the Kubernetes steps its members now stand at, and plans again.

In order, a plan: starts the leaves people asked for (release, pool delete) and the joins
of newly assigned hosts; moves every operation as far as observations allow; keeps a
pool with ``hostSelector`` at its ``size``; creates, moves, completes or fails the rollout;
and derives conditions and state. A rollout does not wait for availability for ever: once
it has waited with nothing moving for ``nodeTimeoutSeconds``, the members that keep it
waiting (unavailable, not moving) count as its failed nodes. Nor for a member whose
target cannot be computed (a host with no node IP): it counts for availability by its
Node but is never moved, and is a failed node of a progressing rollout at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from tether.domain.agent import document_hash
from tether.domain.frozen import evolve
from tether.domain.memberops import (
    EAGER_STEPS,
    Advance,
    EventNote,
    Member,
    MemberPhase,
    Observed,
    Operation,
    OpKind,
    Step,
    StepOutcome,
    StepResult,
    advance,
    as_left_by_own_steps,
    member_action,
    start_join,
    start_leave,
    start_update,
)
from tether.domain.models import EventType, ObjectKind, PoolSpec
from tether.domain.nodeplan import NodeTarget
from tether.domain.profiles import Action, diff
from tether.domain.rollout import (
    ACTIVE_STATES,
    Bounds,
    Candidate,
    RolloutOrigin,
    RolloutRecord,
    RolloutState,
    bounds,
    plan_moves,
)
from tether.domain.states import HostState, PoolState

__all__ = [
    "Condition",
    "PoolInput",
    "PoolPlan",
    "Spare",
    "combined",
    "cordons_ahead",
    "eager_steps",
    "followable",
    "newly_at_steps",
    "plan_pool",
    "stray_cordons",
    "successor",
    "with_steps",
]


@dataclass(frozen=True)
class Spare:
    """A Ready host of the pool's site, in no pool, that the pool may take."""

    host: str
    target: NodeTarget | None


@dataclass(frozen=True)
class Condition:
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "type": self.type,
            "status": self.status,
            "reason": self.reason,
            "message": self.message,
        }


@dataclass(frozen=True)
class PoolInput:
    name: str
    spec: PoolSpec
    state: PoolState
    deleting: bool
    members: Sequence[tuple[Member, Observed]]
    now: datetime
    target_key: str | None = None  # None: the pool's target cannot be computed
    problems: Sequence[str] = ()  # why not (cluster not imported, profile missing, ...)
    rollout: RolloutRecord | None = None  # the pool's newest rollout
    spares: Sequence[Spare] = ()
    latest_version: str | None = None  # newest version of the pool's profile
    new_rollout_name: str = ""  # the name a rollout made now gets
    secrets: Sequence[str] = ()  # values of sensitive variables: never shown in a rollout


@dataclass
class PoolPlan:
    members: dict[str, Member | None] = field(default_factory=dict)
    documents: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    #: The hash of each document of ``documents`` the plan made (see :meth:`digest`).
    digests: dict[str, str] = field(default_factory=dict)
    assign: list[str] = field(default_factory=list)
    release: list[str] = field(default_factory=list)
    rollout: RolloutRecord | None = None  # a changed or new rollout
    rollout_is_new: bool = False
    superseded: RolloutRecord | None = None
    state: PoolState = PoolState.PENDING
    conditions: list[Condition] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    events: list[EventNote] = field(default_factory=list)
    delete_pool: bool = False
    requeue: float | None = None  # seconds until the next reconcile; 0: at once

    def digest(self, host: str) -> str | None:
        """The hash of ``host``'s document in this plan (None: cleared), as the planner
        computed it: the store, the agents' wake-up and the next pass need it too, and a
        rollout step sends a hundred documents."""
        document = self.documents[host]
        if document is None:
            return None
        known = self.digests.get(host)
        return known if known is not None else document_hash(document)

    def wake_in(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.requeue = seconds if self.requeue is None else min(self.requeue, seconds)


# The whole pool --------------------------------------------------------------------------


@dataclass
class _Work:
    """The plan being built, and the members as they stand after each change."""

    inp: PoolInput
    plan: PoolPlan
    members: dict[str, Member]
    obs: dict[str, Observed]

    def put(self, member: Member) -> None:
        self.members[member.host] = member
        self.plan.members[member.host] = member

    def note(self, note: EventNote) -> None:
        self.plan.events.append(note)


def _node_ready(obs: Observed) -> bool:
    return obs.node is not None and obs.node.ready is True


def _available(member: Member, obs: Observed, now: datetime, min_ready: int) -> bool:
    """Whether the member serves workloads now: judged by its Node, which is what serves
    them (a host the plane cannot reach, say while the plane restarts, may serve fine)."""
    if member.phase is not MemberPhase.ACTIVE or not member.staying:
        return False
    op = member.op
    if op is not None and (op.failed is not None or op.takes_node_down):
        return False
    node = obs.node
    if node is None or node.ready is not True or node.unschedulable:
        return False
    since = node.ready_since
    return since is None or now - since >= timedelta(seconds=min_ready)


def _down(obs: Observed) -> bool:
    """Whether the member's Node serves nothing now (missing, not Ready, or cordoned):
    taking it down costs no availability. A Node Ready for less than ``minReadySeconds``
    is not down: it serves, though it does not count as available yet."""
    node = obs.node
    return node is None or node.ready is not True or node.unschedulable


def _leave(work: _Work, member: Member, why: str, rollout: str | None = None) -> None:
    op = start_leave(work.inp.now, rollout)
    work.put(evolve(member, phase=MemberPhase.LEAVING, op=op, surge=False))
    work.note(EventNote(ObjectKind.HOST, member.host, "Leaving", why))


def _start_requested(work: _Work) -> None:
    """Leaves asked for (release, pool delete) and joins of newly assigned hosts."""
    now = work.inp.now
    for member in list(work.members.values()):
        leaving = member.op is not None and member.op.kind is OpKind.LEAVE
        if (work.inp.deleting or member.leave_requested) and not leaving:
            why = "the pool is being deleted" if work.inp.deleting else "removal requested"
            _leave(work, member, why)
        elif member.phase is MemberPhase.JOINING and member.op is None:
            target = work.obs[member.host].target
            work.put(evolve(member, op=start_join(target, now)))
            work.note(EventNote(ObjectKind.HOST, member.host, "Joining", "joining the pool"))


def _finish(member: Member, op: Operation) -> Member:
    """The member once ``op`` completed: it runs the op's target."""
    target = op.target
    return evolve(
        member,
        phase=MemberPhase.ACTIVE,
        op=None,
        spec=dict(target.spec) if target else member.spec,
        spec_hash=target.hash if target else member.spec_hash,
        version=target.profile_version if target else member.version,
    )


def _advanced(work: _Work, member: Member) -> Advance:
    strategy = work.inp.spec.update_strategy
    return advance(
        member,
        work.obs[member.host],
        work.inp.now,
        node_timeout=strategy.node_timeout_seconds,
        drain_timeout=strategy.drain_timeout_seconds,
    )


def _advance_all(work: _Work, failures: dict[str, str]) -> None:
    busy = sorted((h, m) for h, m in work.members.items() if m.op is not None)
    for host, member in busy:
        moved = _advanced(work, member)
        work.plan.events.extend(moved.events)
        if moved.set_document:
            work.plan.documents[host] = moved.document
            if moved.digest is not None:  # a member's document is set once a plan
                work.plan.digests[host] = moved.digest
        if moved.requeue is not None:
            work.plan.wake_in(moved.requeue)
        if moved.release:
            del work.members[host]
            work.plan.members[host] = None
            work.plan.release.append(host)
            continue
        assert moved.member is not None
        after = moved.member
        op = after.op
        if moved.failed is not None and op is not None:
            kind = {OpKind.JOIN: "JoinFailed", OpKind.LEAVE: "LeaveFailed"}.get(
                op.kind, "NodeUpdateFailed"
            )
            work.note(EventNote(ObjectKind.HOST, host, kind, moved.failed, EventType.WARNING))
            if op.rollout is not None:
                failures[host] = moved.failed
        elif op is not None and op.done:
            verb = "Joined" if op.kind is OpKind.JOIN else "Updated"
            version = op.target.profile_version if op.target else ""
            work.note(EventNote(ObjectKind.HOST, host, verb, f"runs profile version {version}"))
            after = _finish(after, op)
        if after is not member:  # advance returns the member itself when nothing moved
            work.put(after)


def _fill_by_selector(work: _Work, taken: set[str]) -> None:
    spec = work.inp.spec
    if spec.size is None or work.inp.deleting:
        return
    staying = [m for m in work.members.values() if m.staying and not m.surge]
    if len(staying) < spec.size:
        for spare in work.inp.spares:
            if len(staying) >= spec.size:
                break
            if spare.host in taken:
                continue
            taken.add(spare.host)
            joined = Member(
                host=spare.host,
                phase=MemberPhase.JOINING,
                op=start_join(spare.target, work.inp.now),
            )
            work.obs.setdefault(spare.host, Observed(HostState.READY, target=spare.target))
            work.put(joined)
            work.plan.assign.append(spare.host)
            staying.append(joined)
            work.note(
                EventNote(ObjectKind.HOST, spare.host, "Joining", "picked by the pool's selector")
            )
    elif len(staying) > spec.size:
        # The least useful first: not serving, then still joining, then by name.
        def rank(m: Member) -> tuple[bool, bool, str]:
            return (_node_ready(work.obs[m.host]), m.phase is MemberPhase.ACTIVE, m.host)

        for member in sorted(staying, key=rank)[: len(staying) - spec.size]:
            _leave(work, member, f"the pool's size is {spec.size}")


#: Each host's candidate as last computed, with the member, observation and
#: ``minReadySeconds`` it was computed from and the time (see :func:`_candidate`).
_CANDIDATES: dict[str, tuple[Member, Observed, int, datetime, bool, Candidate]] = {}


def _candidate(member: Member, obs: Observed, now: datetime, min_ready: int) -> Candidate:
    """The member as the move planner sees it.

    Members and observations are immutable and a pass planned from the last one's
    output keeps the objects of the members it did not change, so a candidate made from
    the same two objects is reused: a rollout's pass at a thousand members builds the
    hundred that moved, not all of them. Only availability depends on the time, and only
    through ``minReadySeconds``: a candidate whose availability turned on the time is
    reused when it was available and the time has not gone back."""
    hit = _CANDIDATES.get(member.host)
    if hit is not None and hit[0] is member and hit[1] is obs and hit[2] == min_ready:
        timed, candidate = hit[4], hit[5]
        if not timed or (candidate.available and now >= hit[3]):
            return candidate
    target = obs.target
    op = member.op
    # Without a target nothing says what it should run: it is not moved, but it serves
    # (or not) like any member, so it counts for availability.
    up_to_date, action = False, Action.NONE
    if target is not None:
        up_to_date = member.spec_hash == target.hash or (
            op is not None and op.target_hash == target.hash
        )
        action = Action.NONE if up_to_date else member_action(member, target)
        up_to_date = up_to_date or member.phase is MemberPhase.JOINING
    available = _available(member, obs, now, min_ready)
    timed = min_ready > 0 and _available(member, obs, now, 0)
    candidate = Candidate(
        host=member.host,
        up_to_date=up_to_date,
        available=available,
        down=_down(obs),
        busy=op is not None,
        surge=member.surge,
        leaving=not member.staying,
        action=action,
        movable=target is not None,
    )
    if len(_CANDIDATES) > 200_000:
        _CANDIDATES.clear()
    _CANDIDATES[member.host] = (member, obs, min_ready, now, timed, candidate)
    return candidate


def _candidates(work: _Work, bound: Bounds) -> list[Candidate]:
    """Each member as the move planner sees it (:func:`_candidate`)."""
    now, min_ready = work.inp.now, bound.min_ready_seconds
    return [_candidate(m, work.obs[h], now, min_ready) for h, m in work.members.items()]


def _out_of_date(work: _Work) -> list[Member]:
    stale = []
    for m in work.members.values():
        if m.phase is not MemberPhase.ACTIVE or not m.staying:
            continue
        target = work.obs[m.host].target
        if target is None or m.spec_hash == target.hash:
            continue
        if m.op is None or m.op.target_hash != target.hash:
            stale.append(m)
    return stale


def _new_rollout(work: _Work, stale: list[Member]) -> RolloutRecord:
    """A rollout for a pool spec change: without disruption it starts at once."""
    inp = work.inp
    actions = {m.host: member_action(m, work.obs[m.host].target) for m in stale}  # type: ignore[arg-type]
    action = max(actions.values(), key=lambda a: a.rank)
    first = stale[0]
    changes = tuple(
        c.as_dict()
        for c in diff(first.spec or {}, work.obs[first.host].target.spec)  # type: ignore[union-attr]
    )
    gentle = action.rank <= Action.IN_PLACE.rank
    record = RolloutRecord(
        name=inp.new_rollout_name,
        pool=inp.name,
        state=RolloutState.PENDING_APPROVAL,
        origin=RolloutOrigin.POOL_SPEC,
        target_key=inp.target_key or "",
        action=action,
        from_version=first.version,
        to_version=inp.spec.profile.version if inp.spec.profile else None,
        changes=changes,
        nodes={h: a.value for h, a in sorted(actions.items())},
        created_by="tether",
        created_at=inp.now,
    )
    if gentle:
        record = evolve(record, approved_by="tether (no disruption)").with_state(
            RolloutState.PROGRESSING, inp.now, "applies in place, no node is drained"
        )
    return record


def _progress_rollout(
    work: _Work, rollout: RolloutRecord, failures: dict[str, str]
) -> RolloutRecord:
    inp, now = work.inp, work.inp.now
    strategy = inp.spec.update_strategy
    size = sum(1 for m in work.members.values() if m.staying and not m.surge)
    bound = bounds(strategy, size)
    if failures:
        rollout = evolve(rollout, failures={**rollout.failures, **failures})
    if rollout.state is RolloutState.PROGRESSING:
        rollout = _fail_untargeted(work, rollout)
    if (
        rollout.state is RolloutState.PROGRESSING
        and len(rollout.failures) >= bound.max_failed_nodes
    ):
        rollout = _fail(work, rollout, f"{len(rollout.failures)} node(s) failed")
    spares = [s for s in inp.spares if s.host not in work.members and s.target is not None]
    moves = plan_moves(
        _candidates(work, bound),
        bound,
        spares=len(spares),
        allow_disruption=rollout.state is RolloutState.PROGRESSING,
    )
    for host in moves.update:
        member = work.members[host]
        op = start_update(member, work.obs[host].target, now, rollout.name)  # type: ignore[arg-type]
        work.put(evolve(member, op=op))
        work.note(
            EventNote(
                ObjectKind.HOST,
                host,
                "NodeUpdateStarted",
                f"{op.action.value} for rollout {rollout.name}",
            )
        )
    for spare in spares[: moves.join_spares]:
        joined = Member(
            host=spare.host,
            phase=MemberPhase.JOINING,
            op=start_join(spare.target, now, rollout.name),
            surge=True,
        )
        work.obs[spare.host] = Observed(HostState.READY, target=spare.target)
        work.put(joined)
        work.plan.assign.append(spare.host)
        work.note(
            EventNote(
                ObjectKind.HOST, spare.host, "Joining", f"surge host for rollout {rollout.name}"
            )
        )
    for old, partner in moves.leave:
        _leave(
            work, work.members[old], f"replaced by {partner} (rollout {rollout.name})", rollout.name
        )
        work.put(evolve(work.members[partner], surge=False))
    moved = bool(moves.update or moves.join_spares or moves.leave)
    if moved:
        work.plan.wake_in(0)
    # A node that turns available later (minReadySeconds) may let the rollout move on.
    timers = False
    horizon = now - timedelta(seconds=bound.min_ready_seconds)  # Ready since before: available
    for host in work.members:
        node = work.obs[host].node
        if node is not None and node.ready and node.ready_since and node.ready_since > horizon:
            timers = True
            work.plan.wake_in((node.ready_since - horizon).total_seconds())
    moving = any(
        m.op is not None and m.op.failed is None and not m.op.waits_for_target
        for m in work.members.values()
    )
    quiet = not (moving or timers or moved)
    stalled_since = _stalled_since(rollout, moves.waiting, quiet=quiet, now=now)
    if stalled_since is not None:
        left = stalled_since + timedelta(seconds=strategy.node_timeout_seconds) - now
        if left > timedelta(0):
            work.plan.wake_in(left.total_seconds())
        else:
            rollout = _fail_blockers(work, rollout, bound, strategy.node_timeout_seconds)
            if rollout.failures:  # it stops below: nothing can move
                stalled_since = None
    # Done when every member runs the target, serves, and no surge member is unpaired.
    staying = [c for c in _candidates(work, bound) if not c.leaving]
    updated = sum(1 for c in staying if c.up_to_date and not c.busy)
    done = (
        rollout.state is RolloutState.PROGRESSING
        and all(c.up_to_date and not c.busy and not c.surge for c in staying)
        and not any(not m.staying for m in work.members.values())
    )
    ours = sorted(
        (h, m.op)
        for h, m in work.members.items()
        if m.op is not None and m.op.rollout == rollout.name
    )
    busy = {h: op.step.value if op.step else "done" for h, op in ours}
    progress: dict[str, Any] = {
        "updated": updated,
        "total": len(staying),
        "busy": busy,
        "waiting": moves.waiting,
        "bounds": {"maxSurge": bound.max_surge, "maxUnavailable": bound.max_unavailable},
    }
    if moves.next:
        progress["next"] = list(moves.next)
    if stalled_since is not None:
        progress["stalledSince"] = stalled_since.isoformat()
    if progress != rollout.progress:
        rollout = evolve(rollout, progress=progress)
    if done:
        rollout = rollout.with_state(
            RolloutState.COMPLETED, now, f"{updated} node(s) run the target"
        )
        work.note(EventNote(ObjectKind.ROLLOUT, rollout.name, "RolloutCompleted", rollout.message))
    elif rollout.state is RolloutState.PROGRESSING and rollout.failures and quiet:
        rollout = _fail(work, rollout, "stopped: nothing else can move; node(s) failed")
    return rollout


def _stalled_since(
    rollout: RolloutRecord, waiting: str, *, quiet: bool, now: datetime
) -> datetime | None:
    """Since when the rollout has waited for availability with nothing in the pool moving
    and no node about to turn available (``None``: it is not stalled). The time is kept
    in the rollout's progress, so a restarted plane keeps counting."""
    if not quiet or rollout.state is not RolloutState.PROGRESSING:
        return None
    if waiting != "WaitingForAvailability":
        return None
    recorded = rollout.progress.get("stalledSince")
    return datetime.fromisoformat(recorded) if isinstance(recorded, str) else now


def _fail_blockers(
    work: _Work, rollout: RolloutRecord, bound: Bounds, timeout: int
) -> RolloutRecord:
    """Count the members that keep a stalled rollout waiting as its failures.

    They are staying, unavailable and not moving: each counts against ``maxUnavailable``
    for as long as it stays so (a lost host, a Node NotReady or cordoned by someone), so
    the rollout would otherwise wait for ever. As failures they count against
    ``maxFailedNodes``, and with nothing else able to move the rollout stops as Failed
    naming them; ``resume`` clears them and waits again."""
    failures = dict(rollout.failures)
    for host, member in sorted(work.members.items()):
        if not member.staying or host in failures:
            continue
        if member.op is not None and member.op.failed is None:
            continue
        obs = work.obs[host]
        if _available(member, obs, work.inp.now, bound.min_ready_seconds):
            continue
        why = _why_unavailable(member, obs)
        failures[host] = f"unavailable ({why}): the rollout waited {timeout}s for it to serve"
        work.note(
            EventNote(ObjectKind.HOST, host, "NodeUnavailable", failures[host], EventType.WARNING)
        )
    return evolve(rollout, failures=failures)


def _fail_untargeted(work: _Work, rollout: RolloutRecord) -> RolloutRecord:
    """Count each staying member whose target cannot be computed as a failed node.

    Nothing says what it should run, so the rollout cannot move it and would never end;
    as a failure it counts against ``maxFailedNodes``, and once nothing else can move the
    rollout stops as Failed naming it. ``resume`` clears it: a target valid by then moves
    the member, one still invalid fails it again."""
    failures = dict(rollout.failures)
    untargeted = [h for h, m in work.members.items() if work.obs[h].target is None and m.staying]
    for host in sorted(untargeted):  # seldom any: sorted after the look at each member
        obs = work.obs[host]
        if host in failures:
            continue
        problem = obs.target_problem or "the target cannot be computed"
        failures[host] = f"no valid node target: {problem}"
        work.note(
            EventNote(ObjectKind.HOST, host, "NodeTargetInvalid", failures[host], EventType.WARNING)
        )
    return evolve(rollout, failures=failures)


def _why_unavailable(member: Member, obs: Observed) -> str:
    node = obs.node
    why = []
    if obs.host_state in (HostState.UNREACHABLE, HostState.UNHEALTHY):
        why.append(f"host {obs.host_state.value}")
    if node is None:
        why.append("no Node")
    elif node.ready is not True:
        why.append("Node not Ready")
    elif node.unschedulable:
        why.append("Node cordoned")
    if member.op is not None and member.op.failed is not None:
        why.append(f"{member.op.kind.value} failed: {member.op.failed}")
    return "; ".join(why) or "not serving"


def _fail(work: _Work, rollout: RolloutRecord, why: str) -> RolloutRecord:
    """The rollout stops as Failed, naming its failed nodes (an event says so)."""
    message = f"{why}: {', '.join(sorted(rollout.failures))}"
    failed = rollout.with_state(RolloutState.FAILED, work.inp.now, message)
    work.note(
        EventNote(ObjectKind.ROLLOUT, rollout.name, "RolloutFailed", message, EventType.WARNING)
    )
    return failed


def _rollouts(work: _Work, failures: dict[str, str]) -> None:
    inp = work.inp
    if inp.target_key is None or inp.deleting:
        return
    current = inp.rollout
    if current is not None and current.target_key != inp.target_key:
        stale = _out_of_date(work)
        if not stale:
            return
        if current.state in ACTIVE_STATES:
            work.plan.superseded = _without_next(current).with_state(
                RolloutState.SUPERSEDED, inp.now, "the pool's target changed"
            )
            work.note(
                EventNote(
                    ObjectKind.ROLLOUT,
                    current.name,
                    "RolloutSuperseded",
                    "the pool's target changed",
                )
            )
        current = None
    if current is None:
        stale = _out_of_date(work)
        if not stale:
            return
        created = _new_rollout(work, stale)
        work.plan.rollout, work.plan.rollout_is_new = created, True
        work.note(
            EventNote(
                ObjectKind.ROLLOUT,
                created.name,
                "RolloutCreated",
                f"{created.action.value} for {len(stale)} node(s): the pool's spec changed"
                + ("" if created.state is RolloutState.PROGRESSING else "; approve it to start"),
            )
        )
        current = created
    if current.state in (RolloutState.PROGRESSING, RolloutState.PAUSED, RolloutState.FAILED):
        moved = _progress_rollout(work, current, failures)
        if moved != inp.rollout or work.plan.rollout_is_new:
            work.plan.rollout = moved
    elif current.progress.get("next"):  # aborted: names no host to go next any more
        work.plan.rollout = _without_next(current)


def _without_next(rollout: RolloutRecord) -> RolloutRecord:
    if "next" not in rollout.progress:
        return rollout
    return evolve(rollout, progress={k: v for k, v in rollout.progress.items() if k != "next"})


def _stray_uncordons(work: _Work) -> None:
    """An event for each Node uncordoned as a stray (:func:`stray_cordons`: strays are
    hosts the rollout names next, so only those are looked at, not the whole pool)."""
    for host in _named_next(work.inp.rollout):
        obs = work.obs.get(host)
        if obs is None or not obs.external or work.members[host].op is not None:
            continue
        if any(r.step is Step.UNCORDON and r.outcome is StepOutcome.DONE for r in obs.external):
            work.note(
                EventNote(
                    ObjectKind.HOST,
                    host,
                    "Uncordoned",
                    "cordoned to go next in a rollout that no longer moves it "
                    "(the plane restarted before recording the step)",
                )
            )


# Conditions: each from its own pure function ---------------------------------------------


def _names(hosts: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(hosts[:limit])
    return shown + (f" and {len(hosts) - limit} more" if len(hosts) > limit else "")


def target_condition(inp: PoolInput, work_obs: Mapping[str, Observed]) -> Condition:
    problems = list(inp.problems)
    problems += [
        f"{h}: {o.target_problem}" for h, o in sorted(work_obs.items()) if o.target_problem
    ]
    if problems:
        return Condition("TargetValid", "False", "InvalidTarget", "; ".join(problems)[:1000])
    return Condition("TargetValid", "True", "Valid")


def ready_condition(members: Mapping[str, Member], obs: Mapping[str, Observed]) -> Condition:
    staying = sorted(h for h, m in members.items() if m.staying)
    if not staying:
        return Condition("Ready", "False", "NoHosts", "the pool has no hosts")
    joining = [h for h in staying if members[h].phase is MemberPhase.JOINING]
    not_ready = [
        h for h in staying if members[h].phase is MemberPhase.ACTIVE and not _node_ready(obs[h])
    ]
    if not_ready:
        return Condition(
            "Ready",
            "False",
            "NodesNotReady",
            f"{len(not_ready)}/{len(staying)} nodes not Ready: {_names(not_ready)}",
        )
    if joining:
        return Condition("Ready", "False", "Joining", f"joining: {_names(joining)}")
    return Condition("Ready", "True", "AllNodesReady", f"all {len(staying)} nodes Ready")


def plans_condition(members: Mapping[str, Member], obs: Mapping[str, Observed]) -> Condition:
    failed = [
        f"{h}: {(m.op.failed if m.op and m.op.failed else obs[h].applied_message)[:200]}"
        for h, m in sorted(members.items())
        if (m.op is not None and m.op.failed) or obs[h].applied_ok is False
    ]
    if failed:
        return Condition("PlansApplied", "False", "PlanFailed", "; ".join(failed[:5]))
    return Condition("PlansApplied", "True", "Applied")


def up_to_date_condition(inp: PoolInput, rollout: RolloutRecord | None, stale: int) -> Condition:
    current = inp.spec.profile.version if inp.spec.profile else None
    if rollout is not None and rollout.state is RolloutState.PENDING_APPROVAL:
        return Condition(
            "UpToDate",
            "False",
            "RolloutPendingApproval",
            f"rollout {rollout.name} ({rollout.action.value}) waits for approval",
        )
    if rollout is not None and rollout.state in (RolloutState.PROGRESSING, RolloutState.PAUSED):
        return Condition("UpToDate", "False", "RollingOut", f"rollout {rollout.name}")
    if rollout is not None and rollout.state is RolloutState.FAILED:
        return Condition("UpToDate", "False", "RolloutFailed", rollout.message)
    if stale:
        reason = (
            "RolloutAborted" if rollout and rollout.state is RolloutState.ABORTED else "OutOfDate"
        )
        return Condition("UpToDate", "False", reason, f"{stale} node(s) run an older target")
    if current and inp.latest_version and inp.latest_version != current:
        return Condition(
            "UpToDate",
            "True",
            "UpdateAvailable",
            f"profile version {inp.latest_version} is available (the pool runs {current}); "
            f"tether pool rollout {inp.name} --to {inp.latest_version}",
        )
    return Condition("UpToDate", "True", "UpToDate")


def rolling_condition(rollout: RolloutRecord | None) -> Condition:
    if rollout is None or rollout.state not in (RolloutState.PROGRESSING, RolloutState.PAUSED):
        return Condition("RollingOut", "False", "Idle")
    progress = rollout.progress
    busy = progress.get("busy") or {}
    doing = ", ".join(f"{h}: {s}" for h, s in list(busy.items())[:5])
    message = f"{progress.get('updated', 0)}/{progress.get('total', 0)} updated" + (
        f"; {doing}" if doing else ""
    )
    if rollout.state is RolloutState.PAUSED:
        return Condition("RollingOut", "True", "Paused", message)
    waiting = progress.get("waiting") or ""
    if waiting and not busy:
        hint = {
            "WaitingForSpareHost": "no spare Ready host in the site: add one, or use ContractFirst",
            "WaitingForAvailability": "waiting until enough nodes are available",
        }.get(waiting, waiting)
        return Condition("RollingOut", "True", waiting, f"{message}; {hint}")
    return Condition("RollingOut", "True", "RollingOut", message)


def sized_condition(inp: PoolInput, members: Mapping[str, Member]) -> Condition | None:
    if inp.spec.size is None:
        return None
    staying = sum(1 for m in members.values() if m.staying and not m.surge)
    if staying < inp.spec.size:
        return Condition(
            "Sized",
            "False",
            "NotEnoughHosts",
            f"size {inp.spec.size}, {staying} hosts: no more Ready hosts of site "
            f"{inp.spec.site} match the selector",
        )
    return Condition("Sized", "True", "Sized", f"{staying} hosts")


def pool_state(
    *,
    deleting: bool,
    members: Mapping[str, Member],
    conditions: Mapping[str, Condition],
    rollout: RolloutRecord | None,
) -> PoolState:
    """The pool's state, from its conditions (one place decides it)."""
    if deleting:
        return PoolState.DELETING
    if rollout is not None and rollout.state in (RolloutState.PROGRESSING, RolloutState.PAUSED):
        return PoolState.REPAVING
    if not members:
        return PoolState.PENDING
    bad = [
        conditions["TargetValid"].status == "False",
        conditions["PlansApplied"].status == "False",
        conditions["Ready"].reason == "NodesNotReady",
        rollout is not None and rollout.state is RolloutState.FAILED,
    ]
    if any(bad):
        return PoolState.DEGRADED
    if conditions["Ready"].status == "False":
        return PoolState.PROVISIONING
    return PoolState.READY


def _started(inp: PoolInput) -> _Work:
    """A plan's work as it begins: members as read, each seen as its own Kubernetes steps
    left its Node, with the leaves and joins people asked for started."""
    work = _Work(
        inp=inp,
        plan=PoolPlan(),
        members={m.host: m for m, _ in inp.members},
        obs={m.host: as_left_by_own_steps(o) for m, o in inp.members},
    )
    _start_requested(work)
    return work


def _counts(work: _Work, stale: int) -> dict[str, int]:
    """The pool's member counts, in one look at each member (a thousand, every pass)."""
    phases = dict.fromkeys(MemberPhase, 0)
    leaving = ready = 0
    for host, m in work.members.items():
        phases[m.phase] += 1
        leaving += not m.staying
        ready += _node_ready(work.obs[host])
    return {
        "hosts": len(work.members),
        "active": phases[MemberPhase.ACTIVE],
        "joining": phases[MemberPhase.JOINING],
        "leaving": leaving,
        "ready": ready,
        "outOfDate": stale,
    }


def plan_pool(inp: PoolInput) -> PoolPlan:
    """Everything to change for the pool, in memory (module doc); write it in one go."""
    work = _started(inp)
    failures: dict[str, str] = {}
    _stray_uncordons(work)
    _advance_all(work, failures)
    taken = set(work.members)
    if inp.rollout is None or inp.rollout.state not in ACTIVE_STATES or inp.spec.size is not None:
        _fill_by_selector(work, taken)
    _rollouts(work, failures)
    for member in work.members.values():
        if member.external_step is not None:
            work.plan.wake_in(0)
    rollout = work.plan.rollout or inp.rollout
    stale = len(_out_of_date(work))
    conditions = [
        target_condition(inp, work.obs),
        ready_condition(work.members, work.obs),
        plans_condition(work.members, work.obs),
        up_to_date_condition(inp, rollout, stale),
        rolling_condition(rollout),
    ]
    sized = sized_condition(inp, work.members)
    if sized is not None:
        conditions.append(sized)
    if inp.deleting:
        conditions.append(
            Condition("Deleting", "True", "Deleting", f"{len(work.members)} host(s) still leaving")
        )
    by_type = {c.type: c for c in conditions}
    state = pool_state(
        deleting=inp.deleting, members=work.members, conditions=by_type, rollout=rollout
    )
    plan = work.plan
    plan.conditions, plan.state = conditions, state
    plan.counts = _counts(work, stale)
    if state is not inp.state:
        warn = state in (PoolState.DEGRADED, PoolState.DELETING)
        why = next((c for c in conditions if c.status == "False" and c.type != "RollingOut"), None)
        plan.events.append(
            EventNote(
                ObjectKind.POOL,
                inp.name,
                "StateChanged",
                f"{inp.state.value} -> {state.value}"
                + (f" ({why.reason}: {why.message})" if why and warn else ""),
                EventType.WARNING if warn else EventType.NORMAL,
            )
        )
    plan.delete_pool = inp.deleting and not work.members
    return plan


# The next pass, without reading the store again --------------------------------------------


def newly_at_steps(inp: PoolInput, plan: PoolPlan) -> list[Member]:
    """The members this plan moved to a Kubernetes step (recorded, not yet taken)."""
    before = {m.host: m for m, _ in inp.members}
    moved = []
    for host, member in plan.members.items():
        if member is None or member.external_step is None:
            continue
        key = member.op.key if member.op is not None else None
        old = before.get(host)
        if old is None or old.op is None or old.op.key != key:
            moved.append(member)
    return moved


def eager_steps(inp: PoolInput) -> list[Member]:
    """The members whose operation the plan of ``inp`` would move to a step the
    controller takes before writing (:data:`~tether.domain.memberops.EAGER_STEPS`); it
    takes them and plans with their outcome (:func:`with_steps`).

    Found as :func:`plan_pool` begins (requested leaves and joins started, then each
    operation advanced), without the rest of a plan: at a thousand members a plan is
    tens of milliseconds, and a rollout wave waits for it. Only operations with an eager
    step before their next send are advanced (:attr:`Operation.eager_before_send`; the
    leaves and joins a plan starts have none): after a cordon and a drain the next step
    sends a plan, and advancing those rendered it for nothing."""

    def may_reach(member: Member) -> bool:
        op = member.op
        return op is not None and op.failed is None and op.eager_before_send

    if not any(may_reach(m) for m, _ in inp.members):
        return []
    work = _started(inp)
    found = []
    for member in work.members.values():
        op = member.op
        if op is None or not may_reach(member):
            continue
        after = _advanced(work, member).member
        if after is None or after.op is None or after.op.failed is not None:
            continue
        if after.op.key != op.key and after.op.step in EAGER_STEPS:
            found.append(after)
    return found


def with_steps(inp: PoolInput, external: Mapping[str, tuple[StepResult, ...]]) -> PoolInput:
    """``inp`` with the outcomes of Kubernetes steps just taken for some members (the
    others keep what they observed)."""
    members = [
        (member, evolve(obs, external=external[member.host]))
        if member.host in external
        else (member, obs)
        for member, obs in inp.members
    ]
    return evolve(inp, members=members)


def successor(
    inp: PoolInput,
    plan: PoolPlan,
    external: Mapping[str, tuple[StepResult, ...]],
    now: datetime,
) -> PoolInput | None:
    """The input the next pass would read once ``plan`` is written, if nothing changed the
    store but that write, with ``external`` the Kubernetes steps taken since.

    A rollout step records a member's next step, takes it, and plans again: cordon, drain
    and send the plan, or uncordon one node and cordon the next. Planning again from this
    input takes those steps one after another without reading the whole pool back each
    time (at a thousand nodes the read is most of a pass). Whatever others changed
    meanwhile (a Node's status, an agent's report) the pass after sees; a person's change
    is caught by the write's guards. None when the plan did more than this view follows
    (hosts assigned or released, a member removed, a rollout made or superseded, the pool
    deleted): read the store again (:func:`followable`)."""
    if not followable(plan):
        return None
    members: list[tuple[Member, Observed]] = []
    for member, obs in inp.members:
        changed = plan.members.get(member.host)
        if changed is not None:
            member = evolve(changed, resource_version=member.resource_version + 1)
        if member.host in plan.documents:
            digest = plan.digest(member.host)
            if digest is None:
                obs = evolve(obs, doc_hash=None, applied_hash=None, applied_ok=None)
            else:
                obs = evolve(obs, doc_hash=digest)
        steps = external.get(member.host, ())
        if steps != obs.external:  # most members took no step: keep their observation
            obs = evolve(obs, external=steps)
            if obs.node is not None and as_left_by_own_steps(obs).node is None:
                obs = evolve(obs, node=None)  # its Node deleted: the store has none either
        members.append((member, obs))
    rollout = inp.rollout
    if plan.rollout is not None:
        rollout = evolve(plan.rollout, resource_version=plan.rollout.resource_version + 1)
    return evolve(inp, state=plan.state, members=members, rollout=rollout, now=now)


def followable(plan: PoolPlan) -> bool:
    """Whether :func:`successor` can follow ``plan``: it assigns or releases no host,
    removes no member, makes or supersedes no rollout and keeps the pool."""
    return not (
        plan.assign
        or plan.release
        or plan.delete_pool
        or plan.rollout_is_new
        or plan.superseded is not None
        or any(m is None for m in plan.members.values())
    )


# Cordons taken ahead of the write --------------------------------------------------------


def _named_next(rollout: RolloutRecord | None) -> frozenset[str]:
    return frozenset(rollout.progress.get("next") or ()) if rollout is not None else frozenset()


def cordons_ahead(inp: PoolInput, plan: PoolPlan, moved: Sequence[Member]) -> bool:
    """Whether the controller may cordon and drain ``moved`` (the members ``plan`` moved to
    a Kubernetes step: :func:`newly_at_steps`) before writing ``plan``, and write it with
    the plan after those steps in one go (:func:`combined`).

    Only when each of them starts an update of the pool's progressing rollout at its
    cordon, on a host that an earlier write recorded as going next (:attr:`Moves.next
    <tether.domain.rollout.Moves.next>`), and the plan can be followed (:func:`followable`).
    The intent is then on record before the step is taken, as for every other step: a
    plane killed before the write finds the rollout still naming those hosts next and
    their Nodes cordoned, so down; the planner takes down members first, so the same
    hosts start again (the cordon and the drain, taken again, change nothing), or, if the
    rollout no longer moves them, they are uncordoned (:func:`stray_cordons`)."""
    rollout = inp.rollout
    if not moved or rollout is None or rollout.state is not RolloutState.PROGRESSING:
        return False
    ahead = _named_next(rollout)
    for member in moved:
        op = member.op
        if member.host not in ahead or op is None or op.rollout != rollout.name:
            return False
        if op.kind is not OpKind.UPDATE:
            return False
        if op.index != 0 or op.step is not Step.CORDON:
            return False
    return followable(plan)


def combined(first: PoolPlan, second: PoolPlan) -> PoolPlan:
    """One plan that writes what writing ``first`` and then ``second`` would, ``second``
    planned from :func:`successor` of ``first`` (``first`` :func:`followable`): written
    against what ``first`` was planned from, every row guarded by the version read then."""
    rollout = second.rollout
    if rollout is None:
        rollout = first.rollout
    elif first.rollout is not None:  # second's was planned as written by first: one more
        rollout = evolve(rollout, resource_version=first.rollout.resource_version)
    return replace(
        second,
        members={**first.members, **second.members},
        documents={**first.documents, **second.documents},
        digests={**first.digests, **second.digests},
        events=[*first.events, *second.events],
        rollout=rollout,
    )


def stray_cordons(inp: PoolInput) -> list[str]:
    """Members whose Nodes the controller may have cordoned ahead of a write that never
    came (:func:`cordons_ahead`) and which the pool's rollout no longer moves (paused,
    failed, aborted, or the pool's target changed): no operation, their host recorded as
    going next, their Node cordoned. The controller uncordons them before planning, as it
    does an update's last uncordon (it only gives capacity back); the next write no longer
    names them."""
    rollout = inp.rollout
    ahead = _named_next(rollout)
    if not ahead or rollout is None:
        return []
    if rollout.state is RolloutState.PROGRESSING and rollout.target_key == inp.target_key:
        return []  # it moves them: down members first
    return [
        member.host
        for member, obs in inp.members
        if member.host in ahead
        and member.op is None
        and obs.node is not None
        and obs.node.unschedulable
    ]
