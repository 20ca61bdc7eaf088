"""Benchmark: many simulated kubelets from one process against a real kube-apiserver.

Starts a :class:`tether.sim.envtest.LocalControlPlane`, registers ``--nodes`` simulated
kubelets (:mod:`tether.sim.kubesim`), lets them renew their Leases for one warm-up
interval, then measures over ``--duration`` seconds:

- CPU used by this (simulator) process, by kube-apiserver and by etcd, as a share of one
  core (``100%`` = one core busy for the whole window), from ``/proc``;
- Lease renewal lag: how late each renewal completed against its schedule
  (p50/p99/max), and how many renewals landed versus how many were due.

Prints a table and writes JSON (``--json``, default ``bench/results/kubesim.json``), with
the machine facts of :mod:`machine`.

    .venv/bin/python bench/kubesim.py --nodes 1000 --duration 60
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from machine import facts, proc_cpu_seconds, proc_rss_mib
from tether.kube.client import KubeClient
from tether.sim.envtest import KUBE_VERSION, LocalControlPlane
from tether.sim.kubesim import KubeletFleet, SimulatedNode


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@dataclass
class Result:
    nodes: int
    duration_s: float
    lease_interval_s: float
    workers: int
    register_s: float
    cpu_simulator_pct: float
    cpu_apiserver_pct: float
    cpu_etcd_pct: float
    rss_simulator_mib: float
    rss_apiserver_mib: float
    renewals: int
    renewals_expected: int
    errors: int
    lag_p50_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    lag_mean_ms: float
    kube_version: str
    machine: dict[str, Any]


def run(nodes: int, duration: float, interval: float, workers: int) -> Result:
    machine = facts()
    # A bare API server: the figures are its cost alone, as in earlier runs.
    with LocalControlPlane(components=()) as cp, KubeClient(cp.kubeconfig, timeout=30) as client:
        api_pid, etcd_pid = cp.apiserver_pid, cp.etcd_pid
        assert api_pid is not None
        assert etcd_pid is not None
        fleet = KubeletFleet(client, lease_interval=interval, workers=workers)
        specs = [
            SimulatedNode(
                name=f"sim-{i:05d}",
                cluster="bench",
                addresses=[f"10.{80 + i // 65536}.{(i // 256) % 256}.{i % 256}"],
            )
            for i in range(nodes)
        ]
        print(f"registering {nodes} simulated kubelets ...", file=sys.stderr)
        started = time.monotonic()
        fleet.register(specs)
        register_s = time.monotonic() - started
        print(f"registered in {register_s:.1f}s; warming up {interval:g}s", file=sys.stderr)
        fleet.start()
        try:
            time.sleep(interval)
            fleet.reset_stats()
            t0 = time.monotonic()
            cpu0 = time.process_time()
            api0, etcd0 = proc_cpu_seconds(api_pid), proc_cpu_seconds(etcd_pid)
            print(f"measuring {duration:g}s ...", file=sys.stderr)
            time.sleep(duration)
            t1 = time.monotonic()
            cpu1 = time.process_time()
            api1, etcd1 = proc_cpu_seconds(api_pid), proc_cpu_seconds(etcd_pid)
            lags = fleet.renewal_lags(since=t0)
            stats = fleet.stats
            rss_sim = proc_rss_mib(os.getpid())
            rss_api = proc_rss_mib(api_pid)
        finally:
            fleet.stop()
    wall = t1 - t0
    lags_ms = [lag * 1000 for lag in lags]
    return Result(
        nodes=nodes,
        duration_s=round(wall, 2),
        lease_interval_s=interval,
        workers=workers,
        register_s=round(register_s, 2),
        cpu_simulator_pct=round(100 * (cpu1 - cpu0) / wall, 1),
        cpu_apiserver_pct=round(100 * (api1 - api0) / wall, 1),
        cpu_etcd_pct=round(100 * (etcd1 - etcd0) / wall, 1),
        rss_simulator_mib=round(rss_sim, 1),
        rss_apiserver_mib=round(rss_api, 1),
        renewals=len(lags),
        renewals_expected=int(nodes * wall / interval),
        errors=stats.errors,
        lag_p50_ms=round(percentile(lags_ms, 50), 1),
        lag_p99_ms=round(percentile(lags_ms, 99), 1),
        lag_max_ms=round(max(lags_ms, default=float("nan")), 1),
        lag_mean_ms=round(statistics.fmean(lags_ms), 1) if lags_ms else float("nan"),
        kube_version=KUBE_VERSION,
        machine=machine,
    )


def table(result: Result) -> str:
    rows: list[tuple[str, Any]] = [
        ("simulated nodes", result.nodes),
        ("lease interval", f"{result.lease_interval_s:g} s"),
        ("worker threads", result.workers),
        ("registration (all nodes)", f"{result.register_s:.1f} s"),
        ("measured window", f"{result.duration_s:.1f} s"),
        ("renewals landed / due", f"{result.renewals} / {result.renewals_expected}"),
        ("errors", result.errors),
        ("CPU simulator process", f"{result.cpu_simulator_pct:.1f} % of a core"),
        ("CPU kube-apiserver", f"{result.cpu_apiserver_pct:.1f} % of a core"),
        ("CPU etcd", f"{result.cpu_etcd_pct:.1f} % of a core"),
        (
            "RSS simulator / apiserver",
            f"{result.rss_simulator_mib:.0f} / {result.rss_apiserver_mib:.0f} MiB",
        ),
        ("renewal lag p50", f"{result.lag_p50_ms:.1f} ms"),
        ("renewal lag p99", f"{result.lag_p99_ms:.1f} ms"),
        ("renewal lag max", f"{result.lag_max_ms:.1f} ms"),
        (
            "machine",
            f"{result.machine['cpus']} cores, Python {result.machine['python']}, "
            f"kube-apiserver v{result.kube_version}, "
            f"load {result.machine['loadAverageAtStart'][0]} at start",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 30}"]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=60.0, help="measured seconds")
    parser.add_argument("--interval", type=float, default=10.0, help="lease renewal interval")
    parser.add_argument("--workers", type=int, default=8, help="simulator worker threads")
    parser.add_argument(
        "--json",
        type=Path,
        default=Path(__file__).parent / "results" / "kubesim.json",
        help="where to write the result",
    )
    args = parser.parse_args(argv)
    result = run(args.nodes, args.duration, args.interval, args.workers)
    print(table(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")
    print(f"\nwrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
