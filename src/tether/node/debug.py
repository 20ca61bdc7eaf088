"""The engine behind ``tether node debug``: ordered checks of a host that should join a pool.

Pure core, thin edges. :func:`run_checks` decides everything from what a :class:`Probes`
object observed, so every branch runs in tests with fake probes; :class:`SystemProbes`
is the real implementation that reads this machine. Checks run in this order (a later
check may use an earlier one's outcome):

1. ``time-sync``: the system clock is synchronised (``timedatectl``, else ``adjtimex``).
2. ``swap``: ``/proc/swaps`` lists no active swap (kubelet refuses swap by default).
3. ``dns``: the API endpoint's host name resolves (skipped for an IP literal).
4. ``api-reachable``: TCP to the endpoint's host:port (443 unless given) and, with a CA
   file, a TLS handshake verified against it. Skipped when DNS failed.
5. ``certificate:<path>``: one result per certificate file (the CA first, then
   ``cert_files``): not expired, not yet valid, and a warning within
   :data:`EXPIRY_WARNING` of its end. A file holding several certificates reports the
   worst one. Without any file, a single ``certificate`` result is skipped.
6. ``node-ip``: the node IP is inside the pool's node CIDR and assigned to a local
   interface.
7. ``mtu``: the interface carrying the node IP has an MTU of at least ``min_mtu``
   (default 1400: a 1500-byte underlay minus IPsec overhead). Below is a failure; there
   is deliberately no warning band below 1500, as cloud VMs routinely run 1460 or 1450
   and a warning on each of them would teach operators to ignore warnings.
8. ``kubelet``: the kubelet unit is active.

Every result carries a one-line ``detail`` (what was observed) and, whenever its status
is not ``ok``, a one-line ``remedy`` (what the operator should do). A probe raising an
unexpected exception yields a ``fail`` for that check only; the other checks still run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fcntl
import ipaddress
import json
import shutil
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Final, Literal, Protocol
from urllib.parse import urlsplit

from cryptography import x509

__all__ = [
    "CHECK_NAMES",
    "DEFAULT_API_PORT",
    "DEFAULT_MIN_MTU",
    "EXPIRY_WARNING",
    "CertInfo",
    "CheckResult",
    "ClockSync",
    "ConnectOutcome",
    "Connection",
    "DebugTarget",
    "LocalAddress",
    "Probes",
    "Status",
    "SystemProbes",
    "adjtimex_synced",
    "ioctl_addresses",
    "overall",
    "parse_endpoint",
    "parse_ip_json",
    "parse_proc_swaps",
    "run_checks",
    "systemctl_is_active",
]

Status = Literal["ok", "warn", "fail", "skipped"]
ConnectOutcome = Literal[
    "ok",
    "refused",
    "timeout",
    "unreachable",
    "unresolved",
    "ca_unusable",
    "tls_untrusted",
    "tls_timeout",
    "tls_error",
]

#: The checks' names in order (``certificate`` results are named ``certificate:<path>``).
CHECK_NAMES: Final = (
    "time-sync",
    "swap",
    "dns",
    "api-reachable",
    "certificate",
    "node-ip",
    "mtu",
    "kubelet",
)
DEFAULT_API_PORT: Final = 443
DEFAULT_MIN_MTU: Final = 1400
#: A certificate ending sooner than this is a warning.
EXPIRY_WARNING: Final = timedelta(days=7)
_SEVERITY: Final[dict[Status, int]] = {"ok": 0, "skipped": 1, "warn": 2, "fail": 3}
_TIME_SYNC_REMEDY: Final = (
    "enable time sync: `systemctl enable --now chrony` (or systemd-timesyncd) and make "
    "sure an NTP server is reachable (`chronyc sources` / `timedatectl timesync-status`)"
)


# --- results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome. ``remedy`` is required unless the status is ``ok``."""

    name: str
    status: Status
    detail: str
    remedy: str | None = None

    def __post_init__(self) -> None:
        if self.status != "ok" and not self.remedy:
            raise ValueError(f"check {self.name!r} is {self.status} without a remedy")
        for text in (self.detail, self.remedy or ""):
            if "\n" in text or "\r" in text:
                raise ValueError(f"check {self.name!r}: detail and remedy are one line")

    def as_dict(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "status": self.status,
            "detail": self.detail,
            "remedy": self.remedy,
        }


def overall(results: Sequence[CheckResult]) -> int:
    """The exit code: 1 if any check failed, else 0 (warnings and skips pass)."""
    return 1 if any(r.status == "fail" for r in results) else 0


# --- what is checked -------------------------------------------------------------------


@dataclass(frozen=True)
class DebugTarget:
    """What the host should look like. ``api_endpoint`` is an ``https://`` URL."""

    api_endpoint: str
    ca_file: Path | None = None
    cert_files: Sequence[Path] = ()
    node_ip: IPv4Address | None = None
    node_cidr: IPv4Network | None = None
    kubelet_unit: str = "kubelet"
    min_mtu: int = DEFAULT_MIN_MTU
    connect_timeout: float = 5.0


# --- what the probes report ------------------------------------------------------------


@dataclass(frozen=True)
class ClockSync:
    """``synced`` is ``None`` when nothing could tell; ``evidence`` says what was read."""

    synced: bool | None
    evidence: str


@dataclass(frozen=True)
class Connection:
    """The outcome of connecting (and, with a CA file, the TLS handshake)."""

    outcome: ConnectOutcome
    detail: str


@dataclass(frozen=True)
class CertInfo:
    subject: str
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True)
class LocalAddress:
    ifname: str
    address: IPv4Address


class Probes(Protocol):
    """Every observation of the host :func:`run_checks` needs.

    ``None`` means "cannot tell" (the check is skipped). ``resolve`` raises
    :class:`OSError` when the name does not resolve; ``read_certs`` raises
    :class:`OSError` for a missing or unreadable file and :class:`ValueError` when it
    holds no certificate.
    """

    def clock_sync(self) -> ClockSync: ...

    def swap_entries(self) -> list[str] | None: ...

    def resolve(self, host: str) -> list[str]: ...

    def connect(self, host: str, port: int, timeout: float, ca_file: Path | None) -> Connection: ...

    def read_certs(self, path: Path) -> list[CertInfo]: ...

    def local_addresses(self) -> list[LocalAddress] | None: ...

    def mtu(self, ifname: str) -> int | None: ...

    def is_active(self, unit: str) -> bool | None: ...


# --- pure helpers ----------------------------------------------------------------------


def parse_endpoint(url: str) -> tuple[str, int]:
    """``(host, port)`` of an ``https://`` URL; raise :class:`ValueError` if it is none."""
    parts = urlsplit(url.strip())
    if parts.scheme != "https":
        raise ValueError(f"API endpoint {url!r} is not an https:// URL")
    host = parts.hostname
    if not host:
        raise ValueError(f"API endpoint {url!r} has no host")
    port = parts.port  # raises ValueError for a port out of range or not a number
    return host, port if port is not None else DEFAULT_API_PORT


def parse_proc_swaps(text: str) -> list[str]:
    """The swap devices/files listed in ``/proc/swaps`` (its first line is a header)."""
    return [line.split()[0] for line in text.splitlines()[1:] if line.strip()]


def parse_ip_json(text: str) -> list[LocalAddress]:
    """The IPv4 addresses in the output of ``ip -j addr``, with their interface."""
    found: list[LocalAddress] = []
    for link in json.loads(text or "[]"):
        ifname = link.get("ifname")
        for info in link.get("addr_info", []):
            if info.get("family") == "inet" and ifname and "local" in info:
                found.append(LocalAddress(str(ifname), IPv4Address(info["local"])))
    return found


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _span(delta: timedelta) -> str:
    seconds = abs(delta.total_seconds())
    if seconds >= 86400:
        return f"{int(seconds // 86400)} days"
    if seconds >= 3600:
        return f"{int(seconds // 3600)} hours"
    return f"{int(seconds // 60)} minutes"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


# --- the checks ------------------------------------------------------------------------


class _Run:
    """One run of the checks; earlier outcomes are kept for the later checks."""

    def __init__(self, target: DebugTarget, probes: Probes, now: datetime) -> None:
        self.target = target
        self.probes = probes
        self.now = now
        self.clock_unsynced = False
        self.endpoint: tuple[str, int] | None = None
        self.endpoint_error = ""
        self.dns_failed = False
        self.node_ifname: str | None = None

    def _clock_hint(self) -> str:
        return "; the clock is not synchronised, fix time sync first" if self.clock_unsynced else ""

    # 1
    def time_sync(self) -> CheckResult:
        name = "time-sync"
        clock = self.probes.clock_sync()
        if clock.synced is None:
            return CheckResult(
                name,
                "skipped",
                f"cannot tell whether the clock is synchronised ({clock.evidence or 'no source'})",
                "install chrony or enable systemd-timesyncd, then check `chronyc tracking`",
            )
        if clock.synced:
            return CheckResult(name, "ok", f"clock synchronised ({clock.evidence})")
        self.clock_unsynced = True
        return CheckResult(
            name, "fail", f"clock not synchronised ({clock.evidence})", _TIME_SYNC_REMEDY
        )

    # 2
    def swap(self) -> CheckResult:
        name = "swap"
        entries = self.probes.swap_entries()
        if entries is None:
            return CheckResult(
                name, "skipped", "cannot read /proc/swaps", "check `swapon --show` by hand"
            )
        if not entries:
            return CheckResult(name, "ok", "no active swap")
        return CheckResult(
            name,
            "fail",
            f"swap active on {', '.join(entries)}",
            "run `swapoff -a` and remove the swap entries from /etc/fstab (and any swap or "
            "zram unit) so it stays off: kubelet refuses to start with swap on by default",
        )

    # 3
    def dns(self) -> CheckResult:
        name = "dns"
        try:
            self.endpoint = parse_endpoint(self.target.api_endpoint)
        except ValueError as exc:
            self.endpoint_error = str(exc)
            return CheckResult(
                name,
                "fail",
                str(exc),
                "set the API endpoint to https://HOST[:PORT] in the NodeConfig",
            )
        host = self.endpoint[0]
        if _is_ip_literal(host):
            return CheckResult(
                name,
                "skipped",
                f"API endpoint host {host} is an IP address, nothing to resolve",
                "none needed: the endpoint is an IP address",
            )
        try:
            addresses = self.probes.resolve(host)
        except OSError as exc:
            self.dns_failed = True
            return CheckResult(
                name,
                "fail",
                f"{host} does not resolve: {exc.strerror or exc}",
                "check the nameservers in /etc/resolv.conf (`resolvectl status` with "
                "systemd-resolved) and that they can resolve the cluster's DNS zone",
            )
        if not addresses:
            self.dns_failed = True
            return CheckResult(
                name,
                "fail",
                f"{host} resolves to no address",
                "check the nameservers in /etc/resolv.conf and the DNS record of the API host",
            )
        return CheckResult(name, "ok", f"{host} resolves to {', '.join(addresses)}")

    # 4
    def api_reachable(self) -> CheckResult:
        name = "api-reachable"
        if self.endpoint is None:
            return CheckResult(
                name,
                "skipped",
                f"skipped: API endpoint invalid ({self.endpoint_error})",
                "fix the API endpoint first (see the dns check)",
            )
        host, port = self.endpoint
        if self.dns_failed:
            return CheckResult(
                name,
                "skipped",
                f"skipped: DNS failed for {host}",
                "fix DNS first (see the dns check)",
            )
        ca = self.target.ca_file
        conn = self.probes.connect(host, port, self.target.connect_timeout, ca)
        where = f"{host}:{port}"
        if conn.outcome == "ok":
            how = f"TLS verified against {ca}" if ca is not None else "TCP only, no CA file given"
            return CheckResult(name, "ok", f"{where} reachable ({how}; {conn.detail})")
        route = "check the VPN/route to the VPC CIDR (`ip route get` the API address)"
        remedies: dict[ConnectOutcome, str] = {
            "refused": (
                "nothing accepts connections there: check the endpoint's host and port in "
                "the NodeConfig, that the API server is up, and firewalls rejecting the port"
            ),
            "timeout": (
                f"{route} and that security groups/firewalls allow TCP {port} from this host"
            ),
            "unreachable": f"{route} and that the tunnel is up",
            "unresolved": "the name stopped resolving: check /etc/resolv.conf",
            "ca_unusable": (
                f"write the cluster CA from the NodeConfig to {ca} as PEM"
                if ca is not None
                else "give the cluster CA file"
            ),
            "tls_untrusted": (
                "the CA in the NodeConfig does not match the API server (or its certificate "
                f"does not name {host}): fetch the cluster CA again{self._clock_hint()}"
            ),
            "tls_timeout": (
                "TCP connects but the TLS handshake stalls: usually an MTU black hole on the "
                "tunnel (lower the MTU or clamp the TCP MSS), else a proxy holding the port"
            ),
            "tls_error": (
                "the endpoint does not speak TLS as expected: check the port of the API "
                "endpoint and for a proxy intercepting it"
            ),
        }
        what = {
            "refused": "connection refused",
            "timeout": f"no answer within {self.target.connect_timeout:g}s",
            "unreachable": "unreachable",
            "unresolved": "does not resolve",
            "ca_unusable": "CA file unusable",
            "tls_untrusted": "TLS certificate not trusted",
            "tls_timeout": "TLS handshake timed out",
            "tls_error": "TLS handshake failed",
        }[conn.outcome]
        return CheckResult(name, "fail", f"{where}: {what}: {conn.detail}", remedies[conn.outcome])

    # 5
    def certificates(self) -> list[CheckResult]:
        files: list[Path] = []
        ca = self.target.ca_file
        for path in [*([ca] if ca is not None else []), *self.target.cert_files]:
            if path not in files:
                files.append(path)
        if not files:
            return [
                CheckResult(
                    "certificate",
                    "skipped",
                    "no certificate files given",
                    "give the CA and the kubelet client certificate to check their validity",
                )
            ]
        return [self._certificate(path, is_ca=path == ca) for path in files]

    def _certificate(self, path: Path, *, is_ca: bool) -> CheckResult:
        name = f"certificate:{path}"
        try:
            certs = self.probes.read_certs(path)
        except FileNotFoundError:
            remedy = (
                f"write the cluster CA from the NodeConfig to {path}"
                if is_ca
                else "re-join the node (kubelet TLS bootstrap writes it) or correct the path"
            )
            return CheckResult(name, "fail", f"{path} is missing", remedy)
        except OSError as exc:
            return CheckResult(
                name,
                "fail",
                f"cannot read {path}: {exc.strerror or exc}",
                "run `tether node debug` as root, or fix the file's permissions",
            )
        except ValueError as exc:
            return CheckResult(
                name,
                "fail",
                f"{path} holds no certificate: {exc}",
                "replace it with the PEM certificate it should hold",
            )
        if not certs:
            return CheckResult(
                name,
                "fail",
                f"{path} holds no certificate",
                "replace it with the PEM certificate it should hold",
            )
        judged = [(self._judge(cert, is_ca=is_ca), cert) for cert in certs]
        (status, detail, advice), worst = max(
            judged, key=lambda j: (_SEVERITY[j[0][0]], -j[1].not_after.timestamp())
        )
        of = f" (the worst of {len(certs)})" if len(certs) > 1 else ""
        return CheckResult(name, status, f"{path}: {worst.subject}{of} {detail}", advice)

    def _judge(self, cert: CertInfo, *, is_ca: bool) -> tuple[Status, str, str | None]:
        now = self.now
        if now < cert.not_before:
            remedy = (
                "the clock is not synchronised: fix time sync first (chrony/systemd-timesyncd)"
                if self.clock_unsynced
                else "check this host's clock and the clock of the machine that issued it"
            )
            return (
                "fail",
                f"is not valid before {_when(cert.not_before)} (in {_span(cert.not_before - now)})",
                remedy,
            )
        if now > cert.not_after:
            remedy = (
                "the cluster CA expired: rotate the cluster CA and update the NodeConfig"
                if is_ca
                else "re-join the node to get a new client certificate: the kubelet rotates "
                "it only while it is valid"
            )
            if self.clock_unsynced:
                remedy += "; also fix time sync, the clock is not synchronised"
            return (
                "fail",
                f"expired at {_when(cert.not_after)} ({_span(now - cert.not_after)} ago)",
                remedy,
            )
        left = cert.not_after - now
        if left <= EXPIRY_WARNING:
            remedy = (
                f"rotate the cluster CA before {_when(cert.not_after)}"
                if is_ca
                else "check that kubelet certificate rotation works (rotateCertificates and "
                f"approved CSRs), or re-join the node before {_when(cert.not_after)}"
            )
            return "warn", f"expires in {_span(left)} ({_when(cert.not_after)})", remedy
        return "ok", f"valid until {_when(cert.not_after)} ({_span(left)} left)", None

    # 6
    def node_ip(self) -> CheckResult:
        name = "node-ip"
        ip, cidr = self.target.node_ip, self.target.node_cidr
        if ip is None:
            return CheckResult(
                name,
                "skipped",
                "no node IP given",
                "give the node IP (and the pool's node CIDR) to check it",
            )
        addresses = self.probes.local_addresses()
        if addresses is not None:
            self.node_ifname = next((a.ifname for a in addresses if a.address == ip), None)
        if cidr is not None and ip not in cidr:
            return CheckResult(
                name,
                "fail",
                f"node IP {ip} is outside the pool's node CIDR {cidr}",
                f"set the node IP to an address in {cidr}, or correct the pool's node CIDR",
            )
        in_cidr = f" (in {cidr})" if cidr is not None else ""
        if addresses is None:
            return CheckResult(
                name,
                "warn",
                f"node IP {ip}{in_cidr}: cannot list local addresses",
                f"check that `ip -4 addr` shows {ip}",
            )
        if self.node_ifname is None:
            shown = [f"{a.address} ({a.ifname})" for a in addresses[:8]]
            local = ", ".join(shown) + (", ..." if len(addresses) > 8 else "") or "none"
            return CheckResult(
                name,
                "fail",
                f"node IP {ip}{in_cidr} is on no local interface (local: {local})",
                f"assign {ip} to the node's interface (netplan) or correct the node IP",
            )
        return CheckResult(name, "ok", f"node IP {ip}{in_cidr} is assigned to {self.node_ifname}")

    # 7
    def mtu(self) -> CheckResult:
        name = "mtu"
        ip, minimum = self.target.node_ip, self.target.min_mtu
        if ip is None:
            return CheckResult(
                name,
                "skipped",
                "no node IP given",
                "give the node IP to check the MTU of its interface",
            )
        ifname = self.node_ifname
        if ifname is None:
            return CheckResult(
                name,
                "skipped",
                f"skipped: node IP {ip} is on no known local interface",
                "fix the node-ip check first",
            )
        mtu = self.probes.mtu(ifname)
        if mtu is None:
            return CheckResult(
                name,
                "skipped",
                f"cannot read /sys/class/net/{ifname}/mtu",
                f"check `ip link show {ifname}`",
            )
        if mtu < minimum:
            return CheckResult(
                name,
                "fail",
                f"{ifname} MTU {mtu} is below the {minimum} needed (IPsec tunnel overhead)",
                f"raise the MTU of {ifname} to at least {minimum} (netplan `mtu:`, "
                f"`ip link set dev {ifname} mtu 1500`) or fix the path MTU to the VPC",
            )
        return CheckResult(name, "ok", f"{ifname} MTU {mtu} (at least {minimum})")

    # 8
    def kubelet(self) -> CheckResult:
        name = "kubelet"
        unit = self.target.kubelet_unit
        active = self.probes.is_active(unit)
        if active is None:
            return CheckResult(
                name,
                "skipped",
                f"cannot tell whether {unit} is active (no systemd?)",
                f"check the {unit} process by hand",
            )
        if active:
            return CheckResult(name, "ok", f"{unit} is active")
        return CheckResult(
            name,
            "fail",
            f"{unit} is not active",
            f"see why with `journalctl -u {unit} -n 100 --no-pager`, then "
            f"`systemctl restart {unit}`",
        )


def _guarded(name: str, check: Callable[[], CheckResult | list[CheckResult]]) -> list[CheckResult]:
    try:
        outcome = check()
    except Exception as exc:  # a broken probe fails its own check, not the whole run
        first = (str(exc).splitlines() or [""])[0]
        return [
            CheckResult(
                name,
                "fail",
                f"the check itself failed: {type(exc).__name__}: {first}",
                "this is a bug in tether node debug: report it with this detail",
            )
        ]
    return outcome if isinstance(outcome, list) else [outcome]


def run_checks(target: DebugTarget, probes: Probes, now: datetime) -> list[CheckResult]:
    """Run every check in order; ``now`` must be timezone-aware."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    run = _Run(target, probes, now)
    steps: list[tuple[str, Callable[[], CheckResult | list[CheckResult]]]] = [
        ("time-sync", run.time_sync),
        ("swap", run.swap),
        ("dns", run.dns),
        ("api-reachable", run.api_reachable),
        ("certificate", run.certificates),
        ("node-ip", run.node_ip),
        ("mtu", run.mtu),
        ("kubelet", run.kubelet),
    ]
    results: list[CheckResult] = []
    for name, check in steps:
        results.extend(_guarded(name, check))
    return results


# --- the real machine ------------------------------------------------------------------

_STA_UNSYNC: Final = 0x0040
_SIOCGIFADDR: Final = 0x8915
_COMMAND_TIMEOUT: Final = 10.0


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """``struct timex`` of Linux/glibc on 64-bit architectures."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time", _Timeval),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


def adjtimex_synced() -> bool | None:
    """Whether the kernel clock is synchronised (``STA_UNSYNC`` clear); ``None`` if unknown.

    Calls ``adjtimex`` read-only (``modes = 0``), which needs no privilege.
    """
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        tx = _Timex()
        tx.modes = 0
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return not tx.status & _STA_UNSYNC


def _run(argv: list[str]) -> subprocess.CompletedProcess[str] | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=_COMMAND_TIMEOUT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None


def systemctl_is_active(unit: str) -> bool | None:
    """``systemctl is-active``: ``None`` without systemctl or when systemd does not answer."""
    done = _run(["systemctl", "is-active", unit])
    if done is None:
        return None
    state = done.stdout.strip()
    if state in ("active", "reloading", "refreshing"):
        return True
    if state in ("inactive", "failed", "activating", "deactivating", "maintenance"):
        return False
    return None


def ioctl_addresses() -> list[LocalAddress]:
    """The primary IPv4 address of each interface (``SIOCGIFADDR``), without ``ip``."""
    found: list[LocalAddress] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, ifname in socket.if_nameindex():
            request = struct.pack("256s", ifname.encode()[:15])
            try:
                reply = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
            except OSError:  # no IPv4 address on this interface
                continue
            found.append(LocalAddress(ifname, IPv4Address(reply[20:24])))
    return found


@dataclass
class SystemProbes:
    """The probes of this machine. ``is_active`` is injectable (default: systemctl)."""

    is_active_fn: Callable[[str], bool | None] = field(default=systemctl_is_active)
    proc_swaps: Path = Path("/proc/swaps")
    sys_class_net: Path = Path("/sys/class/net")

    def clock_sync(self) -> ClockSync:
        done = _run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"])
        if done is not None and done.returncode == 0 and done.stdout.strip() in ("yes", "no"):
            value = done.stdout.strip()
            return ClockSync(value == "yes", f"timedatectl NTPSynchronized={value}")
        synced = adjtimex_synced()
        if synced is None:
            return ClockSync(None, "no timedatectl answer, adjtimex unavailable")
        flag = "clear" if synced else "set"
        return ClockSync(synced, f"adjtimex STA_UNSYNC {flag}")

    def swap_entries(self) -> list[str] | None:
        try:
            return parse_proc_swaps(self.proc_swaps.read_text())
        except OSError:
            return None

    def resolve(self, host: str) -> list[str]:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        seen: list[str] = []
        for info in infos:
            address = str(info[4][0])
            if address not in seen:
                seen.append(address)
        return seen

    def connect(self, host: str, port: int, timeout: float, ca_file: Path | None) -> Connection:
        context: ssl.SSLContext | None = None
        if ca_file is not None:
            try:
                context = ssl.create_default_context(cafile=str(ca_file))
            except OSError as exc:  # ssl.SSLError is an OSError too
                return Connection("ca_unusable", f"cannot load {ca_file}: {exc}")
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except ConnectionRefusedError as exc:
            return Connection("refused", exc.strerror or str(exc))
        except TimeoutError:
            return Connection("timeout", f"TCP connect timed out after {timeout:g}s")
        except socket.gaierror as exc:
            return Connection("unresolved", exc.strerror or str(exc))
        except OSError as exc:
            return Connection("unreachable", exc.strerror or str(exc))
        with sock:
            peer = sock.getpeername()[0]
            if context is None:
                return Connection("ok", f"TCP connected to {peer}")
            try:
                with context.wrap_socket(sock, server_hostname=host) as tls:
                    return Connection("ok", f"{tls.version()} to {peer}")
            except ssl.SSLCertVerificationError as exc:
                return Connection("tls_untrusted", exc.verify_message or str(exc))
            except TimeoutError:
                return Connection("tls_timeout", f"no TLS answer within {timeout:g}s")
            except OSError as exc:
                return Connection("tls_error", str(exc))

    def read_certs(self, path: Path) -> list[CertInfo]:
        data = path.read_bytes()
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
        return [
            CertInfo(c.subject.rfc4514_string(), c.not_valid_before_utc, c.not_valid_after_utc)
            for c in certs
        ]

    def local_addresses(self) -> list[LocalAddress] | None:
        done = _run(["ip", "-j", "-4", "addr", "show"])
        if done is not None and done.returncode == 0:
            try:
                return parse_ip_json(done.stdout)
            except (ValueError, TypeError, AttributeError):
                pass
        try:
            return ioctl_addresses()
        except OSError:
            return None

    def mtu(self, ifname: str) -> int | None:
        if not ifname or "/" in ifname or ifname in (".", ".."):
            return None
        try:
            return int((self.sys_class_net / ifname / "mtu").read_text().strip())
        except (OSError, ValueError):
            return None

    def is_active(self, unit: str) -> bool | None:
        return self.is_active_fn(unit)
