"""Create, read, update and delete the plane's resources, with their cross-object rules.

Every function takes the caller's session (one transaction), checks everything before
writing, writes, and records an event for each change in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from tether.domain import models as m
from tether.domain import resources as r
from tether.domain.attention import site_status
from tether.domain.base import Model
from tether.domain.models import ObjectKind, semver_key
from tether.domain.profiles import REDACTED
from tether.domain.states import (
    HostEvent,
    HostState,
    PoolState,
    next_host_state,
)
from tether.errors import Conflict, Invalid
from tether.services import events, network, pools, profiles
from tether.store.repo import (
    by_host,
    delete_checked,
    get_named,
    insert,
    page,
    update_checked,
)
from tether.store.schema import (
    ClusterRow,
    DesiredStateRow,
    HostAgentRow,
    HostRow,
    NodeStatusRow,
    PoolMemberRow,
    PoolRow,
    ProfileRow,
    RolloutRow,
    SiteRow,
    utcnow,
)


def _dump(model: Model) -> dict[str, Any]:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def _meta(row: ClusterRow | SiteRow | PoolRow | HostRow | ProfileRow) -> dict[str, Any]:
    return {
        "name": row.name,
        "resource_version": row.resource_version,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


# Clusters -----------------------------------------------------------------------------


def to_cluster(row: ClusterRow) -> r.Cluster:
    return r.Cluster(**_meta(row), spec=m.ClusterSpec.model_validate(row.spec))


def create_cluster(session: Session, body: r.ClusterCreate) -> r.Cluster:
    network.check_cluster_change(session, body.name, body.spec, exists=False)
    row = insert(session, ClusterRow(name=body.name, spec=_dump(body.spec)), "cluster", body.name)
    events.record(session, ObjectKind.CLUSTER, body.name, "Created", "cluster created")
    return to_cluster(row)


def get_cluster(session: Session, name: str) -> r.Cluster:
    return to_cluster(get_named(session, ClusterRow, "cluster", name))


def list_clusters(
    session: Session, *, limit: int, continue_token: str | None
) -> tuple[list[r.Cluster], str | None]:
    rows, token = page(
        session, select(ClusterRow), ClusterRow.id, limit=limit, continue_token=continue_token
    )
    return [to_cluster(x) for x in rows], token


def update_cluster(session: Session, name: str, body: r.ClusterUpdate) -> r.Cluster:
    row = get_named(session, ClusterRow, "cluster", name)
    network.check_cluster_change(session, name, body.spec, exists=True)
    row = update_checked(session, row, "cluster", body.resource_version, {"spec": _dump(body.spec)})
    events.record(session, ObjectKind.CLUSTER, name, "Updated", "cluster spec updated")
    return to_cluster(row)


def set_cluster_hybrid(session: Session, name: str, *, enabled: bool, eks_labels: bool) -> None:
    """Record hybrid mode in the cluster's spec (no write when it is already so)."""
    row = get_named(session, ClusterRow, "cluster", name)
    wanted = {"hybridEnabled": enabled, "eksComputeTypeLabel": eks_labels and enabled}
    if all(row.spec.get(key, False) == value for key, value in wanted.items()):
        return
    try:
        spec = m.ClusterSpec.model_validate({**row.spec, **wanted})
    except ValidationError as exc:
        raise Invalid(
            f"cluster {name!r}: {exc.errors()[0]['msg']}", field="spec.hybridEnabled", rule="hybrid"
        ) from None
    update_checked(session, row, "cluster", None, {"spec": _dump(spec)})
    state = "enabled" if enabled else "disabled"
    events.record(session, ObjectKind.CLUSTER, name, "Updated", f"hybrid mode {state}")


def delete_cluster(session: Session, name: str, resource_version: int | None) -> None:
    row = get_named(session, ClusterRow, "cluster", name)
    _refuse_if_used(session, PoolRow, PoolRow.cluster == name, "cluster", name)
    delete_checked(session, row, "cluster", resource_version)
    events.record(session, ObjectKind.CLUSTER, name, "Deleted", "cluster deleted")


def _refuse_if_used(
    session: Session, users: type[PoolRow | HostRow], where: Any, kind: str, name: str
) -> None:
    """Refuse to delete ``kind name`` while rows of ``users`` match ``where``."""
    label = "pools" if users is PoolRow else "hosts"
    names = session.scalars(select(users.name).where(where).order_by(users.name).limit(5)).all()
    if names:
        raise Conflict(
            f"{kind} {name!r} is still used by {label}: {', '.join(names)}",
            field="name",
            rule="in_use",
        )


# Sites --------------------------------------------------------------------------------


def to_site(row: SiteRow) -> r.Site:
    return r.Site(**_meta(row), spec=m.SiteSpec.model_validate(row.spec))


def create_site(session: Session, body: r.SiteCreate) -> r.Site:
    row = insert(session, SiteRow(name=body.name, spec=_dump(body.spec)), "site", body.name)
    events.record(session, ObjectKind.SITE, body.name, "Created", "site created")
    return to_site(row)


def site_views(session: Session, rows: Sequence[SiteRow]) -> list[r.Site]:
    """Sites as shown, with their status: hosts by state, pools, tunnel and BGP health."""
    names = [row.name for row in rows]
    states: dict[str, dict[str, int]] = {name: {} for name in names}
    for site, state, count in session.execute(
        select(HostRow.site, HostRow.state, func.count())
        .where(HostRow.site.in_(names))
        .group_by(HostRow.site, HostRow.state)
    ):
        states[site][state] = count
    failing: dict[str, dict[str, dict[str, str]]] = {name: {} for name in names}
    for site, host, checks in session.execute(
        select(HostRow.site, HostRow.name, HostAgentRow.failing_checks)
        .join(HostAgentRow, HostAgentRow.host_name == HostRow.name)
        .where(HostRow.site.in_(names))
    ):
        if checks:
            failing[site][host] = checks
    pools: dict[str, list[str]] = {name: [] for name in names}
    for site, pool in session.execute(
        select(PoolRow.site, PoolRow.name).where(PoolRow.site.in_(names))
    ):
        pools[site].append(pool)
    return [
        to_site(row).model_copy(
            update={"status": site_status(states[row.name], failing[row.name], pools[row.name])}
        )
        for row in rows
    ]


def get_site(session: Session, name: str) -> r.Site:
    return site_views(session, [get_named(session, SiteRow, "site", name)])[0]


def list_sites(
    session: Session, *, limit: int, continue_token: str | None
) -> tuple[list[r.Site], str | None]:
    rows, token = page(
        session, select(SiteRow), SiteRow.id, limit=limit, continue_token=continue_token
    )
    return site_views(session, rows), token


def update_site(session: Session, name: str, body: r.SiteUpdate) -> r.Site:
    row = get_named(session, SiteRow, "site", name)
    row = update_checked(session, row, "site", body.resource_version, {"spec": _dump(body.spec)})
    events.record(session, ObjectKind.SITE, name, "Updated", "site spec updated")
    return to_site(row)


def delete_site(session: Session, name: str, resource_version: int | None) -> None:
    row = get_named(session, SiteRow, "site", name)
    _refuse_if_used(session, PoolRow, PoolRow.site == name, "site", name)
    _refuse_if_used(session, HostRow, HostRow.site == name, "site", name)
    delete_checked(session, row, "site", resource_version)
    events.record(session, ObjectKind.SITE, name, "Deleted", "site deleted")


# Profiles -----------------------------------------------------------------------------


def to_profile(row: ProfileRow) -> r.Profile:
    """A profile version as shown: a sensitive variable's default is ``******``."""
    spec = m.ProfileSpec.model_validate(row.spec)
    hidden = [
        v.model_copy(update={"default": REDACTED}) if v.sensitive and v.default is not None else v
        for v in spec.variables
    ]
    return r.Profile(**_meta(row), spec=spec.model_copy(update={"variables": hidden}))


def create_profile(session: Session, body: r.ProfileCreate) -> r.Profile:
    """Publish a new profile version. Versions are immutable: there is no update."""
    key = f"{body.name}@{body.spec.version}"
    profiles.check_profile(body.spec)
    row = insert(
        session,
        ProfileRow(name=body.name, version=body.spec.version, spec=_dump(body.spec)),
        "profile version",
        key,
    )
    events.record(session, ObjectKind.PROFILE, body.name, "Published", f"version {key} published")
    latest = profiles.latest_versions(session, [body.name]).get(body.name)
    if latest == body.spec.version:
        for pool in session.scalars(select(PoolRow).order_by(PoolRow.id)):
            ref = pool.spec.get("profile") or {}
            if ref.get("name") == body.name and ref.get("version") != latest:
                events.record(
                    session,
                    ObjectKind.POOL,
                    pool.name,
                    "UpdateAvailable",
                    f"profile {body.name} {latest} is available (pool uses {ref.get('version')})",
                )
    return to_profile(row)


def get_profile(session: Session, name: str, version: str) -> r.Profile:
    row = profiles.profile_row(session, name, version)
    return to_profile(row)


def list_profiles(
    session: Session, *, name: str | None, limit: int, continue_token: str | None
) -> tuple[list[r.Profile], str | None]:
    query = select(ProfileRow)
    if name is not None:
        query = query.where(ProfileRow.name == name)
    rows, token = page(session, query, ProfileRow.id, limit=limit, continue_token=continue_token)
    return [to_profile(x) for x in rows], token


def delete_profile(session: Session, name: str, version: str) -> None:
    row = profiles.profile_row(session, name, version)
    users = [p.name for p in _pools_using(session, name, version)]
    if users:
        raise Conflict(
            f"profile {name}@{version} is used by pools: {', '.join(users[:5])}",
            field="version",
            rule="in_use",
        )
    delete_checked(session, row, "profile version", None)
    events.record(session, ObjectKind.PROFILE, name, "Deleted", f"version {version} deleted")


def _pools_using(session: Session, name: str, version: str) -> list[PoolRow]:
    return [
        p
        for p in session.scalars(select(PoolRow).order_by(PoolRow.id))
        if (p.spec.get("profile") or {}) == {"name": name, "version": version}
    ]


# Pools --------------------------------------------------------------------------------


def _update_info(
    session: Session,
    spec: m.PoolSpec,
    newest: str | None,
    diffs: dict[tuple[str, str], m.UpdateInfo],
) -> m.UpdateInfo | None:
    if spec.profile is None or newest is None:
        return None
    if semver_key(newest) <= semver_key(spec.profile.version):
        return None
    key = (spec.profile.name, f"{spec.profile.version}->{newest}")
    if key not in diffs:
        found = profiles.diff_versions(session, spec.profile.name, spec.profile.version, newest)
        diffs[key] = m.UpdateInfo(version=newest, action=found.action, changes=found.changes)
    return diffs[key]


def _pool_views(session: Session, rows: Sequence[PoolRow]) -> list[r.Pool]:
    names = [p.spec["profile"]["name"] for p in rows if p.spec.get("profile")]
    latest = profiles.latest_versions(session, names)
    newest_rollouts = (
        dict(
            session.execute(
                select(RolloutRow.pool, func.max(RolloutRow.name))
                .where(RolloutRow.pool.in_([p.name for p in rows]))
                .group_by(RolloutRow.pool)
            ).all()
        )
        if rows
        else {}
    )
    diffs: dict[tuple[str, str], m.UpdateInfo] = {}
    views = []
    for row in rows:
        spec = m.PoolSpec.model_validate(row.spec)
        newest = latest.get(spec.profile.name) if spec.profile else None
        update = _update_info(session, spec, newest, diffs)
        stored = row.status or {}
        status = m.PoolStatus(
            state=PoolState(row.state),
            update_available=update.version if update else None,
            update=update,
            conditions=[m.Condition.model_validate(c) for c in stored.get("conditions", [])],
            counts=stored.get("counts", {}),
            rollout=newest_rollouts.get(row.name),
            observed_at=stored.get("observedAt"),
        )
        views.append(r.Pool(**_meta(row), spec=_shown(session, spec), status=status))
    return views


def _shown(session: Session, spec: m.PoolSpec) -> m.PoolSpec:
    """The spec as people see it: sensitive variables' values are ``******``."""
    if spec.profile is None or not spec.variables:
        return spec
    profile = profiles.load_profile(session, spec.profile)
    hidden = {v.name for v in profile.variables if v.sensitive} if profile else set()
    if not hidden & set(spec.variables):
        return spec
    shown = {k: (REDACTED if k in hidden else v) for k, v in spec.variables.items()}
    return spec.model_copy(update={"variables": shown})


def _keep_secrets(session: Session, row: PoolRow | None, spec: m.PoolSpec) -> m.PoolSpec:
    """An update that sends ``******`` back for a sensitive value keeps the stored value
    (so ``get -o yaml`` then ``update -f`` round-trips without printing secrets)."""
    if row is None:
        return spec
    stored = row.spec.get("variables") or {}
    kept = {k: (stored.get(k, v) if v == REDACTED else v) for k, v in spec.variables.items()}
    return spec.model_copy(update={"variables": kept})


def _check_pool_profile(session: Session, name: str, spec: m.PoolSpec) -> None:
    if spec.profile is None:
        return
    profile = profiles.load_profile(session, spec.profile)
    cluster = session.scalars(select(ClusterRow).where(ClusterRow.name == spec.cluster)).first()
    if profile is None or cluster is None:
        return  # _check_pool_refs names what is missing
    profiles.check_pool(
        spec.cluster, m.ClusterSpec.model_validate(cluster.spec), name, spec, profile
    )


def _check_pool_refs(session: Session, spec: m.PoolSpec) -> None:
    for row_cls, kind, name, field in (
        (ClusterRow, "cluster", spec.cluster, "spec.cluster"),
        (SiteRow, "site", spec.site, "spec.site"),
    ):
        if session.scalars(select(row_cls.id).where(row_cls.name == name)).first() is None:
            raise Invalid(f"{kind} {name!r} does not exist", field=field, rule="exists")
    if spec.profile is not None:
        found = session.scalars(
            select(ProfileRow.id).where(
                ProfileRow.name == spec.profile.name, ProfileRow.version == spec.profile.version
            )
        ).first()
        if found is None:
            raise Invalid(
                f"profile {spec.profile.name}@{spec.profile.version} does not exist",
                field="spec.profile",
                rule="exists",
            )


def create_pool(session: Session, body: r.PoolCreate) -> r.Pool:
    _check_pool_refs(session, body.spec)
    _check_pool_profile(session, body.name, body.spec)
    network.check_pool_change(session, body.name, body.spec)
    row = PoolRow(
        name=body.name,
        cluster=body.spec.cluster,
        site=body.spec.site,
        state=PoolState.PENDING.value,
        spec=_dump(body.spec),
    )
    insert(session, row, "pool", body.name)
    events.record(session, ObjectKind.POOL, body.name, "Created", "pool created")
    return _pool_views(session, [row])[0]


def get_pool(session: Session, name: str) -> r.Pool:
    return _pool_views(session, [get_named(session, PoolRow, "pool", name)])[0]


def list_pools(
    session: Session,
    *,
    cluster: str | None,
    site: str | None,
    state: PoolState | None,
    limit: int,
    continue_token: str | None,
) -> tuple[list[r.Pool], str | None]:
    query = select(PoolRow)
    if cluster is not None:
        query = query.where(PoolRow.cluster == cluster)
    if site is not None:
        query = query.where(PoolRow.site == site)
    if state is not None:
        query = query.where(PoolRow.state == state.value)
    rows, token = page(session, query, PoolRow.id, limit=limit, continue_token=continue_token)
    return _pool_views(session, rows), token


def update_pool(session: Session, name: str, body: r.PoolUpdate) -> r.Pool:
    row = get_named(session, PoolRow, "pool", name)
    body = body.model_copy(update={"spec": _keep_secrets(session, row, body.spec)})
    if PoolState(row.state) is PoolState.DELETING:
        raise Conflict(f"pool {name!r} is being deleted", field="name", rule="deleting")
    for field in ("cluster", "site"):
        if getattr(body.spec, field) != getattr(row, field):
            raise Invalid(
                f"a pool's {field} cannot change (create a new pool instead)",
                field=f"spec.{field}",
                rule="immutable",
            )
    _check_pool_refs(session, body.spec)
    _check_pool_profile(session, name, body.spec)
    before = m.PoolSpec.model_validate(row.spec).profile
    if before is not None and body.spec.profile != before and _members(session, name):
        raise Invalid(
            "a pool with hosts changes profile version through a rollout: tether pool rollout "
            f"{name} --to VERSION",
            field="spec.profile",
            rule="rollout",
        )
    network.check_pool_change(session, name, body.spec)
    row = update_checked(session, row, "pool", body.resource_version, {"spec": _dump(body.spec)})
    events.record(session, ObjectKind.POOL, name, "Updated", "pool spec updated")
    return _pool_views(session, [row])[0]


def _members(session: Session, pool: str) -> list[str]:
    return list(
        session.scalars(select(HostRow.name).where(HostRow.pool == pool).order_by(HostRow.name))
    )


def delete_pool(session: Session, name: str, resource_version: int | None) -> r.Pool | None:
    """Delete a pool. With hosts, it turns ``Deleting``: the pool reconciler drains and
    removes every host first, then the pool; the view says so (None: deleted now)."""
    row = get_named(session, PoolRow, "pool", name)
    if resource_version is not None and row.resource_version != resource_version:
        raise Conflict(
            f"pool {name!r} was changed by someone else (you sent resourceVersion "
            f"{resource_version}): read it again and retry",
            field="resourceVersion",
            rule="current",
        )
    if _members(session, name):
        if PoolState(row.state) is not PoolState.DELETING:
            session.execute(
                update(PoolRow)
                .where(PoolRow.id == row.id)
                .values(state=PoolState.DELETING.value, resource_version=row.resource_version + 1)
                .execution_options(synchronize_session=False)
            )
            events.record(
                session,
                ObjectKind.POOL,
                name,
                "Deleting",
                "deletion requested: every host is drained and removed first",
                m.EventType.WARNING,
            )
        session.refresh(row)
        return _pool_views(session, [row])[0]
    pools.forget(session, name, utcnow())
    delete_checked(session, row, "pool", resource_version)
    return None


# Hosts --------------------------------------------------------------------------------


def to_host(row: HostRow) -> r.Host:
    return host_views(None, [row])[0]


def host_views(session: Session | None, rows: Sequence[HostRow]) -> list[r.Host]:
    """Hosts as shown: state, health, and what the pool reconciler and the agent say of
    their membership and last plan (a host whose last plan failed is not Healthy)."""
    names = [h.name for h in rows]
    members: dict[str, PoolMemberRow] = {}
    plans: dict[str, DesiredStateRow] = {}
    nodes: dict[str, NodeStatusRow] = {}
    checks: dict[str, dict[str, str]] = {}
    if session is not None and names:
        members = by_host(session, PoolMemberRow, names)
        plans = by_host(session, DesiredStateRow, names)
        nodes = by_host(session, NodeStatusRow, names)
        checks = {
            name: failing
            for name, failing in session.execute(
                select(HostAgentRow.host_name, HostAgentRow.failing_checks).where(
                    HostAgentRow.host_name.in_(names)
                )
            )
            if failing
        }
    views = []
    for row in rows:
        plan = _plan_view(plans.get(row.name))
        health = row.health
        if plan is not None and plan.state == "Failed" and health == "Healthy":
            health = "Unhealthy"
        node = nodes.get(row.name)
        views.append(
            r.Host(
                **_meta(row),
                id=row.host_id,
                spec=m.HostSpec.model_validate(row.spec),
                status=m.HostStatus(
                    state=HostState(row.state),
                    health=health,
                    last_heartbeat=row.last_heartbeat,
                    inventory=row.inventory,
                    member=_member_view(members.get(row.name)),
                    plan=plan,
                    node=m.NodeStatus.model_validate(node, from_attributes=True) if node else None,
                    failing_checks=checks.get(row.name, {}),
                ),
            )
        )
    return views


def _member_view(row: PoolMemberRow | None) -> m.MemberStatus | None:
    if row is None:
        return None
    op = row.op or {}
    steps = op.get("steps") or []
    index = op.get("index", 0)
    return m.MemberStatus(
        pool=row.pool,
        phase=row.phase,
        version=row.version,
        operation=op.get("kind"),
        step=steps[index] if index < len(steps) else None,
        failed=op.get("failed"),
        leaving=row.leave_requested,
    )


def _plan_view(row: DesiredStateRow | None) -> m.PlanStatus | None:
    if row is None:
        return None
    if row.applied_hash != row.hash:
        return m.PlanStatus(state="Pending", hash=row.hash)
    result = row.applied_result or {}
    ok = bool(result.get("ok", True))
    return m.PlanStatus(
        state="Applied" if ok else "Failed",
        hash=row.hash,
        message=str(result.get("message", ""))[:500],
        applied_at=row.applied_at,
    )


def vpn_server_hosts(session: Session, site: str | None = None) -> dict[str, str]:
    """Site -> the name of its host with the ``vpn-server`` role (one of ``site``'s only)."""
    query = select(HostRow.site, HostRow.name).where(
        HostRow.spec["role"].as_string() == m.HostRole.VPN_SERVER.value
    )
    if site is not None:
        query = query.where(HostRow.site == site)
    return dict(session.execute(query.order_by(HostRow.id)).all())


def _check_role(session: Session, spec: m.HostSpec, name: str) -> None:
    """A VPN server is never a node, and a site has one (the plan gives each pool one)."""
    if spec.role is not m.HostRole.VPN_SERVER:
        return
    if spec.pool is not None:
        raise Invalid(
            "a vpn-server host cannot be in a pool: release it (pool: null) first",
            field="spec.role",
            rule="not_in_pool",
        )
    other = vpn_server_hosts(session, spec.site).get(spec.site)
    if other is not None and other != name:
        raise Invalid(
            f"site {spec.site!r} already has a vpn-server host: {other!r}",
            field="spec.role",
            rule="one_per_site",
        )


def _check_host_refs(session: Session, spec: m.HostSpec, name: str) -> None:
    if session.scalars(select(SiteRow.id).where(SiteRow.name == spec.site)).first() is None:
        raise Invalid(f"site {spec.site!r} does not exist", field="spec.site", rule="exists")
    _check_role(session, spec, name)
    if spec.pool is not None:
        pool = session.scalars(select(PoolRow).where(PoolRow.name == spec.pool)).one_or_none()
        if pool is None:
            raise Invalid(f"pool {spec.pool!r} does not exist", field="spec.pool", rule="exists")
        if pool.site != spec.site:
            raise Invalid(
                f"pool {spec.pool!r} belongs to site {pool.site!r}, the host to {spec.site!r}",
                field="spec.pool",
                rule="same_site",
            )


def create_host(session: Session, body: r.HostCreate) -> r.Host:
    """Register a host by hand. It starts Registered and unassigned."""
    _check_host_refs(session, body.spec, body.name)
    if body.spec.pool is not None:
        raise Invalid(
            "a new host is Registered; assign it to a pool once it is Ready",
            field="spec.pool",
            rule="assign_when_ready",
        )
    host_id = body.id or body.name
    if session.scalars(select(HostRow.id).where(HostRow.host_id == host_id)).first():
        raise Conflict(f"host id {host_id!r} already exists", field="id", rule="unique")
    row = HostRow(
        name=body.name,
        host_id=host_id,
        site=body.spec.site,
        pool=None,
        state=HostState.REGISTERED.value,
        health="Unknown",
        inventory={},
        spec=_dump(body.spec),
    )
    insert(session, row, "host", body.name)
    events.record(session, ObjectKind.HOST, body.name, "Registered", "host registered")
    return to_host(row)


def get_host(session: Session, name: str) -> r.Host:
    return host_views(session, [get_named(session, HostRow, "host", name)])[0]


def list_hosts(
    session: Session,
    *,
    site: str | None,
    pool: str | None,
    state: HostState | None,
    limit: int,
    continue_token: str | None,
) -> tuple[list[r.Host], str | None]:
    query = select(HostRow)
    if site is not None:
        query = query.where(HostRow.site == site)
    if pool is not None:
        query = query.where(HostRow.pool == pool)
    if state is not None:
        query = query.where(HostRow.state == state.value)
    rows, token = page(session, query, HostRow.id, limit=limit, continue_token=continue_token)
    return host_views(session, rows), token


def update_host(session: Session, name: str, body: r.HostUpdate) -> r.Host:
    """Change a host's tags or pool: joining a pool and leaving it are
    :func:`add_to_pool` and :func:`remove_from_pool` (the pool reconciler does the work)."""
    row = get_named(session, HostRow, "host", name)
    spec = body.spec
    if spec.site != row.site:
        raise Invalid("a host's site cannot change", field="spec.site", rule="immutable")
    _check_host_refs(session, spec, name)
    if spec.pool != row.pool:
        if row.pool is not None and spec.pool is not None:
            raise Invalid(
                f"host is in pool {row.pool!r}: release it (pool: null) before moving it",
                field="spec.pool",
                rule="release_first",
            )
        if row.resource_version != body.resource_version:
            raise Conflict(
                f"host {name!r} was changed by someone else (you sent resourceVersion "
                f"{body.resource_version}): read it again and retry",
                field="resourceVersion",
                rule="current",
            )
        if spec.pool is not None:
            return add_to_pool(session, spec.pool, name, tags=spec.tags)
        return remove_from_pool(session, row.pool or "", name)
    changes: dict[str, Any] = {"spec": _dump(spec.model_copy(update={"pool": row.pool}))}
    row = update_checked(session, row, "host", body.resource_version, changes)
    events.record(session, ObjectKind.HOST, name, "Updated", "host spec updated")
    return get_host(session, name)


def add_to_pool(
    session: Session, pool: str, name: str, *, tags: dict[str, str] | None = None
) -> r.Host:
    """Assign a Ready host of the pool's site to the pool; the reconciler joins it."""
    row = get_named(session, HostRow, "host", name)
    pool_row = get_named(session, PoolRow, "pool", pool)
    if pool_row.site != row.site:
        raise Invalid(
            f"pool {pool!r} belongs to site {pool_row.site!r}, the host to {row.site!r}",
            field="spec.pool",
            rule="same_site",
        )
    if PoolState(pool_row.state) is PoolState.DELETING:
        raise Conflict(f"pool {pool!r} is being deleted", field="spec.pool", rule="deleting")
    if row.spec.get("role") == m.HostRole.VPN_SERVER.value:
        raise Invalid(
            f"host {name!r} is its site's vpn-server: it cannot join a pool",
            field="spec.pool",
            rule="not_vpn_server",
        )
    if row.pool is not None or session.get(PoolMemberRow, name) is not None:
        raise Conflict(
            f"host {name!r} is in pool {row.pool!r} (or still leaving one)",
            field="spec.pool",
            rule="release_first",
        )
    old = HostState(row.state)
    new = next_host_state(old, HostEvent.ASSIGN, assigned=False)
    spec = {**row.spec, "pool": pool, **({"tags": tags} if tags is not None else {})}
    update_checked(session, row, "host", None, {"pool": pool, "state": new.value, "spec": spec})
    session.add(PoolMemberRow(host_name=name, pool=pool, phase="Joining"))
    events.record(
        session,
        ObjectKind.HOST,
        name,
        "Assigned",
        f"host now in {pool}; state {old.value} -> {new.value}; joining",
        pool=pool,
    )
    return get_host(session, name)


def remove_from_pool(session: Session, pool: str, name: str) -> r.Host:
    """Ask the reconciler to take a host out of its pool: cordon, drain, uninstall, delete
    the Node, clear the plan; then the host is Ready again."""
    row = get_named(session, HostRow, "host", name)
    if row.pool != pool:
        raise Invalid(f"host {name!r} is not in pool {pool!r}", field="spec.pool", rule="member")
    member = session.get(PoolMemberRow, name)
    if member is None:  # assigned before pools ran themselves: make the record
        member = PoolMemberRow(host_name=name, pool=pool, phase="Active")
        session.add(member)
        session.flush()  # the columns' defaults, before they are changed below
    if not member.leave_requested:
        member.leave_requested = True
        member.resource_version += 1
        member.updated_at = utcnow()
        events.record(
            session, ObjectKind.HOST, name, "LeaveRequested", f"leaving pool {pool}", pool=pool
        )
    session.flush()
    return get_host(session, name)


def transition_host(
    session: Session, name: str, event: HostEvent, resource_version: int | None = None
) -> r.Host:
    """Apply a life-cycle event (reset, checks passed, ...) to a host."""
    row = get_named(session, HostRow, "host", name)
    old = HostState(row.state)
    new = next_host_state(old, event, assigned=row.pool is not None)
    row = update_checked(session, row, "host", resource_version, {"state": new.value})
    if new != old:
        type_, reason, message = state_changed(old, new, event)
        events.record(session, ObjectKind.HOST, name, reason, message, type_)
    return to_host(row)


def state_changed(old: HostState, new: HostState, event: HostEvent) -> tuple[m.EventType, str, str]:
    """The event a host's state change records: ``(type, reason, message)``."""
    sick = new in (HostState.UNHEALTHY, HostState.UNREACHABLE)
    return (
        m.EventType.WARNING if sick else m.EventType.NORMAL,
        "StateChanged",
        f"{old.value} -> {new.value} ({event.value})",
    )


def delete_host(session: Session, name: str, resource_version: int | None) -> None:
    """Unpair a host: allowed only when it is not serving in a pool."""
    row = get_named(session, HostRow, "host", name)
    next_host_state(HostState(row.state), HostEvent.UNPAIR, assigned=row.pool is not None)
    delete_checked(session, row, "host", resource_version)
    events.record(session, ObjectKind.HOST, name, "Unpaired", "host unpaired and removed")
