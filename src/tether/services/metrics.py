"""Metrics read from the store at scrape time: hosts, heartbeat ages, plans, pools, rollouts.

Counting in the store, not in memory, gives the same numbers from every plane replica
and survives restarts. Each family is one grouped query (rollout progress reads only
rollouts still running), so a scrape costs a few queries however large the fleet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from tether.domain.rollout import ACTIVE_STATES
from tether.domain.states import HostState
from tether.services.attention import attention, plan_failed
from tether.store.db import Database
from tether.store.schema import DesiredStateRow, HostRow, PoolRow, RolloutRow, utcnow

__all__ = ["AGE_BUCKETS", "StoreCollector"]

#: Heartbeat age buckets (seconds): a live host beats every 10 s by default.
AGE_BUCKETS = (5, 10, 15, 30, 60, 120, 300, 900, 3600)


def _hosts(session: Session) -> Metric:
    family = GaugeMetricFamily("tether_hosts", "Hosts by site and state.", labels=["site", "state"])
    rows = session.execute(
        select(HostRow.site, HostRow.state, func.count()).group_by(HostRow.site, HostRow.state)
    )
    for site, state, count in rows:
        family.add_metric([site, state], count)
    return family


def _heartbeat_ages(session: Session, now: datetime) -> Metric:
    family = GaugeHistogramMetricFamily(
        "tether_host_heartbeat_age_seconds",
        "Time since each host's last heartbeat (hosts that have sent one), by site.",
        labels=["site"],
    )
    within = [
        func.sum(case((HostRow.last_heartbeat >= now - timedelta(seconds=b), 1), else_=0))
        for b in AGE_BUCKETS
    ]
    rows = session.execute(
        select(
            HostRow.site, func.count(), func.sum(_epoch(session, HostRow.last_heartbeat)), *within
        )
        .where(HostRow.last_heartbeat.is_not(None), HostRow.state != HostState.UNPAIRED.value)
        .group_by(HostRow.site)
    ).all()
    for site, total, epochs, *counts in rows:
        buckets = [(str(b), float(c or 0)) for b, c in zip(AGE_BUCKETS, counts, strict=True)]
        ages = total * now.timestamp() - float(epochs or 0)
        family.add_metric([site], [*buckets, ("+Inf", float(total))], max(0.0, ages))
    return family


def _epoch(session: Session, column: Any) -> Any:
    """Seconds since 1970 of a timestamp column, in this database's SQL."""
    if session.get_bind().dialect.name == "postgresql":
        return func.extract("epoch", column)
    return (func.julianday(column) - 2440587.5) * 86400.0


def _plans(session: Session) -> Metric:
    family = GaugeMetricFamily(
        "tether_host_plans", "Hosts by the state of their last node plan.", labels=["state"]
    )
    pending = or_(
        DesiredStateRow.applied_hash.is_(None),
        DesiredStateRow.applied_hash != DesiredStateRow.hash,
    )
    total, waiting, failed = session.execute(
        select(
            func.count(),
            func.sum(case((pending, 1), else_=0)),
            func.sum(case((plan_failed(), 1), else_=0)),
        )
    ).one()
    waiting, failed = waiting or 0, failed or 0
    family.add_metric(["Pending"], waiting)
    family.add_metric(["Failed"], failed)
    family.add_metric(["Applied"], total - waiting - failed)
    return family


def _by_state(session: Session, name: str, doc: str, column: object) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=["state"])
    for state, count in session.execute(
        select(column, func.count()).group_by(column)  # type: ignore[call-overload]
    ):
        family.add_metric([state], count)
    return family


def _rollout_progress(session: Session) -> Iterator[Metric]:
    labels = ["rollout", "pool", "state"]
    updated = GaugeMetricFamily(
        "tether_rollout_nodes_updated", "Nodes a running rollout has updated.", labels=labels
    )
    total = GaugeMetricFamily(
        "tether_rollout_nodes", "Nodes a running rollout updates in all.", labels=labels
    )
    busy = GaugeMetricFamily(
        "tether_rollout_nodes_busy", "Nodes a running rollout is updating now.", labels=labels
    )
    active = [s.value for s in ACTIVE_STATES]
    for row in session.scalars(select(RolloutRow).where(RolloutRow.state.in_(active))):
        progress = (row.status or {}).get("progress") or {}
        key = [row.name, row.pool, row.state]
        updated.add_metric(key, progress.get("updated", 0))
        total.add_metric(key, progress.get("total", len(row.spec.get("nodes") or {})))
        busy.add_metric(key, len(progress.get("busy") or {}))
    yield from (updated, total, busy)


class StoreCollector:
    """A prometheus-client collector reading the store of ``db`` on every scrape."""

    def __init__(self, db: Database, clock: Callable[[], datetime] = utcnow) -> None:
        self.db = db
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        with self.db.session() as session:
            yield _hosts(session)
            yield _heartbeat_ages(session, now)
            yield _plans(session)
            yield _by_state(session, "tether_pools", "Pools by state.", PoolRow.state)
            yield _by_state(session, "tether_rollouts", "Rollouts by state.", RolloutRow.state)
            yield from _rollout_progress(session)
            needing = GaugeMetricFamily(
                "tether_attention_items",
                "Things that need a person's attention (the dashboard's count), by reason.",
                labels=["reason"],
            )
            reasons: dict[str, int] = {}
            for item in attention(session, now).items:
                reasons[item.reason] = reasons.get(item.reason, 0) + 1
            for reason, count in sorted(reasons.items()):
                needing.add_metric([reason], count)
            yield needing
