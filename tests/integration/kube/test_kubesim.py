"""The simulated kubelet fleet against a real kube-apiserver (no wall-clock assertions)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pytest
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node

from tether.kube.client import KubeClient
from tether.kube.errors import NotFound
from tether.sim.kubesim import LEASE_NAMESPACE, KubeletFleet, SimulatedNode

pytestmark = pytest.mark.integration

Namer = Callable[[str], str]
Waiter = Callable[..., None]


def renew_time(kube: KubeClient, name: str) -> datetime:
    lease = kube.get(Lease, name, namespace=LEASE_NAMESPACE)
    assert lease.spec is not None and lease.spec.renewTime is not None
    return lease.spec.renewTime


def ready(kube: KubeClient, name: str) -> str | None:
    status = kube.get(Node, name).status
    assert status is not None
    return next((c.status for c in status.conditions or [] if c.type == "Ready"), None)


def test_fleet_registers_nodes_and_renews_their_leases(
    kube: KubeClient, unique_name: Namer, wait_for: Waiter
) -> None:
    prefix = unique_name("sim")
    specs = [
        SimulatedNode(
            f"{prefix}-{i}",
            cluster="prod",
            labels={"rack": f"r{i}"},
            addresses=[f"10.80.1.{10 + i}"],
        )
        for i in range(20)
    ]
    fleet = KubeletFleet(kube, lease_interval=0.2, workers=4)
    fleet.register(specs)
    first = specs[0].name
    node = kube.get(Node, first)
    assert node.spec is not None and node.spec.providerID == f"tether://prod/{first}"
    assert node.metadata is not None and node.metadata.labels is not None
    assert node.metadata.labels["rack"] == "r0"
    assert node.metadata.labels["kubernetes.io/hostname"] == first
    assert node.status is not None and node.status.nodeInfo is not None
    assert node.status.nodeInfo.kubeletVersion == "v1.37.2"
    assert node.status.capacity is not None and node.status.capacity["pods"] == "110"
    assert {(a.type, a.address) for a in node.status.addresses or []} == {
        ("InternalIP", "10.80.1.10"),
        ("Hostname", first),
    }
    assert ready(kube, first) == "True"
    lease = kube.get(Lease, first, namespace=LEASE_NAMESPACE)
    assert lease.spec is not None and lease.spec.holderIdentity == first
    assert lease.metadata is not None and lease.metadata.ownerReferences is not None
    assert lease.metadata.ownerReferences[0].uid == node.metadata.uid

    initial = {s.name: renew_time(kube, s.name) for s in specs}
    with fleet:
        wait_for(lambda: all(renew_time(kube, n) > t for n, t in initial.items()))
        wait_for(lambda: fleet.stats.renewals >= 3 * len(specs))
        assert fleet.stats.errors == 0
        assert len(fleet.renewal_lags()) == fleet.stats.renewals

        fleet.set_ready(first, False)
        assert ready(kube, first) == "False"
        fleet.set_ready(first, True)
        assert ready(kube, first) == "True"

        # A stopped kubelet stops renewing; mark_unknown plays the node lifecycle controller.
        second = specs[1].name
        fleet.stop_node(second, mark_unknown=True)
        assert ready(kube, second) == "Unknown"
        stopped_at = renew_time(kube, second)
        others = renew_time(kube, specs[2].name)
        wait_for(lambda: renew_time(kube, specs[2].name) > others)
        wait_for(lambda: renew_time(kube, specs[2].name) > renew_time(kube, second))
        assert renew_time(kube, second) == stopped_at
        fleet.start_node(second)
        wait_for(lambda: renew_time(kube, second) > stopped_at)
    fleet.stop(delete=True)
    with pytest.raises(NotFound):
        kube.get(Node, first)
    with pytest.raises(NotFound):
        kube.get(Lease, first, namespace=LEASE_NAMESPACE)


def test_registering_an_existing_node_adopts_it(
    kube: KubeClient, unique_name: Namer, wait_for: Waiter
) -> None:
    name = unique_name("sim")
    with KubeletFleet(kube, lease_interval=0.2) as fleet:
        fleet.register([SimulatedNode(name)])
    with KubeletFleet(kube, lease_interval=0.2) as again:
        again.register([SimulatedNode(name, labels={"new": "label"})])
        labels = kube.get(Node, name).metadata.labels  # type: ignore[union-attr]
        assert labels is not None and labels["new"] == "label"
        before = renew_time(kube, name)
        wait_for(lambda: renew_time(kube, name) > before)
    again.stop(delete=True)
