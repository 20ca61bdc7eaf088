"""Runs the pool reconciler, and the nodes controller and CSR approver of every imported cluster.

A cluster is *imported* when the plane holds its kubeconfig
(``<data dir>/clusters/<name>/kubeconfig``) and the Cluster exists in the store. The
manager looks every ``rescan_seconds`` and starts controllers for newly imported
clusters and stops those of deleted ones. The pool reconciler
(:class:`~tether.controllers.pools.PoolController`) and the VPN server pass
(:class:`~tether.controllers.vpnservers.VpnServerController`) run beside them. The pool
reconciler acts on a cluster through the
manager's client of that cluster, and is poked when a cluster's Nodes change. The plane's
server (:mod:`tether.server`) starts the manager next to the APIs.

Clusters fail alone: a cluster whose controllers cannot start (a kubeconfig that is not
YAML, names no context, or holds a broken certificate) is logged once per distinct
failure, listed in :attr:`ControllerManager.failures`, and tried again at every scan;
the clusters after it start as if it were not there. An unreachable API server is not
a start failure: its controllers start and back off until it answers.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from tether.controllers.csr import CSRApprover
from tether.controllers.nodes import NodeHealthController
from tether.controllers.pools import DesiredNotify, PoolController
from tether.controllers.vpnservers import VpnServerController
from tether.kube.client import KubeClient
from tether.services.clusterops import ClusterOps, KubeClusterOps
from tether.services.kubeconn import imported_clusters, open_cluster
from tether.store.db import Database
from tether.store.schema import ClusterRow

__all__ = ["ClusterControllers", "ControllerManager"]

log = logging.getLogger(__name__)


@dataclass
class ClusterControllers:
    client: KubeClient
    nodes: NodeHealthController
    csr: CSRApprover

    def stop(self) -> None:
        self.nodes.stop()
        self.csr.stop()
        self.client.close()


class ControllerManager:
    def __init__(
        self,
        db: Database,
        data_dir: Path,
        *,
        rescan_seconds: float = 30.0,
        resync_seconds: int = 30,
        deny_foreign_csrs: bool = False,
        pool_resync_seconds: float = 5.0,
        on_desired: DesiredNotify | None = None,
    ) -> None:
        self.db = db
        self.data_dir = data_dir
        self.rescan_seconds = rescan_seconds
        self.resync_seconds = resync_seconds
        self.deny_foreign_csrs = deny_foreign_csrs
        self.clusters: dict[str, ClusterControllers] = {}
        #: Clusters whose controllers could not start at the last scan, and why.
        self.failures: dict[str, str] = {}
        self.pools = PoolController(
            db, self._ops, resync_seconds=pool_resync_seconds, on_desired=on_desired
        )
        self.vpn_servers = VpnServerController(
            db, resync_seconds=pool_resync_seconds, on_desired=on_desired
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _wanted(self) -> set[str]:
        with self.db.session() as session:
            known = set(session.scalars(select(ClusterRow.name)))
        return known & set(imported_clusters(self.data_dir))

    def _start(self, name: str) -> ClusterControllers:
        client = open_cluster(self.data_dir, name)
        try:
            group = ClusterControllers(
                client=client,
                nodes=NodeHealthController(
                    self.db,
                    name,
                    client,
                    resync_seconds=self.resync_seconds,
                    hybrid_client=client,
                    network_client=client,
                    on_hosts=self.pools.poke_nodes,
                ),
                csr=CSRApprover(
                    self.db,
                    name,
                    client,
                    deny_foreign=self.deny_foreign_csrs,
                    resync_seconds=self.resync_seconds,
                ),
            )
            group.nodes.start()
            group.csr.start()
        except BaseException:
            client.close()
            raise
        return group

    def scan(self) -> None:
        """Start controllers for new imported clusters, stop those of removed ones; a
        cluster that fails to start does not keep the others from starting."""
        wanted = self._wanted()
        for name in sorted(set(self.clusters) - wanted):
            log.info("stopping controllers of cluster %s", name)
            self.clusters.pop(name).stop()
        for name in sorted(set(self.failures) - wanted):
            del self.failures[name]
        for name in sorted(wanted - set(self.clusters)):
            log.info("starting controllers for cluster %s", name)
            try:
                self.clusters[name] = self._start(name)
            except Exception as exc:  # this cluster's problem, not the next one's
                reason = f"{type(exc).__name__}: {exc}"
                if self.failures.get(name) != reason:
                    log.error("cannot start the controllers of cluster %s: %s", name, reason)
                self.failures[name] = reason
            else:
                self.failures.pop(name, None)

    def _ops(self, cluster: str) -> ClusterOps | None:
        group = self.clusters.get(cluster)
        return KubeClusterOps(group.client) if group is not None else None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan()
            except Exception:
                log.exception("controller manager: scan failed")
            self._stop.wait(self.rescan_seconds)

    def start(self) -> None:
        log.info(
            "controllers started: pools every %.0fs, imported clusters looked for every %.0fs",
            self.pools.resync_seconds,
            self.rescan_seconds,
        )
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="controllers", daemon=True)
        self._thread.start()
        self.pools.start()
        self.vpn_servers.start()

    def stop(self) -> None:
        self.vpn_servers.stop()
        self.pools.stop()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        for name in list(self.clusters):
            self.clusters.pop(name).stop()
