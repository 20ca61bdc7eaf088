"""An agent's report of an applied plan, on SQLite and PostgreSQL: what it records, what
it refuses, and the few statements it takes (a rollout step's nodes report at once, and
their reports are written together)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, select

from tether.domain.agent import AppliedReport
from tether.domain.models import EventType, ObjectKind
from tether.errors import Conflict, NotFound
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


class Statements:
    """The verbs of the statements sent while it is open (an executemany counts once)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.verbs: list[str] = []

    def _note(self, _c: Any, _cur: Any, statement: str, *_: Any) -> None:
        self.verbs.append(statement.split()[0])

    def __enter__(self) -> list[str]:
        event.listen(self.db.engine, "before_cursor_execute", self._note)
        return self.verbs

    def __exit__(self, *_: object) -> None:
        event.remove(self.db.engine, "before_cursor_execute", self._note)


def test_a_report_takes_four_statements_and_files_its_event_under_the_pool(db: Database) -> None:
    seed_running_pool(db, 3)
    digest = _current(db, "h0001")
    with Statements(db) as statements, db.session() as s:
        status = desired.report_applied(
            s, "h0001", AppliedReport(hash=digest, result={"ok": False, "message": "disk"})
        )
    # the row with its host's pool, the update, the event's repeats, the event: the verbs
    # pin the count and order of statements, which is what this guards (the tables they
    # touch are checked below, through what the report recorded)
    assert statements == ["SELECT", "UPDATE", "SELECT", "INSERT"]
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


def test_a_batch_of_reports_takes_the_same_four_statements_and_refuses_only_the_bad_ones(
    db: Database,
) -> None:
    seed_running_pool(db, 50)
    hosts = [f"h{i:04d}" for i in range(50)]
    digests = {host: _current(db, host) for host in hosts}
    reports = [(host, AppliedReport(hash=digests[host], result={"ok": True})) for host in hosts]
    reports[7] = ("h0007", AppliedReport(hash="0" * 64, result={"ok": True}))  # stale
    reports.append(("nobody", AppliedReport(hash="1" * 64, result={"ok": True})))
    reports.append(("h0009", AppliedReport(hash=digests["h0009"], result={"ok": False})))
    before = {host: _events(db, host) for host in ("h0007", "h0008", "h0009")}
    with Statements(db) as statements, db.session() as s:
        outcomes = desired.report_applied_many(s, reports, now=utcnow())
    assert statements == ["SELECT", "UPDATE", "SELECT", "INSERT"]
    assert isinstance(outcomes[7], Conflict) and outcomes[7].field == "hash"
    assert isinstance(outcomes[50], NotFound)
    recorded = [o for o in outcomes if not isinstance(o, Exception)]
    assert [o.host for o in recorded] == [h for h in hosts if h != "h0007"] + ["h0009"]
    with db.session() as s:
        rows = {r.host_name: r for r in s.scalars(select(DesiredStateRow))}
    assert all(rows[h].applied_hash == digests[h] for h in hosts if h != "h0007")
    assert rows["h0007"].applied_hash != "0" * 64
    assert rows["h0009"].applied_result == {"ok": False}  # the later report of the two
    assert _events(db, "h0007") == before["h0007"]
    assert _events(db, "h0008") == [*before["h0008"], ("DesiredStateApplied", "pool", 1)]
    assert _events(db, "h0009")[-2:] == [
        ("DesiredStateApplied", "pool", 1),
        ("DesiredStateFailed", "pool", 1),
    ]
