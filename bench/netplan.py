"""Benchmark the network planner: check and plan 100, 1,000 and 10,000 pools.

    .venv/bin/python bench/netplan.py [--sizes 100,1000,10000] [--repeat 3] [--json PATH]

Each document has two nodes per pool, half the pools BGP and half static, every fourth
behind a separate main router. Phases, each the best of ``--repeat`` runs:

* ``load``   — schema validation of the parsed document (pydantic);
* ``check``  — every rule (overlaps by sort-and-sweep, never pairwise);
* ``plan``   — ``plan()``: the full check again plus allocation, routes and tunnels;
* ``files``  — rendering every file of the plan (swanctl, BIRD, manifests, ...).

``check+plan`` = load + plan: what ``tether net plan`` and the API do before writing
files. The target is 10,000 pools in at most 1 s for it on a 2-core machine.
Results go to a table on stdout and to JSON (bench/results/netplan.json by default), with
the machine facts of :mod:`machine`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any, TypeVar

from machine import facts
from tether.netplan import Severity, check, load_document, plan, psk_ids

T = TypeVar("T")
TARGET_POOLS = 10_000
TARGET_SECONDS = 1.0
NODE_SPACE = IPv4Network("10.0.0.0/9")  # one /24 per pool
POD_SPACE = IPv4Network("10.128.0.0/9")  # one /23 per pool, /25 per node
PUBLIC_SPACE = IPv4Network("198.18.0.0/15")  # one VPN server address per pool


def document(pools: int) -> dict[str, Any]:
    node_base = int(NODE_SPACE.network_address)
    pod_base = int(POD_SPACE.network_address)
    public_base = int(PUBLIC_SPACE.network_address)
    items = []
    for i in range(pools):
        node_net = node_base + (i << 8)
        pod_net = pod_base + (i << 9)
        bgp = i % 2 == 0
        main_router = i % 4 != 3
        pool: dict[str, Any] = {
            "name": f"pool-{i}",
            "site": f"site-{i}",
            "nodeCIDR": f"{IPv4Address(node_net)}/24",
            "podCIDR": f"{IPv4Address(pod_net)}/23",
            "podCIDRMaskPerNode": 25,
            "routing": "bgp" if bgp else "static",
            "vpnServer": {
                "publicIP": str(IPv4Address(public_base + i + 1)),
                "insideIP": str(IPv4Address(node_net + 1)),
                "isMainRouter": main_router,
                "asn": 65000 + i % 500,
            },
            "nodes": [
                {"name": f"pool-{i}-n{j}", "ip": str(IPv4Address(node_net + 11 + j))}
                for j in range(2)
            ],
        }
        if not main_router:
            pool["mainRouterIP"] = str(IPv4Address(node_net + 254))
        items.append(pool)
    return {
        "apiVersion": "tether.io/v1alpha1",
        "kind": "HybridNetwork",
        "cluster": {
            "name": "bench",
            "vpcCIDR": "172.16.0.0/16",
            "serviceCIDR": "172.20.0.0/16",
            "remoteNodeNetworks": [str(NODE_SPACE)],
            "remotePodNetworks": [str(POD_SPACE)],
            "vpnEndpoint": {"publicIP": "203.0.113.10", "secondaryPublicIP": "203.0.113.11"},
        },
        "pools": items,
    }


def best_of(repeat: int, fn: Callable[[], T]) -> tuple[float, T]:
    best = float("inf")
    result: Any = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def measure(pools: int, repeat: int) -> dict[str, Any]:
    data = document(pools)
    load_s, (doc, schema) = best_of(repeat, lambda: load_document(data))
    if doc is None or schema:
        raise SystemExit(f"the generated document is malformed: {schema[:3]}")
    check_s, findings = best_of(repeat, lambda: check(doc))
    errors = [f for f in findings if f.severity is Severity.ERROR]
    if errors:
        raise SystemExit(f"the generated document has errors: {errors[:3]}")
    keys = dict.fromkeys(psk_ids(doc), "ab" * 32)
    plan_s, result = best_of(repeat, lambda: plan(doc, keys))
    files_s, files = best_of(repeat, lambda: result.files())
    return {
        "pools": pools,
        "nodes": sum(len(p.nodes) for p in result.pools),
        "loadSeconds": round(load_s, 4),
        "checkSeconds": round(check_s, 4),
        "planSeconds": round(plan_s, 4),
        "checkAndPlanSeconds": round(load_s + plan_s, 4),
        "filesSeconds": round(files_s, 4),
        "files": len(files),
        "megabytes": round(sum(len(c) for c in files.values()) / 1e6, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="comma-separated pool counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per phase (best is kept)")
    default_json = Path(__file__).resolve().parent / "results" / "netplan.json"
    parser.add_argument("--json", type=Path, default=default_json, help="where to write JSON")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]

    machine = facts()
    rows = [measure(n, args.repeat) for n in sizes]
    header = (
        f"{'pools':>7} {'nodes':>7} {'load':>8} {'check':>8} {'plan':>8} "
        f"{'check+plan':>11} {'files':>8} {'#files':>8} {'MB':>6}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['pools']:>7} {r['nodes']:>7} {r['loadSeconds']:>7.3f}s {r['checkSeconds']:>7.3f}s "
            f"{r['planSeconds']:>7.3f}s {r['checkAndPlanSeconds']:>10.3f}s "
            f"{r['filesSeconds']:>7.3f}s {r['files']:>8} {r['megabytes']:>6}"
        )
    target = next((r for r in rows if r["pools"] == TARGET_POOLS), None)
    verdict = None
    if target is not None:
        verdict = target["checkAndPlanSeconds"] <= TARGET_SECONDS
        print(
            f"target: {TARGET_POOLS} pools checked and planned in <= {TARGET_SECONDS:.0f}s: "
            f"{'met' if verdict else 'MISSED'} ({target['checkAndPlanSeconds']:.3f}s)"
        )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(
        json.dumps(
            {
                "benchmark": "netplan",
                "machine": machine,
                "repeat": args.repeat,
                "targetSeconds": TARGET_SECONDS,
                "targetPools": TARGET_POOLS,
                "targetMet": verdict,
                "results": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
