"""The app factory. Nothing is configured at import time: callers pass Settings in."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
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
from tether.api.observe import Observe
from tether.services import audit
from tether.settings import Settings
from tether.store.db import Database, migrate

log = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def create_app(settings: Settings, db: Database | None = None) -> FastAPI:
    """Build the API. ``db`` defaults to the configured database; migrations run at start."""
    database = db or Database.connect(
        settings.database_url,
        echo=settings.database.echo,
        busy_timeout_ms=settings.database.busy_timeout_ms,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(migrate, database.engine)
        yield
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
    app.state.metrics = metrics.registry(database)
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

    @app.middleware("http")
    async def audit_mutations(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        refused_agent_call = request.url.path.startswith("/agent/") and response.status_code >= 400
        if request.method in MUTATING or refused_agent_call:
            principal = getattr(request.state, "principal", None)
            actor = principal.name if principal else "anonymous"
            await run_in_threadpool(
                _write_audit,
                database,
                actor,
                request.method,
                request.url.path,
                response.status_code,
            )
        return response

    # Outermost, so the latency it records and the request id it sets cover everything.
    app.add_middleware(Observe, server="api", access_log=True)
    return app


def _write_audit(db: Database, actor: str, action: str, target: str, status_code: int) -> None:
    with db.session() as session:
        audit.write(session, actor=actor, action=action, target=target, status_code=status_code)
