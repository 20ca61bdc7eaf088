"""The nodes controller: Node readiness in a cluster -> host health and Node status in the plane.

It watches the cluster's Nodes with a resumable list-then-watch
(:class:`~tether.controllers.watch.ListWatchLoop`), keeps each Node's readiness, and
whenever a Node's readiness changes (or on the periodic resync, which also catches
hosts assigned on the plane's side) asks
:func:`tether.services.health.reconcile_cluster_health` to bring hosts (by node name =
host name) in line (``ChecksFailed``/``ChecksPassed``, each change an event) and
:func:`tether.services.health.record_nodes` to keep ``node_status``, which the pool
reconciler reads; the hosts whose Nodes changed are handed to ``on_hosts`` with their
pools, so those pools' reconcile starts at once.

Level-triggered: the plan is recomputed from the full picture every time, so a restart,
a relist or a duplicate event changes nothing that is already right.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from tether.controllers.watch import ListWatchLoop, WatchController, WatchingClient
from tether.domain.nodehealth import HealthPlan, NodeSnapshot
from tether.errors import PlaneError
from tether.kube.client import KubeClient, WatchEvent
from tether.kube.errors import KubeError
from tether.kube.facts import node_snapshot
from tether.kube.resources import Node
from tether.metrics import reconciling
from tether.services.clusternet import reconcile_network
from tether.services.health import reconcile_cluster_health, record_nodes
from tether.services.hybrid import set_hybrid
from tether.services.resources import get_cluster
from tether.store.db import Database

__all__ = ["NodeHealthController", "node_snapshot"]

log = logging.getLogger(__name__)


class NodeHealthController(WatchController[Node]):
    """Watches one cluster's Nodes and keeps its hosts' and pools' health (module doc)."""

    def __init__(
        self,
        db: Database,
        cluster: str,
        client: WatchingClient,
        *,
        resync_seconds: int = 30,
        sleep: Callable[[float], Any] | None = None,
        hybrid_client: KubeClient | None = None,
        network_client: KubeClient | None = None,
        on_hosts: Callable[[Mapping[str, str]], None] | None = None,
    ) -> None:
        self.db = db
        self.cluster = cluster
        self.on_hosts = on_hosts
        #: When given, hybrid mode is kept on the cluster's nodes as they change.
        self.hybrid_client = hybrid_client
        #: When given, the pools' network objects and Node pod CIDRs are kept too.
        self.network_client = network_client
        self._nodes: dict[str, NodeSnapshot] = {}
        self._lock = threading.Lock()
        self.loop: ListWatchLoop[Node] = ListWatchLoop(
            client,
            Node,
            on_list=self._on_list,
            on_event=self._on_event,
            on_resync=self.reconcile,
            resync_seconds=resync_seconds,
            sleep=sleep,
            name=f"nodes[{cluster}]",
        )
        #: Plans applied so far that changed something (for tests and logs).
        self.applied: list[HealthPlan] = []
        #: Network passes run so far (for tests).
        self.network_passes = 0

    # -- cache -------------------------------------------------------------------------

    def _on_list(self, nodes: list[Node]) -> None:
        snapshots = {}
        for node in nodes:
            snapshot = node_snapshot(node)
            if node.metadata and node.metadata.name and snapshot is not None:
                snapshots[node.metadata.name] = snapshot
        with self._lock:
            self._nodes = snapshots
        self.reconcile()

    def _on_event(self, event: WatchEvent[Node]) -> None:
        meta = event.object.metadata
        if meta is None or not meta.name:
            return
        after = None if event.type == "DELETED" else node_snapshot(event.object)
        with self._lock:
            before = self._nodes.get(meta.name)
            if after is None:
                self._nodes.pop(meta.name, None)
            else:
                self._nodes[meta.name] = after
        if before != after:
            # A new Node needs its pod CIDR (before its CNI starts) and hybrid labels at
            # once. Other changes (readiness, cordons: most events, many a second in a
            # rollout) move only health; the cluster's objects wait for the resync.
            self.reconcile(cluster_objects=before is None and after is not None)

    # -- reconcile ---------------------------------------------------------------------

    def reconcile(self, cluster_objects: bool = True) -> HealthPlan:
        """Bring the store in line with the last seen Nodes; returns what changed. With
        ``cluster_objects``, also keep hybrid mode and the pools' network in the cluster."""
        with reconciling("nodes"):
            return self._reconcile(cluster_objects)

    def _reconcile(self, cluster_objects: bool = True) -> HealthPlan:
        with self._lock:
            nodes = dict(self._nodes)
        with self.db.session() as session:
            plan = reconcile_cluster_health(session, self.cluster, nodes)
            changed = record_nodes(session, self.cluster, nodes)
        if changed and self.on_hosts is not None:
            self.on_hosts(changed)
        if cluster_objects and self.hybrid_client is not None:
            self._keep_hybrid(self.hybrid_client)
        if cluster_objects and self.network_client is not None:
            self._keep_network(self.network_client)
        if not plan.empty:
            self.applied.append(plan)
            for host in plan.hosts:
                log.info(
                    "host %s: %s -> %s (%s)",
                    host.host,
                    host.old_state,
                    host.new_state,
                    host.message,
                )
        return plan

    def _keep_network(self, client: KubeClient) -> None:
        """Keep the pools' BGP objects and every pool Node's pod CIDR (level-triggered:
        on every new Node and resync, so a Node gets its block as soon as it registers,
        before its CNI starts; a deleted pool's objects go at the next resync)."""
        self.network_passes += 1
        try:
            reconcile_network(self.db, self.cluster, client)
        except (PlaneError, KubeError) as exc:
            log.warning("cluster %s: keeping the pools' network failed: %s", self.cluster, exc)

    def _keep_hybrid(self, client: KubeClient) -> None:
        """While hybrid mode is on, label nodes that joined since (idempotent, level-triggered)."""
        with self.db.session() as session:
            spec = get_cluster(session, self.cluster).spec
            if not spec.hybrid_enabled:
                return
            try:
                set_hybrid(
                    session,
                    self.cluster,
                    enable=True,
                    client=client,
                    eks_labels=spec.eks_compute_type_label,
                )
            except PlaneError as exc:
                log.warning("cluster %s: keeping hybrid mode failed: %s", self.cluster, exc)
