"""The demo's Kubernetes side: a local control plane, demo artifacts, and join plans.

When kube-apiserver and etcd are built (``scripts/build-kube.sh``, which the first
``make test`` runs), ``tether demo`` also:

1. starts a local control plane (etcd + kube-apiserver on loopback, fresh each run) and
   imports it as the demo cluster;
2. publishes a signed artifact mirror for Kubernetes :data:`VERSION` in the plane's
   artifacts directory. The artifacts are **SIMULATED**: small shell scripts standing in
   for containerd, the kubelet and the rest, signed with a demo key made on the first run
   (``<data dir>/demo-artifacts/``);
3. runs its agents as :mod:`tether.sim.agent` (real agents whose kubelet is
   **simulated**), each under its own root prefix;
4. sends every host in a demo pool a ``join`` plan, so the hosts install, join and turn
   into Ready Nodes, phase by phase, visible in the dashboard's event stream.

Without the binaries the demo runs as before (hosts enrol and join pools, no Nodes).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Final

from sqlalchemy import select

from tether.domain.kubeapi import ImportRequest
from tether.domain.states import HostState
from tether.files import write_atomic
from tether.node.artifacts import ArtifactName, Keyring, generate_signing_key
from tether.node.mirror import SourceFile, publish, sync
from tether.services import desired, kubeimport
from tether.services import resources as svc
from tether.settings import Settings
from tether.sim.envtest import (
    BinariesNotFoundError,
    ControlPlaneError,
    LocalControlPlane,
    find_binaries,
)
from tether.store.db import Database
from tether.store.schema import HostRow

__all__ = ["VERSION", "control_plane", "import_cluster", "publish_artifacts", "send_join_plans"]

log = logging.getLogger(__name__)

#: The Kubernetes version the demo's hosts install (3 minors behind the control plane).
VERSION: Final = "1.34.2"
CLUSTER: Final = "demo"
SERVICE_CIDR: Final = "172.20.0.0/16"
_LAYOUT: Final[dict[ArtifactName, tuple[str, str, int]]] = {
    "containerd": ("2.1.4", "/usr/local/bin/containerd", 0o755),
    "kubelet": (VERSION, "/usr/local/bin/kubelet", 0o755),
    "kubectl": (VERSION, "/usr/local/bin/kubectl", 0o755),
    "cni-plugins": ("1.7.1", "/opt/cni/bin/bridge", 0o755),
    "credential-helper": ("0.1.0", "/etc/tether/credential-helper.yaml", 0o640),
}


def control_plane() -> LocalControlPlane | None:
    """A started local control plane, or None (with the reason logged) if not built."""
    try:
        find_binaries()
    except BinariesNotFoundError as exc:
        log.info("no local Kubernetes for the demo: %s", exc)
        return None
    cp = LocalControlPlane(service_cluster_ip_range=SERVICE_CIDR)
    try:
        cp.start()
    except ControlPlaneError as exc:
        log.warning("the demo's local control plane did not start: %s", exc)
        return None
    return cp


def import_cluster(db: Database, settings: Settings, cp: LocalControlPlane) -> None:
    """Import the control plane as the demo cluster (its endpoint and CA change each run)."""
    body = ImportRequest(kubeconfig=cp.kubeconfig.read_text())
    with db.session() as session:
        kubeimport.import_cluster(session, CLUSTER, body, data_dir=settings.paths.data_dir)


def _signing_key(base: Path) -> tuple[str, bytes, bytes]:
    """The demo's artifact signing key ``(key id, private PEM, public PEM)``, made once and
    kept (the private key 0600)."""
    files = [base / "signing-key.id", base / "signing-key.pem", base / "signing-key.pub"]
    if all(f.is_file() for f in files):
        return files[0].read_text().strip(), files[1].read_bytes(), files[2].read_bytes()
    key_id, private, public = generate_signing_key()
    write_atomic(files[1], private, 0o600)
    write_atomic(files[2], public, 0o644)
    write_atomic(files[0], key_id + "\n", 0o644)  # last: its presence means all are there
    return key_id, private, public


def publish_artifacts(settings: Settings) -> Path:
    """Sign the SIMULATED demo artifacts and mirror them into the plane's artifacts
    directory; returns the keyring file agents verify the manifest with."""
    base = settings.paths.data_dir / "demo-artifacts"
    key_id, private, public = _signing_key(base)
    upstream = base / "upstream"
    files = [
        SourceFile(
            name=name,
            version=version,
            content=f"#!/bin/sh\necho 'SIMULATED {name} {version} (tether demo)'\n".encode(),
            install_path=path,
            mode=mode,
        )
        for name, (version, path, mode) in _LAYOUT.items()
    ]
    publish(upstream, {VERSION: files}, (key_id, private))
    keyring_file = base / "keyring.yaml"
    write_atomic(keyring_file, json.dumps({key_id: public.decode()}), 0o644)
    keyring = Keyring.from_pems({key_id: public})
    sync(VERSION, source=str(upstream), to=settings.artifacts_dir, keyring=keyring, arch="amd64")
    return keyring_file


def join_plan(cp: LocalControlPlane, host: str) -> dict[str, Any]:
    """A join plan for a demo host. Every demo host is a process on this machine, so its
    node IP is 127.0.0.1 (validation checks the IP is on an interface here)."""
    node_config = {
        "apiVersion": "tether.io/v1alpha1",
        "kind": "NodeConfig",
        "spec": {
            "cluster": {
                "name": CLUSTER,
                "apiServerEndpoint": cp.url,
                "certificateAuthority": cp.ca_cert_pem.decode(),
                "serviceCIDR": SERVICE_CIDR,
            },
            "node": {"name": host, "ip": "127.0.0.1", "nodeCIDR": "127.0.0.0/8"},
        },
    }
    return {"node": {"action": "join", "version": VERSION, "nodeConfig": node_config}}


def send_join_plans(db: Database, cp: LocalControlPlane) -> list[str]:
    """Give every host in a demo pool its join plan (unchanged plans are not re-sent)."""
    sent: list[str] = []
    with db.session() as session:
        names = session.scalars(
            select(HostRow.name).where(HostRow.state == HostState.IN_USE).order_by(HostRow.name)
        ).all()
        for name in names:
            pool = svc.get_host(session, name).spec.pool
            if pool and svc.get_pool(session, pool).spec.cluster == CLUSTER:
                desired.set_desired(session, name, join_plan(cp, name))
                sent.append(name)
    return sent
