"""The Grafana dashboard in deploy/grafana queries only metrics a running plane exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tether.domain.resources import Role, TokenCreate
from tether.server import ServerThread
from tether.services import tokens
from tether.settings import Settings
from tether.store.db import Database

pytestmark = pytest.mark.integration

DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "tether.json"
#: The sample names each metric type exposes.
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
}


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def exported(settings: Settings) -> set[str]:
    """Every sample name ``/metrics`` of a running plane (both servers, controllers) may
    show, whether or not it has a sample yet."""
    settings.api.port = 0
    settings.agent.port = 0
    server = ServerThread(settings, controllers=True).start()
    db = Database.connect(settings.database_url)
    with db.session() as s:
        token = tokens.issue(s, TokenCreate(name="prom", role=Role.VIEWER), default_ttl_days=1)
    db.dispose()
    try:
        headers = {"Authorization": f"Bearer {token.token}"}
        text = httpx.get(f"{server.api_url}/metrics", headers=headers).raise_for_status().text
    finally:
        server.stop()
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
    return names


def test_the_dashboard_queries_only_metrics_the_plane_exports(settings: Settings) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = queries(dashboard)
    used = {name for expr in exprs for name in re.findall(r"\btether_[a-z0-9_]+", expr)}
    assert len(used) >= 12, used  # fleet, pools, plans, rollouts, controllers, API
    missing = used - exported(settings)
    assert missing == set(), f"the dashboard queries metrics the plane does not export: {missing}"


def test_the_dashboard_is_a_grafana_dashboard_on_a_chosen_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] == "Tether"
    (variable,) = dashboard["templating"]["list"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}" and target["refId"]
