"""Benchmark: a fresh host to a Ready node with the real kubelet, containerd and runc.

On this machine (root; Debian's containerd, runc and CNI plugins; the binaries of
``scripts/build-kube.sh``), per run, on the user's path (the ``tether`` command, process
start included):

- **install**: ``tether node install 1.37`` from a local signed mirror (a directory, as
  on an air-gapped site): every artifact checksum-verified and put in place;
- **init**: ``tether node init --skip wait-ready``: validation, system settings, the
  containerd and kubelet configuration, the bootstrap kubeconfig, the units, and
  starting containerd (imports the pause and echo images) and the kubelet;
- **join**: from the moment init returned (the kubelet runs) until the Node is Ready as
  the API server sees it: TLS bootstrap, Tether's CSR approval, the controller manager's
  signature, registration, the node lifecycle controller's verdict.

Then it measures the resident memory (RSS) of the kubelet, containerd, the supervisor
processes that run them here (no systemd as PID 1) and, for the Tether agent, a real
``tether agent`` enrolled with the same plane, and uninstalls the node again.

The node runs in its own network namespace (:mod:`tether.sim.realnode`), against a full
local control plane bound to its veth. Prints a table and writes JSON (``--json``,
default ``bench/results/realnode.json``).

    .venv/bin/python bench/realnode.py --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from lightkube.resources.core_v1 import Node

from tether.domain.agent import ActivationCreate
from tether.domain.states import HostState
from tether.node.tracker import load
from tether.node.unitrun import MARKER
from tether.services import activations
from tether.services import resources as svc
from tether.sim.envtest import KUBE_VERSION, find_node_binaries
from tether.sim.realnode import (
    RealPlane,
    build_mirror,
    cni_config,
    missing_requirements,
    node_config,
    node_network,
    node_ready,
    real_plane,
    run,
    tether_argv,
    wait_for,
)

HOST = "edge-bench-1"
TARGET_SECONDS = 10.0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pids_of(comm: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == comm:
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def supervisor_pids() -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if MARKER.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


@dataclass
class Run:
    install_s: float
    init_s: float
    join_s: float
    uninstall_s: float

    @property
    def total_s(self) -> float:
        return self.install_s + self.init_s + self.join_s


@dataclass
class Result:
    runs: list[Run] = field(default_factory=list)
    rss_mib: dict[str, float] = field(default_factory=dict)
    kube_version: str = KUBE_VERSION
    cores: int = os.cpu_count() or 0
    python: str = platform.python_version()
    load_before: str = ""
    load_after: str = ""


def _timed(argv: list[str]) -> float:
    started = time.monotonic()
    run(argv)
    return time.monotonic() - started


def one_run(
    plane: RealPlane, net: Any, mirror: Any, measure_memory: bool
) -> tuple[Run, dict[str, float]]:
    root = Path(tempfile.mkdtemp(prefix="tb-", dir="/tmp"))
    token = root.parent / f"{root.name}.token"
    token.write_text(plane.bootstrap_token() + "\n")
    config = root.parent / f"{root.name}.yaml"
    config.write_text(yaml.safe_dump(node_config(plane, net, token)))
    memory: dict[str, float] = {}
    try:
        install = _timed(tether_argv("node", "install", KUBE_VERSION.rsplit(".", 1)[0],
                                     "--source", str(mirror.path), "--keyring",
                                     str(mirror.keyring), "--root", str(root)))  # fmt: skip
        cni_config(root, net)
        init = _timed(net.argv(tether_argv("node", "init", "-c", f"file://{config}", "--root",
                                           str(root), "--skip", "wait-ready")))  # fmt: skip
        started = time.monotonic()
        wait_for(lambda: node_ready(plane.kube, HOST), "the node to be Ready", 300)
        join = time.monotonic() - started
        if measure_memory:
            time.sleep(10)  # settle: the first sync loops are over
            memory = {
                "kubelet": sum(rss_mib(p) for p in pids_of("kubelet")),
                "containerd": sum(rss_mib(p) for p in pids_of("containerd")),
                "supervisors (2)": sum(rss_mib(p) for p in supervisor_pids()),
            }
        started = time.monotonic()
        run(net.argv(tether_argv("node", "uninstall", "--root", str(root), "--force",
                                 "--reason", "benchmark")))  # fmt: skip
        uninstall = time.monotonic() - started
        assert not load(root).entries, "uninstall left tracked files"
        plane.kube.delete(Node, HOST)
    finally:
        for path in (token, config):
            path.unlink(missing_ok=True)
        subprocess.run(["rm", "-rf", str(root)], check=False)
    return Run(round(install, 2), round(init, 2), round(join, 2), round(uninstall, 2)), memory


def agent_rss(plane: RealPlane, work: Path) -> float:
    """RSS of a real ``tether agent`` once enrolled and beating."""
    with plane.db.session() as s:
        issued = activations.create(
            s, ActivationCreate(site="site1", expires_in="1h", max_registrations=1), actor="bench"
        )
    state = work / "agent-state"
    config = work / "agent.yaml"
    config.write_text(yaml.safe_dump({
        "server": f"https://{plane.settings.agent.host}:{plane.server.ports['agent']}",
        "caFile": str(plane.server.ca_bundle),
        "stateDir": str(state),
        "name": "bench-agent",
        "heartbeatSeconds": 1,
        "activation": {"id": issued.id, "code": issued.code},
    }))  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether.agent", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def ready() -> bool:
            with plane.db.session() as s:
                return svc.get_host(s, "bench-agent").status.state == HostState.READY

        wait_for(ready, "the agent's host to turn Ready", 60)
        time.sleep(10)  # a few more heartbeats
        return rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)


def table(result: Result) -> str:
    rows: list[tuple[str, str]] = []
    for name in ("install_s", "init_s", "join_s", "total_s", "uninstall_s"):
        values = [getattr(r, name) for r in result.runs]
        label = {"install_s": "install (local mirror)", "init_s": "init (to kubelet started)",
                 "join_s": "join (kubelet started to Ready)", "total_s": "install + init + Ready",
                 "uninstall_s": "uninstall"}[name]  # fmt: skip
        rows.append((label, f"median {statistics.median(values):.2f} s  "
                            f"(runs: {', '.join(f'{v:.2f}' for v in values)})"))  # fmt: skip
    total = statistics.median(r.total_s for r in result.runs)
    verdict = "met" if total <= TARGET_SECONDS else "missed"
    rows.append(("target install + init + Ready", f"<= {TARGET_SECONDS:g} s: {verdict}"))
    rows += [(f"RSS {name}", f"{mib:.0f} MiB") for name, mib in result.rss_mib.items()]
    rows.append(("load average before / after", f"{result.load_before} / {result.load_after}"))
    rows.append(("machine", f"{result.cores} cores, Python {result.python}, "
                            f"kubelet v{result.kube_version}"))  # fmt: skip
    width = max(len(name) for name, _ in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  {'-' * 40}"]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=Path("bench/results/realnode.json"))
    args = parser.parse_args(argv)
    missing = missing_requirements()
    if missing:
        print("cannot run a real node here: " + "; ".join(missing), file=sys.stderr)
        return 2
    binaries = find_node_binaries()
    result = Result(load_before=_load())
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp:
        work = Path(tmp)
        print("building the signed mirror ...", file=sys.stderr)
        mirror = build_mirror(work / "artifacts", binaries)
        with node_network() as net, real_plane(work / "plane", net, mirror.path, HOST) as plane:
            for index in range(args.runs):
                print(f"run {index + 1}/{args.runs} ...", file=sys.stderr)
                measured, memory = one_run(plane, net, mirror, measure_memory=index == 0)
                result.runs.append(measured)
                result.rss_mib.update({k: round(v, 1) for k, v in memory.items()})
            result.rss_mib["tether agent"] = round(agent_rss(plane, work), 1)
    result.load_after = _load()
    print(table(result))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    data = asdict(result)
    data["runs"] = [{**asdict(r), "total_s": round(r.total_s, 2)} for r in result.runs]
    args.json.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
