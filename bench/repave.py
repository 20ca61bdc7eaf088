"""Repave benchmark: how close a rollout comes to the ideal, and what the plane spends.

    .venv/bin/python bench/repave.py --nodes 10,100,1000 --step 10

Each size starts a fresh store (SQLite, or PostgreSQL with ``--postgres-url``) with a pool
of N hosts already running profile version 1.0.0 (Kubernetes 1.34.2), then rolls it to
2.0.0 (Kubernetes 1.35.1) with strategy Rolling, maxSurge 0, maxUnavailable 10% and
minReadySeconds 0: k = max(1, N/10) nodes move at once. The real pool reconciler and store
do the work; the cluster and the agents are SIMULATED (:mod:`tether.sim.fleet`): an
upgrade plan takes ``--step`` seconds on a host, everything else is instant. So the ideal
wall time is ceil(N/k) x step; the overhead is what the plane adds. Plane CPU is the
reconciler thread's CPU time (it runs every query) over the rollout, per node.

Prints a table and writes JSON (``--json``, default bench/results/repave.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from tether.controllers.pools import PoolController
from tether.domain import resources as r
from tether.domain.agent import document_hash
from tether.domain.models import ClusterSpec, HostSpec, PoolSpec, ProfileSpec
from tether.domain.nodeplan import node_target, plan_document
from tether.domain.rollout import bounds
from tether.services import resources as svc
from tether.services import rollouts
from tether.sim.fleet import SimulatedFleet
from tether.store.db import Database, migrate
from tether.store.schema import (
    DesiredStateRow,
    HostAgentRow,
    HostRow,
    NodeStatusRow,
    PoolMemberRow,
    utcnow,
)

RESULTS = Path(__file__).parent / "results" / "repave.json"
CA = "-----BEGIN CERTIFICATE-----\nYmVuY2g=\n-----END CERTIFICATE-----\n"
CLUSTER = {
    "kubernetesVersion": "1.37",
    "apiEndpoint": "https://10.226.0.10:6443",
    "caBundle": CA,
    "vpcCIDR": "10.226.0.0/16",
    "serviceCIDR": "172.20.0.0/16",
    "remoteNodeNetworks": ["10.80.0.0/16"],
    "remotePodNetworks": ["10.85.0.0/16"],
}
POOL = {
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


def _layers(kubernetes: str) -> dict[str, Any]:
    return {"os": {"image": "debian-12"}, "kubernetes": {"version": kubernetes}}


def _thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) of one thread of this process."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def setup(db: Database, n: int) -> None:
    """A pool of ``n`` hosts already running version 1.0.0, written straight to the store."""
    with db.session() as s:
        svc.create_cluster(s, r.ClusterCreate.model_validate({"name": "bench", "spec": CLUSTER}))
        svc.create_site(s, r.SiteCreate(name="dc1"))
        for version, kube in (("1.0.0", "1.34.2"), ("2.0.0", "1.35.1")):
            spec = {"version": version, "layers": _layers(kube)}
            svc.create_profile(s, r.ProfileCreate.model_validate({"name": "std", "spec": spec}))
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


def run_one(database_url: str, n: int, step: float) -> dict[str, Any]:
    db = Database.connect(database_url)
    migrate(db.engine)
    setup(db, n)
    fleet = SimulatedFleet(db, lambda action: step if action == "upgrade" else 0.0)
    controller = PoolController(db, lambda _: fleet, resync_seconds=5, on_desired=fleet.sent)
    fleet.on_applied = controller.poke_hosts
    fleet.start()
    controller.reconcile("pool")  # learns its hosts; the pool is Ready
    controller.start()
    with db.session() as s:
        made = rollouts.create(s, "pool", "2.0.0", actor="bench", now=utcnow())
    tid = controller.thread_id
    assert tid is not None
    cpu0, t0 = _thread_cpu(tid), time.monotonic()
    with db.session() as s:
        rollouts.act(s, made.name, "approve", actor="bench", now=utcnow())
    controller.poke(["pool"])
    while True:
        with db.session() as s:
            state = rollouts.get(s, made.name).state
        if state in ("Completed", "Failed"):
            break
        time.sleep(0.02)
    wall, cpu = time.monotonic() - t0, _thread_cpu(tid) - cpu0
    controller.stop()
    fleet.stop()
    db.dispose()
    k = bounds(PoolSpec.model_validate(POOL).update_strategy, n).max_unavailable
    ideal = math.ceil(n / k) * step
    return {
        "nodes": n,
        "parallel": k,
        "stepSeconds": step,
        "state": state,
        "wallSeconds": round(wall, 3),
        "idealSeconds": ideal,
        "overheadPercent": round((wall - ideal) / ideal * 100, 2),
        "planeCPUSeconds": round(cpu, 3),
        "planeCPUMillisPerNodeStep": round(cpu / n * 1000, 2),
        "reconciles": controller.reconciles,
        "conflicts": controller.conflicts,
        "plansApplied": fleet.applied,
    }


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="10,100,1000")
    parser.add_argument("--step", type=float, default=10.0, help="Seconds per node step.")
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = []
    print(
        f"{'nodes':>6} {'k':>4} {'ideal s':>8} {'wall s':>8} {'overhead':>9} "
        f"{'CPU ms/node':>11} {'reconciles':>10}"
    )
    for n in (int(x) for x in args.nodes.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            url = args.postgres_url or f"sqlite:///{tmp}/bench.db"
            if args.postgres_url:
                url = _fresh_postgres(args.postgres_url)
            result = run_one(url, n, args.step)
        results.append(result)
        print(
            f"{n:>6} {result['parallel']:>4} {result['idealSeconds']:>8.1f} "
            f"{result['wallSeconds']:>8.2f} {result['overheadPercent']:>8.2f}% "
            f"{result['planeCPUMillisPerNodeStep']:>11.2f} {result['reconciles']:>10}",
            flush=True,
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    backend = "postgres" if args.postgres_url else "sqlite"
    args.json.write_text(
        json.dumps({"machine": machine(), "backend": backend, "results": results}, indent=2) + "\n"
    )
    return 0 if all(r["state"] == "Completed" for r in results) else 1


def _fresh_postgres(base: str) -> str:
    """A new, empty database on the server of ``base``."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(base)
    name = f"tether_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


if __name__ == "__main__":
    sys.exit(main())
