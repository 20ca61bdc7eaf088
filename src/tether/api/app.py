"""The app factory. Nothing is configured at import time: callers pass Settings in.

Middleware, outermost first (all pure ASGI): the audit log, the access log, the
declared-size check (413 before anything is read or authenticated), the token check
(401 before the body is read), then the body reader (size while reading, body timeout,
JSON syntax and depth), then FastAPI's routing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

import tether
from tether import web
from tether.api import (
    agent,
    artifacts,
    enrolment,
    errors,
    kube_routes,
    metrics,
    network,
    routes,
    stream,
)
from tether.api.auditing import Audit, Auditor
from tether.api.deps import Authenticate
from tether.api.limits import BodyReader, DeclaredSize
from tether.api.observe import Observe
from tether.services.looplag import LoopLag
from tether.settings import ApiSettings, Settings
from tether.store.db import Database, migrate

log = logging.getLogger(__name__)


def body_limit(api: ApiSettings) -> Callable[[str, str], int]:
    """The largest body each route of the people's API takes (``limit(method, path)``)."""

    def limit(method: str, path: str) -> int:
        if method == "PUT" and path.startswith("/api/v1/hosts/") and path.endswith("/desired"):
            return api.max_desired_state_bytes
        return api.max_body_bytes

    return limit


def _agent_lag(app: FastAPI) -> LoopLag | None:
    plane = getattr(app.state, "agent_plane", None)
    return plane.lag if plane is not None else None


def create_app(settings: Settings, db: Database | None = None) -> FastAPI:
    """Build the API. ``db`` defaults to the configured database; migrations run at start."""
    database = db or Database.connect(
        settings.database_url,
        echo=settings.database.echo,
        busy_timeout_ms=settings.database.busy_timeout_ms,
    )
    api = settings.api
    hub = stream.EventHub(
        database,
        poll_seconds=api.sse_poll_seconds,
        max_streams=api.max_streams,
        max_per_token=api.max_streams_per_token,
    )
    auditor = Auditor(database, settings.audit)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(migrate, database.engine)
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(hub.run(stop)),
            asyncio.create_task(
                agent.every(agent.AUDIT_FLUSH_SECONDS, stop, auditor.flush, "audit flush")
            ),
        ]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await run_in_threadpool(auditor.flush)
            if db is None:
                database.dispose()

    app = FastAPI(
        title="Tether",
        version=tether.__version__,
        description="Management plane for hybrid Kubernetes node pools.",
        lifespan=lifespan,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.db = database
    app.state.event_hub = hub
    app.state.auditor = auditor
    # The server sets app.state.agent_plane when the agent server runs in this process.
    app.state.metrics = metrics.registry(database, lambda: _agent_lag(app))
    errors.install(app)
    app.include_router(routes.router)
    app.include_router(stream.router)
    app.include_router(network.router)
    app.include_router(kube_routes.router)
    app.include_router(enrolment.router)
    app.include_router(artifacts.router)
    app.include_router(agent.refuse_plain_http())
    app.include_router(web.router)
    app.include_router(metrics.router)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness; the only endpoint that needs no token."""
        return {"status": "ok"}

    limit = body_limit(api)
    # add_middleware wraps: the last added runs first.
    app.add_middleware(BodyReader, limit_for=limit, timeout=api.body_timeout_seconds)
    app.add_middleware(Authenticate, db=database)
    app.add_middleware(DeclaredSize, limit_for=limit)
    app.add_middleware(Audit, auditor=auditor, routine=_read_only)
    # Outermost, so the latency it records, the request id it sets and its access log
    # line cover everything, refusals of the limits and of authentication included.
    app.add_middleware(Observe, server="api", access_log=True)
    return app


def _read_only(method: str, _path: str) -> bool:
    return method in ("GET", "HEAD")
