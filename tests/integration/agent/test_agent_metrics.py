"""What the agent server adds to ``/metrics``, and what it adds to a heartbeat: nothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import Plane, enrol, stop

pytestmark = pytest.mark.integration

HEARTBEAT = "/agent/v1/hosts/{name}/heartbeat"


def _samples(plane: Plane) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = plane.api.get("/metrics").raise_for_status().text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _heartbeats(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], status: str) -> float:
    labels = {"server": "agent", "route": HEARTBEAT, "method": "POST", "status": status}
    return samples.get(("tether_http_request_duration_seconds_count", frozenset(labels.items())), 0)


def test_heartbeats_and_plan_results_are_counted_and_a_heartbeat_answer_stays_small(
    plane: Plane,
) -> None:
    state = enrol(plane, "edge-m")
    stop(plane.processes[-1])  # this test speaks for the agent, with its certificate
    before = _samples(plane)
    agent = plane.agent_client(state)
    beat = agent.post("/agent/v1/hosts/edge-m/heartbeat", json={"n": 1})
    assert beat.status_code == 204
    assert "x-request-id" not in beat.headers  # heartbeats are as small as they were
    bad = agent.post("/agent/v1/hosts/edge-m/heartbeat", json={"n": -1})
    assert bad.status_code == 422
    assert bad.headers["x-request-id"]  # an error names the request, for the plane's logs
    digest = plane.api.put("/api/v1/hosts/edge-m/desired", json={"document": {"x": 1}}).json()
    report = {"hash": digest["hash"], "result": {"ok": False, "message": "disk full"}}
    assert agent.post("/agent/v1/hosts/edge-m/applied", json=report).status_code == 200
    after = _samples(plane)
    assert _heartbeats(after, "204") >= _heartbeats(before, "204") + 1
    assert _heartbeats(after, "422") == _heartbeats(before, "422") + 1
    failed = ("tether_plan_results_total", frozenset({("result", "failed")}))
    assert after[failed] == before[failed] + 1
    assert after[("tether_host_plans", frozenset({("state", "Failed")}))] == 1
    raw = [labels for name, labels in after if dict(labels).get("route", "").endswith("edge-m")]
    assert raw == []  # routes are templates, never a host's name


def test_the_agent_servers_loop_lag_is_exported(plane: Plane) -> None:
    samples = _samples(plane)
    count = samples[("tether_event_loop_lag_seconds_count", frozenset())]
    inf = samples[("tether_event_loop_lag_seconds_bucket", frozenset({("le", "+Inf")}))]
    assert count > 0  # the probe runs on the agent server's loop
    assert inf == count
    assert ("tether_event_loop_stall_seconds", frozenset()) in samples


def test_reports_sent_together_are_each_answered_and_a_stale_one_is_refused_alone(
    plane: Plane,
) -> None:
    """Concurrent reports go through the plane's group commit (tether.api.batching):
    every one is recorded and answered with its own status, a stale hash gets its 409."""
    hosts = ["edge-r1", "edge-r2", "edge-r3"]
    states = {}
    for host in hosts:
        states[host] = enrol(plane, host)
        stop(plane.processes[-1])  # the test speaks for the agents
    digests = {
        host: plane.api.put(f"/api/v1/hosts/{host}/desired", json={"document": {"n": i}}).json()[
            "hash"
        ]
        for i, host in enumerate(hosts)
    }
    posts = [(host, digests[host]) for host in hosts] + [("edge-r1", "0" * 64)]
    clients = [plane.agent_client(states[host]) for host, _ in posts]
    with ThreadPoolExecutor(len(posts)) as pool:
        answers = list(
            pool.map(
                lambda i: clients[i].post(
                    f"/agent/v1/hosts/{posts[i][0]}/applied",
                    json={"hash": posts[i][1], "result": {"ok": True}},
                ),
                range(len(posts)),
            )
        )
    assert [a.status_code for a in answers] == [200, 200, 200, 409]
    assert answers[3].json()["field"] == "hash"
    for (host, digest), answer in zip(posts[:3], answers, strict=False):
        assert answer.json()["host"] == host and answer.json()["appliedHash"] == digest
        status = plane.api.get(f"/api/v1/hosts/{host}/desired").json()
        assert status["inSync"] and status["appliedHash"] == digest
