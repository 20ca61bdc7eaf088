"""SIMULATED host agent for the demo and tests: the real agent, with node plans run
against a :class:`~tether.sim.kubelet_host.SimulatedKubeletHost` instead of systemd.

``python -m tether.sim.agent --config agent.yaml --kubeconfig admin.kubeconfig``
runs exactly what ``tether-agent run`` runs (enrolment, heartbeats, the desired-state
channel, node plans), except that starting ``kubelet`` registers a simulated kubelet's
Node through ``--kubeconfig``. Nothing here is used on a real host.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tether.agent import inventory
from tether.agent.config import AgentConfig
from tether.agent.main import run, setup_logging
from tether.domain.agent import NIC, Inventory
from tether.kube.client import KubeClient
from tether.node.host import HostOps
from tether.node.tracker import host_path
from tether.sim.kubelet_host import SimulatedFacts, SimulatedKubeletHost
from tether.sim.kubesim import KubeletFleet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tether-simagent", description=__doc__)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--address",
        action="append",
        default=[],
        help="A SIMULATED interface address (10.80.1.11/24) the host reports in its inventory.",
    )
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    with KubeClient(args.kubeconfig) as client, KubeletFleet(client) as fleet:

        def host(cfg: AgentConfig) -> HostOps:
            log = host_path(cfg.node.root, "/var/lib/tether/node/simulated-host.jsonl")
            log.parent.mkdir(parents=True, exist_ok=True)
            return SimulatedKubeletHost(cfg.node.root, fleet, args.kubeconfig, log)

        def collect() -> Inventory:
            found = inventory.collect()
            extra = [NIC(name=f"sim{i}", addresses=[a]) for i, a in enumerate(args.address)]
            return found.model_copy(update={"nics": [*found.nics, *extra]})

        return run(
            args.config,
            node_host=host,
            node_facts=lambda _: SimulatedFacts(args.address or None),
            collect_inventory=collect,
        )


if __name__ == "__main__":
    sys.exit(main())
