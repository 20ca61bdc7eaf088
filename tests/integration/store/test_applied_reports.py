"""An agent's report of an applied plan, on SQLite and PostgreSQL: what it records, what
it refuses, and the few statements it takes (a rollout step's nodes report at once)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, select

from tether.domain.agent import AppliedReport
from tether.domain.models import EventType, ObjectKind
from tether.errors import Conflict
from tether.services import desired, events
from tether.sim.seed import seed_running_pool
from tether.store.db import Database
from tether.store.schema import DesiredStateRow, EventRow, utcnow

pytestmark = pytest.mark.integration


def _current(db: Database, host: str) -> str:
    with db.session() as s:
        row = s.get(DesiredStateRow, host)
        assert row is not None
        return row.hash


def _events(db: Database, host: str) -> list[tuple[str, str | None, int]]:
    with db.session() as s:
        rows = s.scalars(
            select(EventRow).where(EventRow.object_name == host).order_by(EventRow.id)
        ).all()
        return [(r.reason, r.pool, r.count) for r in rows]


def test_a_report_takes_four_statements_and_files_its_event_under_the_pool(db: Database) -> None:
    seed_running_pool(db, 3)
    digest = _current(db, "h0001")
    statements: list[str] = []

    def note(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        statements.append(" ".join(statement.split()[:3]))

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        with db.session() as s:
            status = desired.report_applied(
                s, "h0001", AppliedReport(hash=digest, result={"ok": False, "message": "disk"})
            )
    finally:
        event.remove(db.engine, "before_cursor_execute", note)
    # the row with its host's pool, the update, the event's repeats, the event: the verbs
    # pin the count and order of statements, which is what this guards (the tables they
    # touch are checked below, through what the report recorded)
    assert [s.split()[0] for s in statements] == ["SELECT", "UPDATE", "SELECT", "INSERT"]
    assert status.applied_hash == digest and status.in_sync
    assert status.applied_result == {"ok": False, "message": "disk"}
    with db.session() as s:
        row = s.get(DesiredStateRow, "h0001")
        assert row is not None and row.applied_hash == digest
        assert status.document == row.document and status.updated_at == row.updated_at
        assert row.applied_result == {"ok": False, "message": "disk"}
    assert _events(db, "h0001")[-1] == ("DesiredStateFailed", "pool", 1)


def test_a_repeated_report_counts_its_event_and_a_stale_one_changes_nothing(db: Database) -> None:
    seed_running_pool(db, 2)
    digest = _current(db, "h0000")
    before = _events(db, "h0000")
    for _ in range(2):
        with db.session() as s:
            desired.report_applied(s, "h0000", AppliedReport(hash=digest, result={"ok": True}))
    assert _events(db, "h0000") == [*before, ("DesiredStateApplied", "pool", 2)]
    with db.session() as s:
        applied_at = s.get(DesiredStateRow, "h0000").applied_at  # type: ignore[union-attr]
    with pytest.raises(Conflict) as refused, db.session() as s:
        desired.report_applied(s, "h0000", AppliedReport(hash="0" * 64, result={"ok": True}))
    assert refused.value.field == "hash"
    assert _events(db, "h0000") == [*before, ("DesiredStateApplied", "pool", 2)]
    with db.session() as s:
        row = s.get(DesiredStateRow, "h0000")
        assert row is not None and row.applied_hash == digest and row.applied_at == applied_at


def test_record_many_counts_repeats_on_the_latest_and_inserts_the_rest(db: Database) -> None:
    now = utcnow()
    note = (ObjectKind.HOST, "h1", "Probe", "same", EventType.NORMAL)
    other = (ObjectKind.HOST, "h2", "Probe", "same", EventType.NORMAL)
    with db.session() as s:
        events.record_many(s, [note, note, other], now=now, pool="p")
    with db.session() as s:
        events.record_many(s, [note, other, other], now=now, pool="p")
    assert _events(db, "h1") == [("Probe", "p", 3)]
    assert _events(db, "h2") == [("Probe", "p", 3)]
