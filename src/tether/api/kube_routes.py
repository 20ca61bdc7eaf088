"""REST endpoints of the Kubernetes integration, under ``/api/v1``.

- ``POST /clusters/{name}/import``: import (or re-import) a cluster from a kubeconfig;
- ``POST /clusters/{name}/hybrid/enable`` and ``/hybrid/disable``: hybrid mode;
- ``POST /hosts/{name}/bootstrap-token``: a short-lived join token for a host;
- ``POST /hosts/{name}/cordon``, ``/uncordon``, ``/drain``: the host's node.

Handlers are thin: one service call. Operations on a cluster use the credentials the
import stored (Tether's own service account), never the caller's.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, Path, status

from tether.api.deps import DB, Config, Operator
from tether.domain.drain import DrainOptions
from tether.domain.kubeapi import (
    BootstrapTokenGrant,
    BootstrapTokenRequest,
    DrainReport,
    DrainRequest,
    HybridReport,
    HybridRequest,
    ImportRequest,
    ImportResult,
)
from tether.domain.models import EventType, Name, ObjectKind
from tether.services import drain as drain_svc
from tether.services import events, hybrid, kubeconn, kubeimport, nodeidentity
from tether.services import resources as svc
from tether.store.db import Database

router = APIRouter(prefix="/api/v1")

ClusterName = Annotated[Name, Path(description="Cluster name.")]
HostName = Annotated[Name, Path(description="Host name (= its node name).")]


@router.post("/clusters/{name}/import", tags=["clusters"])
def import_cluster(
    name: ClusterName, body: ImportRequest, db: DB, settings: Config, _: Operator
) -> ImportResult:
    """Check the cluster's version, install Tether's objects, store Tether's credentials.

    The kubeconfig must be self-contained (no file references, no exec plugins); it is
    used for this request only and not stored.
    """
    with db.session() as s:
        return kubeimport.import_cluster(s, name, body, data_dir=settings.paths.data_dir)


def _hybrid(
    name: str, body: HybridRequest, db: Database, data_dir: FsPath, enable: bool
) -> HybridReport:
    with db.session() as s:
        svc.get_cluster(s, name)
    with kubeconn.cluster_client(data_dir, name) as client, db.session() as s:
        return hybrid.set_hybrid(
            s, name, enable=enable, client=client, eks_labels=body.eks_labels, dry_run=body.dry_run
        )


@router.post("/clusters/{name}/hybrid/enable", tags=["clusters"])
def enable_hybrid(
    name: ClusterName, body: HybridRequest, db: DB, settings: Config, _: Operator
) -> HybridReport:
    """Label hybrid nodes and pin the CNI to them (idempotent; see docs/kubernetes.md)."""
    return _hybrid(name, body, db, settings.paths.data_dir, True)


@router.post("/clusters/{name}/hybrid/disable", tags=["clusters"])
def disable_hybrid(
    name: ClusterName, body: HybridRequest, db: DB, settings: Config, _: Operator
) -> HybridReport:
    """Remove exactly what enabling added."""
    return _hybrid(name, body, db, settings.paths.data_dir, False)


@router.post("/hosts/{name}/bootstrap-token", status_code=status.HTTP_201_CREATED, tags=["hosts"])
def mint_bootstrap_token(
    name: HostName, body: BootstrapTokenRequest, db: DB, settings: Config, _: Operator
) -> BootstrapTokenGrant:
    """A short-lived bootstrap token for the host to join its pool's cluster (shown once)."""
    with kubeconn.node_client(db, settings.paths.data_dir, name) as client, db.session() as s:
        return nodeidentity.mint_bootstrap_token(
            s, name, client=client, ttl=timedelta(seconds=body.ttl_seconds)
        )


def _set_unschedulable(
    name: str, db: Database, data_dir: FsPath, unschedulable: bool
) -> dict[str, object]:
    with kubeconn.node_client(db, data_dir, name) as client:
        changed = drain_svc.set_unschedulable(client, name, unschedulable)
    if changed:
        reason, message = (
            ("Cordoned", f"node {name} cordoned")
            if unschedulable
            else ("Uncordoned", f"node {name} schedulable again")
        )
        with db.session() as s:
            events.record(s, ObjectKind.HOST, name, reason, message)
    return {"node": name, "changed": changed}


@router.post("/hosts/{name}/cordon", tags=["hosts"])
def cordon(name: HostName, db: DB, settings: Config, _: Operator) -> dict[str, object]:
    return _set_unschedulable(name, db, settings.paths.data_dir, True)


@router.post("/hosts/{name}/uncordon", tags=["hosts"])
def uncordon(name: HostName, db: DB, settings: Config, _: Operator) -> dict[str, object]:
    return _set_unschedulable(name, db, settings.paths.data_dir, False)


@router.post("/hosts/{name}/drain", tags=["hosts"])
def drain(name: HostName, body: DrainRequest, db: DB, settings: Config, _: Operator) -> DrainReport:
    """Cordon and drain the host's node; progress is recorded as Host events as it goes.

    Blocks until the node is drained or ``timeoutSeconds`` pass (409 ``drain_timeout``);
    a pod that blocks the drain (emptyDir, unmanaged) refuses it at once (409
    ``drain_blocked``) with nothing evicted.
    """

    def progress(step: drain_svc.DrainProgress) -> None:
        with db.session() as s:
            events.record(
                s,
                ObjectKind.HOST,
                name,
                step.reason,
                step.message,
                EventType.WARNING if step.warning else EventType.NORMAL,
            )

    options = DrainOptions(
        timeout_seconds=body.timeout_seconds,
        delete_emptydir_data=body.delete_empty_dir_data,
        force=body.force,
        grace_period_seconds=body.grace_period_seconds,
        wait_for_delete=body.wait_for_delete,
    )
    with kubeconn.node_client(db, settings.paths.data_dir, name) as client:
        return drain_svc.drain_node(client, name, options, progress=progress)
