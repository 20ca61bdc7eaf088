"""The plane pushes each site's VPN server its configuration (the adapter of
:func:`tether.netplan.vpnserver.server_documents`).

One pass: find the hosts with the ``vpn-server`` role (one per site), plan every cluster
with a pool at one of their sites from the store (as :mod:`tether.services.clusternet`
reads it: :func:`tether.services.network.document`, but with the cluster's real cloud VPN
endpoint and the tunnels' keys), render each server's ``vpnServer`` document and write
it as the host's desired state where its hash differs. The agent gets it by its long
poll and applies it (:mod:`tether.agent.vpnserver`).

Each tunnel's pre-shared key is made here the first time a plan needs it (256 random
bits) and kept in the ``vpn_keys`` table. It leaves the plane only in the document of the
tunnel's VPN server, to that host's agent: the people's API shows ``******``
(:func:`tether.netplan.vpnserver.hide_keys`), and no log line or event carries it.
Keys are never rotated here.

Every served pool gets the ``VPNServerConfigured`` condition: True once its server has
the current document, False with the reason and the field when the plan cannot be
rendered (an invalid network, no cloud VPN endpoint, two clusters' pools at one site).
A new document is also a ``VPNServerConfigPushed`` event on the pool.

Level-triggered and crash-safe: nothing is remembered between passes; the stored
document's hash is what decides, so a pass after a crash writes only what is missing.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether import netplan
from tether.domain.agent import document_hash
from tether.domain.models import ObjectKind
from tether.domain.poolplan import Condition
from tether.netplan.vpnserver import server_documents, to_push
from tether.services import desired, events, network
from tether.services.pools import VPN_SERVER_CONDITION, set_condition
from tether.services.resources import vpn_server_hosts
from tether.store.db import Database
from tether.store.schema import DesiredStateRow, PoolRow, VpnKeyRow, utcnow

__all__ = ["VPN_SERVER_CONDITION", "VpnPass", "reconcile_vpn_servers", "tunnel_keys"]

log = logging.getLogger(__name__)


@dataclass
class VpnPass:
    """What one pass did (for logs and tests): host -> hash written, pool -> problem."""

    pushed: dict[str, str] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)


def tunnel_keys(session: Session, tunnels: Iterable[str], *, now: datetime) -> dict[str, str]:
    """The keys of ``tunnels`` (ids of :func:`tether.netplan.psk_ids`), each made when
    first asked for."""
    wanted = sorted(set(tunnels))
    query = select(VpnKeyRow.tunnel, VpnKeyRow.key).where(VpnKeyRow.tunnel.in_(wanted))
    keys = dict(session.execute(query).all())
    for tunnel in wanted:
        if tunnel not in keys:
            keys[tunnel] = secrets.token_hex(32)
            session.add(VpnKeyRow(tunnel=tunnel, key=keys[tunnel], created_at=now))
            log.info("made the pre-shared key of tunnel %s", tunnel)
    session.flush()
    return keys


def _plan(
    session: Session, cluster: str, sites: set[str], now: datetime
) -> tuple[netplan.Plan | None, dict[str, str]]:
    """The cluster's plan, or None and each served pool's problem (``field: message``)."""
    data = network.document(session, cluster)
    served = [p["name"] for p in data["pools"] if p["site"] in sites]
    doc, findings = netplan.load_document(data)
    if doc is not None:
        keys = tunnel_keys(session, netplan.psk_ids(doc), now=now)
        try:
            return netplan.plan(doc, keys), {}
        except netplan.PlanError as exc:
            findings = exc.findings
    first = next(f for f in findings if f.is_error)
    return None, dict.fromkeys(served, first.text)


def reconcile_vpn_servers(db: Database, *, now: datetime | None = None) -> VpnPass:
    """One pass (module doc)."""
    now = now or utcnow()
    done = VpnPass()
    with db.session() as session:
        servers = vpn_server_hosts(session)
        clusters = session.scalars(
            select(PoolRow.cluster).where(PoolRow.site.in_(list(servers))).distinct()
        )
        plans = []
        for cluster in sorted(clusters):
            result, problems = _plan(session, cluster, set(servers), now)
            done.problems.update(problems)
            if result is not None:
                plans.append(result)
        found = server_documents(plans, servers)
        done.problems.update(found.problems)
        query = select(DesiredStateRow.host_name, DesiredStateRow.hash).where(
            DesiredStateRow.host_name.in_(list(found.documents))
        )
        stored = dict(session.execute(query).all())
        wanted = {host: doc for host, (_, doc) in found.documents.items()}
        changed = to_push(wanted, stored)
        notes = desired.set_many(session, changed, now=now)
        conditions: dict[str, Condition] = {}
        for host, (pool, doc) in found.documents.items():
            digest = document_hash(doc)
            message = f"vpn-server host {host} has document {digest[:12]}"
            conditions[pool] = Condition(VPN_SERVER_CONDITION, "True", "Pushed", message)
            if host in changed:
                done.pushed[host] = digest
                events.record(
                    session, ObjectKind.POOL, pool, "VPNServerConfigPushed", message, pool=pool
                )
        for pool, problem in done.problems.items():
            conditions[pool] = Condition(VPN_SERVER_CONDITION, "False", "PlanInvalid", problem)
        events.record_many(session, notes, now=now, pool=None)
        set_condition(session, VPN_SERVER_CONDITION, conditions, "VPNServer")
    for host, digest in done.pushed.items():
        log.info("pushed VPN server document %s to host %s", digest[:12], host)
    return done
