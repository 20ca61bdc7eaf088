"""REST resources under ``/api/v1``. Handlers are thin: one service call in one transaction."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Generic, TypeVar

from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import Field

from tether.api.deps import DB, Admin, Config, Operator, Pages, Viewer
from tether.domain import resources as r
from tether.domain.attention import Attention
from tether.domain.base import INT64_MAX, Model
from tether.domain.models import EventType, Name, ObjectKind, SemVer
from tether.domain.rollout import RolloutState
from tether.domain.states import HostEvent, HostState, PoolState
from tether.services import attention, audit, enrolment, events, profiles, rollouts, tokens
from tether.services import resources as svc
from tether.store.schema import utcnow

if TYPE_CHECKING:
    from tether.api.agent import AgentPlane

T = TypeVar("T")


class Order(StrEnum):
    OLDEST = "oldest"
    NEWEST = "newest"


class List(Model, Generic[T]):
    """One page of a list; pass ``continue`` back to get the next one."""

    items: list[T]
    continue_: str | None = Field(default=None, alias="continue")


NamePath = Annotated[str, Path(max_length=253, description="Object name.")]
RV = Annotated[
    int | None,
    Query(
        alias="resourceVersion",
        ge=1,
        le=INT64_MAX,
        description="Refuse the delete if the object changed.",
    ),
]

router = APIRouter(prefix="/api/v1")


@router.get("/whoami", tags=["auth"])
def whoami(principal: Viewer) -> dict[str, str]:
    return {"name": principal.name, "role": principal.role.value}


# Clusters


@router.post("/clusters", status_code=status.HTTP_201_CREATED, tags=["clusters"])
def create_cluster(body: r.ClusterCreate, db: DB, _: Operator) -> r.Cluster:
    with db.session() as s:
        return svc.create_cluster(s, body)


@router.get("/clusters", tags=["clusters"])
def list_clusters(db: DB, _: Viewer, p: Pages) -> List[r.Cluster]:
    with db.session() as s:
        items, token = svc.list_clusters(s, limit=p.limit, continue_token=p.continue_token)
    return List(items=items, continue_=token)


@router.get("/clusters/{name}", tags=["clusters"])
def get_cluster(name: NamePath, db: DB, _: Viewer) -> r.Cluster:
    with db.session() as s:
        return svc.get_cluster(s, name)


@router.put("/clusters/{name}", tags=["clusters"])
def update_cluster(name: NamePath, body: r.ClusterUpdate, db: DB, _: Operator) -> r.Cluster:
    with db.session() as s:
        return svc.update_cluster(s, name, body)


@router.delete("/clusters/{name}", status_code=status.HTTP_204_NO_CONTENT, tags=["clusters"])
def delete_cluster(name: NamePath, db: DB, _: Operator, resource_version: RV = None) -> None:
    with db.session() as s:
        svc.delete_cluster(s, name, resource_version)


# Sites


@router.post("/sites", status_code=status.HTTP_201_CREATED, tags=["sites"])
def create_site(body: r.SiteCreate, db: DB, _: Operator) -> r.Site:
    with db.session() as s:
        return svc.create_site(s, body)


@router.get("/sites", tags=["sites"])
def list_sites(db: DB, _: Viewer, p: Pages) -> List[r.Site]:
    with db.session() as s:
        items, token = svc.list_sites(s, limit=p.limit, continue_token=p.continue_token)
    return List(items=items, continue_=token)


@router.get("/sites/{name}", tags=["sites"])
def get_site(name: NamePath, db: DB, _: Viewer) -> r.Site:
    with db.session() as s:
        return svc.get_site(s, name)


@router.put("/sites/{name}", tags=["sites"])
def update_site(name: NamePath, body: r.SiteUpdate, db: DB, _: Operator) -> r.Site:
    with db.session() as s:
        return svc.update_site(s, name, body)


@router.delete("/sites/{name}", status_code=status.HTTP_204_NO_CONTENT, tags=["sites"])
def delete_site(name: NamePath, db: DB, _: Operator, resource_version: RV = None) -> None:
    with db.session() as s:
        svc.delete_site(s, name, resource_version)


# Pools


@router.post("/pools", status_code=status.HTTP_201_CREATED, tags=["pools"])
def create_pool(body: r.PoolCreate, db: DB, _: Operator) -> r.Pool:
    with db.session() as s:
        return svc.create_pool(s, body)


@router.get("/pools", tags=["pools"])
def list_pools(
    db: DB,
    _: Viewer,
    p: Pages,
    cluster: Annotated[Name | None, Query()] = None,
    site: Annotated[Name | None, Query()] = None,
    state: Annotated[PoolState | None, Query()] = None,
) -> List[r.Pool]:
    with db.session() as s:
        items, token = svc.list_pools(
            s,
            cluster=cluster,
            site=site,
            state=state,
            limit=p.limit,
            continue_token=p.continue_token,
        )
    return List(items=items, continue_=token)


@router.get("/pools/{name}", tags=["pools"])
def get_pool(name: NamePath, db: DB, _: Viewer) -> r.Pool:
    with db.session() as s:
        return svc.get_pool(s, name)


@router.put("/pools/{name}", tags=["pools"])
def update_pool(name: NamePath, body: r.PoolUpdate, db: DB, _: Operator) -> r.Pool:
    with db.session() as s:
        return svc.update_pool(s, name, body)


@router.delete(
    "/pools/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["pools"],
    responses={202: {"model": r.Pool, "description": "Deleting: hosts are removed first."}},
)
def delete_pool(
    name: NamePath, request: Request, db: DB, _: Operator, resource_version: RV = None
) -> Response:
    """Delete a pool; one with hosts turns Deleting (202) and goes once they have left."""
    with db.session() as s:
        left = svc.delete_pool(s, name, resource_version)
    if left is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    _pools_changed(request, [name])
    return JSONResponse(left.model_dump(mode="json", by_alias=True), status_code=202)


class PoolHost(Model):
    host: Name


@router.post("/pools/{name}/hosts", status_code=status.HTTP_201_CREATED, tags=["pools"])
def add_pool_host(name: NamePath, body: PoolHost, request: Request, db: DB, _: Operator) -> r.Host:
    """Add a Ready host of the pool's site; the pool reconciler joins it."""
    with db.session() as s:
        host = svc.add_to_pool(s, name, body.host)
    _pools_changed(request, [name])
    return _noted(request, host)


@router.delete("/pools/{name}/hosts/{host}", status_code=202, tags=["pools"])
def remove_pool_host(
    name: NamePath, host: Annotated[Name, Path()], request: Request, db: DB, _: Operator
) -> r.Host:
    """Take a host out: cordon, drain, uninstall, delete its Node; then it is Ready again."""
    with db.session() as s:
        view = svc.remove_from_pool(s, name, host)
    _pools_changed(request, [name])
    return view


# Rollouts


@router.post("/pools/{name}/rollouts", status_code=status.HTTP_201_CREATED, tags=["rollouts"])
def create_rollout(
    name: NamePath, body: r.RolloutCreate, request: Request, db: DB, who: Operator
) -> r.Rollout:
    """Make a rollout of the pool to a profile version; it waits for approval."""
    with db.session() as s:
        made = rollouts.create(s, name, body.to, actor=who.name, now=utcnow())
    _pools_changed(request, [name])
    return made


@router.get("/rollouts", tags=["rollouts"])
def list_rollouts(
    db: DB,
    _: Viewer,
    p: Pages,
    pool: Annotated[Name | None, Query()] = None,
    state: Annotated[RolloutState | None, Query()] = None,
) -> List[r.Rollout]:
    with db.session() as s:
        items, token = rollouts.list_rollouts(
            s, pool=pool, state=state, limit=p.limit, continue_token=p.continue_token
        )
    return List(items=items, continue_=token)


RolloutName = Annotated[str, Path(max_length=96, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]


@router.get("/rollouts/{name}", tags=["rollouts"])
def get_rollout(name: RolloutName, db: DB, _: Viewer) -> r.Rollout:
    with db.session() as s:
        return rollouts.get(s, name)


@router.post("/rollouts/{name}/{verb}", tags=["rollouts"])
def act_on_rollout(
    name: RolloutName, verb: r.RolloutVerb, request: Request, db: DB, who: Operator
) -> r.Rollout:
    """approve, pause, resume, abort, or rollback (to the version it started from)."""
    now = utcnow()
    with db.session() as s:
        if verb is r.RolloutVerb.ROLLBACK:
            done = rollouts.rollback(s, name, actor=who.name, now=now)
        else:
            done = rollouts.act(s, name, verb.value, actor=who.name, now=now)
    _pools_changed(request, [done.pool])
    return done


def _pools_changed(request: Request, names: list[str]) -> None:
    """Tell the pool reconciler (when this process runs it) to look at these pools now."""
    notify = getattr(request.app.state, "on_pools_changed", None)
    if notify is not None:
        notify(names)


# Hosts


@router.post("/hosts", status_code=status.HTTP_201_CREATED, tags=["hosts"])
def create_host(body: r.HostCreate, db: DB, _: Operator) -> r.Host:
    with db.session() as s:
        return svc.create_host(s, body)


@router.get("/hosts", tags=["hosts"])
def list_hosts(
    db: DB,
    _: Viewer,
    p: Pages,
    site: Annotated[Name | None, Query()] = None,
    pool: Annotated[Name | None, Query()] = None,
    state: Annotated[HostState | None, Query()] = None,
) -> List[r.Host]:
    with db.session() as s:
        items, token = svc.list_hosts(
            s, site=site, pool=pool, state=state, limit=p.limit, continue_token=p.continue_token
        )
    return List(items=items, continue_=token)


@router.get("/hosts/{name}", tags=["hosts"])
def get_host(name: NamePath, db: DB, _: Viewer) -> r.Host:
    with db.session() as s:
        return svc.get_host(s, name)


def _agent_plane(request: Request) -> AgentPlane | None:
    plane: AgentPlane | None = getattr(request.app.state, "agent_plane", None)
    return plane


def _noted(request: Request, host: r.Host) -> r.Host:
    """Tell the agent server's heartbeat table about a state an operator changed."""
    if (plane := _agent_plane(request)) is not None:
        plane.table.note_state(host.name, host.status.state)
    return host


@router.put("/hosts/{name}", tags=["hosts"])
def update_host(
    name: NamePath, body: r.HostUpdate, request: Request, db: DB, _: Operator
) -> r.Host:
    with db.session() as s:
        host = svc.update_host(s, name, body)
    if host.status.member is not None:
        _pools_changed(request, [host.status.member.pool])
    return _noted(request, host)


@router.post("/hosts/{name}/reset", tags=["hosts"])
def reset_host(
    name: NamePath, request: Request, db: DB, _: Operator, resource_version: RV = None
) -> r.Host:
    """Return a host to Registered (it must not be in a pool)."""
    with db.session() as s:
        host = svc.transition_host(s, name, HostEvent.RESET, resource_version)
    return _noted(request, host)


@router.delete("/hosts/{name}", status_code=status.HTTP_204_NO_CONTENT, tags=["hosts"])
def delete_host(
    name: NamePath, request: Request, db: DB, _: Operator, resource_version: RV = None
) -> None:
    """Unpair a host and remove it (it must not be in a pool); its certificates are revoked."""
    plane = _agent_plane(request)
    with db.session() as s:
        enrolment.unpair_host(
            s, plane.trust if plane else None, name, resource_version, now=utcnow()
        )
    if plane is not None:
        plane.table.forget(name)


# Profiles


@router.post("/profiles", status_code=status.HTTP_201_CREATED, tags=["profiles"])
def create_profile(body: r.ProfileCreate, db: DB, _: Operator) -> r.Profile:
    """Publish a profile version. Published versions are immutable."""
    with db.session() as s:
        return svc.create_profile(s, body)


@router.get("/profiles", tags=["profiles"])
def list_profiles(
    db: DB, _: Viewer, p: Pages, name: Annotated[Name | None, Query()] = None
) -> List[r.Profile]:
    with db.session() as s:
        items, token = svc.list_profiles(
            s, name=name, limit=p.limit, continue_token=p.continue_token
        )
    return List(items=items, continue_=token)


@router.get("/profiles/{name}/diff", tags=["profiles"])
def diff_profile(
    name: NamePath,
    db: DB,
    _: Viewer,
    from_: Annotated[SemVer, Query(alias="from")],
    to: Annotated[SemVer, Query()],
) -> r.ProfileDiff:
    """Every field that changes between two versions, and the action each needs on a node."""
    with db.session() as s:
        return profiles.diff_versions(s, name, from_, to)


@router.get("/profiles/{name}/{version}", tags=["profiles"])
def get_profile(name: NamePath, version: Annotated[SemVer, Path()], db: DB, _: Viewer) -> r.Profile:
    with db.session() as s:
        return svc.get_profile(s, name, version)


@router.delete(
    "/profiles/{name}/{version}", status_code=status.HTTP_204_NO_CONTENT, tags=["profiles"]
)
def delete_profile(name: NamePath, version: Annotated[SemVer, Path()], db: DB, _: Operator) -> None:
    with db.session() as s:
        svc.delete_profile(s, name, version)


# Events


@router.get("/events", tags=["events"])
def list_events(
    db: DB,
    _: Viewer,
    p: Pages,
    kind: Annotated[ObjectKind | None, Query()] = None,
    name: Annotated[str | None, Query(max_length=253)] = None,
    type: Annotated[EventType | None, Query()] = None,
    pool: Annotated[
        Name | None, Query(description="A pool's events and those of its hosts and rollouts.")
    ] = None,
    order: Annotated[
        Order,
        Query(
            description="oldest: by first seen, page by page; newest: the `limit` events "
            "seen last (a repeat moves up), newest first, one page."
        ),
    ] = Order.OLDEST,
) -> List[r.Event]:
    with db.session() as s:
        items, token = events.list_events(
            s,
            kind=kind,
            name=name,
            type=type,
            pool=pool,
            limit=p.limit,
            continue_token=p.continue_token,
            newest=order is Order.NEWEST,
        )
    return List(items=items, continue_=token)


@router.get("/attention", tags=["events"])
def needs_attention(db: DB, _: Viewer) -> Attention:
    """What needs a person: failed plans, Unhealthy or Unreachable hosts, Nodes not Ready
    (outside an operation), failed or stuck rollouts."""
    with db.session() as s:
        return attention.attention(s, utcnow())


# Tokens and audit (admins)


@router.post("/tokens", status_code=status.HTTP_201_CREATED, tags=["auth"])
def create_token(body: r.TokenCreate, db: DB, _: Admin, settings: Config) -> r.IssuedToken:
    """Mint a token. The response is the only time its secret is shown."""
    with db.session() as s:
        return tokens.issue(s, body, default_ttl_days=settings.auth.token_ttl_days)


@router.get("/tokens", tags=["auth"])
def list_tokens(db: DB, _: Admin) -> List[r.Token]:
    with db.session() as s:
        return List(items=tokens.list_tokens(s))


@router.delete("/tokens/{token_id}", tags=["auth"])
def revoke_token(token_id: Annotated[str, Path(max_length=32)], db: DB, _: Admin) -> r.Token:
    with db.session() as s:
        return tokens.revoke(s, token_id)


@router.get("/audit", tags=["auth"])
def list_audit(
    db: DB,
    _: Admin,
    p: Pages,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    order: Annotated[Order, Query(description="oldest or newest first.")] = Order.OLDEST,
) -> List[r.AuditRecord]:
    with db.session() as s:
        items, token = audit.list_records(
            s,
            actor=actor,
            limit=p.limit,
            continue_token=p.continue_token,
            newest_first=order is Order.NEWEST,
        )
    return List(items=items, continue_=token)
