"""``GET /metrics``: the plane's Prometheus metrics, on the people's port, for a viewer token.

One registry per app: the process-wide metrics of :mod:`tether.metrics` (reconciles,
plan results, request latency of both servers) and the store's counts
(:class:`~tether.services.metrics.StoreCollector`), read at scrape time. The handler is
synchronous, so the store queries run in the thread pool, not on the event loop.
Why a token on the people's port and not a listener of its own: docs/operations.md.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric

from tether.api.deps import Viewer
from tether.metrics import REGISTRY, REQUESTS
from tether.services.metrics import StoreCollector
from tether.store.db import Database

router = APIRouter()


class _ProcessMetrics:
    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        yield from REQUESTS.collect()


def registry(db: Database) -> CollectorRegistry:
    """What ``/metrics`` of an app on ``db`` shows."""
    combined = CollectorRegistry(auto_describe=False)
    combined.register(_ProcessMetrics())
    combined.register(StoreCollector(db))
    return combined


@router.get(
    "/metrics",
    tags=["health"],
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(request: Request, _: Viewer) -> Response:
    """Prometheus metrics (text format 0.0.4); see docs/operations.md for each name."""
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
