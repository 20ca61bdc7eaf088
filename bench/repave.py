"""Repave benchmark: how close a rollout comes to the ideal, and what the plane spends.

    .venv/bin/python bench/repave.py --nodes 10,100,1000 --step 10

Each size starts a fresh store (SQLite, or PostgreSQL with ``--postgres-url``) with a pool
of N hosts already running profile version 1.0.0 (Kubernetes 1.34.2), then rolls it to
2.0.0 (Kubernetes 1.35.1) with strategy Rolling, maxSurge 0, maxUnavailable 10% and
minReadySeconds 0: k = max(1, N/10) nodes move at once. The real pool reconciler and store
do the work; the cluster and the agents are SIMULATED (:mod:`tether.sim.fleet`): an
upgrade plan takes ``--step`` seconds on a host, everything else is instant. So the ideal
wall time is ceil(N/k) x step; the overhead is what the plane adds. Plane CPU is the
reconciler thread's CPU time (it runs every query) over the rollout, per node. The
process runs with the plane's cyclic GC settings (:func:`tether.server.tune_gc`).

Prints a table and writes JSON (``--json``, default bench/results/repave.json).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from machine import facts
from tether.controllers.pools import PoolController
from tether.domain.models import PoolSpec
from tether.domain.rollout import bounds
from tether.server import tune_gc
from tether.services import rollouts
from tether.sim.fleet import SimulatedFleet
from tether.sim.seed import POOL, seed_running_pool
from tether.store.db import Database, migrate
from tether.store.schema import RolloutRow, utcnow

RESULTS = Path(__file__).parent / "results" / "repave.json"


def _thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) of one thread of this process."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_one(database_url: str, n: int, step: float) -> dict[str, Any]:
    db = Database.connect(database_url)
    migrate(db.engine)
    seed_running_pool(db, n)
    fleet = SimulatedFleet(db, lambda action: step if action == "upgrade" else 0.0)
    controller = PoolController(db, lambda _: fleet, resync_seconds=5, on_desired=fleet.sent)
    fleet.on_applied = controller.poke_hosts
    fleet.start()
    controller.reconcile("pool")  # learns its hosts; the pool is Ready
    controller.start()
    # The thread's first pass (its resync) reads the whole pool. A person approves a
    # rollout at any time, seldom during a pass of that pool; approved during this one,
    # the rollout would start with a write conflict the bench made, not the plane.
    while controller.reconciles < 2:
        time.sleep(0.01)
    tune_gc()  # as the plane runs once started
    with db.session() as s:
        made = rollouts.create(s, "pool", "2.0.0", actor="bench", now=utcnow())
    tid = controller.thread_id
    assert tid is not None
    cpu0, t0 = _thread_cpu(tid), time.monotonic()
    with db.session() as s:
        rollouts.act(s, made.name, "approve", actor="bench", now=utcnow())
    controller.poke(["pool"])
    # The rollout's state changes only in a reconcile's write, so the store is read once
    # after each pass, the state column alone: reading it 50 times a second took the GIL
    # and the store from the reconciler this measures, in the very moments a wave waits
    # for it (and so did a read after each write, amid the pass's next round). Between
    # passes the bench reads a counter, every 5 ms.
    query = select(RolloutRow.state).where(RolloutRow.name == made.name)
    seen = -1
    while True:
        if controller.passes != seen:
            seen = controller.passes
            with db.session() as s:
                state = s.scalar(query)
            if state in ("Completed", "Failed"):
                break
        time.sleep(0.005)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="10,100,1000")
    parser.add_argument("--step", type=float, default=10.0, help="Seconds per node step.")
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args()
    machine = facts(postgres_url=args.postgres_url)
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
        json.dumps({"machine": machine, "backend": backend, "results": results}, indent=2) + "\n"
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
