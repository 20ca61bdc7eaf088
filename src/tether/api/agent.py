"""The agent API (``/agent/v1``): served only over mutual TLS, by the agent server.

Who may call what:

* ``POST /agent/v1/register`` is the only endpoint without a client certificate; the
  activation id and code stand in for it.
* Every other endpoint needs a client certificate issued by the plane's trust anchor,
  not expired, not revoked (checked on every call, against the store's revocations),
  for an enrolled host. Endpoints under ``/agent/v1/hosts/{name}`` accept only the
  certificate whose CN is ``{name}``: a host reads and writes its own record, desired
  state and events, nothing else.
* ``GET /agent/v1/artifacts/{path}`` serves the plane's artifact mirror (see
  :mod:`tether.api.artifacts`) to any enrolled host's certificate.
* People's API tokens are refused here, and ``/api/...`` on this server is refused too:
  host certificates do not work at people's endpoints.

Every refusal, and every change except a plain heartbeat, is written to the audit log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Final

from fastapi import APIRouter, FastAPI, Path, Query, Request, Response, status
from fastapi.responses import FileResponse, JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import tether
from tether.api import errors
from tether.api.artifacts import RESPONSES, ArtifactPath, artifact_response
from tether.api.auditing import Audit, Auditor
from tether.api.batching import GroupCommit
from tether.api.limits import BodyReader, LimitFor, replaying
from tether.api.observe import Observe
from tether.domain import resources as r
from tether.domain.agent import (
    AgentEvent,
    AppliedReport,
    DesiredDocument,
    DesiredStatus,
    Enrolment,
    Heartbeat,
    RegisterRequest,
    RenewRequest,
)
from tether.domain.kubeapi import BootstrapTokenGrant
from tether.domain.models import EventType, ObjectKind
from tether.domain.states import HostState
from tether.errors import Forbidden, Invalid, NotFound, PlaneError, Unauthenticated
from tether.metrics import PLAN_RESULTS
from tether.pki import HostIdentity
from tether.pki.errors import PKIError
from tether.services import desired, enrolment, events, kubeconn, nodeidentity
from tether.services import resources as svc
from tether.services.heartbeats import HeartbeatTable, KnownHost
from tether.services.looplag import LoopLag
from tether.services.trust import PlaneTrust
from tether.settings import AgentServerSettings, Settings
from tether.store.db import Database, migrate
from tether.store.schema import utcnow

log = logging.getLogger(__name__)

PREFIX = "/agent/v1"
#: The longest host name a path may carry (``NamePath``).
MAX_NAME = 64
#: Key of the client certificate (DER) in the ASGI TLS extension dict (see tether.server).
CLIENT_CERT_DER = "tether.client_cert_der"
#: How often refusals the audit's rate limit held back are written as one summary row.
AUDIT_FLUSH_SECONDS = 5.0


@dataclass
class AgentPlane:
    """Everything the agent API works with; shared with the people's app when co-served."""

    settings: Settings
    db: Database
    trust: PlaneTrust
    table: HeartbeatTable
    watcher: desired.DesiredWatcher
    clock: Callable[[], datetime]
    loop: asyncio.AbstractEventLoop | None = None
    #: Told when a host reported what it applied (the server wires the pool reconciler).
    on_applied: Callable[[list[str]], None] | None = None
    #: How late the plane's event loop runs (exported as a metric, printed by the bench).
    lag: LoopLag = field(default_factory=LoopLag)
    #: Agents' reports of applied plans, written together when they arrive together.
    reports: GroupCommit[tuple[str, AppliedReport], DesiredStatus] = field(init=False)

    def __post_init__(self) -> None:
        self.reports = GroupCommit(self._write_reports)

    def _write_reports(
        self, batch: Sequence[tuple[str, AppliedReport]]
    ) -> list[DesiredStatus | PlaneError]:
        """Record a batch of reports in one transaction, then tell the pool reconciler
        of the hosts whose report was recorded (once for the batch)."""
        revoked: list[tuple[int, str]] = []  # by a re-image report: effective at once
        with self.db.session() as session:
            outcomes = desired.report_applied_many(
                session, batch, now=self.clock(), revoked=revoked
            )
        for serial, issuer in revoked:
            self.trust.note_revoked(serial, issuer)
        recorded = [
            name
            for (name, _), out in zip(batch, outcomes, strict=True)
            if isinstance(out, DesiredStatus)
        ]
        if self.on_applied is not None and recorded:
            self.on_applied(recorded)
        return outcomes

    def notify_desired(self, changes: Mapping[str, str | None]) -> None:
        """Wake the agents of these hosts now (host -> new hash, None: cleared), from
        any thread, in one call into the loop."""
        woken = {name: digest for name, digest in changes.items() if digest is not None}
        if self.loop is not None and woken:
            self.loop.call_soon_threadsafe(self._wake, woken)

    def _wake(self, woken: Mapping[str, str]) -> None:
        for name, digest in woken.items():
            self.watcher.changed(name, digest)

    @classmethod
    def build(
        cls, settings: Settings, db: Database, *, clock: Callable[[], datetime] = utcnow
    ) -> AgentPlane:
        trust = PlaneTrust(settings, clock=clock)
        return cls(
            settings=settings,
            db=db,
            trust=trust,
            table=HeartbeatTable(db, clock=clock),
            watcher=desired.DesiredWatcher(db),
            clock=clock,
        )


@dataclass(frozen=True)
class Caller:
    name: str


def _plane(request: Request) -> AgentPlane:
    plane: AgentPlane = request.app.state.agent_plane
    return plane


def _authenticate(plane: AgentPlane, scope: Scope) -> HostIdentity:
    """The host behind the request's client certificate, or the error saying what is wrong.

    Shared by every route (through :func:`identify`) and the lean heartbeat path
    (:class:`HeartbeatPath`): one implementation of the checks."""
    for key, _ in scope["headers"]:
        if key == b"authorization":
            raise Unauthenticated(
                "people's API tokens do not work at agent endpoints; agents authenticate "
                "with their client certificate",
                field="Authorization",
                rule="agent.client_cert_only",
            )
    tls = scope.get("extensions", {}).get("tls") or {}
    der = tls.get(CLIENT_CERT_DER)
    if not der:
        raise Unauthenticated(
            "this endpoint needs a client certificate (mutual TLS); a host gets one by "
            "enrolling with an activation",
            field="clientCertificate",
            rule="agent.client_cert_required",
        )
    try:
        return plane.trust.verify(der)
    except PKIError as exc:
        raise Unauthenticated(exc.message, field="clientCertificate", rule=exc.rule) from None


def _check_owner(identity: HostIdentity, name: str) -> None:
    if identity.node_name != name:
        raise Forbidden(
            f"the certificate of host {identity.node_name!r} cannot act for host {name!r}; a "
            "host may only read and write its own record, desired state and events",
            field="name",
            rule="agent.own_host_only",
        )


def identify(request: Request) -> HostIdentity:
    """The host behind the request's client certificate, or a 401 saying what is wrong."""
    identity = _authenticate(_plane(request), request.scope)
    request.state.principal = Caller(f"host:{identity.node_name}")
    return identity


def own(request: Request, name: str) -> HostIdentity:
    identity = identify(request)
    _check_owner(identity, name)
    return identity


def _is_enrolled(known: KnownHost | None) -> bool:
    return known is not None and known.state is not HostState.UNPAIRED


async def _enrolled(plane: AgentPlane, name: str) -> None:
    known = plane.table.cached(name) or await run_in_threadpool(plane.table.known, name)
    if not _is_enrolled(known):
        raise Unauthenticated(
            f"host {name!r} is not enrolled (it was removed); enrol it again with an activation",
            field="clientCertificate",
            rule="agent.not_enrolled",
        )


NamePath = Annotated[str, Path(max_length=MAX_NAME, description="The host's node name.")]
router = APIRouter(prefix=PREFIX, tags=["agent"])


@router.post("/register", status_code=status.HTTP_201_CREATED)
async def register(body: RegisterRequest, request: Request) -> Enrolment:
    """Enrol with an activation id + code and a CSR (no client certificate needed)."""
    if "authorization" in request.headers:
        identify(request)  # refuses the token with the same message as everywhere else
    claimed = f"activation:{body.activation_id}"[:128]
    request.state.claimed = claimed  # proven only once the activation is accepted
    plane = _plane(request)
    settings = plane.settings
    size = len(body.inventory.model_dump_json(by_alias=True))
    if size > settings.agent.max_inventory_bytes:
        raise Invalid(
            f"the inventory is {size} bytes as JSON; a host may register at most "
            f"{settings.agent.max_inventory_bytes} (TETHER_AGENT_MAX_INVENTORY_BYTES)",
            field="inventory",
            rule="max_bytes",
        )

    def run() -> Enrolment:
        with plane.db.session() as session:
            return enrolment.register(
                session,
                plane.trust,
                body,
                now=plane.clock(),
                heartbeat_seconds=settings.agent.heartbeat_seconds,
            )

    result = await run_in_threadpool(run)
    request.state.principal = Caller(claimed)
    plane.table.forget(body.name)
    log.info("host %s enrolled with activation %s", body.name, body.activation_id)
    return result


@router.get("/hosts/{name}")
async def get_host(name: NamePath, request: Request) -> r.Host:
    own(request, name)
    plane = _plane(request)

    def run() -> r.Host:
        with plane.db.session() as session:
            return svc.get_host(session, name)

    return await run_in_threadpool(run)


@router.post("/hosts/{name}/heartbeat", status_code=status.HTTP_204_NO_CONTENT)
async def heartbeat(name: NamePath, request: Request) -> Response:
    """A heartbeat: ``{"v": version, "f": {failing check: message}, "n": checks run}``.

    Answered with an empty 204 without touching the store: kept in memory and written in
    batches, with the state change its health calls for, by the next flush. A heartbeat
    that passes every check is answered before it gets here, by :class:`HeartbeatPath`;
    this route answers the others (mostly with the error that says why).
    """
    own(request, name)
    plane = _plane(request)
    await _enrolled(plane, name)
    beat = parse_heartbeat(await request.body())
    plane.table.beat(name, beat, plane.clock())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def parse_heartbeat(body: bytes) -> Heartbeat:
    """A heartbeat's body (empty: ``{}``), or a 422 naming the first field that is wrong."""
    try:
        return Heartbeat.model_validate_json(body or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or None
        raise Invalid(f"heartbeat: {first['msg']}", field=field, rule=first.get("type")) from None


#: A heartbeat's path, around the host's name.
_BEAT_HEAD, _BEAT_TAIL = f"{PREFIX}/hosts/", "/heartbeat"


class HeartbeatPath:
    """ASGI: a heartbeat that passes every check, answered without FastAPI.

    Heartbeats are nearly all the agent port's requests (18,000 hosts: 600 a second), and
    FastAPI's routing, dependency solving, exception layers and response class cost more
    CPU than the heartbeat's own checks (about 600 Python calls a heartbeat instead of
    390, TLS and HTTP parsing included; see ``docs/agent.md``). This layer sits inside the
    body limits, the audit and the request metrics (:class:`BodyReader`, :class:`Audit`
    and :class:`Observe` see every heartbeat as before) and runs the route's own checks
    (the same functions: :func:`_authenticate`, :func:`_check_owner`,
    :func:`_is_enrolled`, :func:`parse_heartbeat`). A heartbeat that passes them all is
    recorded and answered here with the route's empty 204; anything else (a refusal, a
    host not yet in memory, a name the route would refuse) goes on to the route with its
    body, which runs the checks again and answers with the documented error.
    """

    def __init__(self, app: ASGIApp, plane: AgentPlane, route: Any) -> None:
        self.app = app
        self.plane = plane
        #: The heartbeat's route: the request metrics label the request with its path.
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = _beat_name(scope)
        if name is None:
            await self.app(scope, receive, send)
            return
        message = await receive()
        if not self._accepted(scope, name, message):
            await self.app(scope, replaying(message, receive), send)
            return
        scope["route"] = self.route
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    def _accepted(self, scope: Scope, name: str, message: Message) -> bool:
        """Whether the heartbeat passed every check and was recorded."""
        if message["type"] != "http.request" or message.get("more_body", False):
            return False
        plane = self.plane
        try:
            identity = _authenticate(plane, scope)
            _check_owner(identity, name)
            beat = parse_heartbeat(message.get("body", b""))
        except PlaneError:
            return False
        if not _is_enrolled(plane.table.cached(name)):
            return False
        scope.setdefault("state", {})["principal"] = Caller(f"host:{name}")
        plane.table.beat(name, beat, plane.clock())
        return True


def _beat_name(scope: Scope) -> str | None:
    """The host name of a heartbeat's request (``POST /agent/v1/hosts/{name}/heartbeat``)."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    path: str = scope["path"]
    if not (path.startswith(_BEAT_HEAD) and path.endswith(_BEAT_TAIL)):
        return None
    name = path[len(_BEAT_HEAD) : -len(_BEAT_TAIL)]
    return name if 0 < len(name) <= MAX_NAME and "/" not in name else None


@router.post("/hosts/{name}/certificate")
async def renew(name: NamePath, body: RenewRequest, request: Request) -> Enrolment:
    """Renew the host's certificate with a new CSR, authenticated by the current one."""
    identity = own(request, name)
    plane = _plane(request)
    await _enrolled(plane, name)

    def run() -> Enrolment:
        with plane.db.session() as session:
            return enrolment.renew(
                session,
                plane.trust,
                name,
                body.csr,
                now=plane.clock(),
                heartbeat_seconds=plane.settings.agent.heartbeat_seconds,
                presented=identity.serial_hex,
            )

    return await run_in_threadpool(run)


@router.get("/hosts/{name}/desired", responses={304: {"description": "Unchanged"}})
async def get_desired(
    name: NamePath,
    request: Request,
    hash: Annotated[str | None, Query(max_length=64)] = None,
    timeout: Annotated[float | None, Query(ge=0, le=600)] = None,
) -> Any:
    """Long poll: the document as soon as its hash differs from ``hash``; 304 at timeout."""
    own(request, name)
    plane = _plane(request)
    await _enrolled(plane, name)
    wait = min(
        timeout if timeout is not None else plane.settings.agent.long_poll_seconds,
        plane.settings.agent.long_poll_seconds,
    )
    seen = plane.watcher.hashes.get(name)
    if seen in (None, hash):
        await plane.watcher.wait(name, hash, wait)
    identity = own(request, name)  # revoked or expired while the poll waited: 401

    def run() -> DesiredDocument | None:
        with plane.db.session() as session:
            doc = desired.get_document(session, name)
            if doc is not None and doc.hash != hash:
                # The document goes out: its host's certificate must be live in the store
                # too (a revocation by another process reaches memory only on refresh).
                enrolment.check_not_revoked(session, plane.trust, identity)
            return doc

    doc = await run_in_threadpool(run)
    if doc is None and seen not in (None, hash):
        # Cleared since the watcher saw it (a host released, or enrolled again after a
        # re-image): wait as for an unchanged document, or the agent polls in a tight loop.
        await plane.watcher.wait(name, seen, wait)
        identity = own(request, name)
        doc = await run_in_threadpool(run)
    if doc is None or doc.hash == hash:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED)
    await _enrolled(plane, name)
    return doc


@router.post("/hosts/{name}/applied")
async def applied(name: NamePath, body: AppliedReport, request: Request) -> DesiredStatus:
    """Report the result of applying the desired state with ``hash``; reports that
    arrive together are recorded in one transaction (:mod:`tether.api.batching`)."""
    own(request, name)
    plane = _plane(request)
    await _enrolled(plane, name)

    status = await plane.reports.submit((name, body))
    PLAN_RESULTS.labels("applied" if bool(body.result.get("ok", True)) else "failed").inc()
    return status


@router.post("/hosts/{name}/events", status_code=status.HTTP_201_CREATED)
async def post_event(name: NamePath, body: AgentEvent, request: Request) -> r.Event:
    own(request, name)
    plane = _plane(request)
    await _enrolled(plane, name)

    def run() -> r.Event:
        with plane.db.session() as session:
            row = events.record(
                session, ObjectKind.HOST, name, body.reason, body.message, EventType(body.type)
            )
            session.flush()
            return events.to_event(row)

    return await run_in_threadpool(run)


@router.post("/hosts/{name}/bootstrap-token", status_code=status.HTTP_201_CREATED)
async def bootstrap_token(name: NamePath, request: Request) -> BootstrapTokenGrant:
    """A short-lived bootstrap token for this host to join its pool's cluster.

    ``tether node init`` asks for it with the host's certificate (``x509`` or
    ``activation`` credentials), so no person has to hand a token to the host."""
    own(request, name)
    plane = _plane(request)
    await _enrolled(plane, name)

    def run() -> BootstrapTokenGrant:
        with (
            kubeconn.node_client(plane.db, plane.settings.paths.data_dir, name) as client,
            plane.db.session() as session,
        ):
            return nodeidentity.mint_bootstrap_token(session, name, client=client)

    return await run_in_threadpool(run)


@router.get("/hosts/{name}/events")
async def list_events(
    name: NamePath, request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[r.Event]:
    own(request, name)
    plane = _plane(request)
    await _enrolled(plane, name)

    def run() -> list[r.Event]:
        with plane.db.session() as session:
            items, _ = events.list_events(
                session, kind=ObjectKind.HOST, name=name, limit=limit, continue_token=None
            )
            return items

    return await run_in_threadpool(run)


#: The CA bundle and the CRL bundle are PEM text.
PEM: Final[dict[int | str, dict[str, Any]]] = {
    200: {"description": "PEM blocks.", "content": {"application/x-pem-file": {}}}
}


@router.get("/crl", response_class=Response, responses=PEM)
async def crl(request: Request) -> Response:
    """The CRL bundle: one signed CRL per CA trusted now (PEM)."""
    identify(request)
    pem = await run_in_threadpool(_plane(request).trust.crl_bundle_pem)
    return Response(pem, media_type="application/x-pem-file")


@router.get("/ca", response_class=Response, responses=PEM)
async def ca_bundle(request: Request) -> Response:
    """The CAs agents should trust for the plane (PEM, newest first)."""
    identify(request)
    return Response(_plane(request).trust.bundle_pem(), media_type="application/x-pem-file")


@router.get("/artifacts/{path:path}", response_class=FileResponse, responses=RESPONSES)
async def artifact(path: ArtifactPath, request: Request) -> FileResponse:
    """A file of the plane's artifact mirror (``manifest.json``, an artifact), for any
    enrolled host: ``tether node install --source <agent URL>/agent/v1/artifacts``."""
    identity = identify(request)
    plane = _plane(request)
    await _enrolled(plane, identity.node_name)
    return await artifact_response(plane.settings.artifacts_dir, path)


def _routine(method: str, path: str) -> bool:
    """Successes not audited: reads and heartbeats (everything else changes something)."""
    return method in ("GET", "HEAD") or path.endswith("/heartbeat")


def body_limit(agent: AgentServerSettings) -> LimitFor:
    """The largest body each agent route takes: registration carries the inventory."""

    def limit(method: str, path: str) -> int:
        return agent.max_register_bytes if path == f"{PREFIX}/register" else agent.max_body_bytes

    return limit


#: A job run for the agent app's lifetime: ``job(plane, stop)`` returns when ``stop`` is set.
BackgroundJob = Callable[["AgentPlane", asyncio.Event], Coroutine[Any, Any, None]]


async def every(interval: float, stop: asyncio.Event, work: Callable[[], Any], what: str) -> None:
    while not stop.is_set():
        try:
            await run_in_threadpool(work)
        except Exception:
            log.exception("%s failed; retrying in %.1fs", what, interval)
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


def create_agent_app(
    settings: Settings,
    db: Database | None = None,
    *,
    plane: AgentPlane | None = None,
    run_migrations: bool = True,
    background: Sequence[BackgroundJob] = (),
) -> FastAPI:
    """The agent API. Serve it with :mod:`tether.server` (mutual TLS).

    ``background`` jobs run for the app's lifetime beside the heartbeat flush, the
    desired-state refresh and the loop-lag probe (the server passes the heartbeat
    reconciler, a controller the API layer does not import); each gets the plane and an
    event set at shutdown."""
    database = (
        db
        or (plane.db if plane else None)
        or Database.connect(
            settings.database_url,
            echo=settings.database.echo,
            busy_timeout_ms=settings.database.busy_timeout_ms,
        )
    )
    agent_plane = plane or AgentPlane.build(settings, database)
    cfg = settings.agent
    auditor = Auditor(database, settings.audit)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if run_migrations:
            await run_in_threadpool(migrate, database.engine)
        agent_plane.loop = asyncio.get_running_loop()
        await run_in_threadpool(agent_plane.trust.load_revocations, database)
        await run_in_threadpool(agent_plane.watcher.refresh)
        await run_in_threadpool(agent_plane.table.preload)
        stop = asyncio.Event()

        def refresh_trust() -> None:
            agent_plane.trust.reload_ca_if_changed()
            agent_plane.trust.load_revocations(database)

        def refresh_desired() -> None:
            agent_plane.watcher.wake(agent_plane.watcher.refresh())

        tasks = [
            asyncio.create_task(
                every(cfg.flush_seconds, stop, agent_plane.table.flush, "heartbeat flush")
            ),
            asyncio.create_task(
                every(cfg.revocation_refresh_seconds, stop, refresh_trust, "trust refresh")
            ),
            asyncio.create_task(every(1.0, stop, refresh_desired, "desired-state refresh")),
            asyncio.create_task(agent_plane.lag.run(stop)),
            asyncio.create_task(every(AUDIT_FLUSH_SECONDS, stop, auditor.flush, "audit flush")),
            *(asyncio.create_task(job(agent_plane, stop)) for job in background),
        ]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await run_in_threadpool(agent_plane.table.flush)
            await run_in_threadpool(auditor.flush)
            if db is None and plane is None:
                database.dispose()

    app = FastAPI(
        title="Tether agent API",
        version=tether.__version__,
        description="Mutual-TLS API for Tether edge agents.",
        lifespan=lifespan,
        openapi_url=f"{PREFIX}/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.db = database
    app.state.agent_plane = agent_plane
    errors.install(app)
    app.include_router(router)

    @app.api_route(
        "/api/{rest:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    async def people_api_refused(rest: str, request: Request) -> JSONResponse:
        raise Forbidden(
            "the people's API is not served on the agent port, and host certificates do not "
            "work at people's endpoints; use the API port with a token",
            field="path",
            rule="agent.people_endpoint",
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.state.auditor = auditor
    route = next(r for r in router.routes if getattr(r, "endpoint", None) is heartbeat)
    app.add_middleware(HeartbeatPath, plane=agent_plane, route=route)
    app.add_middleware(
        BodyReader,
        limit_for=body_limit(cfg),
        timeout=cfg.body_timeout_seconds,
        unchecked=lambda path: path.endswith("/heartbeat"),  # parsed by a strict model
    )
    app.add_middleware(Audit, auditor=auditor, routine=_routine)
    app.add_middleware(Observe, server="agent", echo_from=400)
    return app


def refuse_plain_http() -> APIRouter:
    """Routes for the people's (plain HTTP) app: agent paths there are refused, audited."""
    plain = APIRouter(include_in_schema=False)

    @plain.api_route("/agent/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def agent_over_plain_http(rest: str) -> None:
        raise Forbidden(
            "agent endpoints are served only over mutual TLS on the agent port "
            "(TETHER_AGENT_PORT), never over plain HTTP",
            field="scheme",
            rule="agent.tls_required",
        )

    return plain


__all__ = [
    "AgentPlane",
    "NotFound",
    "PlaneError",
    "create_agent_app",
    "refuse_plain_http",
]
