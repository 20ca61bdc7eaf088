"""A registration takes one use of an activation atomically, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from tether.agent.identity import Identity
from tether.domain import resources as r
from tether.domain.agent import ActivationCreate, RegisterRequest
from tether.errors import Forbidden, PlaneError
from tether.services import activations, enrolment
from tether.services import resources as svc
from tether.services.trust import PlaneTrust
from tether.settings import Settings
from tether.store.db import Database
from tether.store.schema import ActivationRow, HostRow, utcnow

pytestmark = pytest.mark.integration


def _activation(db: Database, uses: int) -> tuple[str, str]:
    with db.session() as s:
        if (
            s.scalars(select(HostRow.id)).first() is None
            and not svc.list_sites(s, limit=1, continue_token=None)[0]
        ):
            svc.create_site(s, r.SiteCreate(name="dc1"))
        issued = activations.create(
            s, ActivationCreate(site="dc1", expires_in="1h", max_registrations=uses), actor="t"
        )
    return issued.id, issued.code


def test_two_registrations_race_for_the_last_use_exactly_one_wins(
    db: Database, settings: Settings, tmp_path: object
) -> None:
    act_id, code = _activation(db, 1)
    trust = PlaneTrust(settings)
    barrier = threading.Barrier(2)
    results: dict[str, str] = {}

    def register(name: str) -> None:
        csr = Identity(settings.paths.data_dir / name).new_csr(name)[1].decode()
        body = RegisterRequest(activation_id=act_id, code=code, name=name, host_id=name, csr=csr)
        barrier.wait()
        try:
            with db.session() as s:
                enrolment.register(s, trust, body, now=utcnow(), heartbeat_seconds=10)
            results[name] = "won"
        except PlaneError as exc:
            results[name] = exc.rule or exc.code

    threads = [threading.Thread(target=register, args=(n,)) for n in ("race-a", "race-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) == ["pki.activation.exhausted", "won"], results
    with db.session() as s:
        assert s.scalars(select(ActivationRow.registrations)).one() == 1
        hosts = s.scalars(select(HostRow.name)).all()
    assert len(hosts) == 1 and results[hosts[0]] == "won"


def test_many_consumers_never_exceed_the_limit(db: Database) -> None:
    act_id, _ = _activation(db, 3)
    barrier = threading.Barrier(8)
    won: list[int] = []
    refused: list[int] = []

    def take(i: int) -> None:
        barrier.wait()
        try:
            with db.session() as s:
                activations.consume(s, act_id, utcnow())
            won.append(i)
        except Forbidden:
            refused.append(i)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(won), len(refused)) == (3, 5)
    with db.session() as s:
        row = s.scalars(select(ActivationRow)).one()
    assert row.registrations == 3
