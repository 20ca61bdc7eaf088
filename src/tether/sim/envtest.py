"""A real, throw-away Kubernetes control plane (etcd + kube-apiserver) on loopback.

Why: Tether's controllers talk to Kubernetes through :mod:`tether.kube.client`; a fake
would only confirm our own assumptions. A bare API server answers with the real
status codes, validation, admission, resourceVersion conflicts and watch semantics,
and starts in seconds. It is what controller-runtime's *envtest* does; this module
follows its ``pkg/internal/testing/controlplane`` (``etcd.go``, ``apiserver.go``,
``auth.go``) for the flags and certificates a bare API server needs.

What runs: one etcd and one kube-apiserver, no controller-manager, no scheduler and no
kubelet. So nothing reconciles: Pods stay Pending, Deployments create no Pods,
namespaces are not finalized, CSRs are not signed. Tests that need a node simulate it
(register a Node, renew its Lease).

Binaries: ``scripts/build-kube.sh`` builds them from the Go module proxy into
``${TETHER_KUBE_CACHE:-~/.cache/tether/kube}/<KUBE_VERSION>/``;
``TETHER_KUBE_BIN_DIR`` points elsewhere (a directory holding ``kube-apiserver``
and ``etcd``).

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
from collections.abc import Sequence
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
    "ETCD_VERSION",
    "KUBE_VERSION",
    "BinariesNotFoundError",
    "ControlPlaneError",
    "KubeBinaries",
    "LocalControlPlane",
    "default_bin_dir",
    "find_binaries",
]

#: Kubernetes release built by ``scripts/build-kube.sh`` (keep the two in step).
KUBE_VERSION = "1.37.2"
#: etcd release built by ``scripts/build-kube.sh``.
ETCD_VERSION = "3.6.16"

_LOOPBACK = "127.0.0.1"
_LOG_TAIL_LINES = 40


class ControlPlaneError(RuntimeError):
    """The local control plane failed to start or stop."""


class BinariesNotFoundError(ControlPlaneError, FileNotFoundError):
    """``kube-apiserver``/``etcd`` are not where we looked: run ``scripts/build-kube.sh``."""


@dataclass(frozen=True)
class KubeBinaries:
    """Paths of the two executables a control plane needs."""

    kube_apiserver: Path
    etcd: Path


def default_bin_dir() -> Path:
    """Where the binaries are expected: ``$TETHER_KUBE_BIN_DIR``, else the build cache.

    The cache convention is shared with ``scripts/build-kube.sh --print-dir``.
    """
    explicit = os.environ.get("TETHER_KUBE_BIN_DIR")
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("TETHER_KUBE_CACHE") or str(Path.home() / ".cache/tether/kube")
    return Path(cache).expanduser() / KUBE_VERSION


def find_binaries(bin_dir: str | os.PathLike[str] | None = None) -> KubeBinaries:
    """Locate ``kube-apiserver`` and ``etcd`` in *bin_dir* (default: :func:`default_bin_dir`).

    Raises :class:`BinariesNotFoundError` naming what is missing and how to build it.
    """
    directory = Path(bin_dir) if bin_dir is not None else default_bin_dir()
    found = KubeBinaries(kube_apiserver=directory / "kube-apiserver", etcd=directory / "etcd")
    missing = [p for p in (found.kube_apiserver, found.etcd) if not os.access(p, os.X_OK)]
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


def _free_port() -> int:
    """Ask the kernel for an unused loopback port (racy, so start() retries on a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((_LOOPBACK, 0))
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
    """etcd + kube-apiserver on free loopback ports, with fresh certificates.

    ``start()`` (or entering the context) generates a CA, a serving certificate for
    127.0.0.1/localhost, a service-account signing key and an admin client
    certificate (``O=system:masters``), starts etcd, then kube-apiserver, writes a
    kubeconfig (:attr:`kubeconfig`) and waits for ``/readyz``. ``stop()`` (or leaving
    the context) terminates both (kill after *stop_timeout*) and removes the work dir.

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
    ) -> None:
        self._bin_dir = bin_dir
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.service_cluster_ip_range = service_cluster_ip_range
        self.extra_apiserver_args = tuple(extra_apiserver_args)
        self.keep_work_dir = keep_work_dir

        self._work_dir: Path | None = None
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._log_files: list[IO[bytes]] = []
        self._ca: CertificateAuthority | None = None
        self._admin: _KeyPair | None = None
        self._etcd_port = 0
        self._port = 0
        self.ready_seconds: float | None = None
        """Seconds from launching etcd to kube-apiserver's ``/readyz`` answering ok."""

    # -- public properties -------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Both processes were started by us and have not exited."""
        procs = (self._etcd, self._apiserver)
        return all(p is not None and p.poll() is None for p in procs)

    @property
    def work_dir(self) -> Path:
        """Temporary directory with certs, etcd data, logs and the kubeconfig."""
        if self._work_dir is None:
            raise ControlPlaneError("control plane not started")
        return self._work_dir

    @property
    def url(self) -> str:
        """The API server's URL (``https://127.0.0.1:<port>``)."""
        if not self._port:
            raise ControlPlaneError("control plane not started")
        return f"https://{_LOOPBACK}:{self._port}"

    @property
    def etcd_url(self) -> str:
        """etcd's client URL (plain HTTP on loopback)."""
        if not self._etcd_port:
            raise ControlPlaneError("control plane not started")
        return f"http://{_LOOPBACK}:{self._etcd_port}"

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
        binaries = find_binaries(self._bin_dir)
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

        self._etcd_port = _free_port()
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
            f"--bind-address={_LOOPBACK}",
            f"--advertise-address={_LOOPBACK}",
            f"--secure-port={self._port}",
            f"--cert-dir={certs}",
            f"--tls-cert-file={certs / 'apiserver.crt'}",
            f"--tls-private-key-file={certs / 'apiserver.key'}",
            f"--client-ca-file={certs / 'ca.crt'}",
            f"--service-cluster-ip-range={self.service_cluster_ip_range}",
            f"--service-account-issuer={self.url}",
            f"--service-account-key-file={certs / 'sa.pub'}",
            f"--service-account-signing-key-file={certs / 'sa.key'}",
            "--authorization-mode=RBAC,Node",
            "--enable-bootstrap-token-auth=true",
            "--allow-privileged=true",
            "--enable-admission-plugins=NodeRestriction",
            "--disable-admission-plugins=ServiceAccount",
            # The endpoint reconcilers refuse a loopback advertise address (1.3x+).
            "--endpoint-reconciler-type=none",
            *self.extra_apiserver_args,
        ]
        self._apiserver = self._spawn(args, self.apiserver_log)
        self._write_kubeconfig(self.kubeconfig, self._admin_pair())
        self._wait_ready(deadline)
        self.ready_seconds = time.monotonic() - started

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd (SIGTERM, SIGKILL after *stop_timeout*).

        Idempotent. Removes the work dir unless *keep_work_dir*.
        """
        for proc in (self._apiserver, self._etcd):
            if proc is not None:
                stop_process(proc, self.stop_timeout)
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
                _LOOPBACK,
                # The first address of the service range is the `kubernetes` Service.
                str(next(ipaddress.ip_network(self.service_cluster_ip_range).hosts())),
            ),
        )
        admin = _issue(ca, "tether-admin", organizations=("system:masters",))
        sa_key = generate_p256_key()
        files = {
            "ca.crt": ca.cert_pem(),
            "apiserver.crt": serving.cert_pem,
            "apiserver.key": serving.key_pem,
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

    def _spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        out = log.open("ab")
        self._log_files.append(out)
        # etcd reads every ETCD_* variable as a flag: keep the caller's out of it.
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
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

    def _wait_ready(self, deadline: float) -> None:
        ctx = self._ssl_context()
        url = f"{self.url}/readyz"
        last = "no answer"
        while time.monotonic() < deadline:
            self._check_alive(self._etcd, "etcd", self.etcd_log)
            self._check_alive(self._apiserver, "kube-apiserver", self.apiserver_log)
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:  # noqa: S310
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as exc:
                # /readyz answers 500 with the failing checks while post-start hooks run.
                body = exc.read().decode(errors="replace")
                failing = [ln for ln in body.splitlines() if ln.startswith("[-]")]
                last = f"HTTP {exc.code}: {'; '.join(failing) or body[:200]}"
            except (OSError, urllib.error.URLError) as exc:
                last = str(exc)
            time.sleep(0.2)
        raise ControlPlaneError(
            f"kube-apiserver not ready after {self.start_timeout:g}s (last: {last}); "
            f"last log lines:\n{_tail(self.apiserver_log)}"
        )


# Stop control planes a test run forgot (or could not) stop, so no etcd or
# kube-apiserver outlives the Python process that started it.
_live: weakref.WeakSet[LocalControlPlane] = weakref.WeakSet()


def _register_for_exit(cp: LocalControlPlane) -> None:
    _live.add(cp)


@atexit.register
def _stop_all() -> None:
    for cp in list(_live):
        cp.stop()
