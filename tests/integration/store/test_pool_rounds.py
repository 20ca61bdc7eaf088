"""The pool reconciler takes a rollout's consecutive Kubernetes steps in one reconcile,
planning again from what it just wrote, on SQLite and PostgreSQL.

The pool is seeded running (:mod:`tether.sim.seed`); the cluster and the agents are the
SIMULATED fleet, not started: its cordons are only remembered, and a test applies the
hosts' plans by hand (:meth:`SimulatedFleet.apply_plans`), so nothing changes the store
behind the reconciler's back."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, or_, select, update

from tether.controllers.pools import PoolController
from tether.domain.memberops import Step
from tether.services import pools, profiles, rollouts
from tether.sim.fleet import SimulatedFleet
from tether.sim.seed import seed_running_pool
from tether.store.db import Database
from tether.store.schema import (
    DesiredStateRow,
    EventRow,
    HostRow,
    NodeStatusRow,
    PoolMemberRow,
    utcnow,
)

pytestmark = pytest.mark.integration


def _start_rollout(
    db: Database, nodes: int, next_image: str = "debian-12"
) -> tuple[PoolController, SimulatedFleet, str]:
    seed_running_pool(db, nodes, next_image=next_image)
    fleet = SimulatedFleet(db, lambda _: 0.0)
    controller = PoolController(db, lambda _: fleet)
    controller.reconcile("pool")
    with db.session() as s:
        name = rollouts.create(s, "pool", "2.0.0", actor="test", now=utcnow()).name
        rollouts.act(s, name, "approve", actor="test", now=utcnow())
    return controller, fleet, name


def _apply_sent_plans(db: Database, fleet: SimulatedFleet) -> list[str]:
    with db.session() as s:
        sent = s.execute(
            select(DesiredStateRow.host_name, DesiredStateRow.hash).where(
                or_(
                    DesiredStateRow.applied_hash.is_(None),
                    DesiredStateRow.applied_hash != DesiredStateRow.hash,
                )
            )
        ).all()
    return fleet.apply_plans([(host, digest) for host, digest in sent])


def _assert_read_back(session: Any, got: pools.Loaded, now: Any, external: Any) -> None:
    """``got`` is exactly what reading and parsing every row of the pool gives."""
    for cache in (pools._MEMBERS, pools._SPECS, pools._RESULTS):
        cache.clear()
    back = pools.load(session, "pool", now, external)
    assert got.input == back.input
    assert got.member_versions == back.member_versions


def _roll_to_the_end(
    db: Database, controller: PoolController, fleet: SimulatedFleet, name: str
) -> None:
    """Reconcile and apply the sent plans (reported as the agents do) until rollout
    ``name`` completes."""
    state = ""
    for _ in range(60):
        controller.reconcile("pool")
        with db.session() as s:
            state = rollouts.get(s, name).state
        if state == "Completed":
            break
        controller.poke_hosts(_apply_sent_plans(db, fleet))
    assert state == "Completed"


def _count_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The pools read whole (:func:`pools.load`) from now on, in order."""
    load = pools.load
    loads: list[str] = []

    def counted(session: Any, name: str, *args: Any) -> pools.Loaded:
        loads.append(name)
        return load(session, name, *args)

    monkeypatch.setattr(pools, "load", counted)
    return loads


def _count_asks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The pools whose members at Kubernetes steps are read from the store from now on."""
    ask = pools.members_at_steps
    asked: list[str] = []

    def counted(session: Any, name: str) -> Any:
        asked.append(name)
        return ask(session, name)

    monkeypatch.setattr(pools, "members_at_steps", counted)
    return asked


def test_one_reconcile_takes_a_node_from_cordon_to_its_plan_reading_the_pool_once(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    controller, _, _ = _start_rollout(db, 10)  # maxUnavailable 10%: one node at a time
    loads = _count_loads(monkeypatch)
    monkeypatch.setattr(profiles, "_TARGETS", {})  # as after a start (other tests' pools)
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


#: An upgrade, and a re-image (a new OS image: the hosts enrol again, SIMULATED).
ROLLOUTS = pytest.mark.parametrize("next_image", ["debian-12", "debian-13"])


@ROLLOUTS
def test_the_pool_as_planned_again_is_the_pool_as_read_back(
    db: Database, monkeypatch: pytest.MonkeyPatch, next_image: str
) -> None:
    """Every time the reconciler plans again from what it wrote, that input is exactly
    what reading the store back would give, through a whole rollout."""
    controller, fleet, name = _start_rollout(db, 6, next_image)
    followed = pools.followed
    compared: list[int] = []

    def checked(loaded: pools.Loaded, plan: Any, external: Any, now: Any) -> Any:
        nxt = followed(loaded, plan, external, now)
        if nxt is not None:
            with db.session() as s:
                _assert_read_back(s, nxt, now, external)
            compared.append(len(external))
        return nxt

    monkeypatch.setattr(pools, "followed", checked)
    _roll_to_the_end(db, controller, fleet, name)
    assert len(compared) >= 6  # at least one chain per node: uncordon, cordon the next


@ROLLOUTS
def test_a_pass_told_which_hosts_changed_sees_what_reading_the_whole_pool_sees(
    db: Database, monkeypatch: pytest.MonkeyPatch, next_image: str
) -> None:
    """Between whole reads, a pass reads again only the hosts reported changed: through a
    whole rollout, what it plans from is exactly what reading the whole store gives."""
    controller, fleet, name = _start_rollout(db, 6, next_image)
    refresh = pools.refresh
    compared: list[list[str]] = []

    def checked(session: Any, loaded: Any, changed: Any, now: Any, external: Any) -> Any:
        got = refresh(session, loaded, changed, now, external)
        if got is not None:
            _assert_read_back(session, got, now, external)
            compared.append(sorted(changed))
        return got

    monkeypatch.setattr(pools, "refresh", checked)
    asked = _count_asks(monkeypatch)
    controller.poke(["pool"])  # the approval: read whole
    _roll_to_the_end(db, controller, fleet, name)
    assert len([c for c in compared if c]) >= 6  # each node's report was read alone
    # A node's steps are taken in the reconcile that records them; the passes after it
    # knew from what they followed that no member stood at a step, and did not ask.
    assert asked == ["pool"]


def test_a_change_no_pass_made_to_the_pool_or_its_rollout_is_read_whole(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A person's act on the rollout (a pause) with no poke: the next pass sees the
    rollout's version moved, reads the whole pool and plans with the pause (rather than
    planning from what it knew and meeting the write's guard)."""
    controller, fleet, name = _start_rollout(db, 10)
    controller.poke(["pool"])
    controller.reconcile("pool")  # h0000's plan is sent; the pool is known
    with db.session() as s:
        rollouts.act(s, name, "pause", actor="test", now=utcnow())
    controller.poke_hosts(_apply_sent_plans(db, fleet))
    loads = _count_loads(monkeypatch)
    asked = _count_asks(monkeypatch)
    controller.reconcile("pool")
    assert loads == ["pool"] and controller.conflicts == 0
    assert asked == ["pool"]  # what it knew is stale: the store says who stands at a step
    with db.session() as s:
        assert rollouts.get(s, name).state == "Paused"
        busy = s.scalars(select(PoolMemberRow.host_name).where(PoolMemberRow.op.is_not(None)))
        assert list(busy) == ["h0000"]  # no other node started while paused


def test_a_node_change_reads_its_host_alone_unless_the_pool_does_not_know_it(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Node watch names the hosts whose Nodes changed, with their pools: a host the
    pool's last pass knew is read again alone; one it did not know has the pool read
    whole (a host just assigned, say)."""
    controller, _, _ = _start_rollout(db, 3)
    controller.poke(["pool"])
    controller.reconcile("pool")
    loads = _count_loads(monkeypatch)
    controller.poke_nodes({"h0001": "pool"})
    controller.reconcile("pool")
    assert loads == []
    controller.poke_nodes({"h0042": "pool"})
    controller.reconcile("pool")
    assert loads == ["pool"]


def _statements(db: Database) -> Any:
    """A context manager collecting the SQL statements run on ``db``."""
    import contextlib

    @contextlib.contextmanager
    def collect() -> Any:
        seen: list[str] = []

        def note(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            seen.append(statement)

        event.listen(db.engine, "before_cursor_execute", note)
        try:
            yield seen
        finally:
            event.remove(db.engine, "before_cursor_execute", note)

    return collect()


def test_a_new_rollouts_first_reconcile_computes_no_node_target(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Creating a rollout computes every member's target to list its actions; the
    reconcile after approval uses those (it computed them all again)."""
    computed: list[str] = []
    node_target = profiles.node_target

    def counted(**kwargs: Any) -> Any:
        computed.append(kwargs["host_name"])
        return node_target(**kwargs)

    monkeypatch.setattr(profiles, "node_target", counted)
    monkeypatch.setattr(profiles, "_TARGETS", {})  # other tests' pools had these names
    controller, _, _ = _start_rollout(db, 10)
    hosts = [f"h{i:04d}" for i in range(10)]
    assert {h for h in computed if h != "sample-host"} == set(hosts)
    computed.clear()
    controller.reconcile("pool")
    with db.session() as s:
        doc = s.get(DesiredStateRow, "h0000")
    assert doc is not None and doc.document["node"]["action"] == "upgrade"
    assert computed == []


def test_a_load_decodes_only_the_host_specs_and_results_that_changed(db: Database) -> None:
    """Host specs and applied results are JSON: a load reads and decodes those of the
    rows changed since the last load only, and sees every change."""
    controller, fleet, _ = _start_rollout(db, 10)
    controller.reconcile("pool")  # h0000's upgrade plan is sent
    with db.session() as s:
        pools.load(s, "pool", utcnow())
    with _statements(db) as seen, db.session() as s:
        pools.load(s, "pool", utcnow())
    assert not [q for q in seen if "hosts.spec" in q or "applied_result" in q]

    assert _apply_sent_plans(db, fleet) == ["h0000"]  # h0000 reports its upgrade applied
    with db.session() as s:
        spec = s.scalars(select(HostRow.spec).where(HostRow.name == "h0003")).one()
        s.execute(
            update(HostRow)
            .where(HostRow.name == "h0003")
            .values(
                spec={**spec, "tags": {"rack": "r9"}},
                resource_version=HostRow.resource_version + 1,
            )
        )
    with _statements(db) as seen, db.session() as s:
        loaded = pools.load(s, "pool", utcnow())
    specs = [q for q in seen if "hosts.spec" in q]
    results = [q for q in seen if "applied_result" in q]
    assert len(specs) == 1 and len(results) == 1
    observed = {m.host: o for m, o in loaded.input.members}
    assert observed["h0000"].applied_hash == observed["h0000"].doc_hash
    assert observed["h0000"].applied_ok is True
    with db.session() as s:
        fresh = {r.name: r.spec for r in s.scalars(select(HostRow))}
    assert fresh["h0003"]["tags"] == {"rack": "r9"}
    assert pools._SPECS["h0003"][1] == fresh["h0003"]


def test_a_host_made_again_under_its_name_is_not_read_from_the_cache(db: Database) -> None:
    """A host deleted and enrolled again under its name starts again at version 1: at the
    version the old row had, it is still a new row, and a load must read its spec."""
    _start_rollout(db, 3)
    with db.session() as s:
        pools.load(s, "pool", utcnow())  # caches h0001's spec at its version
        row = s.scalars(select(HostRow).where(HostRow.name == "h0001")).one()
        made_again = {**row.spec, "tags": {"rack": "new"}}
        # The new row, at the old row's version: only its creation time tells them apart.
        s.execute(
            update(HostRow)
            .where(HostRow.name == "h0001")
            .values(spec=made_again, created_at=utcnow())
        )
    with db.session() as s:
        pools.load(s, "pool", utcnow())
    assert pools._SPECS["h0001"][1] == made_again


def _next(db: Database, name: str) -> list[str]:
    with db.session() as s:
        return list(rollouts.get(s, name).progress.get("next") or [])


def test_a_wave_is_one_write_its_hosts_named_next_by_the_write_before(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write that starts a wave names the hosts of the next one; the reconcile that
    finishes the wave cordons and drains those hosts, then writes once: the finished
    node, the started one and its plan."""
    controller, fleet, name = _start_rollout(db, 10)  # maxUnavailable 10%: one at a time
    controller.reconcile("pool")  # h0000 started (named by no earlier write: two writes)
    assert _next(db, name) == ["h0001"]
    write = pools.write
    writes: list[int] = []

    def counted(session: Any, loaded: Any, plan: Any) -> None:
        writes.append(len(plan.documents))
        write(session, loaded, plan)

    monkeypatch.setattr(pools, "write", counted)
    cordoned: list[str] = []
    cordon = fleet.cordon
    monkeypatch.setattr(fleet, "cordon", lambda node: cordoned.append(node) or cordon(node))
    controller.poke_hosts(_apply_sent_plans(db, fleet))
    controller.reconcile("pool")
    assert writes == [1] and cordoned == ["h0001"]  # one write, with h0001's plan
    with db.session() as s:
        members = {m.host_name: m for m in s.scalars(select(PoolMemberRow))}
    assert members["h0000"].op is None and members["h0000"].version == "2.0.0"
    op = members["h0001"].op
    assert op is not None and op["steps"][op["index"]] == Step.WAIT_APPLIED
    assert _next(db, name) == ["h0002"]


@pytest.mark.parametrize("act", ["pause", "abort"])
def test_a_node_cordoned_ahead_of_a_write_that_never_came_is_uncordoned_if_not_moved(
    db: Database, monkeypatch: pytest.MonkeyPatch, act: str
) -> None:
    """The plane died after cordoning the host named next and before its write; a person
    paused or aborted the rollout before it restarted. The restarted plane's pass
    uncordons that Node, says so in an event, and the rollout names no host next."""
    controller, fleet, name = _start_rollout(db, 10)
    controller.reconcile("pool")
    assert _next(db, name) == ["h0001"]
    with db.session() as s:  # the cordon the dead plane took, as the Node watch saw it
        s.execute(
            update(NodeStatusRow)
            .where(NodeStatusRow.host_name == "h0001")
            .values(unschedulable=True)
        )
        rollouts.act(s, name, act, actor="test", now=utcnow())
    uncordoned: list[str] = []
    uncordon = fleet.uncordon
    monkeypatch.setattr(fleet, "uncordon", lambda node: uncordoned.append(node) or uncordon(node))
    restarted = PoolController(db, lambda _: fleet)
    restarted.reconcile("pool")
    assert uncordoned == ["h0001"]
    assert _next(db, name) == []
    with db.session() as s:
        reasons = s.scalars(select(EventRow.reason).where(EventRow.object_name == "h0001")).all()
        assert s.get(PoolMemberRow, "h0001").op is None  # type: ignore[union-attr]
    assert "Uncordoned" in reasons
