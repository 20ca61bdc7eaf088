"""The pool reconciler's store side: read one pool into a :class:`PoolInput`, write a plan.

:func:`load` reads everything :func:`tether.domain.poolplan.plan_pool` needs in one
transaction: the pool, its cluster and profile version, its members with their hosts,
desired-state documents, applied results and observed Nodes, the spare hosts of its site,
and its newest rollout. :func:`write` applies a plan in the caller's transaction, every
row guarded by the ``resource_version`` it was read with: if anything changed meanwhile
(a person approved a rollout, released a host, edited the pool) the write raises
:class:`~tether.errors.Conflict`, nothing of the plan lands, and the controller plans
again from the new state.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, func, or_, select, update
from sqlalchemy.orm import Session

from tether.domain.frozen import evolve
from tether.domain.memberops import (
    EXTERNAL_STEPS,
    Member,
    MemberPhase,
    NodeObs,
    Observed,
    Operation,
    StepResult,
)
from tether.domain.models import (
    ClusterSpec,
    EventType,
    ObjectKind,
    PoolSpec,
)
from tether.domain.nodeplan import NodeTarget
from tether.domain.poolplan import Condition, PoolInput, PoolPlan, Spare, successor
from tether.domain.profiles import sensitive_values
from tether.domain.rollout import may_surge
from tether.domain.states import HostEvent, HostState, PoolState, next_host_state
from tether.errors import Conflict
from tether.netplan import tunnel_names
from tether.services import desired, events
from tether.services.profiles import (
    HostVersion,
    TargetInputs,
    host_target,
    latest_versions,
    load_profile,
    target_cached,
    target_key,
)
from tether.services.rollouts import record_of, row_values
from tether.store.bulk import among, update_many
from tether.store.repo import get_named
from tether.store.schema import (
    ClusterRow,
    DesiredStateRow,
    HostAgentRow,
    HostRow,
    NodeStatusRow,
    PoolMemberRow,
    PoolRow,
    RolloutRow,
    VpnKeyRow,
    utcnow,
)

__all__ = [
    "Loaded",
    "followed",
    "forget",
    "load",
    "matches",
    "members_at_steps",
    "refresh",
    "write",
]


@dataclass
class Loaded:
    """One pool as read: the planner's input and the versions the write is guarded by."""

    input: PoolInput
    cluster: str
    pool_version: int
    member_versions: dict[str, int] = field(default_factory=dict)
    rollout_version: int | None = None
    secrets: list[str] = field(default_factory=list)
    #: What the members' targets are computed from (None: they cannot be).
    inputs: TargetInputs | None = None


def matches(selector: Mapping[str, str], tags: Mapping[str, str], inventory: Any) -> bool:
    """Whether a host's tags (or ``inventory.<path>`` fields) match every selector entry."""
    for key, wanted in selector.items():
        if key.startswith("inventory."):
            value: Any = inventory
            for part in key.removeprefix("inventory.").split("."):
                value = value.get(part) if isinstance(value, Mapping) else None
            if str(value) != wanted:
                return False
        elif tags.get(key) != wanted:
            return False
    return True


def _member(row: PoolMemberRow) -> Member:
    return Member(
        host=row.host_name,
        phase=MemberPhase(row.phase),
        op=Operation.from_json(row.host_name, row.op) if row.op else None,
        spec=row.spec,
        spec_hash=row.spec_hash,
        version=row.version,
        leave_requested=row.leave_requested,
        surge=row.surge,
        resource_version=row.resource_version,
    )


#: Each host's member as last parsed, with the (resourceVersion, updatedAt) it was read
#: at. Every write of a member row changes both, so a pass reads and parses only the rows
#: that changed since the last one (a pass costs what changed, not the pool's size).
_MEMBERS: dict[str, tuple[tuple[int, datetime], Member]] = {}


def _members(session: Session, pool: str, *where: Any) -> dict[str, Member]:
    """The pool's members by host (those ``where`` selects), parsing only rows changed
    since they were last read."""
    heads = session.execute(
        select(
            PoolMemberRow.host_name, PoolMemberRow.resource_version, PoolMemberRow.updated_at
        ).where(PoolMemberRow.pool == pool, *where)
    ).all()
    found: dict[str, Member] = {}
    stale: list[str] = []
    for host, version, at in heads:
        cached = _MEMBERS.get(host)
        if cached is not None and cached[0] == (version, at):
            found[host] = cached[1]
        else:
            stale.append(host)
    if stale:
        query = select(PoolMemberRow).where(
            PoolMemberRow.pool == pool, among(session, PoolMemberRow.host_name, stale)
        )
        for row in session.scalars(query):
            member = _member(row)
            _MEMBERS[row.host_name] = ((row.resource_version, row.updated_at), member)
            found[row.host_name] = member
    return found


@dataclass(frozen=True)
class _OfPool:
    """The hosts of a pool and its members (a leaving host may be in no pool already)."""

    pool: str


def _which(session: Session, column: Any, hosts: _OfPool | Sequence[str]) -> Any:
    """``column`` names one of ``hosts``: for a whole pool a subquery, not a list of a
    thousand bound names."""
    if isinstance(hosts, _OfPool):
        return or_(
            column.in_(select(HostRow.name).where(HostRow.pool == hosts.pool)),
            column.in_(select(PoolMemberRow.host_name).where(PoolMemberRow.pool == hosts.pool)),
        )
    return among(session, column, hosts)


def _nodes(session: Session, hosts: _OfPool | Sequence[str]) -> dict[str, NodeObs]:
    """The observed Nodes of ``hosts``, only the columns the planner reads."""
    rows = session.execute(
        select(
            NodeStatusRow.host_name,
            NodeStatusRow.ready,
            NodeStatusRow.ready_since,
            NodeStatusRow.unschedulable,
            NodeStatusRow.kubelet_version,
        ).where(_which(session, NodeStatusRow.host_name, hosts))
    ).all()
    return {
        host: NodeObs(ready=ready, ready_since=since, unschedulable=cordoned, kubelet_version=v)
        for host, ready, since, cordoned, v in rows
    }


def _target(
    inputs: TargetInputs | None,
    host: _HostView,
    inventory: Callable[[str], Mapping[str, Any]],
) -> tuple[NodeTarget | None, str | None]:
    if inputs is None:
        return None, None
    return host_target(inputs, host.name, host.version, host.spec, inventory)


@dataclass(frozen=True)
class _HostView:
    """The columns of a host the planner reads (its inventory only when needed)."""

    name: str
    state: str
    health: str
    spec: dict[str, Any]
    version: HostVersion
    enrolled_at: datetime | None  # when its agent last enrolled (a re-image waits for it)


#: Decoded JSON columns by row, with the version they were read at: a host's spec by its
#: :data:`HostVersion` (every change of it bumps the version), an applied result by its
#: ``(applied_at, applied_hash)``. A pass decodes only the rows changed since the last
#: one; decoding a thousand specs and results was a third of a load at a thousand members.
_SPECS: dict[str, tuple[Any, Any]] = {}
_RESULTS: dict[str, tuple[Any, Any]] = {}


def _decoded(
    session: Session,
    cache: dict[str, tuple[Any, Any]],
    key: Any,
    column: Any,
    heads: Sequence[tuple[str, Any]],
) -> dict[str, Any]:
    """``column`` of each row ``key`` of ``heads`` ((key, version) pairs), read from the
    store only where the version differs from the cached one. Read in a second statement,
    a value may be newer than its version: the next pass then sees the version change and
    reads it again, so the cache is never behind for longer than one pass."""
    found: dict[str, Any] = {}
    stale: dict[str, Any] = {}
    for name, version in heads:
        hit = cache.get(name)
        if hit is not None and hit[0] == version:
            found[name] = hit[1]
        else:
            stale[name] = version
    if stale:
        if len(cache) > 200_000:
            cache.clear()
        for name, value in session.execute(select(key, column).where(among(session, key, stale))):
            cache[name] = (stale[name], value)
            found[name] = value
    return found


def _hosts(session: Session, *where: Any) -> list[_HostView]:
    rows = session.execute(
        select(
            HostRow.name,
            HostRow.state,
            HostRow.health,
            HostRow.resource_version,
            HostRow.created_at,
            HostAgentRow.enrolled_at,
        )
        .outerjoin(HostAgentRow, HostAgentRow.host_name == HostRow.name)
        .where(*where)
        .order_by(HostRow.name)
    ).all()
    versions = {r[0]: (r[3], r[4]) for r in rows}
    specs = _decoded(session, _SPECS, HostRow.name, HostRow.spec, list(versions.items()))
    return [
        _HostView(name, state, health, specs[name], versions[name], enrolled)
        for name, state, health, _, _, enrolled in rows
        if name in specs  # deleted between the two statements
    ]


def _inventories(session: Session, ahead: Sequence[str] = ()) -> Callable[[str], Mapping[str, Any]]:
    """Reads a host's inventory when a target must be computed (a cache miss): those of
    ``ahead`` in one query (a new target for the whole pool, when a rollout starts, is a
    thousand misses at once), any other alone."""
    known: dict[str, Any] = {}
    if ahead:
        query = select(HostRow.name, HostRow.inventory).where(among(session, HostRow.name, ahead))
        known.update((name, inventory) for name, inventory in session.execute(query))

    def read(name: str) -> Mapping[str, Any]:
        if name in known:
            return known[name] or {}
        found = session.scalars(select(HostRow.inventory).where(HostRow.name == name)).first()
        return found or {}

    return read


def _observed(
    host: _HostView,
    doc: _DocView | None,
    node: NodeObs | None,
    external: tuple[StepResult, ...],
    target: tuple[NodeTarget | None, str | None],
) -> Observed:
    result = (doc.applied_result or {}) if doc is not None else {}
    return Observed(
        host_state=HostState(host.state),
        healthy=host.health != "Unhealthy",
        doc_hash=doc.hash if doc is not None else None,
        applied_hash=doc.applied_hash if doc is not None else None,
        applied_ok=bool(result.get("ok", True)) if doc and doc.applied_hash else None,
        applied_retryable=bool(result.get("retryable", True)),
        applied_message=str(result.get("message", ""))[:500],
        node=node,
        external=external,
        target=target[0],
        target_problem=target[1],
        enrolled_at=host.enrolled_at,
    )


def load(
    session: Session,
    name: str,
    now: datetime,
    external: Mapping[str, tuple[StepResult, ...]] | None = None,
) -> Loaded:
    """Read pool ``name`` for planning (module doc)."""
    external = external or {}
    row = get_named(session, PoolRow, "pool", name)
    spec = PoolSpec.model_validate(row.spec)
    problems: list[str] = []
    cluster_row = session.scalars(select(ClusterRow).where(ClusterRow.name == spec.cluster)).one()
    cluster = ClusterSpec.model_validate(cluster_row.spec)
    profile = load_profile(session, spec.profile) if spec.profile else None
    if spec.profile is None:
        problems.append("the pool names no profile (spec.profile)")
    elif profile is None:
        problems.append(f"profile {spec.profile.name}@{spec.profile.version} does not exist")
    inputs = (
        TargetInputs(
            target_key(spec.cluster, cluster, spec, profile),
            spec.cluster,
            cluster,
            name,
            spec,
            profile,
        )
        if profile is not None
        else None
    )
    rows = _members(session, name)
    hosts = {h.name: h for h in _hosts(session, HostRow.pool == name)}
    missing = sorted(set(rows) - set(hosts))  # leaving hosts already released elsewhere
    if missing:
        hosts.update((h.name, h) for h in _hosts(session, among(session, HostRow.name, missing)))
    members = _pairs(session, inputs, rows, hosts, _OfPool(name), external)
    spares = _spares(session, inputs, spec, PoolState(row.state))
    rollout_row = session.scalars(
        select(RolloutRow).where(RolloutRow.pool == name).order_by(RolloutRow.id.desc()).limit(1)
    ).first()
    count = session.scalar(select(func.count()).where(RolloutRow.pool == name)) or 0
    latest = latest_versions(session, [spec.profile.name]) if spec.profile else {}
    secrets = sensitive_values(profile.variables, spec.variables) if profile else []
    inp = PoolInput(
        name=name,
        spec=spec,
        state=PoolState(row.state),
        deleting=PoolState(row.state) is PoolState.DELETING,
        members=members,
        now=now,
        target_key=inputs.key if inputs is not None else None,
        problems=problems,
        rollout=record_of(rollout_row) if rollout_row else None,
        spares=spares,
        latest_version=latest.get(spec.profile.name) if spec.profile else None,
        new_rollout_name=f"{name}-{count + 1}",
        secrets=secrets,
    )
    return Loaded(
        input=inp,
        cluster=spec.cluster,
        pool_version=row.resource_version,
        member_versions={m.host: m.resource_version for m, _ in members},
        rollout_version=rollout_row.resource_version if rollout_row else None,
        secrets=secrets,
        inputs=inputs,
    )


def _pairs(
    session: Session,
    inputs: TargetInputs | None,
    rows: Mapping[str, Member],
    hosts: Mapping[str, _HostView],
    which: _OfPool | Sequence[str],
    external: Mapping[str, tuple[StepResult, ...]],
) -> list[tuple[Member, Observed]]:
    """Each of ``hosts`` as the planner sees it, by name: its member record (``rows``)
    and what is observed of it (its plan and its Node, read for ``which``)."""
    names = sorted(hosts)
    docs = _docs(session, which)
    nodes = _nodes(session, which)
    misses = (
        [h for h in names if not target_cached(inputs, h, hosts[h].version)]
        if inputs is not None
        else []
    )
    inventory = _inventories(session, misses)
    members: list[tuple[Member, Observed]] = []
    for host_name in names:
        host = hosts[host_name]
        # A host assigned without a member record (assigned before pools ran themselves)
        # joins like any newly assigned host; a join plan is idempotent on a joined node.
        member = rows.get(host_name) or Member(host_name, MemberPhase.JOINING)
        target = _target(inputs, host, inventory)
        observed = _observed(
            host, docs.get(host_name), nodes.get(host_name), external.get(host_name, ()), target
        )
        members.append((member, observed))
    return members


def _spares(
    session: Session, inputs: TargetInputs | None, spec: PoolSpec, state: PoolState
) -> list[Spare]:
    """The free hosts the pool may take: to reach its size, or as a rollout's surge. A
    pool that takes neither way is not told of any (a query each pass, spared)."""
    if inputs is None or state is PoolState.DELETING:
        return []
    if spec.size is None and not may_surge(spec.update_strategy):
        return []
    inventory = _inventories(session)
    return [Spare(h.name, _target(inputs, h, inventory)[0]) for h in _free_hosts(session, spec)]


def refresh(
    session: Session,
    loaded: Loaded,
    changed: Collection[str],
    now: datetime,
    external: Mapping[str, tuple[StepResult, ...]],
) -> Loaded | None:
    """``loaded`` (the pool as the last pass left it, :func:`followed`) with the rows of
    the ``changed`` hosts read again, the spare hosts and the time brought up to date,
    and ``external`` the Kubernetes steps taken since: what :func:`load` would read, when
    nothing else changed (a pass costs what changed, not the pool's size). None when
    more changed than this can follow (the pool's spec, its rollout, a host assigned or
    gone): :func:`load` it."""
    inp = loaded.input
    row = session.execute(
        select(PoolRow.resource_version, PoolRow.state).where(PoolRow.name == inp.name)
    ).first()
    newest = session.execute(
        select(RolloutRow.name, RolloutRow.resource_version)
        .where(RolloutRow.pool == inp.name)
        .order_by(RolloutRow.id.desc())
        .limit(1)
    ).first()
    seen = (inp.rollout.name, loaded.rollout_version) if inp.rollout else None
    if row is None or tuple(row) != (loaded.pool_version, inp.state.value):
        return None
    if (tuple(newest) if newest else None) != seen:
        return None
    before = {m.host: m for m, _ in inp.members}
    names = sorted(set(changed) & set(before))
    fresh: dict[str, tuple[Member, Observed]] = {}
    if names:
        rows = _members(session, inp.name, among(session, PoolMemberRow.host_name, names))
        hosts = {h.name: h for h in _hosts(session, among(session, HostRow.name, names))}
        if len(rows) != len(names) or len(hosts) != len(names):
            return None  # a member removed or a host deleted: the pool's hosts changed
        pairs = _pairs(session, loaded.inputs, rows, hosts, names, external)
        fresh = {m.host: (m, o) for m, o in pairs}
    members: list[tuple[Member, Observed]] = []
    for member, obs in inp.members:
        if member.host in fresh:
            members.append(fresh[member.host])
            continue
        steps = external.get(member.host, ())
        if steps != obs.external:
            obs = evolve(obs, external=steps)
        members.append((member, obs))
    spares = _spares(session, loaded.inputs, inp.spec, inp.state)
    return evolve(
        loaded,
        input=evolve(inp, members=members, spares=spares, now=now),
        member_versions={m.host: m.resource_version for m, _ in members},
    )


def followed(
    loaded: Loaded,
    plan: PoolPlan,
    external: Mapping[str, tuple[StepResult, ...]],
    now: datetime,
) -> Loaded | None:
    """The pool as the next pass would read it once ``plan`` is written (see
    :func:`tether.domain.poolplan.successor`); None: read it again."""
    nxt = successor(loaded.input, plan, external, now)
    if nxt is None:
        return None
    return evolve(
        loaded,
        input=nxt,
        member_versions={m.host: m.resource_version for m, _ in nxt.members},
        rollout_version=nxt.rollout.resource_version if nxt.rollout else None,
    )


def members_at_steps(session: Session, name: str) -> tuple[str, list[Member], float]:
    """The pool's cluster, its members whose operation stands at a Kubernetes step, and
    the drain timeout (what the controller acts on before planning)."""
    row = get_named(session, PoolRow, "pool", name)
    spec = PoolSpec.model_validate(row.spec)
    busy = [
        _member(m)
        for m in session.scalars(
            select(PoolMemberRow).where(
                PoolMemberRow.pool == name,
                PoolMemberRow.step.in_([s.value for s in EXTERNAL_STEPS]),
            )
        )
    ]
    return spec.cluster, busy, float(spec.update_strategy.drain_timeout_seconds)


@dataclass(frozen=True)
class _DocView:
    """A member's desired-state hash and what its agent last applied (not the document)."""

    hash: str
    applied_hash: str | None
    applied_result: dict[str, Any] | None


def _docs(session: Session, hosts: _OfPool | Sequence[str]) -> dict[str, _DocView]:
    """The desired-state hashes and applied results of ``hosts`` (not the documents)."""
    rows = session.execute(
        select(
            DesiredStateRow.host_name,
            DesiredStateRow.hash,
            DesiredStateRow.applied_hash,
            DesiredStateRow.applied_at,
        ).where(_which(session, DesiredStateRow.host_name, hosts))
    ).all()
    results = _decoded(
        session,
        _RESULTS,
        DesiredStateRow.host_name,
        DesiredStateRow.applied_result,
        [(host, (at, applied)) for host, _, applied, at in rows],
    )
    return {
        host: _DocView(digest, applied, results[host])
        for host, digest, applied, _ in rows
        if host in results
    }


def _free_hosts(session: Session, spec: PoolSpec) -> list[_HostView]:
    """Ready hosts of the pool's site in no pool that the selector (if any) matches."""
    taken = select(PoolMemberRow.host_name)
    hosts = _hosts(
        session,
        HostRow.site == spec.site,
        HostRow.pool.is_(None),
        HostRow.state == HostState.READY.value,
        HostRow.name.not_in(taken),
    )[:1000]
    if spec.host_selector is None:
        return hosts
    inventory = _inventories(session)
    return [
        h for h in hosts if matches(spec.host_selector, h.spec.get("tags") or {}, inventory(h.name))
    ]


# Writing a plan ---------------------------------------------------------------------------


def _conflict(what: str) -> Conflict:
    return Conflict(
        f"{what} changed while the pool was being planned; planning again",
        field="resourceVersion",
        rule="current",
    )


def _member_values(
    pool: str, member: Member, before: Member | None, at: datetime
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "pool": pool,
        "phase": member.phase.value,
        "op": member.op.to_json() if member.op else None,
        "step": member.op.step.value
        if member.op and member.op.step and not member.op.failed
        else None,
        "spec": dict(member.spec) if member.spec is not None else None,
        "spec_hash": member.spec_hash,
        "version": member.version,
        "leave_requested": member.leave_requested,
        "surge": member.surge,
        "updated_at": at,
    }
    if before is not None and before.spec is member.spec:
        del values["spec"]  # unchanged: a node target is large, skip writing it again
    return values


def _write_members(
    session: Session,
    pool: str,
    members: Sequence[tuple[Member, int, Member | None]],
) -> None:
    """Write changed members (member, version read, member as read), each guarded by the
    version it was read with. Updates go out as one batch per set of columns (a rollout
    changes a hundred members a pass at a thousand nodes: :func:`update_many`); the
    batch's row count tells whether any guard failed."""
    table = cast(Table, PoolMemberRow.__table__)
    batches: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    written = []
    at = utcnow()  # one time for the write: bound once (:func:`update_many`)
    for member, seen, before in members:
        values = _member_values(pool, member, before, at)
        written.append((evolve(member, resource_version=seen + 1), at))
        if seen == 0:
            if session.get(PoolMemberRow, member.host) is not None:
                raise _conflict(f"member {member.host}")
            session.add(PoolMemberRow(host_name=member.host, resource_version=1, **values))
            session.flush()
            continue
        params = {**values, "resource_version": seen + 1, "_host": member.host, "_seen": seen}
        batches.setdefault(tuple(sorted(values)), []).append(params)
    guard = {"host_name": "_host", "resource_version": "_seen"}
    for rows in batches.values():
        if update_many(session.connection(), table, rows, guard) != len(rows):
            raise _conflict(f"a member of {pool}")
    # What was written is what the next pass would read: remember it (if this transaction
    # rolls back, the row keeps its old version and the next pass reads it again).
    for member, at in written:
        _MEMBERS[member.host] = ((member.resource_version, at), member)


def _move_host(session: Session, name: str, pool: str | None, event: HostEvent) -> None:
    host = get_named(session, HostRow, "host", name)
    old = HostState(host.state)
    new = next_host_state(old, event, assigned=host.pool is not None)
    spec = {**host.spec, "pool": pool}
    session.execute(
        update(HostRow)
        .where(HostRow.name == name)
        .values(
            pool=pool, state=new.value, spec=spec, resource_version=HostRow.resource_version + 1
        )
        .execution_options(synchronize_session=False)
    )


#: The pool condition the cluster network pass owns (:mod:`tether.services.clusternet`):
#: a pool's reconcile keeps it as it is.
NETWORK_CONDITION = "NetworkApplied"
#: The pool condition the VPN server pass owns (:mod:`tether.services.vpnservers`).
VPN_SERVER_CONDITION = "VPNServerConfigured"
#: Conditions other passes own: a pool's reconcile keeps them as they are.
KEPT_CONDITIONS = frozenset({NETWORK_CONDITION, VPN_SERVER_CONDITION})


def set_condition(
    session: Session, kind: str, wanted: Mapping[str, Condition], event_prefix: str
) -> None:
    """Write condition ``kind`` of each pool of ``wanted`` (pool -> condition) where it
    differs, with an event (reason ``event_prefix`` + the condition's reason) when its
    reason changes."""
    for row in session.scalars(select(PoolRow).where(PoolRow.name.in_(list(wanted)))):
        want = wanted[row.name]
        status = dict(row.status or {})
        others = [c for c in status.get("conditions", []) if c.get("type") != kind]
        before = next((c for c in status.get("conditions", []) if c.get("type") == kind), None)
        cond = want.to_json()
        if before == cond:
            continue
        row.status = {**status, "conditions": [*others, cond]}
        if before is None or before.get("reason") != want.reason:
            type_ = EventType.NORMAL if want.status == "True" else EventType.WARNING
            events.record(
                session,
                ObjectKind.POOL,
                row.name,
                f"{event_prefix}{want.reason}",
                want.message,
                type_,
                pool=row.name,
            )


def forget(session: Session, pool: str, now: datetime) -> None:
    """What goes with a pool when it is deleted (the caller deletes its row): its rollouts
    and its tunnels' keys (a pool made again under the name gets new ones), with a
    ``Deleted`` event."""
    session.execute(delete(RolloutRow).where(RolloutRow.pool == pool))
    session.execute(delete(VpnKeyRow).where(VpnKeyRow.tunnel.in_(tunnel_names(pool))))
    events.record(session, ObjectKind.POOL, pool, "Deleted", "pool deleted", now=now, pool=pool)


def write(session: Session, loaded: Loaded, plan: PoolPlan) -> None:
    """Apply ``plan`` in the caller's transaction (guarded: module doc)."""
    inp = loaded.input
    before = {m.host: m for m, _ in inp.members}
    pool = inp.name
    now = inp.now
    kept = [
        c
        for c in (session.scalar(select(PoolRow.status).where(PoolRow.name == pool)) or {}).get(
            "conditions", []
        )
        if c.get("type") in KEPT_CONDITIONS
    ]
    done = session.execute(
        update(PoolRow)
        .where(PoolRow.name == pool, PoolRow.resource_version == loaded.pool_version)
        .values(
            state=plan.state.value,
            status={
                "conditions": [c.to_json() for c in plan.conditions] + kept,
                "counts": plan.counts,
                "observedAt": now.isoformat(),
            },
        )
        .execution_options(synchronize_session=False)
    )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise _conflict(f"pool {pool}")
    for host in plan.assign:
        _move_host(session, host, pool, HostEvent.ASSIGN)
    writes = []
    for host, member in plan.members.items():
        if member is None:
            session.execute(delete(PoolMemberRow).where(PoolMemberRow.host_name == host))
        else:
            writes.append((member, loaded.member_versions.get(host, 0), before.get(host)))
    _write_members(session, pool, writes)
    # Every document a plan stores comes with its PlanSent event, which names the new
    # desired state: the store's own DesiredStateChanged notes would say it again.
    desired.set_many(session, plan.documents, now=now, digests=plan.digests)
    for host in plan.release:
        _move_host(session, host, None, HostEvent.RELEASE)
    for record in (plan.superseded, plan.rollout):
        if record is None:
            continue
        if plan.rollout_is_new and record is plan.rollout:
            session.add(RolloutRow(**row_values(record), resource_version=1, created_at=now))
        else:
            seen = record.resource_version
            changed = session.execute(
                update(RolloutRow)
                .where(RolloutRow.name == record.name, RolloutRow.resource_version == seen)
                .values(resource_version=seen + 1, updated_at=now, **row_values(record))
                .execution_options(synchronize_session=False)
            )
            if changed.rowcount != 1:  # type: ignore[attr-defined]
                raise _conflict(f"rollout {record.name}")
    notes = [(n.kind, n.name, n.reason, n.message, n.type) for n in plan.events]
    events.record_many(session, notes, now=now, pool=pool)
    if plan.delete_pool:
        forget(session, pool, now)
        session.execute(delete(PoolRow).where(PoolRow.name == pool))
