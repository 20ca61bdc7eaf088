"""The pool reconciler takes a rollout's consecutive Kubernetes steps in one reconcile,
planning again from what it just wrote, on SQLite and PostgreSQL.

The pool is seeded running (:mod:`tether.sim.seed`); the cluster and the agents are the
SIMULATED fleet, not started: its cordons are only remembered, and a test applies the
hosts' plans by hand (:meth:`SimulatedFleet.apply_plans`), so nothing changes the store
behind the reconciler's back."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, or_, select

from tether.controllers.pools import PoolController
from tether.domain.memberops import Step
from tether.services import pools, rollouts
from tether.sim.fleet import SimulatedFleet
from tether.sim.seed import seed_running_pool
from tether.store.db import Database
from tether.store.schema import DesiredStateRow, PoolMemberRow, utcnow

pytestmark = pytest.mark.integration


def _start_rollout(db: Database, nodes: int) -> tuple[PoolController, SimulatedFleet, str]:
    seed_running_pool(db, nodes)
    fleet = SimulatedFleet(db, lambda _: 0.0)
    controller = PoolController(db, lambda _: fleet)
    controller.reconcile("pool")
    with db.session() as s:
        name = rollouts.create(s, "pool", "2.0.0", actor="test", now=utcnow()).name
        rollouts.act(s, name, "approve", actor="test", now=utcnow())
    return controller, fleet, name


def _apply_sent_plans(db: Database, fleet: SimulatedFleet) -> int:
    with db.session() as s:
        sent = s.execute(
            select(DesiredStateRow.host_name, DesiredStateRow.hash).where(
                or_(
                    DesiredStateRow.applied_hash.is_(None),
                    DesiredStateRow.applied_hash != DesiredStateRow.hash,
                )
            )
        ).all()
    return len(fleet.apply_plans([(host, digest) for host, digest in sent]))


def test_one_reconcile_takes_a_node_from_cordon_to_its_plan_reading_the_pool_once(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller, _, _ = _start_rollout(db, 10)  # maxUnavailable 10%: one node at a time
    load = pools.load
    loads: list[str] = []

    def counted(session: Any, name: str, *args: Any) -> pools.Loaded:
        loads.append(name)
        return load(session, name, *args)

    monkeypatch.setattr(pools, "load", counted)
    monkeypatch.setattr(pools, "_TARGETS", {})  # as after a start (other tests' pools)
    statements: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        controller.reconcile("pool")
    finally:
        event.remove(db.engine, "before_cursor_execute", note)
    with db.session() as s:
        members = {m.host_name: m for m in s.scalars(select(PoolMemberRow))}
        doc = s.get(DesiredStateRow, "h0000")
    op = members["h0000"].op
    assert op is not None
    # Recorded the cordon, took it with the drain, recorded both done and sent the plan ...
    assert op["steps"][: op["index"] + 1] == [
        Step.CORDON,
        Step.DRAIN,
        Step.SEND_UPGRADE,
        Step.WAIT_APPLIED,
    ]
    assert doc is not None and doc.document["node"]["action"] == "upgrade"
    # ... the next node waits for it (maxUnavailable) ...
    assert all(m.op is None for h, m in members.items() if h != "h0000")
    # ... and the pool was read once, the ten hosts' inventories (their targets are new)
    # in one query.
    assert loads == ["pool"]
    assert len([q for q in statements if "hosts.inventory" in q]) == 1


def test_the_pool_as_planned_again_is_the_pool_as_read_back(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every time the reconciler plans again from what it wrote, that input is exactly
    what reading the store back would give, through a whole rollout."""
    controller, fleet, name = _start_rollout(db, 6)
    followed = pools.followed
    compared: list[int] = []

    def checked(loaded: pools.Loaded, plan: Any, external: Any, now: Any) -> Any:
        nxt = followed(loaded, plan, external, now)
        if nxt is not None:
            pools._MEMBERS.clear()  # parse every member from its row
            with db.session() as s:
                back = pools.load(s, "pool", now, external)
            assert nxt.input == back.input
            assert nxt.member_versions == back.member_versions
            compared.append(len(external))
        return nxt

    monkeypatch.setattr(pools, "followed", checked)
    for _ in range(60):
        controller.reconcile("pool")
        with db.session() as s:
            state = rollouts.get(s, name).state
        if state == "Completed":
            break
        _apply_sent_plans(db, fleet)
    assert state == "Completed"
    assert len(compared) >= 6  # at least one chain per node: uncordon, cordon the next
