"""``tether demo`` says loudly when a join, a plan or a rollout fails (once per event)."""

from __future__ import annotations

import pytest

from tether.domain.models import EventType, ObjectKind
from tether.domain.resources import SiteCreate
from tether.services import events
from tether.services import resources as svc
from tether.sim.demo import FailureWatch
from tether.store.db import Database
from tether.store.schema import ClusterRow, HostRow, PoolMemberRow, PoolRow

pytestmark = pytest.mark.integration

DASHBOARD = "http://127.0.0.1:8443/"


def test_failures_are_announced_once_and_a_failed_join_by_name(db: Database) -> None:
    watch = FailureWatch(db, lambda _: None, DASHBOARD)
    with db.session() as s:
        svc.create_site(s, SiteCreate(name="dc1"))
        for name in ("h1", "h2"):
            s.add(
                HostRow(
                    name=name, host_id=name, site="dc1", state="InUse", spec={"site": "dc1"},
                    inventory={},
                )
            )  # fmt: skip
        s.add(ClusterRow(name="c1", spec={}))
        s.add(PoolRow(name="p1", cluster="c1", site="dc1", state="Provisioning", spec={}))
        s.flush()
        s.add(PoolMemberRow(host_name="h1", pool="p1", phase="Joining", op={"kind": "join"}))
        failed = "desired state 3b9dc4f7f49b failed: validation failed: node IP 10.80.2.250"
        warn = EventType.WARNING
        events.record(s, ObjectKind.HOST, "h1", "DesiredStateFailed", failed, warn, pool="p1")
        events.record(s, ObjectKind.HOST, "h2", "DesiredStateFailed", "disk full", warn)
        events.record(s, ObjectKind.ROLLOUT, "p1-1", "RolloutFailed", "2 nodes failed", warn)
        events.record(s, ObjectKind.HOST, "h2", "DesiredStateApplied", "applied")
        events.record(s, ObjectKind.HOST, "h2", "NodeNotReady", "kubelet stopped", warn)
    first = watch.check()
    assert first == [
        f"!!! JOIN FAILED: Host h1 (pool p1): {failed}\n"
        f"    see {DASHBOARD}#pool/p1 or: tether event list --name h1",
        f"!!! PLAN FAILED: Host h2: disk full\n    see {DASHBOARD} or: tether event list --name h2",
        "!!! ROLLOUT FAILED: Rollout p1-1: 2 nodes failed\n"
        f"    see {DASHBOARD} or: tether event list --name p1-1",
    ]
    assert watch.check() == []  # each failure is announced once
