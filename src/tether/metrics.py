"""The plane's own Prometheus metrics: process-wide counters and cheap recorders.

Two kinds of metric live here:

* **process-wide** counters and histograms that code increments as things happen
  (:data:`RECONCILE_SECONDS`, :data:`RECONCILE_ERRORS`, :data:`PLAN_RESULTS`), in
  :data:`REGISTRY` (prometheus-client's thread-safe metrics: the controllers run in
  threads);
* **HTTP request latency** (:data:`REQUESTS`), recorded by the servers' middleware on
  every request, heartbeats included. It is a plain dict of bucket counts updated
  from the event loop's thread only, with no lock and no label lookup: a heartbeat pays
  a dict lookup, a bisection and two additions. A scrape copies it (``dict`` and
  ``list`` copies are atomic under the GIL) and exposes it as a histogram.

What is counted from the store (hosts by state, heartbeat ages, rollouts) is collected
at scrape time by :mod:`tether.services.metrics`; the API serves both at ``/metrics``.
Metric names are stable: the Grafana dashboard in ``deploy/grafana/`` queries them, and
a test checks every name it uses against a scrape of a running plane.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import HistogramMetricFamily, Metric

__all__ = [
    "CONTROLLERS",
    "PLAN_RESULTS",
    "RECONCILE_ERRORS",
    "RECONCILE_SECONDS",
    "REGISTRY",
    "REQUESTS",
    "RequestLatency",
    "reconciling",
]

# ``*_created`` series (a timestamp per series) double what a scrape carries for nothing
# a dashboard uses.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: Process-wide metrics (a plane serves them with the store's at ``/metrics``).
REGISTRY = CollectorRegistry(auto_describe=True)

#: The reconcilers whose passes are timed (each has its series from the start).
CONTROLLERS = ("pools", "heartbeats", "nodes", "csr")

RECONCILE_SECONDS = Histogram(
    "tether_reconcile_duration_seconds",
    "How long one reconcile pass of a controller took.",
    ["controller"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "tether_reconcile_errors",
    "Reconcile passes that raised (the controller retries them).",
    ["controller"],
    registry=REGISTRY,
)
PLAN_RESULTS = Counter(
    "tether_plan_results",
    "Node plans (desired-state documents) agents reported as applied or failed.",
    ["result"],
    registry=REGISTRY,
)
for _name in CONTROLLERS:
    RECONCILE_SECONDS.labels(_name)
    RECONCILE_ERRORS.labels(_name)
for _result in ("applied", "failed"):
    PLAN_RESULTS.labels(_result)


@contextmanager
def reconciling(controller: str, expected: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Time one reconcile pass of ``controller``; count it as an error if it raises
    anything but the ``expected`` exceptions (a lost race the controller retries)."""
    started = time.perf_counter()
    try:
        yield
    except expected:
        raise
    except Exception:
        RECONCILE_ERRORS.labels(controller).inc()
        raise
    finally:
        RECONCILE_SECONDS.labels(controller).observe(time.perf_counter() - started)


#: Latency buckets (seconds): a heartbeat takes about a millisecond, a list tens.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: (server, route template, method, status) of a request.
RequestKey = tuple[str, str, str, str]


class RequestLatency:
    """A histogram of request latency by server, route template, method and status.

    Not thread-safe on purpose: :meth:`observe` is called only from the event loop's
    thread (ASGI middleware runs there), so it needs no lock. :meth:`collect` may run in
    any thread: it copies before it reads.
    """

    name = "tether_http_request_duration_seconds"

    def __init__(self, buckets: Iterable[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(sorted(buckets))
        #: key -> [count per bucket (the last is +Inf)..., sum]
        self._series: dict[RequestKey, list[float]] = {}

    def observe(self, key: RequestKey, seconds: float) -> None:
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = [0.0] * (len(self.bounds) + 2)
        series[bisect_left(self.bounds, seconds)] += 1
        series[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            self.name,
            "Time from a request's arrival to its response's headers, by route template "
            "(not the raw path) and status.",
            labels=["server", "route", "method", "status"],
        )
        for key, series in list(self._series.copy().items()):
            counts = list(series)
            cumulative, buckets = 0.0, []
            for bound, count in zip((*self.bounds, float("inf")), counts[:-1], strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            family.add_metric(list(key), buckets, counts[-1])
        yield family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


#: The one latency histogram of this process (both servers record into it).
REQUESTS = RequestLatency()
