"""A SIMULATED host for the testbed and the demo: systemd calls recorded, and a simulated
kubelet started in place of the real one.

No kubelet and no systemd run here. When a node action restarts ``kubelet``,
:class:`SimulatedKubeletHost` reads the files the action generated (the kubelet unit's
``--hostname-override``, ``--node-ip`` and ``--node-labels``, the KubeletConfiguration's
``providerID``) and registers that Node through a :class:`~tether.sim.kubesim.KubeletFleet`,
as a real kubelet would after its TLS bootstrap. It then writes the kubelet's kubeconfig
(a copy of the kubeconfig it was given, standing in for the credentials a real kubelet
obtains), so the node tool's readers find it where they look. Stopping ``kubelet`` stops
the simulated kubelet's lease renewals.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

import yaml

from tether.node import render
from tether.node.host import RecordingHost
from tether.node.tracker import host_path, load
from tether.sim.kubesim import KubeletFleet, SimulatedNode

__all__ = ["SimulatedFacts", "SimulatedKubeletHost"]

_FLAG = re.compile(r"--(hostname-override|node-ip|node-labels)=(\S*)")


class SimulatedKubeletHost(RecordingHost):
    def __init__(
        self, root: Path, fleet: KubeletFleet, kubeconfig: Path, log: Path | None = None
    ) -> None:
        super().__init__(log)
        self.root = root
        self.fleet = fleet
        self.kubeconfig = kubeconfig
        # A real kubelet outlives the process that started it.
        if "kubelet" in self.active and host_path(root, render.KUBELET_UNIT).is_file():
            self._run_kubelet()

    def _node(self) -> SimulatedNode:
        unit = host_path(self.root, render.KUBELET_UNIT).read_text()
        flags = dict(_FLAG.findall(unit))
        config = yaml.safe_load(host_path(self.root, render.KUBELET_CONFIG).read_text())
        labels = dict(
            item.split("=", 1) for item in flags.get("node-labels", "").split(",") if item
        )
        version = load(self.root).kubernetes_version
        return SimulatedNode(
            name=flags["hostname-override"],
            labels=labels,
            addresses=[flags["node-ip"]],
            provider_id=str(config["providerID"]),
            kubelet_version=f"v{version}" if version else "v0.0.0",
        )

    def restart(self, unit: str) -> None:
        super().restart(unit)
        if unit == "kubelet":
            self._run_kubelet()

    def _run_kubelet(self) -> None:
        # (Re-)register like a starting kubelet: the Node gets the labels, address and
        # kubelet version of the files the node tool wrote now (after an upgrade, the new one).
        self.fleet.register([self._node()])
        target = host_path(self.root, render.KUBELET_KUBECONFIG)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.kubeconfig, target)
        target.chmod(0o600)

    def reboot(self) -> None:
        """The host goes down (its Node turns Unknown) and comes back with what is enabled."""
        if host_path(self.root, render.KUBELET_UNIT).is_file():
            name = self._node().name
            if name in self.fleet.names:
                self.fleet.stop_node(name, mark_unknown=True)
        super().reboot()
        if "kubelet" in self.active:
            self._run_kubelet()

    def stop(self, unit: str) -> None:
        super().stop(unit)
        if unit == "kubelet":
            name = self._node().name
            if name in self.fleet.names:
                self.fleet.stop_node(name)


class SimulatedFacts:
    """What node validation sees of a SIMULATED host: no swap, the kubelet's ports free (a
    simulated kubelet listens on none), whatever the machine running the simulation has;
    and its node IP on it: any address, or with ``addresses`` only those (the addresses
    the simulated host reports, so a node IP set to another one fails validation as it
    would on a real host)."""

    def __init__(self, addresses: Iterable[str] | None = None) -> None:
        self.addresses = (
            None if addresses is None else {ipaddress.IPv4Interface(a).ip for a in addresses}
        )

    def active_swaps(self) -> list[str]:
        return []

    def has_address(self, ip: ipaddress.IPv4Address) -> bool:
        return self.addresses is None or ip in self.addresses

    def port_in_use(self, port: int) -> bool:
        return False
