"""A real, throw-away Kubernetes control plane: etcd, kube-apiserver, kube-controller-manager
and kube-scheduler.

Why: Tether's controllers talk to Kubernetes through :mod:`tether.kube.client`; a fake
would only confirm our own assumptions. A bare API server answers with the real
status codes, validation, admission, resourceVersion conflicts and watch semantics,
and starts in seconds. It is what controller-runtime's *envtest* does; this module
follows its ``pkg/internal/testing/controlplane`` (``etcd.go``, ``apiserver.go``,
``auth.go``) for the flags and certificates a bare API server needs.

What runs: one etcd, one kube-apiserver and, unless *components* leaves them out,
kube-controller-manager and kube-scheduler. So Kubernetes' own controllers act as in a
real cluster: the CSR signer signs approved kubelet certificates with the cluster CA,
the node lifecycle controller taints nodes that stop renewing their Lease, the garbage
collector removes dependents of deleted owners, Deployments get ReplicaSets and Pods,
and the scheduler binds Pods to nodes. No kubelet runs here: tests that need nodes run
real ones (:mod:`tether.node` on this machine) or simulate them (:mod:`tether.sim.kubesim`).

Binaries: ``scripts/build-kube.sh`` builds them from the Go module proxy into
``${TETHER_KUBE_CACHE:-~/.cache/tether/kube}/<KUBE_VERSION>/``;
``TETHER_KUBE_BIN_DIR`` points elsewhere (a directory holding ``kube-apiserver``,
``etcd``, ``kube-controller-manager`` and ``kube-scheduler``).

Usage::

    with LocalControlPlane() as cp:
        client = KubeClient(cp.kubeconfig)
"""

from __future__ import annotations

import atexit
import base64
import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tether.pki.authority import (
    CLOCK_SKEW,
    CertificateAuthority,
    generate_p256_key,
    private_key_pem,
)
from tether.processes import die_with_parent, stop_process

__all__ = [
    "COMPONENTS",
    "CONTAINERD2_VERSION",
    "CRICTL_VERSION",
    "ETCD_VERSION",
    "KUBELET_PREVIOUS",
    "KUBE_VERSION",
    "BinariesNotFoundError",
    "ControlPlaneError",
    "KubeBinaries",
    "LocalControlPlane",
    "NodeBinaries",
    "default_bin_dir",
    "find_binaries",
    "find_network_crds",
    "find_node_binaries",
]

#: Kubernetes release built by ``scripts/build-kube.sh`` (keep the two in step).
KUBE_VERSION = "1.37.2"
#: etcd release built by ``scripts/build-kube.sh``.
ETCD_VERSION = "3.6.16"
#: The kubelet a real node upgrades from (the newest release of the previous minor).
KUBELET_PREVIOUS = "1.36.3"
#: containerd 2 release built by ``scripts/build-kube.sh`` (Debian ships 1.6).
CONTAINERD2_VERSION = "2.4.2"
#: crictl release built by ``scripts/build-kube.sh``.
CRICTL_VERSION = "1.37.0"
#: Cilium and Calico modules whose CRDs ``scripts/fetch-crds.sh`` caches (keep in step).
CILIUM_VERSION = "1.20.2"
CALICO_VERSION = "v1.11.0-cni-plugin.0.20250813170300-a0db560f0520"
#: The controllers a control plane starts unless told otherwise.
COMPONENTS = ("kube-controller-manager", "kube-scheduler")

_LOOPBACK = "127.0.0.1"
_LOG_TAIL_LINES = 40


class ControlPlaneError(RuntimeError):
    """The local control plane failed to start or stop."""


class BinariesNotFoundError(ControlPlaneError, FileNotFoundError):
    """A control plane binary is not where we looked: run ``scripts/build-kube.sh``."""


@dataclass(frozen=True)
class KubeBinaries:
    """Paths of the executables a control plane runs (all in one directory)."""

    directory: Path

    @property
    def kube_apiserver(self) -> Path:
        return self.directory / "kube-apiserver"

    @property
    def etcd(self) -> Path:
        return self.directory / "etcd"

    def component(self, name: str) -> Path:
        return self.directory / name


def default_bin_dir() -> Path:
    """Where the binaries are expected: ``$TETHER_KUBE_BIN_DIR``, else the build cache.

    The cache convention is shared with ``scripts/build-kube.sh --print-dir``.
    """
    explicit = os.environ.get("TETHER_KUBE_BIN_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return _cache_root() / KUBE_VERSION


def _cache_root() -> Path:
    cache = os.environ.get("TETHER_KUBE_CACHE") or str(Path.home() / ".cache/tether/kube")
    return Path(cache).expanduser()


def find_network_crds() -> list[Path]:
    """The cached upstream Cilium and Calico CRD files (``scripts/fetch-crds.sh``);
    :class:`BinariesNotFoundError` when they were not fetched."""
    folder = _cache_root() / f"crds-cilium-{CILIUM_VERSION}-calico-{CALICO_VERSION}"
    if not (folder / "VERSIONS").is_file():
        raise BinariesNotFoundError(f"no CRDs in {folder}; fetch them with scripts/fetch-crds.sh")
    return sorted(folder.glob("*.yaml"))


@dataclass(frozen=True)
class NodeBinaries:
    """What a real node on this machine runs that no Debian package ships: the kubelets
    (by version), kubectl, crictl, containerd 2, and the static programs of the test
    images (``pause``, ``echo``), all from ``scripts/build-kube.sh``'s cache."""

    kubelets: dict[str, Path]
    kubectl: Path
    crictl: Path
    containerd2: Path
    pause: Path
    echo: Path


def find_node_binaries() -> NodeBinaries:
    """The cached node binaries; :class:`BinariesNotFoundError` names what is missing."""
    cache = _cache_root()
    found = NodeBinaries(
        kubelets={
            KUBE_VERSION: cache / KUBE_VERSION / "kubelet",
            KUBELET_PREVIOUS: cache / KUBELET_PREVIOUS / "kubelet",
        },
        kubectl=cache / KUBE_VERSION / "kubectl",
        crictl=cache / f"crictl-{CRICTL_VERSION}" / "crictl",
        containerd2=cache / f"containerd-{CONTAINERD2_VERSION}" / "containerd",
        pause=cache / "images" / "pause",
        echo=cache / "images" / "echo",
    )
    paths = [*found.kubelets.values(), found.kubectl, found.crictl, found.containerd2]
    missing = [p for p in [*paths, found.pause, found.echo] if not os.access(p, os.X_OK)]
    if missing:
        raise BinariesNotFoundError(
            f"missing node binaries: {', '.join(map(str, missing))}; build them with "
            "scripts/build-kube.sh"
        )
    return found


def find_binaries(
    bin_dir: str | os.PathLike[str] | None = None, components: Sequence[str] = COMPONENTS
) -> KubeBinaries:
    """Locate ``kube-apiserver``, ``etcd`` and *components* in *bin_dir* (default:
    :func:`default_bin_dir`).

    Raises :class:`BinariesNotFoundError` naming what is missing and how to build it.
    """
    directory = Path(bin_dir) if bin_dir is not None else default_bin_dir()
    found = KubeBinaries(directory)
    wanted = [found.kube_apiserver, found.etcd, *(found.component(c) for c in components)]
    missing = [p for p in wanted if not os.access(p, os.X_OK)]
    if missing:
        names = ", ".join(str(p) for p in missing)
        raise BinariesNotFoundError(
            f"missing Kubernetes test binaries: {names}; build them with "
            "scripts/build-kube.sh or set TETHER_KUBE_BIN_DIR"
        )
    return found


# --- certificates -------------------------------------------------------------------


#: Lifetime of the throw-away certificates: longer than any test run.
_CERT_LIFETIME = dt.timedelta(days=7)


@dataclass(frozen=True)
class _KeyPair:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return private_key_pem(self.key)


def _new_ca() -> CertificateAuthority:
    return CertificateAuthority.generate(
        dt.datetime.now(dt.UTC), common_name="tether-envtest-ca", lifetime=_CERT_LIFETIME
    )


def _issue(
    ca: CertificateAuthority,
    common_name: str,
    *,
    organizations: Sequence[str] = (),
    server: bool = False,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
) -> _KeyPair:
    # P-256 rather than RSA: generated in microseconds, accepted everywhere in Kubernetes.
    key = generate_p256_key()
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    now = dt.datetime.now(dt.UTC)
    cert = ca.issue(
        x509.Name(attrs),
        key.public_key(),
        not_before=now - CLOCK_SKEW,
        not_after=now + _CERT_LIFETIME,
        usage=ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH,
        sans=sans,
    )
    return _KeyPair(cert, key)


def _free_port(address: str = _LOOPBACK) -> int:
    """Ask the kernel for an unused port (racy, so start() retries on a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# --- the control plane ----------------------------------------------------------------


class LocalControlPlane:
    """etcd + kube-apiserver (+ *components*) on free ports, with fresh certificates.

    ``start()`` (or entering the context) generates a CA, a serving certificate for
    127.0.0.1/localhost (and *bind_address*), a service-account signing key and an admin
    client certificate (``O=system:masters``), starts etcd, then kube-apiserver, writes a
    kubeconfig (:attr:`kubeconfig`) and waits for ``/readyz``; then it starts
    kube-controller-manager and kube-scheduler (each in *components*) with the admin
    kubeconfig and waits for their ``/healthz``. ``stop()`` (or leaving the context)
    terminates them all (kill after *stop_timeout*) and removes the work dir.

    The API server listens on *bind_address* (default loopback): a real kubelet in a
    network namespace of its own reaches it on the address of its veth's host end. With
    *apiserver_netns* it runs in that network namespace (a testbed's VPC), where
    *bind_address* must be one of the namespace's addresses and *etcd_address* one the
    namespace reaches etcd on (etcd and the controllers stay in this process's
    namespace, which must reach *bind_address*).

    Flags worth knowing (passed to kube-apiserver):

    - ``--authorization-mode=RBAC,Node``: like a real cluster, so RBAC mistakes in
      Tether show up in tests.
    - ``--enable-bootstrap-token-auth``: Tether mints bootstrap tokens for joining hosts.
    - ``--enable-admission-plugins=NodeRestriction`` (as kubeadm and managed clusters
      do): a node's credentials may modify only its own Node and Lease.
    - ``--disable-admission-plugins=ServiceAccount``: that plugin rejects Pods until
      the namespace's ``default`` ServiceAccount exists, which only
      kube-controller-manager creates; envtest disables it for the same reason. All
      other default admission plugins stay on.
    - ``--service-account-issuer`` is this API server's own URL.
    - ``--endpoint-reconciler-type=none``: the reconcilers reject the loopback
      advertise address, so the ``kubernetes`` Service in ``default`` has no endpoints.
    - ``--kubelet-client-certificate`` (``O=system:masters``): kubelets authorise the
      API server's calls for ``kubectl logs`` and ``exec``.

    Flags passed to kube-controller-manager: ``--cluster-signing-{cert,key}-file`` (the
    cluster CA: its ``csrsigning`` controller signs approved kubelet client and serving
    certificates; approving them is Tether's CSR approver's job),
    ``--service-account-private-key-file`` and ``--root-ca-file`` (service account
    tokens), ``--leader-elect=false``, and ``--controllers`` from *controllers* (the
    default, ``*``, is every controller that is on by default).

    *extra_apiserver_args* (``--flag=value`` strings) are appended last, so they win.
    """

    def __init__(
        self,
        *,
        bin_dir: str | os.PathLike[str] | None = None,
        start_timeout: float = 90.0,
        stop_timeout: float = 10.0,
        service_cluster_ip_range: str = "10.0.0.0/24",
        extra_apiserver_args: Sequence[str] = (),
        keep_work_dir: bool = False,
        components: Sequence[str] = COMPONENTS,
        bind_address: str = _LOOPBACK,
        controllers: Sequence[str] = ("*",),
        apiserver_netns: str | None = None,
        etcd_address: str = _LOOPBACK,
    ) -> None:
        unknown = sorted(set(components) - set(COMPONENTS))
        if unknown:
            raise ValueError(f"unknown control plane components: {', '.join(unknown)}")
        self._bin_dir = bin_dir
        self.components = tuple(components)
        self.bind_address = bind_address
        self.controllers = tuple(controllers)
        self.apiserver_netns = apiserver_netns
        self.etcd_address = etcd_address
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.service_cluster_ip_range = service_cluster_ip_range
        self.extra_apiserver_args = tuple(extra_apiserver_args)
        self.keep_work_dir = keep_work_dir

        self._work_dir: Path | None = None
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._controllers: dict[str, subprocess.Popen[bytes]] = {}
        self._log_files: list[IO[bytes]] = []
        self._ca: CertificateAuthority | None = None
        self._admin: _KeyPair | None = None
        self._etcd_port = 0
        self._port = 0
        self.ready_seconds: float | None = None
        """Seconds from launching etcd until kube-apiserver's ``/readyz`` and every
        component's ``/healthz`` answer ok."""

    # -- public properties -------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Every process was started by us and has not exited."""
        procs = (self._etcd, self._apiserver, *(self._controllers.get(c) for c in self.components))
        return all(p is not None and p.poll() is None for p in procs)

    @property
    def work_dir(self) -> Path:
        """Temporary directory with certs, etcd data, logs and the kubeconfig."""
        if self._work_dir is None:
            raise ControlPlaneError("control plane not started")
        return self._work_dir

    @property
    def url(self) -> str:
        """The API server's URL (``https://<bind address>:<port>``)."""
        if not self._port:
            raise ControlPlaneError("control plane not started")
        return f"https://{self.bind_address}:{self._port}"

    @property
    def etcd_url(self) -> str:
        """etcd's client URL (plain HTTP on loopback)."""
        if not self._etcd_port:
            raise ControlPlaneError("control plane not started")
        return f"http://{self.etcd_address}:{self._etcd_port}"

    @property
    def kubeconfig(self) -> Path:
        """Kubeconfig for the admin user (``system:masters``), context ``tether-envtest``."""
        return self.work_dir / "kubeconfig"

    @property
    def ca_cert_pem(self) -> bytes:
        """PEM of the CA that signed the serving and client certificates."""
        if self._ca is None:
            raise ControlPlaneError("control plane not started")
        return self._ca.cert_pem()

    @property
    def ca(self) -> CertificateAuthority:
        """The cluster CA (certificate and key): the API server trusts the client
        certificates it issues, as a cluster's signer would issue them."""
        if self._ca is None:
            raise ControlPlaneError("control plane not started")
        return self._ca

    @property
    def apiserver_pid(self) -> int | None:
        """Process id of kube-apiserver while it runs (for CPU and memory measurements)."""
        proc = self._apiserver
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def etcd_pid(self) -> int | None:
        """Process id of etcd while it runs."""
        proc = self._etcd
        return proc.pid if proc is not None and proc.poll() is None else None

    def component_log(self, name: str) -> Path:
        """The log of ``kube-controller-manager`` or ``kube-scheduler``."""
        return self.work_dir / "logs" / f"{name}.log"

    @property
    def apiserver_log(self) -> Path:
        return self.work_dir / "logs" / "kube-apiserver.log"

    @property
    def etcd_log(self) -> Path:
        return self.work_dir / "logs" / "etcd.log"

    # -- life cycle --------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start etcd and kube-apiserver and wait until the API server is ready.

        Ports are picked by binding port 0 and releasing it, which can race with
        another process; on an "address already in use" failure the whole start is
        retried with new ports (3 attempts).
        """
        if self._work_dir is not None:
            raise ControlPlaneError("control plane already started")
        binaries = find_binaries(self._bin_dir, self.components)
        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(binaries)
                return
            except ControlPlaneError as exc:
                clash = "address already in use" in str(exc).lower()
                self.stop()
                if not clash or attempt == attempts:
                    raise

    def _start_once(self, binaries: KubeBinaries) -> None:
        work = Path(tempfile.mkdtemp(prefix="tether-kube-"))
        self._work_dir = work
        _register_for_exit(self)
        (work / "logs").mkdir()
        certs = work / "certs"
        certs.mkdir(mode=0o700)
        self._write_certs(certs)

        self._etcd_port = _free_port(self.etcd_address)
        peer_port = _free_port()
        self._port = _free_port()
        started = time.monotonic()

        etcd_data = work / "etcd-data"
        etcd_data.mkdir(mode=0o700)
        peer_url = f"http://{_LOOPBACK}:{peer_port}"
        self._etcd = self._spawn(
            [
                str(binaries.etcd),
                "--name=default",
                f"--data-dir={etcd_data}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                # Test data is throw-away: skip fsync (envtest does the same).
                "--unsafe-no-fsync=true",
            ],
            self.etcd_log,
        )
        deadline = started + self.start_timeout
        self._wait_etcd(deadline)

        args = [
            str(binaries.kube_apiserver),
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={self.bind_address}",
            f"--advertise-address={self.bind_address}",
            f"--secure-port={self._port}",
            f"--cert-dir={certs}",
            f"--tls-cert-file={certs / 'apiserver.crt'}",
            f"--tls-private-key-file={certs / 'apiserver.key'}",
            f"--client-ca-file={certs / 'ca.crt'}",
            f"--service-cluster-ip-range={self.service_cluster_ip_range}",
            f"--service-account-issuer={self.url}",
            f"--service-account-key-file={certs / 'sa.pub'}",
            f"--service-account-signing-key-file={certs / 'sa.key'}",
            f"--kubelet-client-certificate={certs / 'kubelet-client.crt'}",
            f"--kubelet-client-key={certs / 'kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP,Hostname",
            "--authorization-mode=RBAC,Node",
            "--enable-bootstrap-token-auth=true",
            "--allow-privileged=true",
            "--enable-admission-plugins=NodeRestriction",
            "--disable-admission-plugins=ServiceAccount",
            # The endpoint reconcilers refuse a loopback advertise address (1.3x+).
            "--endpoint-reconciler-type=none",
            *self.extra_apiserver_args,
        ]
        self._apiserver = self._spawn(args, self.apiserver_log, netns=self.apiserver_netns)
        self._write_kubeconfig(self.kubeconfig, self._admin_pair())
        self._wait_ready(deadline)
        self._start_components(binaries, certs, deadline)
        self.ready_seconds = time.monotonic() - started

    def _start_components(self, binaries: KubeBinaries, certs: Path, deadline: float) -> None:
        """kube-controller-manager and kube-scheduler (those in *components*), each serving
        its ``/healthz`` on a free loopback port, with the admin kubeconfig."""
        kubeconfig = str(self.kubeconfig)
        common = [
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            f"--bind-address={_LOOPBACK}",
            "--leader-elect=false",
        ]
        specific = {
            # No --allocate-node-cidrs: kcm's node IPAM stays off (its default), so a
            # Node's spec.podCIDR is set by Tether alone, from its pool's plan.
            "kube-controller-manager": [
                f"--cluster-signing-cert-file={certs / 'ca.crt'}",
                f"--cluster-signing-key-file={certs / 'ca.key'}",
                f"--service-account-private-key-file={certs / 'sa.key'}",
                f"--root-ca-file={certs / 'ca.crt'}",
                f"--service-cluster-ip-range={self.service_cluster_ip_range}",
                "--cluster-name=tether-envtest",
                f"--controllers={','.join(self.controllers)}",
            ],
            "kube-scheduler": [],
        }
        ports: dict[str, int] = {}
        for name in self.components:
            ports[name] = _free_port()
            argv = [
                str(binaries.component(name)),
                *common,
                f"--secure-port={ports[name]}",
                f"--cert-dir={certs / name}",
                *specific[name],
            ]
            self._controllers[name] = self._spawn(argv, self.component_log(name))
        for name, port in ports.items():
            self._wait_healthz(name, port, deadline)

    def stop(self) -> None:
        """Stop the controllers, kube-apiserver, then etcd (SIGTERM, SIGKILL after
        *stop_timeout*).

        Idempotent. Removes the work dir unless *keep_work_dir*.
        """
        for proc in (*self._controllers.values(), self._apiserver, self._etcd):
            if proc is not None:
                stop_process(proc, self.stop_timeout)
        self._controllers.clear()
        self._apiserver = self._etcd = None
        for f in self._log_files:
            f.close()
        self._log_files.clear()
        if self._work_dir is not None and not self.keep_work_dir:
            shutil.rmtree(self._work_dir, ignore_errors=True)
        self._work_dir = None
        self._port = self._etcd_port = 0

    # -- users ---------------------------------------------------------------------------

    def add_user(
        self,
        name: str,
        groups: Sequence[str] = (),
        *,
        kubeconfig: str | os.PathLike[str] | None = None,
    ) -> Path:
        """Write a kubeconfig authenticating as *name* in *groups* (client certificate).

        For tests that act as someone other than the admin, e.g. a node
        (``system:node:<host>`` in ``system:nodes``). Returns the kubeconfig path
        (default: ``<work_dir>/kubeconfig-<name>``).
        """
        if self._ca is None:
            raise ControlPlaneError("control plane not started")
        pair = _issue(self._ca, name, organizations=groups)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        path = Path(kubeconfig) if kubeconfig is not None else self.work_dir / f"kubeconfig-{safe}"
        self._write_kubeconfig(path, pair)
        return path

    # -- internals -----------------------------------------------------------------------

    def _admin_pair(self) -> _KeyPair:
        if self._admin is None:
            raise ControlPlaneError("control plane not started")
        return self._admin

    def _write_certs(self, certs: Path) -> None:
        ca = _new_ca()
        serving = _issue(
            ca,
            "kube-apiserver",
            server=True,
            dns_names=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ip_addresses=(
                *sorted({_LOOPBACK, self.bind_address}),
                # The first address of the service range is the `kubernetes` Service.
                str(next(ipaddress.ip_network(self.service_cluster_ip_range).hosts())),
            ),
        )
        admin = _issue(ca, "tether-admin", organizations=("system:masters",))
        # How kube-apiserver authenticates to kubelets (logs, exec, port-forward).
        kubelet_client = _issue(
            ca, "kube-apiserver-kubelet-client", organizations=("system:masters",)
        )
        sa_key = generate_p256_key()
        files = {
            "ca.crt": ca.cert_pem(),
            "apiserver.crt": serving.cert_pem,
            "apiserver.key": serving.key_pem,
            # The CSR signer of kube-controller-manager signs with the cluster CA.
            "ca.key": ca.key_pem(),
            "kubelet-client.crt": kubelet_client.cert_pem,
            "kubelet-client.key": kubelet_client.key_pem,
            "sa.key": private_key_pem(sa_key),
            "sa.pub": sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        }
        for name, data in files.items():
            path = certs / name
            path.write_bytes(data)
            path.chmod(0o600)
        self._ca, self._admin = ca, admin

    def _write_kubeconfig(self, path: Path, user: _KeyPair) -> None:
        # JSON is valid YAML; every kubeconfig reader accepts it.
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "tether-envtest",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": _b64(self.ca_cert_pem),
                    },
                }
            ],
            "users": [
                {
                    "name": "tether-envtest-user",
                    "user": {
                        "client-certificate-data": _b64(user.cert_pem),
                        "client-key-data": _b64(user.key_pem),
                    },
                }
            ],
            "contexts": [
                {
                    "name": "tether-envtest",
                    "context": {
                        "cluster": "tether-envtest",
                        "user": "tether-envtest-user",
                        "namespace": "default",
                    },
                }
            ],
            "current-context": "tether-envtest",
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)

    def _spawn(
        self, argv: list[str], log: Path, *, netns: str | None = None
    ) -> subprocess.Popen[bytes]:
        out = log.open("ab")
        self._log_files.append(out)
        # etcd reads every ETCD_* variable as a flag: keep the caller's out of it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        if netns is not None:  # that network namespace only; files and mounts are ours
            argv = ["nsenter", f"--net=/run/netns/{netns}", "--", *argv]
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=self.work_dir,
            preexec_fn=die_with_parent,
        )

    def _check_alive(self, proc: subprocess.Popen[bytes] | None, name: str, log: Path) -> None:
        if proc is None:
            raise ControlPlaneError(f"{name} was not started")
        code = proc.poll()
        if code is not None:
            raise ControlPlaneError(
                f"{name} exited with code {code}; last log lines:\n{_tail(log)}"
            )

    def _wait_etcd(self, deadline: float) -> None:
        url = f"{self.etcd_url}/health"
        last = "no answer"
        while time.monotonic() < deadline:
            self._check_alive(self._etcd, "etcd", self.etcd_log)
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 (loopback)
                    body = resp.read().decode(errors="replace")
                if '"health":"true"' in body.replace(" ", ""):
                    return
                last = body
            except (OSError, urllib.error.URLError) as exc:
                last = str(exc)
            time.sleep(0.1)
        raise ControlPlaneError(
            f"etcd not healthy after {self.start_timeout:g}s ({last}); "
            f"last log lines:\n{_tail(self.etcd_log)}"
        )

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=self.ca_cert_pem.decode())
        certs = self.work_dir / "certs"
        admin = self._admin_pair()
        cert_file, key_file = certs / "admin.crt", certs / "admin.key"
        if not cert_file.exists():
            cert_file.write_bytes(admin.cert_pem)
            key_file.write_bytes(admin.key_pem)
            key_file.chmod(0o600)
        ctx.load_cert_chain(cert_file, key_file)
        return ctx

    def _wait_http(
        self,
        what: str,
        url: str,
        ctx: ssl.SSLContext,
        deadline: float,
        alive: Callable[[], None],
        log: Path,
    ) -> None:
        """Poll ``url`` until it answers 200; ``alive`` raises if a process died."""
        last: str | None = "no answer"
        while time.monotonic() < deadline:
            alive()
            last = _probe(url, ctx)
            if last is None:
                return
            time.sleep(0.2)
        raise ControlPlaneError(
            f"{what} after {self.start_timeout:g}s (last: {last}); last log lines:\n{_tail(log)}"
        )

    def _wait_healthz(self, name: str, port: int, deadline: float) -> None:
        """Wait until a controller's ``/healthz`` (allowed without credentials) says ok."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # its self-signed serving cert; loopback only
        log = self.component_log(name)
        self._wait_http(
            f"{name} not healthy",
            f"https://{_LOOPBACK}:{port}/healthz",
            ctx,
            deadline,
            lambda: self._check_alive(self._controllers.get(name), name, log),
            log,
        )

    def _wait_ready(self, deadline: float) -> None:
        def alive() -> None:
            self._check_alive(self._etcd, "etcd", self.etcd_log)
            self._check_alive(self._apiserver, "kube-apiserver", self.apiserver_log)

        self._wait_http(
            "kube-apiserver not ready",
            f"{self.url}/readyz",
            self._ssl_context(),
            deadline,
            alive,
            self.apiserver_log,
        )


def _probe(url: str, ctx: ssl.SSLContext) -> str | None:
    """One GET: None when it answers 200, else what it said (for a /readyz or /healthz
    that answers 500, the checks still failing)."""
    try:
        with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:  # noqa: S310
            return None if resp.status == 200 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        failing = [ln for ln in body.splitlines() if ln.startswith("[-]")]
        return f"HTTP {exc.code}: {'; '.join(failing) or body[:200]}"
    except (OSError, urllib.error.URLError) as exc:
        return str(exc)


# Stop control planes a test run forgot (or could not) stop, so no etcd or
# kube-apiserver outlives the Python process that started it.
_live: weakref.WeakSet[LocalControlPlane] = weakref.WeakSet()


def _register_for_exit(cp: LocalControlPlane) -> None:
    _live.add(cp)


@atexit.register
def _stop_all() -> None:
    for cp in list(_live):
        cp.stop()
