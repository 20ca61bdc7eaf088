"""Forwarding headers on a served plane: believed only from configured proxies.

uvicorn believes ``X-Forwarded-For`` from 127.0.0.1 unless told otherwise, so a client
on the plane's own machine could name any address: each refusal it provoked then landed
in a fresh per-address audit bucket, past the anonymous rate limit. The agent port never
believes the header (its mutual TLS ends in the plane); the people's port only from
``TETHER_API_TRUSTED_PROXIES``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from tether.settings import Settings
from tether.store.schema import AuditRow

from .conftest import Plane

pytestmark = pytest.mark.integration

BURST = 3
CLIENTS = 10  # distinct forged addresses, one refusal each


@pytest.fixture(params=["", "127.0.0.1"], ids=["no-proxy", "proxy-on-loopback"])
def tune_plane(request: pytest.FixtureRequest) -> Callable[[Settings], None]:
    def tune(settings: Settings) -> None:
        settings.audit.anonymous_burst = BURST
        settings.audit.anonymous_per_second = 0.001
        settings.api.trusted_proxies = request.param

    return tune


def refusals(plane: Plane, status: int) -> int:
    with plane.db.session() as s:
        return int(
            s.scalar(
                select(func.count()).select_from(AuditRow).where(AuditRow.status_code == status)
            )
            or 0
        )


def forged(i: int) -> dict[str, str]:
    return {"X-Forwarded-For": f"203.0.113.{i + 1}"}


def test_the_people_port_believes_forwarded_addresses_only_from_its_proxies(
    plane: Plane,
) -> None:
    with plane.api as client:
        for i in range(CLIENTS):
            answer = client.get(
                "/api/v1/pools", headers={"Authorization": "Bearer nope"} | forged(i)
            )
            assert answer.status_code == 401
    # Without a proxy every refusal comes from 127.0.0.1: one bucket, BURST rows. From a
    # trusted proxy each forwarded address is a client of its own.
    expected = CLIENTS if plane.settings.api.trusted_proxies else BURST
    assert refusals(plane, 401) == expected


def test_the_agent_port_never_believes_forwarded_addresses(plane: Plane) -> None:
    with plane.client(None, None) as client:
        for i in range(CLIENTS):
            answer = client.post("/agent/v1/hosts/edge-1/heartbeat", json={}, headers=forged(i))
            assert answer.status_code == 401
    assert refusals(plane, 401) == BURST
