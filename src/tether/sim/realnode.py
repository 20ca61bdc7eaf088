"""A real node on this machine, for the tests and ``bench/realnode.py``: a node network
namespace, a full control plane bound to its veth, Tether's plane serving the artifact
mirror and approving CSRs, and a snapshot of what a node could leave on the host.

The node (containerd, the kubelet, its pods) runs in its own network namespace with the
node IP on a veth whose host end carries the API server's address, so the kubelet's
ports stay free on the host and its iptables chains stay in the namespace. Every path the
kubelet and containerd let us choose is under a temporary root; what they create outside
it anyway (``/run/containerd`` shim sockets, ``/var/lib/kubelet/device-plugins``,
``/var/log/containers``, libcni's cache), the kernel settings the kubelet changes, its
cgroups and mounts are what ``tether node uninstall`` must undo, and
:func:`host_snapshot` is how the tests check it did.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tether.controllers.manager import ControllerManager
from tether.domain import resources as r
from tether.domain.kubeapi import ImportRequest
from tether.domain.states import HostEvent
from tether.kube.client import KubeClient
from tether.kube.resources import (
    Container,
    ContainerPort,
    Deployment,
    DeploymentSpec,
    LabelSelector,
    Node,
    ObjectMeta,
    Pod,
    PodSpec,
    PodTemplateSpec,
)
from tether.nettest import Testbed
from tether.node.host import cgroup_hierarchies
from tether.node.install import default_arch
from tether.node.render import KUBELET_TUNABLES, SYSCTLS
from tether.node.uninstall import mount_points
from tether.node.unitrun import MARKER
from tether.pki.authority import private_key_pem
from tether.server import ServerThread
from tether.services import kubeimport
from tether.services import resources as svc
from tether.services.kubeconn import open_cluster
from tether.services.nodeidentity import mint_bootstrap_token
from tether.services.trust import PlaneTrust
from tether.settings import Settings
from tether.sim.envtest import (
    CRICTL_VERSION,
    KUBE_VERSION,
    KUBELET_PREVIOUS,
    BinariesNotFoundError,
    LocalControlPlane,
    NodeBinaries,
    find_node_binaries,
)
from tether.sim.images import ECHO_IMAGE, PAUSE_IMAGE, image_archive
from tether.store.db import Database
from tether.store.schema import HostRow, utcnow

CLUSTER = "real"
SERVICE_CIDR = "172.20.0.0/16"
#: Host paths a node's services may create outside its root prefix, and the usual ones.
WATCHED_PATHS = (
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/containerd",
    "/run/containerd",
    "/var/lib/cni",
    "/etc/cni",
    "/opt/cni",
    "/opt/containerd",
    "/usr/libexec/kubernetes",
    "/run/tether",
    "/var/lib/tether",
    "/etc/kubernetes",
)
#: Command names of a node's processes.
NODE_PROCESSES = ("kubelet", "containerd", "containerd-shim", "pause", "echo", "runc")


def run(argv: list[str], *, check: bool = True, timeout: float = 600) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout


def tether_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "tether.cli", *args]


#: Debian's packages: containerd (1.6, with ctr and the runc shim), runc, CNI plugins.
DEBIAN: Final = {
    "containerd": Path("/usr/bin/containerd"),
    "containerd-shim-runc-v2": Path("/usr/bin/containerd-shim-runc-v2"),
    "ctr": Path("/usr/bin/ctr"),
    "runc": Path("/usr/sbin/runc"),
    "cni": Path("/usr/lib/cni"),
}
CNI_PLUGINS: Final = ("bridge", "host-local", "loopback", "portmap")
TOOLS: Final = ("ip", "nsenter", "iptables-save", "sysctl", "umount")


def _version(argv: list[str]) -> str:
    """The version a Debian binary reports: ``containerd ... 1.6.20~ds1 ...`` -> 1.6.20."""
    out = run(argv)
    word = next(w for w in out.split() if w[:1].isdigit())
    return word.split("~")[0].split("+")[0].split("-")[0]


def missing_requirements() -> list[str]:
    """What this machine lacks to run a real node (empty when it can)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root privileges")
    missing += [f"{p} (Debian package)" for p in DEBIAN.values() if not p.exists()]
    missing += [f"the {t} command" for t in TOOLS if shutil.which(t) is None]
    try:
        find_node_binaries()
    except BinariesNotFoundError as exc:
        missing.append(str(exc))
    return missing


@dataclass(frozen=True)
class Mirror:
    """A signed artifact mirror built with ``tether artifacts keygen/add/publish``."""

    path: Path
    keyring: Path
    versions: tuple[str, ...]


def build_mirror(base: Path, binaries: NodeBinaries) -> Mirror:
    """Both Kubernetes versions' real artifacts, through the CLI a user runs: the Go-built
    kubelet, kubectl and crictl, Debian's containerd, shim, ctr, runc and CNI plugins,
    and the locally built pause and echo images as docker archives (no registry:
    containerd imports them)."""
    images = base / "images"
    pause = image_archive(
        images / "pause.tar", PAUSE_IMAGE, {"/pause": (binaries.pause.read_bytes(), 0o755)},
        ["/pause"],
    )  # fmt: skip
    echo = image_archive(
        images / "echo.tar", ECHO_IMAGE, {"/echo": (binaries.echo.read_bytes(), 0o755)},
        ["/echo"],
    )  # fmt: skip
    run(tether_argv("artifacts", "keygen", "--out", str(base / "keys")))
    containerd = _version([str(DEBIAN["containerd"]), "--version"])
    runc = _version([str(DEBIAN["runc"]), "--version"])
    mirror = base / "mirror"
    for kube in (KUBELET_PREVIOUS, KUBE_VERSION):
        files: list[tuple[str, str, Path, str, str]] = [
            ("kubelet", kube, binaries.kubelets[kube], "/usr/local/bin/kubelet", "0755"),
            ("kubectl", KUBE_VERSION, binaries.kubectl, "/usr/local/bin/kubectl", "0755"),
            ("crictl", CRICTL_VERSION, binaries.crictl, "/usr/local/bin/crictl", "0755"),
            ("containerd", containerd, DEBIAN["containerd"], "/usr/local/bin/containerd", "0755"),
            ("containerd-shim-runc-v2", containerd, DEBIAN["containerd-shim-runc-v2"],
             "/usr/local/bin/containerd-shim-runc-v2", "0755"),
            ("ctr", containerd, DEBIAN["ctr"], "/usr/local/bin/ctr", "0755"),
            ("runc", runc, DEBIAN["runc"], "/usr/local/sbin/runc", "0755"),
            ("pause-image", "3.10", pause, "/var/lib/tether/images/pause.tar", "0644"),
            ("image", "1.0", echo, "/var/lib/tether/images/echo.tar", "0644"),
        ]  # fmt: skip
        files += [
            ("cni-plugins", "1.1.1", DEBIAN["cni"] / p, f"/opt/cni/bin/{p}", "0755")
            for p in CNI_PLUGINS
        ]
        for name, version, path, install_path, mode in files:
            run(tether_argv(
                "artifacts", "add", "--mirror", str(mirror), "--kubernetes", kube,
                "--name", name, "--version", version, "--file", str(path),
                "--install-path", install_path, "--mode", mode, "--arch", default_arch(),
                "-o", "json",
            ))  # fmt: skip
    run(tether_argv("artifacts", "publish", "--mirror", str(mirror), "--key",
                    str(base / "keys" / "signing-key.pem")))  # fmt: skip
    return Mirror(mirror, base / "keys" / "keyring.yaml", (KUBELET_PREVIOUS, KUBE_VERSION))


@dataclass(frozen=True)
class NodeNet:
    """One node's network: namespace ``ns`` with the node IP, the API server's address
    (the host end of the node's veth, or a testbed's VPC host), the node CIDR, and the
    node's pod CIDR (and its pool's, behind a testbed)."""

    ns: str
    api_ip: str
    node_ip: str
    node_cidr: str
    pod_cidr: str
    pool_pod_cidr: str = ""
    host_if: str = ""

    @property
    def pool_pods(self) -> str:
        """The pool's pod CIDR (the node's own without a testbed)."""
        return self.pool_pod_cidr or self.pod_cidr

    def argv(self, argv: list[str]) -> list[str]:
        """``argv`` in the node's network namespace only (not a new mount namespace, as
        ``ip netns exec`` would make: the node's mounts are the host's to check)."""
        return ["nsenter", f"--net=/run/netns/{self.ns}", "--", *argv]


@contextmanager
def node_network() -> Iterator[NodeNet]:
    """A namespace with a veth to the host; random addresses so runs never collide."""
    tag = secrets.token_hex(3)
    third = secrets.randbelow(200) + 20
    node_if = f"tnn{tag}"
    net = NodeNet(
        ns=f"tnode{tag}",
        host_if=f"tnh{tag}",
        api_ip=f"10.226.{third}.10",
        node_ip=f"10.80.{third}.11",
        node_cidr=f"10.80.{third}.0/24",
        pod_cidr=f"10.85.{third}.0/24",
    )
    try:
        run(["ip", "netns", "add", net.ns])
        run(["ip", "link", "add", net.host_if, "type", "veth", "peer", "name", node_if])
        run(["ip", "link", "set", node_if, "netns", net.ns])
        run(["ip", "addr", "add", f"{net.api_ip}/32", "dev", net.host_if])
        run(["ip", "link", "set", net.host_if, "up"])
        run(["ip", "route", "add", f"{net.node_ip}/32", "dev", net.host_if])
        run(["ip", "route", "add", net.pod_cidr, "via", net.node_ip, "dev", net.host_if])
        inside = ["ip", "netns", "exec", net.ns]
        run([*inside, "ip", "link", "set", "lo", "up"])
        run([*inside, "ip", "addr", "add", f"{net.node_ip}/24", "dev", node_if])
        run([*inside, "ip", "link", "set", node_if, "up"])
        run([*inside, "ip", "route", "add", f"{net.api_ip}/32", "dev", node_if])
        run([*inside, "ip", "route", "add", "default", "via", net.api_ip, "dev", node_if])
        yield net
    finally:
        run(["ip", "link", "del", net.host_if], check=False)
        run(["ip", "netns", "del", net.ns], check=False)


@dataclass
class RealPlane:
    """Tether's plane for one real node: the store, both servers (the agent port serves
    the artifact mirror over mutual TLS), the cluster imported from a full control
    plane, a site and pool with the host in it, and the controllers (CSR approver)."""

    settings: Settings
    db: Database
    server: ServerThread
    controllers: ControllerManager
    cp: LocalControlPlane
    host: str
    tmp: Path
    _kube: KubeClient | None = field(default=None, repr=False)

    @property
    def kube(self) -> KubeClient:
        if self._kube is None:
            self._kube = KubeClient(self.cp.kubeconfig)
        return self._kube

    @property
    def source(self) -> str:
        """The plane's artifact mirror, as hosts fetch it (with their certificate)."""
        return f"https://{self.settings.agent.host}:{self.server.ports['agent']}/agent/v1/artifacts"

    def host_identity(self) -> tuple[Path, Path]:
        """The host's certificate and key from the plane's CA (as the agent gets them)."""
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.host)]))
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )
        pem = PlaneTrust(self.settings).anchor.sign_host_csr(
            csr, self.host, now=utcnow(), lifetime=timedelta(hours=2)
        )
        cert, key_file = self.tmp / "host.crt", self.tmp / "host.key"
        cert.write_bytes(pem)
        key_file.write_bytes(private_key_pem(key))
        key_file.chmod(0o600)
        return cert, key_file

    def bootstrap_token(self) -> str:
        with self.db.session() as s, open_cluster(self.settings.paths.data_dir, CLUSTER) as client:
            grant = mint_bootstrap_token(s, self.host, client=client)
        return grant.token

    def close(self) -> None:
        if self._kube is not None:
            self._kube.close()
        self.controllers.stop()
        self.server.stop()
        self.db.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def site_node(bed: Testbed, pool: int = 0, node: int = 0) -> NodeNet:
    """A node of a running testbed (:mod:`tether.nettest`) as a real node's network: its
    namespace behind the site's VPN server; the API server in the VPC."""
    site = bed.topology.sites[pool]
    spot = site.nodes[node]
    return NodeNet(
        ns=spot.ns,
        api_ip=str(bed.topology.vpc_host.ip),
        node_ip=str(spot.node.ip),
        node_cidr=str(site.pool.node_cidr),
        pod_cidr=str(spot.node.pod_cidr),
        pool_pod_cidr=str(site.pool.pod_cidr),
    )


@contextmanager
def real_plane(
    tmp: Path, net: NodeNet, mirror: Path, host: str, *, testbed: Testbed | None = None
) -> Iterator[RealPlane]:
    """A full control plane and Tether's plane for it. Without a testbed the API server
    and the plane's agent server listen on the address of the node veth's host end.
    With one, kube-apiserver runs in the testbed's VPC namespace (on its VPC host
    address, reached from here over the testbed's host link, etcd on this host's end of
    it) and the agent server stays on loopback."""
    if testbed is not None and testbed.host_ip is None:
        raise ValueError("a real node behind a testbed needs its host link (host_link=True)")
    with LocalControlPlane(
        bind_address=net.api_ip,
        service_cluster_ip_range=SERVICE_CIDR,
        apiserver_netns=testbed.topology.vpc_ns if testbed is not None else None,
        etcd_address=str(testbed.host_ip) if testbed is not None else "127.0.0.1",
    ) as cp:
        settings = Settings()
        settings.paths.data_dir = tmp / "data"
        settings.paths.artifacts_dir = mirror
        settings.database.url = f"sqlite:///{tmp / 'tether.db'}"
        settings.api.port = _free_port()
        # The agent server (and the mirror it serves) where the node reaches it.
        agent_host = "127.0.0.1" if testbed is not None else net.api_ip
        settings.agent.host = agent_host
        settings.agent.port = _free_port()
        settings.pki.server_names = f"{agent_host},localhost,127.0.0.1"
        server = ServerThread(settings).start()
        db = Database.connect(settings.database_url)
        controllers = ControllerManager(db, settings.paths.data_dir, rescan_seconds=0.5)
        plane = RealPlane(settings, db, server, controllers, cp, host, tmp)
        try:
            _populate(plane, net)
            controllers.start()
            yield plane
        finally:
            plane.close()


def _populate(plane: RealPlane, net: NodeNet) -> None:
    body = ImportRequest(
        kubeconfig=plane.cp.kubeconfig.read_text(),
        spec={
            "vpcCIDR": "10.226.0.0/16",
            "remoteNodeNetworks": ["10.80.0.0/16"],
            "remotePodNetworks": ["10.85.0.0/16"],
        },
    )
    with plane.db.session() as s:
        kubeimport.import_cluster(s, CLUSTER, body, data_dir=plane.settings.paths.data_dir)
        svc.create_site(s, r.SiteCreate(name="site1"))
        svc.create_pool(
            s,
            r.PoolCreate.model_validate(
                {
                    "name": "pool1",
                    "spec": {
                        "cluster": CLUSTER,
                        "site": "site1",
                        "nodeCIDR": net.node_cidr,
                        "podCIDR": net.pool_pods,
                        "vpnServer": {
                            "publicIP": "203.0.113.5",
                            "insideIP": net.node_cidr.replace(".0/24", ".1"),
                        },
                    },
                }
            ),
        )
        svc.create_host(
            s, r.HostCreate.model_validate({"name": plane.host, "spec": {"site": "site1"}})
        )
        svc.transition_host(s, plane.host, HostEvent.CHECKS_PASSED)
        row = s.query(HostRow).filter(HostRow.name == plane.host).one()
        row.inventory = {"hostname": plane.host, "addresses": [net.node_ip]}
        s.flush()
        current = svc.get_host(s, plane.host)
        svc.update_host(
            s,
            plane.host,
            r.HostUpdate.model_validate(
                {
                    "resourceVersion": current.resource_version,
                    "spec": {"site": "site1", "pool": "pool1"},
                }
            ),
        )


def node_config(plane: RealPlane, net: NodeNet, token_file: Path) -> dict[str, Any]:
    return {
        "apiVersion": "tether.io/v1alpha1",
        "kind": "NodeConfig",
        "spec": {
            "cluster": {
                "name": CLUSTER,
                "apiServerEndpoint": plane.cp.url,
                "certificateAuthority": plane.cp.ca_cert_pem.decode(),
                "serviceCIDR": SERVICE_CIDR,
            },
            "node": {"name": plane.host, "ip": net.node_ip, "nodeCIDR": net.node_cidr},
            "containerd": {
                "config": '[plugins."io.containerd.grpc.v1.cri".registry]\n'
                'config_path = "/etc/containerd/certs.d"\n'
            },
            "credentials": {"bootstrapToken": {"tokenFile": str(token_file)}},
        },
    }


def cni_config(root: Path, net: NodeNet) -> Path:
    """What the cluster's CNI would write: a bridge on the node's pod CIDR (host-local
    IPAM keeping its state under the root prefix)."""
    conf = root / "etc/cni/net.d/10-tether-test.conflist"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(
        json.dumps(
            {
                "cniVersion": "1.0.0",
                "name": "tether-test",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": "cni0",
                        "isGateway": True,
                        "ipMasq": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": net.pod_cidr}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": str(root / "var/lib/cni/networks"),
                        },
                    }
                ],
            },
            indent=2,
        )
    )
    return conf


# The node and a workload, seen through the API -------------------------------------------

ECHO_LABELS: Final = {"app": "echo"}


def node_ready(kube: KubeClient, name: str) -> bool:
    """Whether Node ``name`` has the Ready condition True."""
    node = kube.get(Node, name)
    conditions = node.status.conditions if node.status else None
    return any(c.type == "Ready" and c.status == "True" for c in conditions or [])


def echo_deployment(node: str) -> Deployment:
    """One echo pod pinned to ``node``, its image imported from the mirror (no pulls)."""
    return Deployment(
        metadata=ObjectMeta(name="echo", namespace="default"),
        spec=DeploymentSpec(
            replicas=1,
            selector=LabelSelector(matchLabels=ECHO_LABELS),
            template=PodTemplateSpec(
                metadata=ObjectMeta(labels=ECHO_LABELS),
                spec=PodSpec(
                    nodeSelector={"kubernetes.io/hostname": node},
                    containers=[
                        Container(
                            name="echo",
                            image=ECHO_IMAGE,
                            imagePullPolicy="Never",
                            ports=[ContainerPort(containerPort=8080)],
                        )
                    ],
                ),
            ),
        ),
    )


def running_echo_pod(kube: KubeClient) -> Pod | None:
    """The echo pod once it runs with an IP."""
    for pod in kube.list(Pod, namespace="default", labels=ECHO_LABELS):
        if pod.status and pod.status.phase == "Running" and pod.status.podIP:
            return pod
    return None


# What a node could leave on the host -------------------------------------------------------


def _iptables_chains(prefix: list[str] | None = None) -> list[str]:
    out = run([*(prefix or []), "iptables-save"], check=False)
    table = ""
    chains = []
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            chains.append(f"{table}/{line[1:].split()[0]}")
    return sorted(chains)


def node_processes() -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            comm = (proc / "comm").read_text().strip()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if comm in NODE_PROCESSES or MARKER in cmdline:
                found.append(f"{proc.name} {comm}")
    return sorted(found)


def host_snapshot() -> dict[str, Any]:
    """What a node could change on the host (not in its own namespace): processes,
    mounts, iptables chains, sysctls, cgroups, network links, and the usual node paths."""
    cgroups = sorted(
        f"{h.name}/{child.name}"
        for h in cgroup_hierarchies()
        for child in h.iterdir()
        if child.is_dir()
    )
    links = [
        line.split(":")[1].strip().split("@")[0] for line in run(["ip", "-o", "link"]).splitlines()
    ]
    # Other tests on this machine add and remove network namespaces (a mount each under
    # /run/netns) and veths all the time; a node's own would be cni-*, cni0 and veth*.
    mounts = [m for m in mount_points() if not m.startswith("/run/netns/") or "/cni-" in m]
    netns = os.listdir("/run/netns") if os.path.isdir("/run/netns") else []
    return {
        "processes": node_processes(),
        "mounts": sorted(mounts),
        "iptables": _iptables_chains(),
        "sysctls": {
            name: Path("/proc/sys", *name.split(".")).read_text().strip()
            for name in sorted({*SYSCTLS, *KUBELET_TUNABLES})
        },
        "cgroups": cgroups,
        "links": sorted(link for link in links if link.startswith(("cni", "veth"))),
        "paths": {p: os.path.lexists(p) for p in WATCHED_PATHS},
        "netns": sorted(n for n in netns if n.startswith("cni-")),
    }


def wait_for(check: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # the API may not answer yet
            last = exc
        else:
            if last:
                return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def now() -> datetime:
    return datetime.now(UTC)
