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

import base64
import ipaddress
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tether.domain.nodeidentity import KUBELET_CLIENT_SIGNER, NODE_GROUP
from tether.files import write_atomic
from tether.kube.client import KubeClient
from tether.kube.resources import CertificateSigningRequest
from tether.node import render
from tether.node.host import RecordingHost
from tether.node.tracker import host_path, load
from tether.pki.authority import private_key_pem
from tether.sim.kubesim import KubeletFleet, SimulatedNode

__all__ = ["BootstrappingKubeletHost", "SimulatedFacts", "SimulatedKubeletHost", "tls_bootstrap"]

_FLAG = re.compile(r"--(hostname-override|node-ip|node-labels)=(\S*)")


class SimulatedKubeletHost(RecordingHost):
    """Registers the Node through ``fleet`` and gives the kubelet a copy of ``kubeconfig``
    (see the module docstring); :class:`BootstrappingKubeletHost` passes neither."""

    def __init__(
        self,
        root: Path,
        fleet: KubeletFleet | None,
        kubeconfig: Path | None,
        log: Path | None = None,
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

    def _credentials(self, name: str) -> None:
        """The kubelet's own kubeconfig: here a copy of the one this host was given."""
        assert self.kubeconfig is not None
        target = host_path(self.root, render.KUBELET_KUBECONFIG)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.kubeconfig, target)
        target.chmod(0o600)

    def _fleet(self) -> KubeletFleet:
        assert self.fleet is not None
        return self.fleet

    def _run_kubelet(self) -> None:
        # (Re-)register like a starting kubelet: the Node gets the labels, address and
        # kubelet version of the files the node tool wrote now (after an upgrade, the new one).
        node = self._node()
        self._credentials(node.name)
        self._fleet().register([node])

    def reboot(self) -> None:
        """The host goes down (its Node turns Unknown) and comes back with what is enabled."""
        if host_path(self.root, render.KUBELET_UNIT).is_file():
            name = self._node().name
            fleet = self._fleet()
            if name in fleet.names:
                fleet.stop_node(name, mark_unknown=True)
        super().reboot()
        if "kubelet" in self.active:
            self._run_kubelet()

    def stop(self, unit: str) -> None:
        super().stop(unit)
        if unit == "kubelet":
            name = self._node().name
            fleet = self._fleet()
            if name in fleet.names:
                fleet.stop_node(name)


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

    # A simulated host is a plain systemd host: nothing to adapt the files to. What
    # exists is what exists (it only decides what uninstall asks the recording host to
    # remove, which removes nothing).
    def systemd_running(self) -> bool:
        return True

    def cgroup_v2(self) -> bool:
        return True

    def cap_sys_resource(self) -> bool:
        return True

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def cgroup_exists(self, name: str) -> bool:
        return False


def _kubeconfig(server: str, ca_pem: bytes, user: dict[str, str]) -> dict[str, Any]:
    b64 = base64.b64encode
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "default",
                "cluster": {"server": server, "certificate-authority-data": b64(ca_pem).decode()},
            }
        ],
        "users": [{"name": "default", "user": user}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
        "current-context": "default",
    }


def tls_bootstrap(root: Path, name: str, *, timeout: float = 60.0) -> Path:
    """What a kubelet does on its first start, SIMULATED: authenticate with the bootstrap
    kubeconfig ``tether node init`` wrote (its bootstrap token), ask for a client
    certificate for ``system:node:<name>`` with a CertificateSigningRequest, wait until it
    is approved and signed, and write the kubelet's kubeconfig with that certificate.

    Paths in the bootstrap kubeconfig (the cluster CA file) are real paths: under a root
    prefix, ``tether node init`` writes them prefixed already.
    Raises :class:`RuntimeError` when the request is denied or not signed in ``timeout``
    seconds. Returns the kubelet kubeconfig's path."""
    bootstrap = json.loads(host_path(root, render.BOOTSTRAP_KUBECONFIG).read_text())
    server = bootstrap["clusters"][0]["cluster"]["server"]
    ca_pem = Path(bootstrap["clusters"][0]["cluster"]["certificate-authority"])
    token = bootstrap["users"][0]["user"]["token"]
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODE_GROUP),
            x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{name}"),
        ]
    )
    request = (
        x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    )
    csr_name = f"node-csr-{uuid.uuid4().hex[:16]}"
    csr = cast(
        CertificateSigningRequest,
        CertificateSigningRequest.from_dict(
            {
                "metadata": {"name": csr_name},
                "spec": {
                    "request": base64.b64encode(
                        request.public_bytes(serialization.Encoding.PEM)
                    ).decode(),
                    "signerName": KUBELET_CLIENT_SIGNER,
                    "usages": ["digital signature", "client auth"],
                },
            }
        ),
    )
    deadline = time.monotonic() + timeout
    with KubeClient(_kubeconfig(server, ca_pem.read_bytes(), {"token": token})) as client:
        client.create(csr)
        while True:
            got = client.get(CertificateSigningRequest, csr_name)
            status = got.status
            conditions = {c.type: c for c in (status.conditions if status else None) or []}
            if "Denied" in conditions:
                raise RuntimeError(f"{csr_name} denied: {conditions['Denied'].message}")
            if status is not None and status.certificate:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{csr_name} not approved and signed within {timeout:g}s")
            time.sleep(0.2)
    raw = status.certificate
    cert_pem = base64.b64decode(raw) if isinstance(raw, str) else bytes(raw)
    target = host_path(root, render.KUBELET_KUBECONFIG)
    user = {
        "client-certificate-data": base64.b64encode(cert_pem).decode(),
        "client-key-data": base64.b64encode(private_key_pem(key)).decode(),
    }
    write_atomic(target, json.dumps(_kubeconfig(server, ca_pem.read_bytes(), user)), 0o600)
    return target


class BootstrappingKubeletHost(SimulatedKubeletHost):
    """A SIMULATED host whose kubelet joins the way a real one does: TLS bootstrap with
    the bootstrap kubeconfig Tether wrote (:func:`tls_bootstrap`), then its Node, status
    and Lease written with its own ``system:node:<name>`` certificate, so the API
    server's Node authorizer and NodeRestriction admission judge every write.

    :meth:`close` stops its simulated kubelet."""

    def __init__(self, root: Path, log: Path | None = None, *, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self._client: KubeClient | None = None
        self._own: KubeletFleet | None = None
        super().__init__(root, None, None, log)

    def _credentials(self, name: str) -> None:
        if not host_path(self.root, render.KUBELET_KUBECONFIG).is_file():
            tls_bootstrap(self.root, name, timeout=self.timeout)

    def _fleet(self) -> KubeletFleet:
        if self._own is None:
            self._client = KubeClient(host_path(self.root, render.KUBELET_KUBECONFIG))
            self._own = KubeletFleet(self._client)
            self._own.start()
        return self._own

    def stop(self, unit: str) -> None:
        if unit == "kubelet" and self._own is None:
            RecordingHost.stop(self, unit)  # never started here: nothing is renewing
            return
        super().stop(unit)

    def close(self) -> None:
        if self._own is not None:
            self._own.stop()
            self._own = None
        if self._client is not None:
            self._client.close()
            self._client = None
