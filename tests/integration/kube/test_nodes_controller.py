"""The nodes controller: simulated kubelets + a real kube-apiserver + a real SQLite store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tether.controllers.nodes import NodeHealthController
from tether.domain.states import HostState
from tether.kube.client import KubeClient
from tether.services import resources as svc
from tether.sim.kubesim import KubeletFleet, SimulatedNode
from tether.store.schema import NodeStatusRow

pytestmark = pytest.mark.integration

Namer = Callable[[str], str]
Waiter = Callable[..., None]


def test_node_readiness_drives_host_health_and_node_status(
    plane: Any, kube: KubeClient, unique_name: Namer, wait_for: Waiter
) -> None:
    cluster = unique_name("watch")
    plane.import_cluster(cluster)
    pool = f"{cluster}-dc1"
    hosts = [unique_name("edge") for _ in range(3)]
    plane.pool(cluster, pool, hosts)

    def host_state(name: str) -> tuple[HostState, str]:
        with plane.db.session() as s:
            h = svc.get_host(s, name)
        return h.status.state, h.status.health

    def node_status(name: str) -> tuple[bool | None, str] | None:
        """What the controller recorded of the host's Node (the pool reconciler reads it)."""
        with plane.db.session() as s:
            row = s.get(NodeStatusRow, name)
            return None if row is None else (row.ready, row.kubelet_version)

    fleet = KubeletFleet(kube, lease_interval=1.0)
    fleet.register([SimulatedNode(h, cluster=cluster) for h in hosts[:2]])  # one not joined yet
    with fleet, plane.client(cluster) as tether:  # watches as Tether's service account
        controller = NodeHealthController(plane.db, cluster, tether, resync_seconds=1)
        controller.start()
        try:
            # Two of three nodes Ready; the third has not joined, so nothing is recorded.
            wait_for(lambda: host_state(hosts[0]) == (HostState.IN_USE, "Healthy"))
            wait_for(lambda: node_status(hosts[0]) == (True, "v1.37.2"))
            assert node_status(hosts[2]) is None
            fleet.register([SimulatedNode(hosts[2], cluster=cluster)])
            wait_for(lambda: node_status(hosts[2]) == (True, "v1.37.2"))

            fleet.set_ready(hosts[1], False, reason="KubeletNotReady")
            wait_for(lambda: host_state(hosts[1]) == (HostState.UNHEALTHY, "Unhealthy"))
            wait_for(lambda: node_status(hosts[1]) == (False, "v1.37.2"))
            assert host_state(hosts[0]) == (HostState.IN_USE, "Healthy")

            fleet.set_ready(hosts[1], True)
            wait_for(lambda: host_state(hosts[1]) == (HostState.IN_USE, "Healthy"))
            wait_for(lambda: node_status(hosts[1]) == (True, "v1.37.2"))
        finally:
            controller.stop()

        host_events = [(e.type, e.reason) for e in plane.events("Host", hosts[1])]
        assert ("Warning", "NodeNotReady") in host_events
        assert ("Normal", "NodeReady") in host_events
        warning = next(e for e in plane.events("Host", hosts[1]) if e.reason == "NodeNotReady")
        assert warning.message.startswith("InUse -> Unhealthy (ChecksFailed)")
        assert "KubeletNotReady" in warning.message

        # Level-triggered: a restarted controller recomputes from the list and changes nothing.
        before = plane.events()
        restarted = NodeHealthController(plane.db, cluster, tether, resync_seconds=1)
        restarted.start()
        try:
            wait_for(lambda: restarted.loop.lists == 1 and restarted.loop.watches >= 2)
        finally:
            restarted.stop()
        assert restarted.applied == []
        assert plane.events() == before

        # A node that goes NotReady while no controller runs is caught by the relist.
        fleet.set_ready(hosts[0], False)
        third = NodeHealthController(plane.db, cluster, tether, resync_seconds=1)
        third.start()
        try:
            wait_for(lambda: node_status(hosts[0]) == (False, "v1.37.2"))
        finally:
            third.stop()
        assert host_state(hosts[0]) == (HostState.UNHEALTHY, "Unhealthy")
    fleet.stop(delete=True)


def test_manager_runs_controllers_for_imported_clusters_each_on_its_own(
    plane: Any, kube: KubeClient, unique_name: Namer, wait_for: Waiter
) -> None:
    """Controllers start in name order; the first cluster's kubeconfig is broken (not
    YAML). The second still gets its controllers (its Node status is recorded Ready), the
    first starts once fixed, and stopping the manager stops them all."""
    from tether.controllers.manager import ControllerManager
    from tether.services.kubeconn import kubeconfig_path

    prefix = unique_name("iso")
    broken, good = f"{prefix}-a", f"{prefix}-b"
    for cluster in (broken, good):
        plane.import_cluster(cluster)
    pool, host = f"{good}-p", unique_name("edge")
    plane.pool(good, pool, [host])
    stored = kubeconfig_path(plane.data_dir, broken)
    working = stored.read_text()
    stored.write_text("clusters: [unclosed\n")
    manager = ControllerManager(plane.db, plane.data_dir, rescan_seconds=0.2, resync_seconds=1)
    fleet = KubeletFleet(kube)
    fleet.register([SimulatedNode(host, cluster=good)])
    manager.start()
    try:
        wait_for(lambda: good in manager.clusters)

        def ready() -> bool:
            with plane.db.session() as s:
                row = s.get(NodeStatusRow, host)
                return row is not None and row.ready is True

        wait_for(ready)
        assert broken not in manager.clusters
        assert "ConfigError" in manager.failures[broken]

        stored.write_text(working)
        wait_for(lambda: broken in manager.clusters)
        assert broken not in manager.failures
    finally:
        manager.stop()
        fleet.stop(delete=True)
    assert manager.clusters == {}


def test_hybrid_mode_labels_nodes_that_join_later(
    plane: Any, kube: KubeClient, unique_name: Namer, wait_for: Waiter
) -> None:
    from lightkube.resources.core_v1 import Node

    from tether.domain.hybrid import COMPUTE_TYPE_LABEL, EKS_COMPUTE_TYPE_LABEL, POOL_LABEL
    from tether.services.hybrid import set_hybrid

    cluster = unique_name("late")
    plane.import_cluster(cluster)
    pool = f"{cluster}-p"
    early, late = unique_name("edge"), unique_name("edge")
    plane.pool(cluster, pool, [early, late])
    fleet = KubeletFleet(kube, lease_interval=1.0)
    fleet.register([SimulatedNode(early, cluster=cluster)])
    with fleet, plane.client(cluster) as tether:
        with plane.db.session() as s:
            report = set_hybrid(s, cluster, enable=True, client=tether, eks_labels=True)
        assert report.hybrid_nodes == [early]
        with plane.db.session() as s:
            spec = svc.get_cluster(s, cluster).spec
        assert spec.hybrid_enabled and spec.eks_compute_type_label

        controller = NodeHealthController(
            plane.db, cluster, tether, resync_seconds=1, hybrid_client=tether
        )
        controller.start()
        try:
            fleet.register([SimulatedNode(late, cluster=cluster)])

            def labelled() -> bool:
                labels = kube.get(Node, late).metadata.labels or {}
                return labels.get(COMPUTE_TYPE_LABEL) == "hybrid"

            wait_for(labelled)
            labels = kube.get(Node, late).metadata.labels or {}
            assert labels[EKS_COMPUTE_TYPE_LABEL] == "hybrid"
            assert labels[POOL_LABEL] == pool
        finally:
            controller.stop()
        with plane.db.session() as s:
            set_hybrid(s, cluster, enable=False, client=tether)
            assert not svc.get_cluster(s, cluster).spec.hybrid_enabled
        assert COMPUTE_TYPE_LABEL not in (kube.get(Node, late).metadata.labels or {})
    fleet.stop(delete=True)
