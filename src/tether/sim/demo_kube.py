"""The demo's Kubernetes side: a local control plane and demo artifacts.

When kube-apiserver and etcd are built (``scripts/build-kube.sh``, which the first
``make test`` runs), ``tether demo`` also:

1. starts a local control plane (etcd + kube-apiserver on loopback, fresh each run) and
   imports it as the demo cluster;
2. publishes a signed artifact mirror for the Kubernetes versions of the demo profile
   (:data:`tether.sim.demo.VERSIONS`) in the plane's artifacts directory. The artifacts
   are **SIMULATED**: small shell scripts standing in for containerd, the kubelet and the
   rest, signed with a demo key made on the first run (``<data dir>/demo-artifacts/``);
3. runs its agents as :mod:`tether.sim.agent` (real agents whose kubelet is
   **simulated**), each under its own root prefix.

The pool reconciler does the rest: it picks hosts for each pool and sends them their
join plans; they install, join and turn into Ready Nodes, phase by phase, visible in the
dashboard's event stream.

Without the binaries the demo runs as before (hosts enrol and join pools, no Nodes).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Final

from tether.domain.kubeapi import ImportRequest
from tether.files import write_atomic
from tether.node.artifacts import ArtifactName, Keyring, generate_signing_key
from tether.node.mirror import SourceFile, publish, sync
from tether.services import kubeimport
from tether.settings import Settings
from tether.sim.demo import VERSIONS
from tether.sim.envtest import (
    BinariesNotFoundError,
    ControlPlaneError,
    LocalControlPlane,
    find_binaries,
)
from tether.store.db import Database

__all__ = ["control_plane", "import_cluster", "publish_artifacts"]

log = logging.getLogger(__name__)

CLUSTER: Final = "demo"
#: The Kubernetes versions the demo's mirror serves: those of the demo profile.
KUBERNETES: Final = tuple(VERSIONS.values())
SERVICE_CIDR: Final = "172.20.0.0/16"
#: Artifact -> (version, or None for the Kubernetes version; install path; mode).
_LAYOUT: Final[dict[ArtifactName, tuple[str | None, str, int]]] = {
    "containerd": ("2.1.4", "/usr/local/bin/containerd", 0o755),
    "kubelet": (None, "/usr/local/bin/kubelet", 0o755),
    "kubectl": (None, "/usr/local/bin/kubectl", 0o755),
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
    listing = {
        kube: [
            SourceFile(
                name=name,
                version=version or kube,
                content=f"#!/bin/sh\necho 'SIMULATED {name} {version or kube} (demo)'\n".encode(),
                install_path=path,
                mode=mode,
            )
            for name, (version, path, mode) in _LAYOUT.items()
        ]
        for kube in KUBERNETES
    }
    publish(upstream, listing, (key_id, private))
    keyring_file = base / "keyring.yaml"
    write_atomic(keyring_file, json.dumps({key_id: public.decode()}), 0o644)
    keyring = Keyring.from_pems({key_id: public})
    for kube in KUBERNETES:
        sync(kube, source=str(upstream), to=settings.artifacts_dir, keyring=keyring, arch="amd64")
    return keyring_file
