"""The plane's own metrics: request latency without locks, reconcile timings and errors."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tether.errors import Conflict
from tether.metrics import REGISTRY, RequestLatency, reconciling


def samples(collector: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_request_latency_is_a_cumulative_histogram_per_route_and_status() -> None:
    latency = RequestLatency(buckets=(0.01, 0.1))
    key = ("agent", "/agent/v1/hosts/{name}/heartbeat", "POST", "204")
    for seconds in (0.001, 0.01, 0.05, 3.0):
        latency.observe(key, seconds)
    latency.observe(("api", "/api/v1/pools", "GET", "200"), 0.2)
    got = samples(latency)
    labels = (("method", "POST"), ("route", key[1]), ("server", "agent"), ("status", "204"))
    name = "tether_http_request_duration_seconds"
    assert got[(f"{name}_bucket", (("le", "0.01"), *labels))] == 2  # 0.01 counts as <= 0.01
    assert got[(f"{name}_bucket", (("le", "0.1"), *labels))] == 3
    assert got[(f"{name}_bucket", (("le", "+Inf"), *labels))] == 4
    assert got[(f"{name}_count", labels)] == 4
    assert got[(f"{name}_sum", labels)] == pytest.approx(3.061)
    routes = {dict(k[1]).get("route") for k in got}
    assert routes == {"/agent/v1/hosts/{name}/heartbeat", "/api/v1/pools"}


def _value(name: str, controller: str) -> float:
    value = REGISTRY.get_sample_value(name, {"controller": controller})
    assert value is not None, name
    return value


def test_a_reconcile_pass_is_timed_and_its_failure_counted() -> None:
    errors = _value("tether_reconcile_errors_total", "nodes")
    passes = _value("tether_reconcile_duration_seconds_count", "nodes")
    with reconciling("nodes"):
        pass
    with pytest.raises(RuntimeError), reconciling("nodes"):
        raise RuntimeError("the API server is down")
    with pytest.raises(Conflict), reconciling("nodes", expected=(Conflict,)):
        raise Conflict("lost a race; the controller retries")
    assert _value("tether_reconcile_errors_total", "nodes") == errors + 1  # not the conflict
    assert _value("tether_reconcile_duration_seconds_count", "nodes") == passes + 3
    for controller in ("pools", "heartbeats", "csr"):  # every controller has its series
        assert _value("tether_reconcile_errors_total", controller) >= 0
