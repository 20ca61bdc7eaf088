"""Rollouts as people see and steer them: create, approve, pause, resume, abort, roll back.

A rollout is made ``PendingApproval`` with the changes it brings and the action each
member needs; nothing happens on a node until someone approves it. Approving a profile
rollout moves the pool to the new version (the pool's target), and the pool reconciler
takes the members there under the pool's update strategy (:mod:`tether.domain.rollout`).
Each verb is one transaction, checked against the rollout's state, and recorded as an
event of the rollout (in its pool's stream) naming who did it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tether.domain import resources as r
from tether.domain.memberops import Member, MemberPhase, Operation, member_action
from tether.domain.models import (
    Change,
    ClusterSpec,
    EventType,
    ObjectKind,
    PoolSpec,
    ProfileRef,
)
from tether.domain.profiles import Action, diff, sensitive_values, strongest
from tether.domain.rollout import (
    ACTIVE_STATES,
    VERBS,
    RolloutOrigin,
    RolloutRecord,
    RolloutState,
)
from tether.errors import Conflict, Invalid
from tether.services import events
from tether.services.profiles import (
    TargetInputs,
    check_pool,
    host_target,
    load_profile,
    sample_target,
    target_key,
)
from tether.store.repo import get_by, get_named, page
from tether.store.schema import ClusterRow, HostRow, PoolMemberRow, PoolRow, RolloutRow

__all__ = ["act", "create", "get", "list_rollouts", "record_of", "rollback", "row_values"]


def record_of(row: RolloutRow) -> RolloutRecord:
    spec, status = row.spec, row.status or {}

    def when(key: str) -> datetime | None:
        value = status.get(key)
        return datetime.fromisoformat(value) if value else None

    return RolloutRecord(
        name=row.name,
        pool=row.pool,
        state=RolloutState(row.state),
        origin=RolloutOrigin(spec["origin"]),
        target_key=spec["targetKey"],
        action=Action(spec["action"]),
        from_version=spec.get("fromVersion"),
        to_version=spec.get("toVersion"),
        changes=tuple(spec.get("changes") or ()),
        rollback_of=spec.get("rollbackOf"),
        created_by=spec.get("createdBy", ""),
        approved_by=status.get("approvedBy"),
        created_at=row.created_at,
        started_at=when("startedAt"),
        finished_at=when("finishedAt"),
        nodes=spec.get("nodes") or {},
        failures=status.get("failures") or {},
        progress=status.get("progress") or {},
        message=status.get("message", ""),
        resource_version=row.resource_version,
    )


def row_values(record: RolloutRecord) -> dict[str, Any]:
    """The columns of a rollout's row (spec, status, state)."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "name": record.name,
        "pool": record.pool,
        "state": record.state.value,
        "spec": {
            "origin": record.origin.value,
            "targetKey": record.target_key,
            "action": record.action.value,
            "fromVersion": record.from_version,
            "toVersion": record.to_version,
            "changes": list(record.changes),
            "nodes": dict(record.nodes),
            "rollbackOf": record.rollback_of,
            "createdBy": record.created_by,
        },
        "status": {
            "approvedBy": record.approved_by,
            "startedAt": iso(record.started_at),
            "finishedAt": iso(record.finished_at),
            "failures": dict(record.failures),
            "progress": dict(record.progress),
            "message": record.message,
        },
    }


def to_view(record: RolloutRecord, updated_at: datetime | None = None) -> r.Rollout:
    return r.Rollout(
        name=record.name,
        pool=record.pool,
        state=record.state.value,
        origin=record.origin.value,
        from_version=record.from_version,
        to_version=record.to_version,
        action=record.action.value,
        changes=[Change.model_validate(c) for c in record.changes],
        nodes=dict(record.nodes),
        progress=dict(record.progress),
        failures=dict(record.failures),
        message=record.message,
        rollback_of=record.rollback_of,
        created_by=record.created_by,
        approved_by=record.approved_by,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        updated_at=updated_at,
        resource_version=record.resource_version,
    )


def row_view(row: RolloutRow) -> r.Rollout:
    return to_view(record_of(row), row.updated_at)


def _save(session: Session, record: RolloutRecord, now: datetime) -> RolloutRecord:
    seen = record.resource_version
    done = session.execute(
        update(RolloutRow)
        .where(RolloutRow.name == record.name, RolloutRow.resource_version == seen)
        .values(resource_version=seen + 1, updated_at=now, **row_values(record))
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict(
            f"rollout {record.name} was changed by someone else meanwhile: read it again",
            field="resourceVersion",
            rule="current",
        )
    return replace(record, resource_version=seen + 1)


def _note(
    session: Session, record: RolloutRecord, reason: str, message: str, *, warn: bool = False
) -> None:
    events.record(
        session,
        ObjectKind.ROLLOUT,
        record.name,
        reason,
        message,
        EventType.WARNING if warn else EventType.NORMAL,
        pool=record.pool,
    )


def _row(session: Session, name: str) -> RolloutRow:
    return get_by(session, RolloutRow, "rollout", name, RolloutRow.name == name)


def _newest(session: Session, pool: str) -> RolloutRow | None:
    return session.scalars(
        select(RolloutRow).where(RolloutRow.pool == pool).order_by(RolloutRow.id.desc()).limit(1)
    ).first()


def _make_room(session: Session, pool: str, actor: str, now: datetime) -> None:
    """Refuse while a rollout runs; a rollout waiting for approval is superseded."""
    newest = _newest(session, pool)
    if newest is None:
        return
    record = record_of(newest)
    if record.state is RolloutState.PENDING_APPROVAL:
        superseded = record.with_state(RolloutState.SUPERSEDED, now, f"superseded by {actor}")
        _save(session, superseded, now)
        _note(session, superseded, "RolloutSuperseded", superseded.message)
    elif record.state in ACTIVE_STATES:
        raise Conflict(
            f"rollout {record.name} is {record.state.value}: abort it (tether rollout abort "
            f"{record.name}) before starting another",
            field="to",
            rule="one_rollout_at_a_time",
        )


def _plan_members(
    session: Session, pool: PoolRow, spec: PoolSpec, inputs: TargetInputs
) -> tuple[dict[str, str], list[Change], Action]:
    """Each member's action from what it runs (pool ``spec``) towards ``inputs`` (the pool
    moved to the new profile version), the changes, and the strongest action. The
    members' targets are computed into the reconciler's cache
    (:func:`tether.services.profiles.host_target`): the first reconcile after approval
    finds them there."""
    cluster, profile = inputs.cluster, inputs.profile
    actions: dict[str, Action] = {}
    first: tuple[Any, Any] | None = None
    rows = session.execute(
        select(
            PoolMemberRow,
            HostRow.resource_version,
            HostRow.created_at,
            HostRow.spec,
            HostRow.inventory,
        )
        .join(HostRow, HostRow.name == PoolMemberRow.host_name)
        .where(PoolMemberRow.pool == pool.name)
        .order_by(PoolMemberRow.host_name)
    ).all()
    inventories = {row.host_name: inventory or {} for row, _, _, _, inventory in rows}
    for row, version, created, host_spec, _ in rows:
        target, problem = host_target(
            inputs, row.host_name, (version, created), host_spec, inventories.__getitem__
        )
        if target is None:
            raise Invalid(
                f"host {row.host_name} cannot run the new version: {problem}",
                field="to",
                rule="renders_valid_node",
            )
        member = Member(
            row.host_name, MemberPhase(row.phase), spec=row.spec, spec_hash=row.spec_hash
        )
        actions[row.host_name] = member_action(member, target)
        if first is None and row.spec is not None:
            first = (row.spec, target.spec)
    if first is None:  # no members yet: compare what a sample host would run
        old_profile = load_profile(session, spec.profile) if spec.profile else None
        new = sample_target(spec.cluster, cluster, pool.name, spec, profile)
        old = (
            sample_target(spec.cluster, cluster, pool.name, spec, old_profile).spec
            if old_profile
            else {}
        )
        first = (old, new.spec)
    changes = diff(*first)
    secrets = sensitive_values(profile.variables, spec.variables)
    views = [Change.model_validate(c.as_dict(secrets)) for c in changes]
    action = max(actions.values(), key=lambda a: a.rank) if actions else strongest(changes)
    return {h: a.value for h, a in sorted(actions.items())}, views, action


def _new_name(session: Session, pool: str) -> str:
    count = session.scalar(select(func.count()).where(RolloutRow.pool == pool)) or 0
    return f"{pool}-{count + 1}"


def create(
    session: Session,
    pool_name: str,
    to: str,
    *,
    actor: str,
    now: datetime,
    origin: RolloutOrigin = RolloutOrigin.PROFILE,
    rollback_of: str | None = None,
) -> r.Rollout:
    """A rollout of ``pool_name`` to profile version ``to``, waiting for approval."""
    pool = get_named(session, PoolRow, "pool", pool_name)
    spec = PoolSpec.model_validate(pool.spec)
    if spec.profile is None:
        raise Invalid(
            f"pool {pool_name} names no profile: set spec.profile first",
            field="spec.profile",
            rule="required",
        )
    if spec.profile.version == to:
        raise Conflict(
            f"pool {pool_name} is on {spec.profile.name} {to} already", field="to", rule="changes"
        )
    ref = ProfileRef(name=spec.profile.name, version=to)
    profile = load_profile(session, ref)
    if profile is None:
        raise Invalid(f"profile {ref.name}@{to} does not exist", field="to", rule="exists")
    cluster = ClusterSpec.model_validate(
        get_named(session, ClusterRow, "cluster", spec.cluster).spec
    )
    check_pool(spec.cluster, cluster, pool_name, spec, profile)
    _make_room(session, pool_name, actor, now)
    moved = spec.model_copy(update={"profile": ref})
    key = target_key(spec.cluster, cluster, moved, profile)
    inputs = TargetInputs(key, spec.cluster, cluster, pool_name, moved, profile)
    nodes, changes, action = _plan_members(session, pool, spec, inputs)
    record = RolloutRecord(
        name=_new_name(session, pool_name),
        pool=pool_name,
        state=RolloutState.PENDING_APPROVAL,
        origin=origin,
        target_key=key,
        action=action,
        from_version=spec.profile.version,
        to_version=to,
        changes=tuple(c.model_dump(mode="json", by_alias=True) for c in changes),
        nodes=nodes,
        rollback_of=rollback_of,
        created_by=actor,
        created_at=now,
    )
    session.add(
        RolloutRow(**row_values(record), resource_version=1, created_at=now, updated_at=now)
    )
    session.flush()
    _note(
        session,
        record,
        "RolloutCreated",
        f"{spec.profile.name} {spec.profile.version} -> {to}: {action.value} on "
        f"{len(nodes)} node(s); waiting for approval",
    )
    return row_view(_row(session, record.name))


def _approve(session: Session, record: RolloutRecord, actor: str, now: datetime) -> RolloutRecord:
    if record.to_version is not None and record.origin is not RolloutOrigin.POOL_SPEC:
        pool = get_named(session, PoolRow, "pool", record.pool)
        spec = PoolSpec.model_validate(pool.spec)
        assert spec.profile is not None
        moved = spec.model_copy(
            update={"profile": ProfileRef(name=spec.profile.name, version=record.to_version)}
        )
        profile = load_profile(session, moved.profile)  # type: ignore[arg-type]
        cluster = ClusterSpec.model_validate(
            get_named(session, ClusterRow, "cluster", spec.cluster).spec
        )
        if (
            profile is None
            or target_key(spec.cluster, cluster, moved, profile) != record.target_key
        ):
            raise Conflict(
                f"pool {record.pool} changed since rollout {record.name} was made: make a new "
                f"one (tether pool rollout {record.pool} --to {record.to_version})",
                field="name",
                rule="current",
            )
        session.execute(
            update(PoolRow)
            .where(PoolRow.id == pool.id)
            .values(
                spec=moved.model_dump(mode="json", by_alias=True, exclude_none=True),
                resource_version=pool.resource_version + 1,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
    return replace(record, approved_by=actor)


def _retry_failed(session: Session, record: RolloutRecord, now: datetime) -> None:
    """Failed node operations of the rollout go again from the step that failed (a plan
    that failed is sent again under a new attempt, so the agent runs it)."""
    rows = session.scalars(select(PoolMemberRow).where(PoolMemberRow.pool == record.pool)).all()
    for row in rows:
        if not row.op:
            continue
        op = Operation.from_json(row.host_name, row.op)
        if op.failed is None or op.rollout != record.name:
            continue
        retried = op.retried(now)
        row.op = retried.to_json()
        row.step = retried.step.value if retried.step else None
        row.resource_version += 1


def act(session: Session, name: str, verb: str, *, actor: str, now: datetime) -> r.Rollout:
    """Approve, pause, resume or abort rollout ``name``."""
    record = record_of(_row(session, name))
    new_state = VERBS.get((record.state, verb))
    if new_state is None:
        allowed = sorted(v for (s, v) in VERBS if s is record.state)
        raise Conflict(
            f"rollout {name} is {record.state.value}: it cannot {verb}"
            + (f" (it can: {', '.join(allowed)})" if allowed else ""),
            field="state",
            rule="transition",
        )
    if verb == "approve":
        record = _approve(session, record, actor, now)
    if verb == "resume" and record.state is RolloutState.FAILED:
        _retry_failed(session, record, now)
        record = replace(record, failures={})
    past = {"approve": "approved", "pause": "paused", "resume": "resumed", "abort": "aborted"}
    saved = _save(session, record.with_state(new_state, now, f"{past[verb]} by {actor}"), now)
    _note(session, saved, f"Rollout{past[verb].capitalize()}", f"{past[verb]} by {actor}")
    return to_view(saved, now)


def rollback(session: Session, name: str, *, actor: str, now: datetime) -> r.Rollout:
    """Roll the pool back to the version rollout ``name`` started from; approved at once
    (asking for it is the approval). A running rollout ``name`` is aborted first."""
    record = record_of(_row(session, name))
    if record.origin is RolloutOrigin.POOL_SPEC or record.from_version is None:
        raise Conflict(
            f"rollout {name} followed a change of the pool's spec: edit the pool back instead",
            field="name",
            rule="rollback_needs_version",
        )
    if record.state in ACTIVE_STATES:
        aborted = _save(
            session, record.with_state(RolloutState.ABORTED, now, f"rolled back by {actor}"), now
        )
        _note(session, aborted, "RolloutAborted", f"rolled back by {actor}")
    back = create(
        session,
        record.pool,
        record.from_version,
        actor=actor,
        now=now,
        origin=RolloutOrigin.ROLLBACK,
        rollback_of=name,
    )
    return act(session, back.name, "approve", actor=actor, now=now)


def get(session: Session, name: str) -> r.Rollout:
    return row_view(_row(session, name))


def list_rollouts(
    session: Session,
    *,
    pool: str | None,
    state: RolloutState | None,
    limit: int,
    continue_token: str | None,
) -> tuple[list[r.Rollout], str | None]:
    query = select(RolloutRow)
    if pool is not None:
        query = query.where(RolloutRow.pool == pool)
    if state is not None:
        query = query.where(RolloutRow.state == state.value)
    rows, token = page(session, query, RolloutRow.id, limit=limit, continue_token=continue_token)
    return [row_view(row) for row in rows], token
