"""Benchmark the network commands end to end: ``tether net check`` and ``net plan``.

    .venv/bin/python bench/netplan.py [--sizes 100,1000,10000] [--repeat 3]
                                      [--plan-repeat 1] [--json PATH]

Every figure is a whole CLI process, as a user runs it: ``.venv/bin/tether ...`` started
with :mod:`subprocess`, Python's start-up and imports included. Documents of 100, 1,000
and 10,000 pools (two nodes each, half BGP and half static, every fourth behind a
separate main router) are written as JSON and as YAML, then

* ``check`` — ``tether net check FILE`` (best of ``--repeat``), every document's checks
  before any plan is written;
* ``plan``  — ``tether net plan FILE --out DIR`` into a DIR that does not exist yet,
  every file written and synced (best of ``--plan-repeat``), on the file system of the
  bench's temporary directory and again on tmpfs (``/dev/shm``: the plan's CPU cost
  without the disk); every run writes a new DIR, and the trees on disk are removed only
  after the last figure (see :func:`plan_seconds`);
* ``bare write`` — the floor the disk sets: the same files (the plan's own, read back)
  written into a fresh directory on the same file system by bare loops of ``os.open``,
  ``os.write`` and ``os.close`` in two forked processes (half the folders each, as the
  plan writes on two cores), then ``syncfs``; no start-up, no rendering. Reported whole
  (``bare``), up to the end of the writes (``no sync``), and as the kernel CPU time the
  writers spent (``kernel``): when the writes alone, unsynced, take longer than the plan
  target, no plan can meet it on that file system;

and the start-up of ``tether --help`` and ``tether pool list`` (against a plane started
here with ``tether serve`` on SQLite; an empty list) is timed the same way.

Targets: 10,000 pools checked in at most 1.5 s and planned in at most 3 s; ``--help``
and ``pool list`` in at most 0.3 s. Results go to a table on stdout and to JSON
(bench/results/netplan.json by default) with the machine facts of :mod:`machine`.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import yaml

from machine import facts, write_result

TETHER = Path(sys.executable).with_name("tether")
TARGET_POOLS = 10_000
FORMATS = ("json", "yaml")
TARGETS = {"check": 1.5, "plan": 3.0, "help": 0.3, "pool list": 0.3}
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


def timed(argv: list[str], repeat: int, env: dict[str, str] | None = None) -> float:
    """The best wall time of ``repeat`` runs of the command ``argv``, which must exit 0."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, env=env, check=False)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr[-500:]!r}")
        best = min(best, elapsed)
    return best


def plan_seconds(document: Path, into: Path, repeat: int) -> float:
    """Best of ``repeat`` runs of ``tether net plan``, each into a new directory under
    ``into`` (``plan-1``, ``plan-2``, ...). Nothing is removed here: on ext4, creating
    60,000 files right after removing as many cost the kernel several times the CPU it
    costs on a file system at rest, so the bench removes its trees only once every
    figure is taken."""
    best = float("inf")
    for run in range(1, repeat + 1):
        out = into / f"plan-{run}"
        best = min(best, timed([str(TETHER), "net", "plan", str(document), "--out", str(out)], 1))
    return best


def bare_write(plan: Path, into: Path) -> dict[str, float]:
    """Write the files under ``plan`` into the new directory ``into`` with bare ``os``
    calls, in two processes at once as ``tether net plan`` does (each one half of the
    sorted paths, so each its own folders, as the plan's two writers have), then sync
    the file system: what the disk alone costs. The wall seconds of the writes, the
    kernel CPU seconds the two writers spent in them, and the wall seconds of the whole
    with its ``syncfs``."""
    files = sorted(
        (os.path.relpath(os.path.join(folder, name), plan), Path(folder, name).read_bytes())
        for folder, _, names in os.walk(plan)
        for name in names
    )
    half = len(files) // 2
    syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    os.sync()  # start from a clean page cache state for this file system
    before = os.times()
    start = time.perf_counter()
    writers = [_bare_writer(into, share) for share in (files[:half], files[half:])]
    for pid in writers:
        if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0:
            raise SystemExit("a bare writer failed")
    written = time.perf_counter() - start
    kernel = os.times().children_system - before.children_system
    fd = os.open(into, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs failed", str(into))
    finally:
        os.close(fd)
    elapsed = time.perf_counter() - start
    return {
        "bareWriteSeconds": elapsed,
        "bareWriteNoSyncSeconds": written,
        "bareKernelSeconds": kernel,
    }


def _bare_writer(into: Path, files: list[tuple[str, bytes]]) -> int:
    """Fork a process that writes ``files`` under ``into`` and exits (1 on any error,
    never returning into the bench's own code); its pid."""
    pid = os.fork()
    if pid:
        return pid
    status = 1  # pragma: no cover - the writer
    try:
        made: set[str] = set()
        for rel, data in files:
            path = os.path.join(into, rel)
            folder = os.path.dirname(path)
            if folder not in made:
                os.makedirs(folder, exist_ok=True)
                made.add(folder)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                if os.write(fd, data) != len(data):
                    raise OSError(f"short write of {path}")
            finally:
                os.close(fd)
        status = 0
    except BaseException:
        traceback.print_exc()
    finally:
        os._exit(status)


def write_document(pools: int, fmt: str, work: Path) -> Path:
    """The document of ``pools`` pools, written into ``work`` as ``fmt`` (json or yaml)."""
    data = document(pools)
    path = work / f"net-{pools}.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(data, indent=2))
    else:
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        path.write_text(yaml.dump(data, Dumper=dumper, sort_keys=False))
    return path


def measure_plan(path: Path, work: Path, plan_repeat: int) -> dict[str, Any]:
    """The plan of the document at ``path`` on tmpfs and on ``work``'s file system, and
    the bare write of its files there, into new directories under ``work``."""
    os.sync()  # the last row's files are on disk before this row's clocks start
    with tempfile.TemporaryDirectory(prefix="tether-bench-netplan-", dir="/dev/shm") as shm:
        tmpfs_plan = plan_seconds(path, Path(shm), plan_repeat)
    row = work / path.name.replace(".", "-")
    row.mkdir()
    best_plan = plan_seconds(path, row, plan_repeat)
    files = sum(1 for p in (row / "plan-1").rglob("*") if p.is_file())
    bare = bare_write(row / "plan-1", row / "bare")
    return {
        "planSeconds": round(best_plan, 3),
        "planTmpfsSeconds": round(tmpfs_plan, 3),
        **{key: round(value, 3) for key, value in bare.items()},
        "planFiles": files,
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def plane(work: Path) -> Iterator[dict[str, str]]:
    """``tether serve`` on SQLite in ``work``; yields the environment of a logged-in CLI."""
    port, agent_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "TETHER_DATA_DIR": str(work / "plane"),
        "TETHER_API_PORT": str(port),
        "TETHER_AGENT_PORT": str(agent_port),
        "HOME": str(work),
    }
    token = subprocess.run(
        [str(TETHER), "admin", "bootstrap"], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    server = subprocess.Popen(
        [str(TETHER), "serve", "--host", "127.0.0.1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/healthz", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("tether serve did not come up") from None
                time.sleep(0.2)
        yield {**env, "TETHER_SERVER": url, "TETHER_TOKEN": token}
    finally:
        server.terminate()
        server.wait(30)


def startup(work: Path, repeat: int) -> dict[str, float]:
    with plane(work) as env:
        return {
            "help": round(timed([str(TETHER), "--help"], repeat, env), 3),
            "pool list": round(timed([str(TETHER), "pool", "list"], repeat, env), 3),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100,1000,10000", help="comma-separated pool counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs of check and start-up")
    parser.add_argument("--plan-repeat", type=int, default=1, help="runs of plan")
    default_json = Path(__file__).resolve().parent / "results" / "netplan.json"
    parser.add_argument("--json", type=Path, default=default_json, help="where to write JSON")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]

    machine = facts()
    with tempfile.TemporaryDirectory(prefix="tether-bench-netplan-") as tmp:
        work = Path(tmp)
        starts = startup(work, args.repeat)
        documents = {(n, fmt): write_document(n, fmt, work) for n in sizes for fmt in FORMATS}
        # Every check first: they write nothing, and the file system's work after a
        # plan's 60,000 files (and their removal) goes on in the kernel for a while,
        # taking CPU from whatever runs next.
        os.sync()
        rows = [
            {
                "pools": n,
                "format": fmt,
                "megabytes": round(path.stat().st_size / 1e6, 1),
                "checkSeconds": round(
                    timed([str(TETHER), "net", "check", str(path)], args.repeat), 3
                ),
            }
            for (n, fmt), path in documents.items()
        ]
        for row, path in zip(rows, documents.values(), strict=True):
            row.update(measure_plan(path, work, args.plan_repeat))
    print(f"{'command':<22} {'seconds':>8} {'target':>7}")
    for name, seconds in starts.items():
        print(f"tether {name:<15} {seconds:>7.3f}s {TARGETS[name]:>6.1f}s")
    print()
    print(
        f"{'pools':>7} {'format':>6} {'MB':>6} {'check':>8} {'plan':>9} {'tmpfs':>8} "
        f"{'bare':>8} {'no sync':>8} {'kernel':>8} {'files':>7}"
    )
    for r in rows:
        print(
            f"{r['pools']:>7} {r['format']:>6} {r['megabytes']:>6} {r['checkSeconds']:>7.3f}s "
            f"{r['planSeconds']:>8.3f}s {r['planTmpfsSeconds']:>7.3f}s "
            f"{r['bareWriteSeconds']:>7.3f}s {r['bareWriteNoSyncSeconds']:>7.3f}s "
            f"{r['bareKernelSeconds']:>7.3f}s {r['planFiles']:>7}"
        )
    verdicts: dict[str, bool] = {f"tether {k}": v <= TARGETS[k] for k, v in starts.items()}
    for r in rows:
        if r["pools"] == TARGET_POOLS:
            fmt = r["format"]
            verdicts[f"check {TARGET_POOLS} pools {fmt}"] = r["checkSeconds"] <= TARGETS["check"]
            verdicts[f"plan {TARGET_POOLS} pools {fmt}"] = r["planSeconds"] <= TARGETS["plan"]
            verdicts[f"plan {TARGET_POOLS} pools {fmt} on tmpfs"] = (
                r["planTmpfsSeconds"] <= TARGETS["plan"]
            )
            # The bare writes alone, without rendering, start-up or sync, against the
            # target: when they miss it, no plan can meet it on this file system.
            verdicts[f"bare write of the {fmt} plan without sync"] = (
                r["bareWriteNoSyncSeconds"] <= TARGETS["plan"]
            )
    for name, met in verdicts.items():
        print(f"target {name}: {'met' if met else 'MISSED'}")
    write_result(
        args.json,
        {
            "benchmark": "netplan",
            "command": "tether (the CLI process, start-up included)",
            "machine": machine,
            "repeat": args.repeat,
            "planRepeat": args.plan_repeat,
            "targetsSeconds": TARGETS,
            "targetPools": TARGET_POOLS,
            "targetsMet": verdicts,
            "startup": starts,
            "results": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
