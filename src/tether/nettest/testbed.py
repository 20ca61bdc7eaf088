"""A real testbed: network namespaces, strongSwan and BIRD running a plan's configs.

Everything is created under a unique name prefix, recorded as it is created, and torn
down in ``close()`` (also on failure): processes by their pid, namespaces by name, and
the work directory holding the keys. Nothing leaves the namespaces: the testbed has no
link to the host's network, so the plan's public addresses are only used inside it.

Two options let a real node join through it (``tests/integration/node``):
``host_link=True`` adds a management veth from this host to the VPC namespace, with a
route to the VPC host address only, so processes here (etcd, the controllers, Tether's
plane, the tests) reach a kube-apiserver listening in the VPC; ``real_nodes`` names nodes
whose pod network a real CNI brings, so their namespace gets no pod address on ``lo``.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from types import TracebackType

from tether.files import write_atomic
from tether.netplan import (
    Finding,
    HybridNetwork,
    Plan,
    PlanError,
    check,
    has_errors,
    plan,
    psk_ids,
)
from tether.nettest.configs import node_bird_conf, strongswan_conf
from tether.nettest.topology import SiteSpot, Topology, layout
from tether.processes import die_with_parent, stop_process

_PACKETS = re.compile(r"^\s+(?:in|out)\s+\S+,\s+\d+ bytes,\s+(\d+) packets")
LIBIPSEC_PLUGIN = Path("/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so")
TOOLS = ("ip", "charon-systemd", "swanctl", "bird", "birdc", "ping", "sysctl")
Log = Callable[[str], None]


class TestbedError(RuntimeError):
    """The testbed could not be built or did not come up."""

    __test__ = False  # not a pytest test class


class TestbedRefused(TestbedError):
    """The plan has errors: nothing was created or started."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        errors = [f for f in findings if f.is_error]
        super().__init__(f"refused: the document has {len(errors)} error(s)")


def missing_requirements() -> list[str]:
    """What this machine lacks to run a testbed (empty when it can)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root privileges (network namespaces)")
    for tool in TOOLS:
        if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists():
            missing.append(f"the {tool} command")
    if not LIBIPSEC_PLUGIN.exists():
        missing.append("strongSwan's kernel-libipsec plugin (libcharon-extra-plugins)")
    if not Path("/dev/net/tun").exists():
        missing.append("/dev/net/tun")
    return missing


def _tool(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@dataclass
class Probe:
    """One ping from the VPC namespace to a node address or a pod address."""

    pool: str
    node: str
    kind: str  # "node" or "pod"
    address: IPv4Address
    ok: bool = False
    attempts: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "pool": self.pool,
            "node": self.node,
            "kind": self.kind,
            "address": str(self.address),
            "ok": self.ok,
            "attempts": self.attempts,
        }


@dataclass
class TestbedReport:
    __test__ = False

    prefix: str
    probes: list[Probe] = field(default_factory=list)
    #: Packets that went through each pool's child SAs (site side, in + out).
    tunnel_packets: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.probes) and all(p.ok for p in self.probes)

    def as_dict(self) -> dict[str, object]:
        return {
            "prefix": self.prefix,
            "ok": self.ok,
            "seconds": round(self.seconds, 2),
            "probes": [p.as_dict() for p in self.probes],
            "tunnelPackets": dict(self.tunnel_packets),
        }


class Testbed:
    """Build a plan's testbed on ``start()``; ``close()`` removes every trace of it."""

    __test__ = False

    def __init__(
        self,
        network_plan: Plan,
        *,
        prefix: str | None = None,
        log: Log | None = None,
        timeout: float = 60.0,
        host_link: bool = False,
        real_nodes: Collection[str] = (),
        agent_sites: bool = False,
    ) -> None:
        self.plan = network_plan
        self.prefix = prefix or f"tnt{secrets.token_hex(3)}"
        self.topology: Topology = layout(network_plan, self.prefix)
        self.timeout = timeout
        self._log = log or (lambda _msg: None)
        self._files = network_plan.files()
        self.namespaces: list[str] = []
        self.processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.workdir: Path | None = None
        self.real_nodes = frozenset(real_nodes)
        self.host_link = host_link
        #: The VPN servers' swanctl.conf, bird.conf and routes.sh are left to an agent
        #: (:meth:`vpn_server_config`): charon starts with no connection, BIRD with a
        #: placeholder config, and :meth:`wait_up` is for the caller to call.
        self.agent_sites = agent_sites
        #: The host's end of the management link (``host_link``): its name and address.
        self.host_if: str | None = None
        self.host_ip: IPv4Address | None = None

    # Context management ----------------------------------------------------------------

    def __enter__(self) -> Testbed:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Commands --------------------------------------------------------------------------

    def _run(
        self,
        args: Sequence[str],
        *,
        ns: str | None = None,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        argv = [_tool("ip"), "netns", "exec", ns, *args] if ns else list(args)
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=30,
            env=None if env is None else {**os.environ, **env},
            check=False,
        )
        if check and result.returncode != 0:
            where = f" in {ns}" if ns else ""
            raise TestbedError(
                f"`{' '.join(args)}`{where} failed ({result.returncode}): "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result

    def _ip(self, ns: str, *args: str) -> None:
        self._run([_tool("ip"), "-n", ns, *args])

    def _sysctl(self, ns: str, *settings: str) -> None:
        self._run([_tool("sysctl"), "-qw", *settings], ns=ns)

    def _spawn(self, label: str, ns: str, args: Sequence[str], env: Mapping[str, str]) -> None:
        assert self.workdir is not None
        out = (self.workdir / f"{label}.out").open("wb")
        proc = subprocess.Popen(
            [_tool("ip"), "netns", "exec", ns, *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        out.close()
        self.processes.append((label, proc))
        self._log(f"started {label} (pid {proc.pid}) in {ns}")

    # Build -----------------------------------------------------------------------------

    def start(self) -> None:
        topo = self.topology
        self.workdir = Path(tempfile.mkdtemp(prefix=f"tether-{self.prefix}-"))
        os.chmod(self.workdir, 0o700)
        for ns in topo.namespaces:
            self._run([_tool("ip"), "netns", "add", ns])
            self.namespaces.append(ns)
            self._ip(ns, "link", "set", "lo", "up")
            self._sysctl(
                ns,
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            )
        self._log(f"created {len(self.namespaces)} namespaces with prefix {self.prefix}")
        self._build_cloud(topo)
        if self.host_link:
            self._build_host_link(topo)
        for site in topo.sites:
            self._build_site(topo, site)
        self._start_charon(topo.cgw_ns, "cloud/swanctl")
        for site in topo.sites:
            swanctl = f"pools/{site.pool.name}/vpn-server/swanctl"
            self._start_charon(site.vpn_ns, swanctl, load=not self.agent_sites)
            if site.pool.routing == "bgp":
                self._start_bgp(site)
        if not self.agent_sites:
            self.wait_up()

    def update(self, network_plan: Plan) -> None:
        """Move to a changed plan of the same pools and nodes (a new pod CIDR, say): the
        cloud side, the VPC route table, the main routers and the addresses standing for
        pods follow it; the VPN servers are left to their agent (``agent_sites``)."""
        assert self.agent_sites, "update() leaves the VPN servers to an agent"
        old = self.topology
        self.plan, self._files = network_plan, network_plan.files()
        self.topology = topo = layout(network_plan, self.prefix)
        gateway = str(topo.vpc_gateway.ip)
        for pool in network_plan.pools:
            for route in pool.vpc_routes:
                self._ip(topo.vpc_ns, "route", "replace", str(route.destination), "via", gateway)
        for before, site in zip(old.sites, topo.sites, strict=True):
            if site.vpn_pod_address != before.vpn_pod_address:
                self._ip(site.vpn_ns, "addr", "add", f"{site.vpn_pod_address}/32", "dev", "lo")
            for was, spot in zip(before.nodes, site.nodes, strict=True):
                if spot.node.pod_address != was.node.pod_address:
                    self._ip(spot.ns, "addr", "add", f"{spot.node.pod_address}/32", "dev", "lo")
            if site.router_ns is not None:
                self._run_script(site.router_ns, f"pools/{site.pool.name}/main-router/routes.sh")
        assert self.workdir is not None
        swanctl = self._write(
            f"{topo.cgw_ns}/swanctl/swanctl.conf", self._files["cloud/swanctl/swanctl.conf"]
        )
        self._write(
            f"{topo.cgw_ns}/swanctl/secrets.conf", self._files["cloud/swanctl/secrets.conf"]
        )
        env = {
            "STRONGSWAN_CONF": str(self.workdir / topo.cgw_ns / "strongswan.conf"),
            "SWANCTL_DIR": str(swanctl.parent),
        }
        self._run(
            [
                _tool("swanctl"),
                "--load-all",
                "--file",
                str(swanctl),
                "--uri",
                self._vici(topo.cgw_ns),
            ],
            ns=topo.cgw_ns,
            env=env,
        )
        self._log("moved to the changed plan")

    def list_sas(self, site: SiteSpot) -> str:
        """``swanctl --list-sas`` of a site's VPN server."""
        return self._sas(site.vpn_ns)

    def wait_up(self) -> None:
        """Wait for every pool's tunnels and child SAs, and its BGP sessions and routes."""
        self._wait_tunnels()
        self._wait_bgp()

    def vpn_server_config(self, site: SiteSpot) -> dict[str, object]:
        """The agent's ``vpnServer`` config that applies ``site``'s VPN server in its
        namespace (``agent_sites``): commands run there, files go to the work directory."""
        assert self.workdir is not None
        home = self.workdir / site.vpn_ns
        agent_dir = home / "agent"
        env = [
            f"STRONGSWAN_CONF={home / 'strongswan.conf'}",
            f"SWANCTL_DIR={agent_dir / 'swanctl'}",
        ]
        in_ns = [_tool("ip"), "netns", "exec", site.vpn_ns]
        return {
            "dir": str(agent_dir),
            "swanctl": [*in_ns, "env", *env, _tool("swanctl")],
            "vici": self._vici(site.vpn_ns),
            "birdc": [_tool("birdc"), "-s", str(home / "bird.ctl")],
            "birdConfig": str(home / "bird.conf"),
            "shell": [*in_ns, "/bin/sh"],
        }

    def _veth(self, ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
        self._run(
            [
                _tool("ip"),
                "link",
                "add",
                name_a,
                "netns",
                ns_a,
                "type",
                "veth",
                "peer",
                "name",
                name_b,
                "netns",
                ns_b,
            ]
        )
        self._ip(ns_a, "link", "set", name_a, "up")
        self._ip(ns_b, "link", "set", name_b, "up")

    def _build_cloud(self, topo: Topology) -> None:
        vpc, cgw = topo.vpc_ns, topo.cgw_ns
        self._veth(vpc, "vpc0", cgw, "vpc-gw")
        self._ip(vpc, "addr", "add", str(topo.vpc_host), "dev", "vpc0")
        self._ip(cgw, "addr", "add", str(topo.vpc_gateway), "dev", "vpc-gw")
        gateway = str(topo.vpc_gateway.ip)
        # The plan's VPC route table: every attachment lives on the cloud gateway.
        for pool in self.plan.pools:
            for route in pool.vpc_routes:
                self._ip(vpc, "route", "replace", str(route.destination), "via", gateway)
        for ip in topo.endpoint_ips:
            self._ip(cgw, "addr", "add", f"{ip}/32", "dev", "lo")
        self._sysctl(cgw, "net.ipv4.ip_forward=1")

    def _build_host_link(self, topo: Topology) -> None:
        """A veth from this host to the VPC namespace (link-local /30) and a host route to
        the VPC host address through it."""
        name = f"{self.prefix}h"
        third = secrets.randbelow(250) + 1
        host = IPv4Interface(f"169.254.{third}.1/30")
        vpc = IPv4Interface(f"169.254.{third}.2/30")
        self._run([_tool("ip"), "link", "add", name, "type", "veth", "peer", "name", "mgmt0",
                   "netns", topo.vpc_ns])  # fmt: skip
        self.host_if = name
        self._run([_tool("ip"), "addr", "add", str(host), "dev", name])
        self._run([_tool("ip"), "link", "set", name, "up"])
        self._ip(topo.vpc_ns, "addr", "add", str(vpc), "dev", "mgmt0")
        self._ip(topo.vpc_ns, "link", "set", "mgmt0", "up")
        self._run([_tool("ip"), "route", "add", f"{topo.vpc_host.ip}/32", "via", str(vpc.ip),
                   "dev", name])  # fmt: skip
        self.host_ip = host.ip
        self._log(f"host link {name} ({host}) to {topo.vpc_ns} ({vpc})")

    def _build_site(self, topo: Topology, site: SiteSpot) -> None:
        pool, vs = site.pool, site.vpn_ns
        uplink = f"site{site.index}"
        self._veth(topo.cgw_ns, uplink, vs, "wan0")
        self._ip(vs, "addr", "add", f"{pool.vpn_public_ip}/32", "dev", "wan0")
        src = str(topo.endpoint_ips[0])
        self._ip(topo.cgw_ns, "route", "add", f"{pool.vpn_public_ip}/32", "dev", uplink, "src", src)
        for ip in topo.endpoint_ips:
            self._ip(vs, "route", "add", f"{ip}/32", "dev", "wan0", "src", str(pool.vpn_public_ip))
        self._ip(vs, "link", "add", "lan-br", "type", "bridge")
        self._ip(vs, "link", "set", "lan-br", "up")
        self._ip(vs, "addr", "add", str(site.inside), "dev", "lan-br")
        self._ip(vs, "addr", "add", f"{site.vpn_pod_address}/32", "dev", "lo")
        prefixlen = pool.node_cidr.prefixlen
        for j, spot in enumerate(site.nodes):
            port = f"lan-n{j}"
            self._veth(vs, port, spot.ns, "lan0")
            self._ip(vs, "link", "set", port, "master", "lan-br")
            self._ip(spot.ns, "addr", "add", f"{spot.node.ip}/{prefixlen}", "dev", "lan0")
            if spot.node.name not in self.real_nodes:  # a real node's CNI brings its pods
                self._ip(spot.ns, "addr", "add", f"{spot.node.pod_address}/32", "dev", "lo")
            self._ip(spot.ns, "route", "add", "default", "via", str(spot.gateway))
        if site.router_ns is not None:
            self._veth(vs, "lan-rt", site.router_ns, "lan0")
            self._ip(vs, "link", "set", "lan-rt", "master", "lan-br")
            self._ip(site.router_ns, "addr", "add", f"{site.router_ip}/{prefixlen}", "dev", "lan0")
            self._sysctl(site.router_ns, "net.ipv4.ip_forward=1")
            self._run_script(site.router_ns, f"pools/{pool.name}/main-router/routes.sh")
        if not self.agent_sites:
            self._run_script(vs, f"pools/{pool.name}/vpn-server/routes.sh")

    def _write(self, rel: str, content: str, mode: int = 0o600) -> Path:
        assert self.workdir is not None
        path = self.workdir / rel
        write_atomic(path, content, mode)
        return path

    def _run_script(self, ns: str, rel: str) -> None:
        path = self._write(rel, self._files[rel], 0o700)
        self._run(["/bin/sh", str(path)], ns=ns)
        self._log(f"ran {rel} in {ns}")

    def _vici(self, ns: str) -> str:
        assert self.workdir is not None
        return f"unix://{self.workdir / ns / 'charon.vici'}"

    def _start_charon(self, ns: str, swanctl_dir: str, *, load: bool = True) -> None:
        assert self.workdir is not None
        home = self.workdir / ns
        home.mkdir(mode=0o700, exist_ok=True)
        socket = home / "charon.vici"
        conf = self._write(
            f"{ns}/strongswan.conf", strongswan_conf(socket, home / "charon.log"), 0o600
        )
        swanctl = self._write(
            f"{ns}/swanctl/swanctl.conf", self._files[f"{swanctl_dir}/swanctl.conf"]
        )
        self._write(f"{ns}/swanctl/secrets.conf", self._files[f"{swanctl_dir}/secrets.conf"])
        env = {"STRONGSWAN_CONF": str(conf), "SWANCTL_DIR": str(swanctl.parent)}
        self._spawn(f"charon-{ns}", ns, [_tool("charon-systemd")], env)
        self._wait(lambda: socket.exists(), f"charon's vici socket in {ns}", 15)
        if not load:
            return
        self._run(
            [_tool("swanctl"), "--load-all", "--file", str(swanctl), "--uri", self._vici(ns)],
            ns=ns,
            env=env,
        )
        self._log(f"loaded {swanctl_dir}/swanctl.conf into charon in {ns}")

    def _start_bird(self, ns: str, label: str, config: Path) -> Path:
        assert self.workdir is not None
        home = self.workdir / ns
        home.mkdir(mode=0o700, exist_ok=True)
        sock = home / "bird.ctl"
        self._run([_tool("bird"), "-p", "-c", str(config)])  # parse check first
        self._spawn(
            label,
            ns,
            [_tool("bird"), "-f", "-c", str(config), "-s", str(sock), "-P", str(home / "bird.pid")],
            {},
        )
        return sock

    def _start_bgp(self, site: SiteSpot) -> None:
        rel = f"pools/{site.pool.name}/vpn-server/bird.conf"
        if self.agent_sites:  # the agent writes the real one and has BIRD read it
            placeholder = f"router id {site.inside.ip};\nprotocol device {{}}\n"
            config = self._write(f"{site.vpn_ns}/bird.conf", placeholder)
        else:
            config = self._write(rel, self._files[rel])
        self._start_bird(site.vpn_ns, f"bird-{site.vpn_ns}", config)
        for spot in site.nodes:
            conf = self._write(f"{spot.ns}/bird.conf", node_bird_conf(site.pool, spot.node))
            self._start_bird(spot.ns, f"bird-{spot.ns}", conf)

    # Waiting ---------------------------------------------------------------------------

    def _check_processes(self) -> None:
        for label, proc in self.processes:
            if proc.poll() is not None:
                raise TestbedError(f"{label} exited with {proc.returncode}\n{self.diagnostics()}")

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            self._check_processes()
            if ready():
                return
            if time.monotonic() > deadline:
                raise TestbedError(f"timed out waiting for {what}\n{self.diagnostics()}")
            time.sleep(0.25)

    def _sas(self, ns: str) -> str:
        return self._run(
            [_tool("swanctl"), "--list-sas", "--uri", self._vici(ns)], ns=ns, check=False
        ).stdout

    def _wait_tunnels(self) -> None:
        for site in self.topology.sites:

            def up(ns: str = site.vpn_ns) -> bool:
                sas = self._sas(ns)
                return sas.count("ESTABLISHED") >= 2 and sas.count("INSTALLED") >= 4

            self._wait(up, f"both tunnels and four children of pool {site.pool.name}")
            self._log(f"pool {site.pool.name}: 2 IKE SAs established, 4 child SAs installed")

    def _wait_bgp(self) -> None:
        assert self.workdir is not None
        for site in self.topology.sites:
            if site.pool.routing != "bgp":
                continue
            sock = self.workdir / site.vpn_ns / "bird.ctl"
            wanted = len(site.nodes)

            def converged(ns: str = site.vpn_ns, sock: Path = sock, wanted: int = wanted) -> bool:
                protocols = self._run(
                    [_tool("birdc"), "-s", str(sock), "show", "protocols"], check=False
                ).stdout
                routes = self._run(
                    [_tool("ip"), "-n", ns, "route", "show", "proto", "bird"], check=False
                ).stdout
                established = protocols.count("Established")
                return established >= wanted and len(routes.strip().splitlines()) >= wanted

            self._wait(converged, f"BGP sessions and pod routes of pool {site.pool.name}")
            self._log(f"pool {site.pool.name}: {wanted} BGP sessions established, routes learnt")

    # Probing ---------------------------------------------------------------------------

    def probe(self, attempts: int = 5) -> list[Probe]:
        """Ping every node IP and every node's pod address from the VPC namespace."""
        probes = []
        source = str(self.topology.vpc_host.ip)
        for site in self.topology.sites:
            for spot in site.nodes:
                for kind, address in (("node", spot.node.ip), ("pod", spot.node.pod_address)):
                    probe = Probe(site.pool.name, spot.node.name, kind, address)
                    while probe.attempts < attempts and not probe.ok:
                        probe.attempts += 1
                        result = self._run(
                            [
                                _tool("ping"),
                                "-n",
                                "-q",
                                "-c",
                                "1",
                                "-W",
                                "1",
                                "-I",
                                source,
                                str(address),
                            ],
                            ns=self.topology.vpc_ns,
                            check=False,
                        )
                        probe.ok = result.returncode == 0
                    self._log(
                        f"ping {address} ({spot.node.name} {kind}): "
                        f"{'ok' if probe.ok else 'FAILED'}"
                    )
                    probes.append(probe)
        return probes

    def tunnel_packets(self) -> dict[str, int]:
        """Packets counted on each pool's child SAs at the site (proof of the tunnel path)."""
        counts = {}
        for site in self.topology.sites:
            total = 0
            for line in self._sas(site.vpn_ns).splitlines():
                match = _PACKETS.search(line)
                if match:
                    total += int(match.group(1))
            counts[site.pool.name] = total
        return counts

    def diagnostics(self) -> str:
        """State of every namespace, for failure reports (no keys)."""
        if self.workdir is None:
            return ""
        parts = []
        for ns in self.namespaces:
            routes = self._run(
                [_tool("ip"), "-n", ns, "route", "show", "table", "all"], check=False
            )
            parts.append(f"== {ns} routes\n{routes.stdout.strip()}")
            if (self.workdir / ns / "charon.vici").exists():
                parts.append(f"== {ns} SAs\n{self._sas(ns).strip()}")
            log = self.workdir / ns / "charon.log"
            if log.exists():
                parts.append(f"== {ns} charon.log (tail)\n" + "\n".join(_tail(log, 25)))
            sock = self.workdir / ns / "bird.ctl"
            if sock.exists():
                shown = self._run(
                    [_tool("birdc"), "-s", str(sock), "show", "protocols"], check=False
                )
                parts.append(f"== {ns} BIRD\n{shown.stdout.strip()}")
        return "\n".join(parts)

    # Teardown --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process, delete every namespace and the work directory."""
        for label, proc in reversed(self.processes):
            stop_process(proc, 5)
            self._log(f"stopped {label}")
        self.processes.clear()
        if self.host_if is not None:
            self._run([_tool("ip"), "link", "delete", self.host_if], check=False)
            self.host_if = self.host_ip = None
        for ns in reversed(self.namespaces):
            self._run([_tool("ip"), "netns", "delete", ns], check=False)
            etc = Path("/etc/netns") / ns
            if etc.is_dir():
                shutil.rmtree(etc, ignore_errors=True)
        if self.namespaces:
            self._log(f"deleted {len(self.namespaces)} namespaces")
        self.namespaces.clear()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None


def _tail(path: Path, lines: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def existing_namespaces(prefix: str) -> list[str]:
    """Namespaces whose name starts with ``prefix`` (to prove a teardown)."""
    result = subprocess.run(
        [_tool("ip"), "netns", "list"], capture_output=True, text=True, check=False
    )
    names = [line.split()[0] for line in result.stdout.splitlines() if line.strip()]
    return [name for name in names if name.startswith(prefix)]


def random_psks(doc: HybridNetwork) -> dict[str, str]:
    """Fresh 256-bit keys for every tunnel of ``doc``."""
    return {psk_id: secrets.token_hex(32) for psk_id in psk_ids(doc)}


@contextlib.contextmanager
def open_testbed(
    doc: HybridNetwork,
    *,
    prefix: str | None = None,
    log: Log | None = None,
    timeout: float = 60.0,
    host_link: bool = False,
    real_nodes: Collection[str] = (),
) -> Iterator[Testbed]:
    """Check ``doc``, plan it with fresh keys, and run its testbed for the ``with`` body
    (``host_link`` and ``real_nodes``: see the module doc).

    Raises :class:`TestbedRefused` before creating anything when the document has errors.
    """
    findings = check(doc)
    if has_errors(findings):
        raise TestbedRefused(findings)
    try:
        network_plan = plan(doc, random_psks(doc))
    except PlanError as error:  # pragma: no cover - check() passed
        raise TestbedRefused(error.findings) from error
    with Testbed(
        network_plan,
        prefix=prefix,
        log=log,
        timeout=timeout,
        host_link=host_link,
        real_nodes=real_nodes,
    ) as bed:
        yield bed


def run_testbed(
    doc: HybridNetwork,
    *,
    prefix: str | None = None,
    log: Log | None = None,
    timeout: float = 60.0,
) -> TestbedReport:
    """Build the testbed of ``doc``, ping everything from the VPC, tear it all down."""
    started = time.monotonic()
    with open_testbed(doc, prefix=prefix, log=log, timeout=timeout) as bed:
        report = TestbedReport(prefix=bed.prefix, probes=bed.probe())
        report.tunnel_packets = bed.tunnel_packets()
    report.seconds = time.monotonic() - started
    return report
