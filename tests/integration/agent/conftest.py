"""A real plane (people's API + mutual-TLS agent server) on loopback, and helpers to make
hosts: real agent processes, or hand-made clients with certificates from the plane's CA."""

from __future__ import annotations

import json
import logging
import os
import shutil
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec

from tether.agent.identity import Identity
from tether.domain import resources as r
from tether.domain.agent import ActivationCreate, IssuedActivation, node_name_from_uuid
from tether.domain.kubeapi import ImportRequest
from tether.domain.resources import Role, TokenCreate
from tether.domain.states import HostState
from tether.pki.authority import private_key_pem
from tether.processes import die_with_parent
from tether.server import ServerThread
from tether.services import activations, kubeimport, seed, tokens
from tether.services import resources as svc
from tether.settings import Settings
from tether.sim.envtest import LocalControlPlane
from tether.store.db import Database

from ...conftest import free_port, wait_until


class LogCapture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@dataclass
class Plane:
    server: ServerThread
    settings: Settings
    db: Database
    admin: dict[str, str]
    tmp: Path
    secrets: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    @property
    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.api_url, headers=self.admin, timeout=30)

    def activation(self, site: str = "dc1", uses: int = 1, expires: str = "1h") -> IssuedActivation:
        with self.db.session() as s:
            issued = activations.create(
                s,
                ActivationCreate(site=site, expires_in=expires, max_registrations=uses),
                actor="test",
            )
        self.secrets.append(issued.code)
        return issued

    def agent_config(self, name: str | None, act: IssuedActivation | None, **extra: Any) -> Path:
        state = self.tmp / f"agent-{name or 'anon'}-{len(self.processes)}"
        cfg: dict[str, Any] = {
            "server": self.server.agent_url,
            "caFile": str(self.server.ca_bundle),
            "stateDir": str(state),
            "heartbeatSeconds": 0.5,
            "longPollSeconds": 2,
            "maxBackoffSeconds": 2,
            **extra,
        }
        if name:
            cfg["name"] = name
        if act is not None:
            cfg["activation"] = {"id": act.id, "code": act.code}
        path = self.tmp / f"{name or 'anon'}-{len(self.processes)}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    def start_agent(
        self, config: Path, *, simulate_kubelet: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a real agent process; with ``simulate_kubelet`` (a kubeconfig), the
        SIMULATED agent whose node plans start a simulated kubelet instead of systemd."""
        log = config.with_suffix(".log")
        self.logs.append(log)
        if simulate_kubelet is None:
            argv = ["-m", "tether.agent", "--log-level", "DEBUG", "run", "--config", str(config)]
        else:
            argv = ["-m", "tether.sim.agent", "--log-level", "DEBUG", "--config",
                    str(config), "--kubeconfig", str(simulate_kubelet)]  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, *argv], stdout=log.open("ab"), stderr=subprocess.STDOUT
        )
        self.processes.append(proc)
        return proc

    def host(self, name: str) -> r.Host:
        with self.db.session() as s:
            return svc.get_host(s, name)

    def wait_for(self, what: Callable[[], bool], timeout: float = 20, message: str = "") -> None:
        wait_until(what, timeout, message)

    def client(self, cert: Path | None, key: Path | None, ca: Path | None = None) -> httpx.Client:
        ctx = ssl.create_default_context(cafile=str(ca or self.server.ca_bundle))
        if cert is not None and key is not None:
            ctx.load_cert_chain(cert, key)
        return httpx.Client(base_url=self.server.agent_url, verify=ctx, timeout=30)

    def agent_client(self, state_dir: Path) -> httpx.Client:
        ident = Identity(state_dir)
        return self.client(ident.cert_path, ident.key_path)

    def sign(self, name: str, *, now: Any = None, lifetime: Any = None) -> tuple[Path, Path]:
        """A certificate for ``name`` straight from the plane's CA (a forged or stale one)."""
        from datetime import timedelta

        from tether.services.trust import PlaneTrust
        from tether.store.schema import utcnow

        trust = PlaneTrust(self.settings)
        key = ec.generate_private_key(ec.SECP256R1())
        ident = Identity(self.tmp / f"forged-{name}-{time.monotonic_ns()}")
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.x509.oid import NameOID

        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )
        pem = trust.anchor.sign_host_csr(
            csr, name, now=now or utcnow(), lifetime=lifetime or timedelta(hours=1)
        )
        ident.state_dir.mkdir(parents=True)
        ident.cert_path.write_bytes(pem)
        ident.key_path.write_bytes(private_key_pem(key))
        return ident.cert_path, ident.key_path


@pytest.fixture
def tune_plane() -> Callable[[Settings], None]:
    """Settings a test module changes after :func:`plane`'s own, before it starts."""
    return lambda _settings: None


@pytest.fixture
def plane(
    settings: Settings,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    tune_plane: Callable[[Settings], None],
) -> Iterator[Plane]:
    """The plane; a test marked ``controllers`` gets the controller manager beside it (the
    pool reconciler, and each imported cluster's nodes and CSR controllers), quick."""
    controllers = request.node.get_closest_marker("controllers") is not None
    settings.controllers.rescan_seconds = 0.5
    settings.controllers.node_resync_seconds = 5
    settings.controllers.pool_resync_seconds = 1.0
    settings.api.port = free_port()
    settings.agent.port = free_port()
    settings.agent.heartbeat_seconds = 0.5
    settings.agent.missed_heartbeats = 4
    settings.agent.reconcile_seconds = 0.3
    settings.agent.flush_seconds = 0.2
    settings.agent.revocation_refresh_seconds = 0.5
    settings.agent.long_poll_seconds = 2
    tune_plane(settings)
    capture = LogCapture()
    capture.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(capture)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    server = ServerThread(settings, log_level="debug", controllers=controllers).start()
    db = Database.connect(settings.database_url)
    with db.session() as s:
        svc.create_site(s, r.SiteCreate(name="dc1"))
        svc.create_site(s, r.SiteCreate(name="dc2"))
        issued = tokens.issue(s, TokenCreate(name="admin", role=Role.ADMIN), default_ttl_days=1)
    p = Plane(server, settings, db, {"Authorization": f"Bearer {issued.token}"}, tmp_path)
    p.secrets.append(issued.token)
    p.capture = capture  # type: ignore[attr-defined]
    try:
        yield p
    finally:
        for proc in p.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in p.processes:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.stop()
        db.dispose()
        root.removeHandler(capture)
        root.setLevel(old_level)


# Hosts that join a real cluster (node tool tests) ---------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def import_cluster(plane: Plane, cp: LocalControlPlane) -> str:
    """Import *cp* into the plane's own store and data dir (where its server looks)."""
    name = unique("c")
    body = ImportRequest(
        kubeconfig=cp.kubeconfig.read_text(),
        spec={
            "vpcCIDR": "10.226.0.0/16",
            "remoteNodeNetworks": ["10.80.0.0/16"],
            "remotePodNetworks": ["10.85.0.0/16"],
        },
    )
    with plane.db.session() as s:
        kubeimport.import_cluster(s, name, body, data_dir=plane.settings.paths.data_dir)
    return name


def make_pool(plane: Plane, cluster: str) -> str:
    name = f"{cluster}-p"
    with plane.db.session() as s:
        svc.create_pool(
            s,
            r.PoolCreate.model_validate(
                {
                    "name": name,
                    "spec": {
                        "cluster": cluster,
                        "site": "dc1",
                        "nodeCIDR": "10.80.1.0/24",
                        "podCIDR": "10.85.0.0/18",
                        "vpnServer": {"publicIP": "203.0.113.5", "insideIP": "10.80.1.1"},
                    },
                }
            ),
        )
    return name


def assign(plane: Plane, host: str, pool: str) -> None:
    with plane.db.session() as s:
        view = svc.get_host(s, host)
        svc.update_host(
            s,
            host,
            r.HostUpdate.model_validate(
                {
                    "resourceVersion": view.resource_version,
                    "spec": {"site": view.spec.site, "pool": pool},
                }
            ),
        )
    assert plane.host(host).status.state is HostState.IN_USE


def ready(plane: Plane, host: str) -> None:
    plane.wait_for(lambda: plane.host(host).status.state is HostState.READY, 30, f"{host} Ready")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(10)


def enrol(plane: Plane, host: str) -> Path:
    """A real agent enrols *host* (site dc1) and heartbeats until Ready; its state dir."""
    config = plane.agent_config(host, plane.activation())
    plane.start_agent(config)
    ready(plane, host)
    return Path(yaml.safe_load(config.read_text())["stateDir"])


def enrolled_in_pool(plane: Plane, cp: LocalControlPlane) -> tuple[str, str, Path]:
    """(cluster, host, agent state dir): enrolled by a real agent, assigned, agent stopped."""
    cluster = import_cluster(plane, cp)
    pool = make_pool(plane, cluster)
    host = unique("edge")
    state = enrol(plane, host)
    assign(plane, host, pool)
    stop(plane.processes[-1])
    return cluster, host, state


def node_config(
    doc: Callable[..., dict[str, Any]],
    cp: LocalControlPlane,
    cluster: str,
    host: str,
    credentials: dict[str, Any],
) -> dict[str, Any]:
    out = doc(name=host, ip="127.0.0.1", nodeCIDR="127.0.0.0/24", labels={})
    out["spec"]["cluster"].update(
        name=cluster,
        apiServerEndpoint=cp.url,
        certificateAuthority=cp.ca_cert_pem.decode(),
    )
    out["spec"]["credentials"] = credentials
    return out


def x509_credentials(plane: Plane, state: Path) -> dict[str, Any]:
    ident = Identity(state)
    return {
        "x509": {
            "certificatePath": str(ident.cert_path),
            "privateKeyPath": str(ident.key_path),
            "caPath": str(ident.ca_path),
            "planeEndpoint": plane.server.agent_url,
        }
    }


def host_events(plane: Plane, host: str) -> list[dict[str, Any]]:
    response = plane.api.get("/api/v1/events", params={"kind": "Host", "name": host})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


# A network namespace whose routing table an agent keeps ---------------------------------------


@dataclass
class RouteNetns:
    """A namespace with a link in 10.80.1.0/24 (address .11), so a route via another
    address of that subnet can be installed; ``ip`` is the agent's ``ipCommand``."""

    name: str

    @property
    def ip(self) -> list[str]:
        return ["ip", "-n", self.name]

    def routes(self) -> dict[str, str | None]:
        out = subprocess.run(
            [*self.ip, "-j", "-4", "route", "show"], check=True, capture_output=True, text=True
        ).stdout
        return {e["dst"]: e.get("gateway") for e in json.loads(out or "[]")}

    def delete(self, destination: str) -> None:
        subprocess.run([*self.ip, "route", "del", destination], check=True)


@pytest.fixture
def route_netns() -> Iterator[RouteNetns]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("route tests need root and iproute2 (CI=true)")
        pytest.skip("route tests need root and iproute2")
    tag = uuid.uuid4().hex[:6]
    ns = RouteNetns(f"trt-{tag}")
    subprocess.run(["ip", "netns", "add", ns.name], check=True)
    try:
        for cmd in (
            f"link add rta-{tag} type veth peer name rtb-{tag}",
            f"addr add 10.80.1.11/24 dev rta-{tag}",
            f"link set rta-{tag} up",
            f"link set rtb-{tag} up",
            "link set lo up",
        ):
            subprocess.run([*ns.ip, *cmd.split()], check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns.name], check=False)


@dataclass(frozen=True)
class VMSeed:
    """A site seed for one VM (:func:`vm_seed`)."""

    activation: IssuedActivation
    iso: Path
    vm_uuid: str
    """The VM's DMI product UUID (qemu ``-uuid``), which names its host."""
    name: str


def vm_seed(
    plane: Plane, out: Path, address: str, gateway: str, site: str = "dc1", uses: int = 1
) -> VMSeed:
    """An activation of ``site`` for ``uses`` enrolments and its NoCloud seed in ``out``:
    the static ``address`` (CIDR), and the plane's agent server at ``gateway``."""
    act = plane.activation(site, uses=uses)
    files = seed.seed_files(
        agent_url=f"https://{gateway}:{plane.server.ports['agent']}",
        ca_bundle=plane.server.ca_bundle.read_text(),
        activation_id=act.id,
        code=act.code,
        site=site,
        static=seed.StaticAddress(address, gateway),
    )
    seed.write_seed(out, files)
    vm_uuid = str(uuid.uuid4())
    name = node_name_from_uuid(vm_uuid)
    assert name is not None
    return VMSeed(act, out / "seed.iso", vm_uuid, name)


def start_vm(argv: list[str], err: Path) -> subprocess.Popen[bytes]:
    """qemu (``argv``), stderr to ``err``; killed with this process if it dies."""
    return subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=err.open("wb"), preexec_fn=die_with_parent
    )


def wait_vm_ready(
    plane: Plane,
    qemu: subprocess.Popen[bytes],
    name: str,
    logs: tuple[Path, Path],
    timeout: float,
    build: str | None = None,
) -> None:
    """Until host ``name`` is Ready (and reports image ``build``, if given); fails at once
    if qemu exits. ``logs``: the serial console (its tail is printed on failure) and
    qemu's stderr."""
    console, err = logs

    def ready() -> bool:
        assert qemu.poll() is None, err.read_text()
        host = plane.host(name)
        if build is not None and host.status.inventory.get("imageBuild") != build:
            return False
        return host.status.state is HostState.READY

    try:
        plane.wait_for(ready, timeout, f"{name} Ready")
    except BaseException:
        print(console.read_text(errors="replace")[-6000:])  # pytest shows it on failure
        raise
