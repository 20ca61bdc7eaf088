"""SIMULATED host agent for the demo and tests: the real agent, with node plans run
against a :class:`~tether.sim.kubelet_host.SimulatedKubeletHost` instead of systemd.

``python -m tether.sim.agent --config agent.yaml --kubeconfig admin.kubeconfig``
runs exactly what ``tether-agent run`` runs (enrolment, heartbeats, the desired-state
channel, node plans), except that starting ``kubelet`` registers a simulated kubelet's
Node through ``--kubeconfig``, and a re-image is SIMULATED: once the plan is reported,
the kubelet stops, the agent's state and node root are emptied (the new image's disk)
and the agent starts again, so it enrols again with its activation. Nothing here is
used on a real host.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from tether.agent import inventory
from tether.agent.config import AgentConfig
from tether.agent.main import run, setup_logging
from tether.agent.runner import Agent
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

        reimaged: list[AgentConfig] = []

        def reimage(agent: Agent) -> None:
            if agent.name in fleet.names:
                fleet.stop_node(agent.name, mark_unknown=True)
            reimaged.append(agent.config)
            agent.stop.set()

        while True:
            reimaged.clear()
            code = run(
                args.config,
                node_host=host,
                node_facts=lambda _: SimulatedFacts(args.address or None),
                collect_inventory=collect,
                reimage=reimage,
            )
            if not reimaged:
                return code
            _fresh_disk(reimaged[0])


def _fresh_disk(config: AgentConfig) -> None:
    """What a new image's first boot finds: no identity, no node (SIMULATED re-image)."""
    if config.node.root.resolve() == Path("/"):
        raise SystemExit("a SIMULATED re-image never empties / (node.root)")
    shutil.rmtree(config.state_dir, ignore_errors=True)
    shutil.rmtree(config.node.root, ignore_errors=True)
    config.node.root.mkdir(parents=True)


if __name__ == "__main__":
    sys.exit(main())
