"""The heartbeat reconciler in virtual time, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, update

from tether.controllers.heartbeats import HeartbeatReconciler
from tether.domain import resources as r
from tether.domain.agent import Heartbeat
from tether.domain.models import EventType, ObjectKind
from tether.domain.states import HostEvent, HostState
from tether.services import events
from tether.services import resources as svc
from tether.services.heartbeats import HeartbeatTable
from tether.store.db import Database
from tether.store.schema import HostAgentRow, HostRow

pytestmark = pytest.mark.integration
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _host(db: Database, name: str) -> None:
    with db.session() as s:
        if not svc.list_sites(s, limit=1, continue_token=None)[0]:
            svc.create_site(s, r.SiteCreate(name="dc1"))
        svc.create_host(s, r.HostCreate.model_validate({"name": name, "spec": {"site": "dc1"}}))
        s.add(HostAgentRow(host_name=name, failing_checks={}, enrolled_at=T0))


def test_silent_hosts_become_unreachable_and_health_drift_is_repaired(db: Database) -> None:
    for name in ("a", "b", "manual"):
        _host(db, name)
    with db.session() as s:
        s.execute(
            update(HostAgentRow)
            .where(HostAgentRow.host_name == "manual")
            .values(enrolled_at=T0 + timedelta(days=1))
        )
    table = HeartbeatTable(db, clock=lambda: T0)
    # a: a healthy heartbeat moves it to Ready with the next flush
    table.beat("a", Heartbeat(), T0)
    assert table.flush() == 1
    # b: a healthy heartbeat was written, but its transition was lost (a crash)
    with db.session() as s:
        s.execute(
            update(HostRow).where(HostRow.name == "b").values(last_heartbeat=T0, health="Healthy")
        )
    rec = HeartbeatReconciler(db, heartbeat_seconds=10, missed_heartbeats=3, table=table)
    moved = rec.reconcile_once(T0 + timedelta(seconds=5))
    assert [(t.host, t.state) for t in moved] == [("b", HostState.READY)]
    assert rec.reconcile_once(T0 + timedelta(seconds=6)) == []  # idempotent
    # 31 s of silence: both Unreachable; "manual" was enrolled later, still in its grace
    moved = rec.reconcile_once(T0 + timedelta(seconds=31))
    assert sorted((t.host, t.state) for t in moved) == [
        ("a", HostState.UNREACHABLE),
        ("b", HostState.UNREACHABLE),
    ]
    # a heartbeat still in memory (not flushed yet) keeps a host from being marked silent
    table.beat("a", Heartbeat(), T0 + timedelta(seconds=40))
    assert table.flush() == 1
    table.beat("a", Heartbeat(), T0 + timedelta(seconds=70))
    assert rec.reconcile_once(T0 + timedelta(seconds=75)) == []
    with db.session() as s:
        assert svc.get_host(s, "b").status.state is HostState.UNREACHABLE
        assert svc.get_host(s, "a").status.state is HostState.READY


def test_a_concurrent_change_makes_the_reconciler_skip_not_fail(db: Database) -> None:
    _host(db, "c")
    with db.session() as s:
        s.execute(
            update(HostRow).where(HostRow.name == "c").values(last_heartbeat=T0, health="Healthy")
        )
    rec = HeartbeatReconciler(db, heartbeat_seconds=10, missed_heartbeats=3)
    original = rec._candidates

    def stale(now: datetime) -> list[tuple[str, str, int, str, datetime | None]]:
        rows = original(now)
        with db.session() as s:  # someone else moves the host meanwhile
            svc.transition_host(s, "c", HostEvent.CHECKS_PASSED)
        return rows

    rec._candidates = stale  # type: ignore[method-assign]
    assert rec.reconcile_once(T0 + timedelta(seconds=60)) == []
    rec._candidates = original  # type: ignore[method-assign]
    moved = rec.reconcile_once(T0 + timedelta(seconds=60))
    assert [(t.host, t.state) for t in moved] == [("c", HostState.UNREACHABLE)]


def test_agent_version_survives_later_beats_and_a_failed_flush(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    _host(db, "v")

    def stored() -> tuple[str | None, dict[str, str]]:
        with db.session() as s:
            row = s.get(HostAgentRow, "v")
            assert row is not None
            return row.agent_version, dict(row.failing_checks or {})

    table = HeartbeatTable(db, clock=lambda: T0)
    table.beat("v", Heartbeat(v="1.4.0"), T0)
    assert table.flush() == 1 and stored() == ("1.4.0", {})
    # later beats carry no version (only a connection's first one does)
    table.beat("v", Heartbeat(f={"disk": "97% full"}), T0 + timedelta(seconds=10))

    real = db.session

    def broken() -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(db, "session", broken)
    with pytest.raises(RuntimeError):
        table.flush()
    monkeypatch.setattr(db, "session", real)
    assert table.flush() == 1  # the retry still knows the failing check changed
    assert stored() == ("1.4.0", {"disk": "97% full"})


def test_a_restarted_plane_waits_a_full_window_before_calling_hosts_silent(db: Database) -> None:
    """The store's last heartbeats are old after a restart because nobody listened: the
    fleet must not turn Unreachable before the plane has listened for a whole window."""
    _host(db, "d")
    with db.session() as s:
        s.execute(
            update(HostRow)
            .where(HostRow.name == "d")
            .values(last_heartbeat=T0 - timedelta(minutes=5), health="Healthy")
        )
        svc.transition_host(s, "d", HostEvent.CHECKS_PASSED)
    rec = HeartbeatReconciler(db, heartbeat_seconds=10, missed_heartbeats=3, clock=lambda: T0)
    assert rec.reconcile_once(T0 + timedelta(seconds=5)) == []
    assert rec.reconcile_once(T0 + timedelta(seconds=29)) == []
    moved = rec.reconcile_once(T0 + timedelta(seconds=30))
    assert [(t.host, t.state) for t in moved] == [("d", HostState.UNREACHABLE)]


def _statements(db: Database) -> list[str]:
    seen: list[str] = []

    def count(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    return seen


@pytest.mark.parametrize("silent", [4, 40])
def test_a_pass_costs_the_same_statements_however_many_hosts_it_moves(
    db: Database, silent: int
) -> None:
    """Store work per pass does not grow with the fleet: 4 or 40 silent hosts, the same
    statements (the old pass ran a transaction of several statements per host)."""
    names = [f"s{i:02d}" for i in range(silent)]
    for name in names:
        _host(db, name)
    with db.session() as s:
        s.execute(update(HostRow).values(last_heartbeat=T0, health="Healthy", state="Ready"))
    rec = HeartbeatReconciler(db, heartbeat_seconds=10, missed_heartbeats=3)
    seen = _statements(db)
    moved = rec.reconcile_once(T0 + timedelta(minutes=5))
    assert sorted(t.host for t in moved) == names
    assert {t.state for t in moved} == {HostState.UNREACHABLE}
    # candidates, hosts read, one update, events looked up, events inserted
    assert len(seen) == 5, seen
    with db.session() as s:
        warnings = [
            e
            for name in names
            for e in events.list_events(
                s, kind=ObjectKind.HOST, name=name, limit=10, continue_token=None
            )[0]
            if e.reason == "StateChanged"
        ]
    assert sorted(e.object_name for e in warnings) == names
    assert {(e.type, e.message) for e in warnings} == {
        (EventType.WARNING, "Ready -> Unreachable (HeartbeatMissed)")
    }
