"""Store behaviour on both backends: migrations, versions, conflicts, paging, references."""

from __future__ import annotations

import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tether.controllers.pools import PoolController
from tether.domain import resources as r
from tether.domain.models import EventType, ObjectKind
from tether.domain.states import HostEvent, HostState, PoolState
from tether.errors import Conflict, Invalid, NotFound
from tether.services import events
from tether.services import resources as svc
from tether.store.db import Database, migrate
from tether.store.schema import Base, utcnow

CLUSTER = {
    "kubernetesVersion": "1.34",
    "vpcCIDR": "10.226.0.0/16",
    "serviceCIDR": "172.20.0.0/16",
    "remoteNodeNetworks": ["10.80.0.0/16"],
    "remotePodNetworks": ["10.85.0.0/16"],
}
POOL = {
    "cluster": "prod",
    "site": "dc1",
    "nodeCIDR": "10.80.1.0/24",
    "podCIDR": "10.85.0.0/18",
    "vpnServer": {"publicIP": "203.0.113.5", "insideIP": "10.80.1.1"},
}


def seed(db: Database) -> None:
    with db.session() as s:
        svc.create_cluster(s, r.ClusterCreate.model_validate({"name": "prod", "spec": CLUSTER}))
        svc.create_site(s, r.SiteCreate(name="dc1"))
        svc.create_pool(s, r.PoolCreate.model_validate({"name": "dc1", "spec": POOL}))


def test_migrations_match_the_models_and_rerun_cleanly(db: Database) -> None:
    migrate(db.engine)  # second run is a no-op
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_update_with_stale_version_is_refused_and_changes_nothing(db: Database) -> None:
    seed(db)
    with db.session() as s:
        current = svc.get_cluster(s, "prod")
    changed = r.ClusterUpdate.model_validate(
        {
            "resourceVersion": current.resource_version,
            "spec": {**CLUSTER, "kubernetesVersion": "1.35"},
        }
    )
    with db.session() as s:
        assert svc.update_cluster(s, "prod", changed).resource_version == 2
    with pytest.raises(Conflict) as info, db.session() as s:
        svc.update_cluster(s, "prod", changed)  # still carries version 1
    assert info.value.field == "resourceVersion"
    with db.session() as s:
        after = svc.get_cluster(s, "prod")
    assert (after.resource_version, after.spec.kubernetes_version) == (2, "1.35")


def test_concurrent_updates_exactly_one_wins(db: Database) -> None:
    seed(db)
    barrier = threading.Barrier(2)
    results: list[str] = []

    def writer(version: str) -> None:
        body = r.ClusterUpdate.model_validate(
            {"resourceVersion": 1, "spec": {**CLUSTER, "kubernetesVersion": version}}
        )
        barrier.wait()
        try:
            with db.session() as s:
                svc.update_cluster(s, "prod", body)
            results.append("won")
        except Conflict:
            results.append("conflict")

    threads = [threading.Thread(target=writer, args=(v,)) for v in ("1.35", "1.36")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["conflict", "won"]


def test_duplicate_names_conflict(db: Database) -> None:
    seed(db)
    with pytest.raises(Conflict, match="already exists"), db.session() as s:
        svc.create_site(s, r.SiteCreate(name="dc1"))


def test_objects_in_use_cannot_be_deleted(db: Database) -> None:
    seed(db)
    for delete in (svc.delete_cluster, svc.delete_site):
        with pytest.raises(Conflict, match="still used by pools: dc1"), db.session() as s:
            delete(s, "dc1" if delete is svc.delete_site else "prod", None)
    with db.session() as s:
        svc.delete_pool(s, "dc1", None)
        svc.delete_cluster(s, "prod", None)
        svc.delete_site(s, "dc1", None)
    with pytest.raises(NotFound), db.session() as s:
        svc.get_cluster(s, "prod")


def test_pool_references_must_exist(db: Database) -> None:
    seed(db)
    body = r.PoolCreate.model_validate({"name": "x", "spec": {**POOL, "site": "nowhere"}})
    with pytest.raises(Invalid) as info, db.session() as s:
        svc.create_pool(s, body)
    assert (info.value.field, info.value.rule) == ("spec.site", "exists")


def test_paging_walks_every_object_once(db: Database) -> None:
    with db.session() as s:
        for i in range(25):
            svc.create_site(s, r.SiteCreate(name=f"site-{i:02d}"))
    seen: list[str] = []
    token = None
    while True:
        with db.session() as s:
            items, token = svc.list_sites(s, limit=7, continue_token=token)
        seen.extend(i.name for i in items)
        if token is None:
            break
    assert seen == [f"site-{i:02d}" for i in range(25)]


def test_host_assignment_follows_the_state_machine(db: Database) -> None:
    seed(db)
    with db.session() as s:
        svc.create_host(s, r.HostCreate.model_validate({"name": "h1", "spec": {"site": "dc1"}}))
    assign = {"spec": {"site": "dc1", "pool": "dc1"}}
    with pytest.raises(Conflict, match="Registered"), db.session() as s:
        svc.update_host(s, "h1", r.HostUpdate.model_validate({**assign, "resourceVersion": 1}))
    with db.session() as s:
        host = svc.transition_host(s, "h1", HostEvent.CHECKS_PASSED)
        host = svc.update_host(
            s,
            "h1",
            r.HostUpdate.model_validate({**assign, "resourceVersion": host.resource_version}),
        )
    assert host.status.state is HostState.IN_USE
    assert host.status.member is not None and host.status.member.phase == "Joining"
    with db.session() as s:
        assert svc.get_pool(s, "dc1").status.state is PoolState.PENDING  # not reconciled yet
    # The pool reconciler (no cluster to act on) takes it from here; the pool names no
    # profile, so the host cannot get a plan and the pool says why.
    PoolController(db, lambda _: None).reconcile("dc1")
    with db.session() as s:
        pool = svc.get_pool(s, "dc1")
    assert pool.status.state is PoolState.DEGRADED
    target = next(c for c in pool.status.conditions if c.type == "TargetValid")
    assert (target.status, target.reason) == ("False", "InvalidTarget")
    assert "names no profile" in target.message
    with pytest.raises(Conflict), db.session() as s:
        svc.delete_host(s, "h1", None)  # in a pool: unpair refused
    with db.session() as s:
        names = [
            e.reason for e in events.list_events(s, name="h1", limit=10, continue_token=None)[0]
        ]
    assert names == ["Registered", "StateChanged", "Assigned", "Joining"]


def test_repeated_events_are_counted(db: Database) -> None:
    with db.session() as s:
        counts = [
            events.record(s, ObjectKind.SITE, "dc1", "Probe", "same message").count
            for _ in range(3)
        ]
        # one rule for one event and for many: a batch counts on the same event
        events.record_many(
            s,
            [(ObjectKind.SITE, "dc1", "Probe", "same message", EventType.NORMAL)] * 2,
            now=utcnow(),
            pool=None,
        )
        after = events.record(s, ObjectKind.SITE, "dc1", "Probe", "same message")
    assert counts == [1, 2, 3]  # each answer shows the count as recorded
    assert after.count == 6
    with db.session() as s:
        items, _ = events.list_events(s, limit=10, continue_token=None)
    assert [(e.reason, e.count) for e in items] == [("Probe", 6)]


def test_new_profile_version_marks_pools_update_available(db: Database) -> None:
    seed(db)
    layers = {"os": {"image": "img"}, "kubernetes": {"version": "1.34"}}
    with db.session() as s:
        svc.create_profile(
            s,
            r.ProfileCreate.model_validate(
                {"name": "std", "spec": {"version": "1.0.0", "layers": layers}}
            ),
        )
        pool = svc.get_pool(s, "dc1")
        spec = {**POOL, "profile": {"name": "std", "version": "1.0.0"}}
        svc.update_pool(
            s,
            "dc1",
            r.PoolUpdate.model_validate({"resourceVersion": pool.resource_version, "spec": spec}),
        )
        assert svc.get_pool(s, "dc1").status.update_available is None
        svc.create_profile(
            s,
            r.ProfileCreate.model_validate(
                {"name": "std", "spec": {"version": "1.1.0", "layers": layers}}
            ),
        )
    with db.session() as s:
        assert svc.get_pool(s, "dc1").status.update_available == "1.1.0"
        reasons = [
            e.reason for e in events.list_events(s, name="dc1", limit=20, continue_token=None)[0]
        ]
    assert "UpdateAvailable" in reasons
    with pytest.raises(Conflict, match="used by pools"), db.session() as s:
        svc.delete_profile(s, "std", "1.0.0")
