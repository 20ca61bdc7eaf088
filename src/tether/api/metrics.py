"""``GET /metrics``: the plane's Prometheus metrics, on the people's port, for a viewer token.

One registry per app: the process-wide metrics of :mod:`tether.metrics` (reconciles,
plan results, request latency of both servers), the store's counts
(:class:`~tether.services.metrics.StoreCollector`), read at scrape time, and, when the
agent server runs in the same process, how late its event loop runs
(:class:`~tether.services.looplag.LoopLag`). The handler is
synchronous, so the store queries run in the thread pool, not on the event loop.
Why a token on the people's port and not a listener of its own: docs/operations.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

from tether.api.deps import Viewer
from tether.metrics import REGISTRY, REQUESTS
from tether.services.looplag import BUCKETS, LoopLag
from tether.services.metrics import StoreCollector
from tether.store.db import Database

router = APIRouter()


class _ProcessMetrics:
    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        yield from REQUESTS.collect()


class _LoopLagMetrics:
    def __init__(self, lag: Callable[[], LoopLag | None]) -> None:
        self.lag = lag

    def collect(self) -> Iterator[Metric]:
        lag = self.lag()
        if lag is None:
            return
        snap = lag.snapshot()
        buckets, seen = [], 0
        for bound, count in zip([*BUCKETS, float("inf")], snap.counts, strict=True):
            seen += count
            buckets.append(("+Inf" if bound == float("inf") else str(bound), seen))
        yield HistogramMetricFamily(
            "tether_event_loop_lag_seconds",
            "How much later than asked the agent server's event loop ran a 100 ms probe: "
            "the wait every heartbeat and request on that loop saw.",
            buckets=buckets,
            sum_value=snap.total,
        )
        yield GaugeMetricFamily(
            "tether_event_loop_stall_seconds",
            "How late the probe is now, if it has not woken yet (a loop blocked longer "
            "than a scrape interval completes no sample).",
            value=snap.stalled,
        )


def registry(db: Database, lag: Callable[[], LoopLag | None] = lambda: None) -> CollectorRegistry:
    """What ``/metrics`` of an app on ``db`` shows; ``lag`` gives the agent server's
    loop-lag probe once there is one."""
    combined = CollectorRegistry(auto_describe=False)
    combined.register(_ProcessMetrics())
    combined.register(StoreCollector(db))
    combined.register(_LoopLagMetrics(lag))
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
