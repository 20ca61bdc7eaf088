"""A SIMULATED pool already running, written straight to the store (benchmarks, tests).

:func:`seed_running_pool` makes cluster ``bench``, site ``dc1``, profile ``std`` at
versions 1.0.0 (Kubernetes 1.34.2) and 2.0.0 (Kubernetes 1.35.1), and pool ``pool`` of N
hosts that already run 1.0.0: hosts, enrolled agents, members, applied join plans and
Ready Nodes, as if each had joined an hour ago. No host, agent or Node is behind them:
:class:`tether.sim.fleet.SimulatedFleet` plays those. Rows go in with one insert per
table, so a thousand-node pool is ready in a second.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import insert

from tether.domain import resources as r
from tether.domain.agent import document_hash
from tether.domain.models import ClusterSpec, HostSpec, PoolSpec, ProfileSpec
from tether.domain.nodeplan import node_target, plan_document
from tether.services import resources as svc
from tether.store.db import Database
from tether.store.schema import (
    DesiredStateRow,
    HostAgentRow,
    HostRow,
    NodeStatusRow,
    PoolMemberRow,
    utcnow,
)

__all__ = ["CLUSTER", "POOL", "seed_running_pool"]

CA = "-----BEGIN CERTIFICATE-----\nYmVuY2g=\n-----END CERTIFICATE-----\n"
CLUSTER: dict[str, Any] = {
    "kubernetesVersion": "1.37",
    "apiEndpoint": "https://10.226.0.10:6443",
    "caBundle": CA,
    "vpcCIDR": "10.226.0.0/16",
    "serviceCIDR": "172.20.0.0/16",
    "remoteNodeNetworks": ["10.80.0.0/16"],
    "remotePodNetworks": ["10.85.0.0/16"],
}
POOL: dict[str, Any] = {
    "cluster": "bench",
    "site": "dc1",
    "nodeCIDR": "10.80.0.0/20",
    "podCIDR": "10.85.0.0/16",
    "vpnServer": {"publicIP": "203.0.113.5", "insideIP": "10.80.15.254"},
    "profile": {"name": "std", "version": "1.0.0"},
    "updateStrategy": {
        "type": "Rolling",
        "maxSurge": 0,
        "maxUnavailable": "10%",
        "minReadySeconds": 0,
    },
}


def _layers(kubernetes: str, image: str = "debian-12") -> dict[str, Any]:
    return {"os": {"image": image}, "kubernetes": {"version": kubernetes}}


def seed_running_pool(db: Database, n: int, *, next_image: str = "debian-12") -> None:
    """A pool of ``n`` hosts already running version 1.0.0, written straight to the store
    (2.0.0 with another ``next_image`` re-images the nodes)."""
    with db.session() as s:
        svc.create_cluster(s, r.ClusterCreate.model_validate({"name": "bench", "spec": CLUSTER}))
        svc.create_site(s, r.SiteCreate(name="dc1"))
        for version, kube in (("1.0.0", "1.34.2"), ("2.0.0", "1.35.1")):
            image = next_image if version == "2.0.0" else "debian-12"
            body = {"name": "std", "spec": {"version": version, "layers": _layers(kube, image)}}
            svc.create_profile(s, r.ProfileCreate.model_validate(body))
        svc.create_pool(s, r.PoolCreate.model_validate({"name": "pool", "spec": POOL}))
    cluster, pool = ClusterSpec.model_validate(CLUSTER), PoolSpec.model_validate(POOL)
    profile = ProfileSpec.model_validate({"version": "1.0.0", "layers": _layers("1.34.2")})
    now = utcnow()
    hosts, agents, members, docs, nodes = [], [], [], [], []
    for i in range(n):
        name = f"h{i:04d}"
        ip = str(pool.node_cidr.network_address + 1 + i)
        spec = HostSpec(site="dc1", pool="pool", node_ip=ip)
        target = node_target(
            cluster_name="bench",
            cluster=cluster,
            pool_name="pool",
            pool=pool,
            host_name=name,
            host=spec,
            inventory={},
            profile=profile,
        )
        doc = plan_document("join", target, step="setup")
        digest = document_hash(doc)
        hosts.append(
            {
                "name": name,
                "host_id": name,
                "site": "dc1",
                "pool": "pool",
                "state": "InUse",
                "health": "Healthy",
                "last_heartbeat": now,
                "inventory": {},
                "spec": spec.model_dump(mode="json", by_alias=True, exclude_none=True),
                "resource_version": 1,
                "created_at": now,
                "updated_at": now,
            }
        )
        agents.append({"host_name": name, "failing_checks": {}, "enrolled_at": now})
        members.append(
            {
                "host_name": name,
                "pool": "pool",
                "phase": "Active",
                "spec": dict(target.spec),
                "spec_hash": target.hash,
                "version": "1.0.0",
                "leave_requested": False,
                "surge": False,
                "resource_version": 1,
                "updated_at": now,
            }
        )
        docs.append(
            {
                "host_name": name,
                "document": doc,
                "hash": digest,
                "updated_at": now,
                "applied_hash": digest,
                "applied_result": {"ok": True},
                "applied_at": now,
            }
        )
        nodes.append(
            {
                "host_name": name,
                "cluster": "bench",
                "ready": True,
                "reason": "KubeletReady",
                "ready_since": now - timedelta(hours=1),
                "unschedulable": False,
                "kubelet_version": "v1.34.2",
                "observed_at": now,
            }
        )
    with db.session() as s:
        for table, rows in (
            (HostRow, hosts),
            (HostAgentRow, agents),
            (PoolMemberRow, members),
            (DesiredStateRow, docs),
            (NodeStatusRow, nodes),
        ):
            s.execute(insert(table), rows)
