"""``tether node debug``: every branch of the ordered checks with fake probes, and the real
probes against this machine where that is safe (loopback servers, generated certificates).
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from tether.node import debug as debug_module
from tether.node.debug import (
    CHECK_NAMES,
    EXPIRY_WARNING,
    CertInfo,
    CheckResult,
    ClockSync,
    Connection,
    ConnectOutcome,
    DebugTarget,
    LocalAddress,
    SystemProbes,
    adjtimex_synced,
    ioctl_addresses,
    overall,
    parse_endpoint,
    parse_ip_json,
    parse_proc_swaps,
    run_checks,
    systemctl_is_active,
)
from tether.pki.ca import TrustAnchor

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
API = "https://api.example.com:6443"
CA = Path("/etc/tether/ca.crt")
CLIENT = Path("/var/lib/kubelet/pki/kubelet-client-current.pem")
NODE_IP = IPv4Address("10.200.0.7")
NODE_CIDR = IPv4Network("10.200.0.0/24")


def _valid(days: float = 300, *, since: float = 30) -> CertInfo:
    return CertInfo("CN=test", NOW - timedelta(days=since), NOW + timedelta(days=days))


@dataclass
class FakeProbes:
    """Probes answering from fixed values; records what was connected to and resolved."""

    clock: ClockSync = field(default_factory=lambda: ClockSync(True, "fake clock"))
    swaps: list[str] | None = field(default_factory=list)
    dns: dict[str, list[str]] = field(default_factory=lambda: {"api.example.com": ["10.0.0.10"]})
    connection: Connection = field(default_factory=lambda: Connection("ok", "TLSv1.3"))
    certs: dict[Path, list[CertInfo] | Exception] = field(
        default_factory=lambda: {CA: [_valid(3000)], CLIENT: [_valid()]}
    )
    addresses: list[LocalAddress] | None = field(
        default_factory=lambda: [
            LocalAddress("lo", IPv4Address("127.0.0.1")),
            LocalAddress("eth0", NODE_IP),
        ]
    )
    mtus: dict[str, int] = field(default_factory=lambda: {"lo": 65536, "eth0": 1500})
    active: bool | None = True
    resolved: list[str] = field(default_factory=list)
    connected: list[tuple[str, int, float, Path | None]] = field(default_factory=list)

    def clock_sync(self) -> ClockSync:
        return self.clock

    def swap_entries(self) -> list[str] | None:
        return self.swaps

    def resolve(self, host: str) -> list[str]:
        self.resolved.append(host)
        if host not in self.dns:
            raise socket.gaierror(-2, "Name or service not known")
        return self.dns[host]

    def connect(self, host: str, port: int, timeout: float, ca_file: Path | None) -> Connection:
        self.connected.append((host, port, timeout, ca_file))
        return self.connection

    def read_certs(self, path: Path) -> list[CertInfo]:
        found = self.certs.get(path, FileNotFoundError(2, "No such file", str(path)))
        if isinstance(found, Exception):
            raise found
        return found

    def local_addresses(self) -> list[LocalAddress] | None:
        return self.addresses

    def mtu(self, ifname: str) -> int | None:
        return self.mtus.get(ifname)

    def is_active(self, unit: str) -> bool | None:
        return self.active


class ExplodingClockProbes(FakeProbes):
    """A probe with a bug: its clock read raises something no check expects."""

    def clock_sync(self) -> ClockSync:
        raise RuntimeError("boom\nsecond line")


def _target(**changes: object) -> DebugTarget:
    base = DebugTarget(
        api_endpoint=API,
        ca_file=CA,
        cert_files=[CLIENT],
        node_ip=NODE_IP,
        node_cidr=NODE_CIDR,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def _by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.name: r for r in results}


def _one(probes: FakeProbes, name: str, **changes: object) -> CheckResult:
    return _by_name(run_checks(_target(**changes), probes, NOW))[name]


# --- results, exit code, order ---------------------------------------------------------


def test_all_healthy_in_order() -> None:
    results = run_checks(_target(), FakeProbes(), NOW)
    assert [r.name for r in results] == [
        "time-sync",
        "swap",
        "dns",
        "api-reachable",
        f"certificate:{CA}",
        f"certificate:{CLIENT}",
        "node-ip",
        "mtu",
        "kubelet",
    ]
    assert [r.name.split(":")[0] for r in results if r.name != f"certificate:{CLIENT}"] == list(
        CHECK_NAMES
    )
    assert all(r.status == "ok" and r.remedy is None for r in results), results
    assert overall(results) == 0


def test_as_dict_and_result_invariants() -> None:
    result = CheckResult("swap", "fail", "swap active on /swap.img", "swapoff -a")
    assert result.as_dict() == {
        "name": "swap",
        "status": "fail",
        "detail": "swap active on /swap.img",
        "remedy": "swapoff -a",
    }
    assert CheckResult("swap", "ok", "no swap").as_dict()["remedy"] is None
    with pytest.raises(ValueError, match="without a remedy"):
        CheckResult("swap", "warn", "x")
    with pytest.raises(ValueError, match="one line"):
        CheckResult("swap", "fail", "two\nlines", "fix")


def test_overall() -> None:
    ok = CheckResult("a", "ok", "fine")
    warn = CheckResult("b", "warn", "hmm", "look")
    skipped = CheckResult("c", "skipped", "n/a", "nothing")
    fail = CheckResult("d", "fail", "bad", "fix")
    assert overall([]) == 0
    assert overall([ok, warn, skipped]) == 0
    assert overall([ok, fail, warn]) == 1


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        run_checks(_target(), FakeProbes(), datetime(2030, 1, 1))


def test_a_crashing_probe_fails_only_its_check() -> None:
    results = run_checks(_target(), ExplodingClockProbes(), NOW)
    first = results[0]
    assert (first.name, first.status) == ("time-sync", "fail")
    assert "RuntimeError: boom" in first.detail and "\n" not in first.detail
    assert all(r.status == "ok" for r in results[1:])
    assert overall(results) == 1


# --- 1 time sync -----------------------------------------------------------------------


def test_time_sync_branches() -> None:
    synced = _one(FakeProbes(), "time-sync")
    assert synced.status == "ok" and "fake clock" in synced.detail

    unsynced = _one(FakeProbes(clock=ClockSync(False, "adjtimex STA_UNSYNC set")), "time-sync")
    assert unsynced.status == "fail" and "STA_UNSYNC" in unsynced.detail
    assert unsynced.remedy is not None
    assert "chrony" in unsynced.remedy and "systemd-timesyncd" in unsynced.remedy

    unknown = _one(FakeProbes(clock=ClockSync(None, "no source")), "time-sync")
    assert unknown.status == "skipped" and unknown.remedy is not None


# --- 2 swap ----------------------------------------------------------------------------


def test_swap_branches() -> None:
    on = _one(FakeProbes(swaps=["/swap.img", "/dev/zram0"]), "swap")
    assert on.status == "fail" and "/swap.img, /dev/zram0" in on.detail
    assert on.remedy is not None and "swapoff -a" in on.remedy and "/etc/fstab" in on.remedy

    unknown = _one(FakeProbes(swaps=None), "swap")
    assert unknown.status == "skipped"


def test_parse_proc_swaps() -> None:
    text = (
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
        "/swap.img                               file\t\t2097148\t\t0\t\t-2\n"
        "/dev/zram0                              partition\t8388604\t\t0\t\t100\n"
    )
    assert parse_proc_swaps(text) == ["/swap.img", "/dev/zram0"]
    assert parse_proc_swaps("Filename\tType\tSize\tUsed\tPriority\n") == []
    assert parse_proc_swaps("") == []


# --- 3 DNS and 4 API reachability ------------------------------------------------------


def test_parse_endpoint() -> None:
    assert parse_endpoint("https://api.example.com") == ("api.example.com", 443)
    assert parse_endpoint("https://10.0.0.1:6443/") == ("10.0.0.1", 6443)
    assert parse_endpoint("https://[fd00::1]:6443") == ("fd00::1", 6443)
    for bad in ("http://api.example.com", "api.example.com:6443", "https://", "https://h:99999"):
        with pytest.raises(ValueError):
            parse_endpoint(bad)


def test_dns_resolves_and_api_gets_host_port_timeout_ca() -> None:
    probes = FakeProbes()
    results = _by_name(run_checks(_target(connect_timeout=2.5), probes, NOW))
    assert results["dns"].status == "ok" and "10.0.0.10" in results["dns"].detail
    assert probes.connected == [("api.example.com", 6443, 2.5, CA)]
    assert "TLS verified" in results["api-reachable"].detail


def test_default_port_and_tcp_only_without_ca() -> None:
    probes = FakeProbes(connection=Connection("ok", "TCP connected to 10.0.0.10"))
    api = _one(probes, "api-reachable", api_endpoint="https://api.example.com", ca_file=None)
    assert probes.connected == [("api.example.com", 443, 5.0, None)]
    assert api.status == "ok" and "no CA file" in api.detail


def test_dns_failure_skips_api() -> None:
    probes = FakeProbes(dns={})
    results = _by_name(run_checks(_target(), probes, NOW))
    dns, api = results["dns"], results["api-reachable"]
    assert dns.status == "fail" and "does not resolve" in dns.detail
    assert dns.remedy is not None and "/etc/resolv.conf" in dns.remedy
    assert api.status == "skipped" and api.detail.startswith("skipped: DNS failed")
    assert probes.connected == []


def test_dns_empty_answer_fails() -> None:
    probes = FakeProbes(dns={"api.example.com": []})
    assert _one(probes, "dns").status == "fail"
    assert probes.connected == []


def test_ip_literal_endpoint_skips_dns_but_connects() -> None:
    probes = FakeProbes()
    results = _by_name(run_checks(_target(api_endpoint="https://10.0.0.1:6443"), probes, NOW))
    assert results["dns"].status == "skipped" and "IP address" in results["dns"].detail
    assert probes.resolved == []
    assert probes.connected == [("10.0.0.1", 6443, 5.0, CA)]
    assert results["api-reachable"].status == "ok"


def test_invalid_endpoint_fails_dns_and_skips_api() -> None:
    probes = FakeProbes()
    results = _by_name(run_checks(_target(api_endpoint="http://api.example.com"), probes, NOW))
    assert results["dns"].status == "fail" and "https://" in results["dns"].detail
    assert results["api-reachable"].status == "skipped"
    assert "API endpoint invalid" in results["api-reachable"].detail
    assert probes.connected == [] and probes.resolved == []


@pytest.mark.parametrize(
    ("outcome", "in_remedy"),
    [
        ("refused", "API server is up"),
        ("timeout", "VPN/route to the VPC CIDR"),
        ("unreachable", "VPN/route to the VPC CIDR"),
        ("unresolved", "/etc/resolv.conf"),
        ("ca_unusable", f"{CA}"),
        ("tls_untrusted", "the CA in the NodeConfig does not match the API server"),
        ("tls_timeout", "MTU"),
        ("tls_error", "does not speak TLS"),
    ],
)
def test_api_failures_have_distinct_remedies(outcome: ConnectOutcome, in_remedy: str) -> None:
    api = _one(FakeProbes(connection=Connection(outcome, "observed")), "api-reachable")
    assert api.status == "fail"
    assert "api.example.com:6443" in api.detail and "observed" in api.detail
    assert api.remedy is not None and in_remedy in api.remedy


def test_untrusted_tls_mentions_an_unsynchronised_clock() -> None:
    probes = FakeProbes(
        clock=ClockSync(False, "x"), connection=Connection("tls_untrusted", "expired")
    )
    api = _one(probes, "api-reachable")
    assert api.remedy is not None and "clock is not synchronised" in api.remedy


# --- 5 certificates --------------------------------------------------------------------


def test_no_certificate_files_is_one_skip() -> None:
    results = run_checks(_target(ca_file=None, cert_files=[]), FakeProbes(), NOW)
    certs = [r for r in results if r.name.startswith("certificate")]
    assert [(r.name, r.status) for r in certs] == [("certificate", "skipped")]


def test_ca_listed_twice_is_checked_once() -> None:
    results = run_checks(_target(cert_files=[CA, CLIENT]), FakeProbes(), NOW)
    assert [r.name for r in results if r.name.startswith("certificate")] == [
        f"certificate:{CA}",
        f"certificate:{CLIENT}",
    ]


@pytest.mark.parametrize(
    ("cert", "status", "in_detail"),
    [
        (_valid(300), "ok", "valid until 2031-03-28"),
        (_valid(8), "ok", "8 days left"),
        (_valid(6), "warn", "expires in 6 days"),
        (_valid(0.5), "warn", "expires in 12 hours"),
        (_valid(-2), "fail", "expired at 2030-05-30 12:00 UTC (2 days ago)"),
        (_valid(300, since=-1), "fail", "not valid before 2030-06-02"),
    ],
)
def test_client_certificate_validity(cert: CertInfo, status: str, in_detail: str) -> None:
    probes = FakeProbes(certs={CA: [_valid(3000)], CLIENT: [cert]})
    result = _one(probes, f"certificate:{CLIENT}")
    assert result.status == status
    assert in_detail in result.detail and str(CLIENT) in result.detail
    assert (result.remedy is None) == (status == "ok")


def test_warning_boundary_is_inclusive() -> None:
    cert = CertInfo("CN=edge", NOW - timedelta(days=1), NOW + EXPIRY_WARNING)
    probes = FakeProbes(certs={CA: [_valid(3000)], CLIENT: [cert]})
    assert _one(probes, f"certificate:{CLIENT}").status == "warn"


def test_ca_remedies_differ_from_client_remedies() -> None:
    probes = FakeProbes(certs={CA: [_valid(-1)], CLIENT: [_valid(-1)]})
    results = _by_name(run_checks(_target(), probes, NOW))
    ca, client = results[f"certificate:{CA}"], results[f"certificate:{CLIENT}"]
    assert ca.remedy is not None and "rotate the cluster CA" in ca.remedy
    assert client.remedy is not None and "re-join the node" in client.remedy


def test_not_yet_valid_blames_an_unsynchronised_clock() -> None:
    probes = FakeProbes(
        clock=ClockSync(False, "x"), certs={CA: [_valid(300, since=-1)], CLIENT: [_valid()]}
    )
    ca = _one(probes, f"certificate:{CA}")
    assert ca.status == "fail" and ca.remedy is not None and "time sync" in ca.remedy


def test_bundle_reports_its_worst_certificate() -> None:
    bundle = [_valid(3000), CertInfo("CN=old-ca", NOW - timedelta(days=900), NOW + timedelta(1))]
    probes = FakeProbes(certs={CA: bundle, CLIENT: [_valid()]})
    ca = _one(probes, f"certificate:{CA}")
    assert ca.status == "warn" and "CN=old-ca (the worst of 2)" in ca.detail


@pytest.mark.parametrize(
    ("error", "in_detail", "in_remedy"),
    [
        (None, "is missing", "write the cluster CA"),
        (PermissionError(13, "Permission denied"), "Permission denied", "as root"),
        (ValueError("no PEM"), "holds no certificate", "replace it"),
    ],
)
def test_unreadable_certificate_files(
    error: Exception | None, in_detail: str, in_remedy: str
) -> None:
    certs: dict[Path, list[CertInfo] | Exception] = {CLIENT: [_valid()]}
    if error is not None:
        certs[CA] = error
    ca = _one(FakeProbes(certs=certs), f"certificate:{CA}")
    assert ca.status == "fail" and in_detail in ca.detail
    assert ca.remedy is not None and in_remedy in ca.remedy


def test_missing_client_certificate_and_empty_file() -> None:
    client = _one(FakeProbes(certs={CA: [_valid()]}), f"certificate:{CLIENT}")
    assert client.status == "fail" and client.remedy is not None
    assert "re-join" in client.remedy
    empty = _one(FakeProbes(certs={CA: [_valid()], CLIENT: []}), f"certificate:{CLIENT}")
    assert empty.status == "fail" and "holds no certificate" in empty.detail


# --- 6 node IP and 7 MTU ---------------------------------------------------------------


def test_node_ip_ok_and_mtu_of_its_interface() -> None:
    results = _by_name(run_checks(_target(), FakeProbes(), NOW))
    assert results["node-ip"].detail == "node IP 10.200.0.7 (in 10.200.0.0/24) is assigned to eth0"
    assert results["mtu"].status == "ok" and "eth0 MTU 1500" in results["mtu"].detail


def test_node_ip_outside_cidr_fails_but_mtu_still_runs() -> None:
    results = _by_name(run_checks(_target(node_cidr=IPv4Network("10.9.0.0/16")), FakeProbes(), NOW))
    node_ip = results["node-ip"]
    assert node_ip.status == "fail" and "outside" in node_ip.detail
    assert node_ip.remedy is not None and "10.9.0.0/16" in node_ip.remedy
    assert results["mtu"].status == "ok"


def test_node_ip_not_assigned_locally_fails_and_skips_mtu() -> None:
    probes = FakeProbes(addresses=[LocalAddress("lo", IPv4Address("127.0.0.1"))])
    results = _by_name(run_checks(_target(), probes, NOW))
    assert results["node-ip"].status == "fail"
    assert "no local interface (local: 127.0.0.1 (lo))" in results["node-ip"].detail
    assert results["mtu"].status == "skipped" and "node-ip" in (results["mtu"].remedy or "")


def test_node_ip_without_cidr_or_address_list() -> None:
    no_cidr = _one(FakeProbes(), "node-ip", node_cidr=None)
    assert no_cidr.detail == "node IP 10.200.0.7 is assigned to eth0"
    unknown = _one(FakeProbes(addresses=None), "node-ip")
    assert unknown.status == "warn" and "cannot list local addresses" in unknown.detail


def test_no_node_ip_skips_node_ip_and_mtu() -> None:
    results = _by_name(run_checks(_target(node_ip=None), FakeProbes(), NOW))
    assert results["node-ip"].status == "skipped"
    assert results["mtu"].status == "skipped"


@pytest.mark.parametrize(
    ("mtu", "min_mtu", "status"),
    [
        (1500, 1400, "ok"),
        (1400, 1400, "ok"),
        (1450, 1400, "ok"),
        (1399, 1400, "fail"),
        (1460, 1500, "fail"),
    ],
)
def test_mtu_threshold(mtu: int, min_mtu: int, status: str) -> None:
    probes = FakeProbes(mtus={"eth0": mtu})
    result = _one(probes, "mtu", min_mtu=min_mtu)
    assert result.status == status
    if status == "fail":
        assert result.remedy is not None and f"at least {min_mtu}" in result.remedy


def test_unreadable_mtu_is_skipped() -> None:
    assert _one(FakeProbes(mtus={}), "mtu").status == "skipped"


# --- 8 kubelet -------------------------------------------------------------------------


def test_kubelet_branches() -> None:
    down = _one(FakeProbes(active=False), "kubelet", kubelet_unit="kubelet.service")
    assert down.status == "fail" and down.remedy is not None
    assert "journalctl -u kubelet.service" in down.remedy
    assert "systemctl restart kubelet.service" in down.remedy
    assert _one(FakeProbes(active=None), "kubelet").status == "skipped"


def test_everything_broken_exits_one_and_every_non_ok_has_a_remedy() -> None:
    probes = FakeProbes(
        clock=ClockSync(False, "x"),
        swaps=["/swap.img"],
        dns={},
        certs={},
        addresses=[],
        active=False,
    )
    results = run_checks(_target(), probes, NOW)
    assert overall(results) == 1
    assert all(r.remedy for r in results if r.status != "ok")
    assert {r.status for r in results} == {"fail", "skipped"}


# --- pure parsing of the real probes' raw input ----------------------------------------


def test_parse_ip_json() -> None:
    text = (
        '[{"ifindex":1,"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1",'
        '"prefixlen":8,"label":"lo"},{"family":"inet6","local":"::1","prefixlen":128}]},'
        '{"ifindex":2,"ifname":"eth0","addr_info":[{"family":"inet","local":"10.200.0.7",'
        '"prefixlen":24,"label":"eth0"},{"family":"inet","local":"10.200.0.8","label":"eth0:1"}]},'
        '{"ifindex":3,"ifname":"ifb0","addr_info":[]},{}]'
    )
    assert parse_ip_json(text) == [
        LocalAddress("lo", IPv4Address("127.0.0.1")),
        LocalAddress("eth0", IPv4Address("10.200.0.7")),
        LocalAddress("eth0", IPv4Address("10.200.0.8")),
    ]
    assert parse_ip_json("") == []


# --- the real probes on this machine ---------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server certificate for localhost/127.0.0.1 and an unrelated CA, as files."""
    now = datetime.now(UTC)
    anchor = TrustAnchor.create(now)
    cert_pem, key_pem = anchor.issue_server_cert(["localhost"], ["127.0.0.1"], now=now)
    paths = {
        "ca": tmp_path / "ca.crt",
        "server": tmp_path / "server.crt",
        "key": tmp_path / "server.key",
        "combined": tmp_path / "combined.pem",
        "other_ca": tmp_path / "other-ca.crt",
    }
    paths["ca"].write_bytes(anchor.active.cert_pem())
    paths["server"].write_bytes(cert_pem)
    paths["key"].write_bytes(key_pem)
    paths["combined"].write_bytes(cert_pem + key_pem)  # like kubelet-client-current.pem
    paths["other_ca"].write_bytes(TrustAnchor.create(now).active.cert_pem())
    return paths


@pytest.fixture
def tls_server(pki: dict[str, Path]) -> Iterator[int]:
    """A TLS server on 127.0.0.1 answering handshakes until the test ends; yields its port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki["server"], pki["key"])
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    with context.wrap_socket(conn, server_side=True) as tls:
                        tls.recv(1)  # wait for the client to close
                except OSError:
                    pass  # the client rejected us or went away

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    try:
        yield port
    finally:
        stop.set()
        # wake the blocked accept() with one last connection; the loop then sees stop
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        thread.join(timeout=10)
        listener.close()
        assert not thread.is_alive()


def test_system_swap_read(tmp_path: Path) -> None:
    swaps = tmp_path / "swaps"
    swaps.write_text(
        "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
        "/swapfile                               file\t\t2097148\t\t0\t\t-2\n"
        "/dev/sda2                               partition\t1048572\t\t0\t\t-3\n"
    )
    assert SystemProbes(proc_swaps=swaps).swap_entries() == ["/swapfile", "/dev/sda2"]
    swaps.write_text("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")
    assert SystemProbes(proc_swaps=swaps).swap_entries() == []
    # this machine's: what util-linux's swapon lists
    swapon = subprocess.run(
        ["swapon", "--show=NAME", "--noheadings", "--raw"], capture_output=True, text=True
    )
    if swapon.returncode != 0:
        pytest.skip(f"swapon cannot list swap here: {swapon.stderr.strip()}")
    assert SystemProbes().swap_entries() == swapon.stdout.split()


def test_system_swap_missing_file(tmp_path: Path) -> None:
    assert SystemProbes(proc_swaps=tmp_path / "nope").swap_entries() is None


def test_system_resolve_localhost() -> None:
    addresses = SystemProbes().resolve("localhost")
    assert addresses and set(addresses) & {"127.0.0.1", "::1"}


def test_system_resolve_failure_raises_oserror() -> None:
    with pytest.raises(OSError):
        SystemProbes().resolve("no-such-host.invalid")


def test_system_connect_tcp_and_refused() -> None:
    probes = SystemProbes()
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        ok = probes.connect("127.0.0.1", port, 5.0, None)
    assert ok.outcome == "ok" and "127.0.0.1" in ok.detail
    # bound but not listening: the kernel refuses, and nobody else can take the port
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        refused = probes.connect("127.0.0.1", bound.getsockname()[1], 5.0, None)
    assert refused.outcome == "refused"


def test_system_connect_tls_verified(tls_server: int, pki: dict[str, Path]) -> None:
    probes = SystemProbes()
    for host in ("127.0.0.1", "localhost"):
        result = probes.connect(host, tls_server, 5.0, pki["ca"])
        assert result.outcome == "ok", result
        assert "TLS" in result.detail


def test_system_connect_tls_wrong_ca(tls_server: int, pki: dict[str, Path]) -> None:
    result = SystemProbes().connect("127.0.0.1", tls_server, 5.0, pki["other_ca"])
    assert result.outcome == "tls_untrusted"
    assert "certificate" in result.detail


def test_system_connect_unusable_ca(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.crt"
    bogus.write_text("not a certificate\n")
    probes = SystemProbes()
    assert probes.connect("127.0.0.1", 1, 1.0, bogus).outcome == "ca_unusable"
    assert probes.connect("127.0.0.1", 1, 1.0, tmp_path / "missing").outcome == "ca_unusable"


def test_system_connect_tls_handshake_stalls(pki: dict[str, Path]) -> None:
    # a listener that never accepts: TCP completes in the kernel, TLS never answers
    with socket.create_server(("127.0.0.1", 0)) as silent:
        result = SystemProbes().connect("127.0.0.1", silent.getsockname()[1], 0.2, pki["ca"])
    assert result.outcome == "tls_timeout"


def test_system_read_certs(pki: dict[str, Path]) -> None:
    probes = SystemProbes()
    (ca,) = probes.read_certs(pki["ca"])
    (server,) = probes.read_certs(pki["combined"])  # the key block is ignored
    assert server.subject == "CN=localhost"
    assert server.not_before < server.not_after <= ca.not_after
    assert ca.not_after.tzinfo is not None
    with pytest.raises(FileNotFoundError):
        probes.read_certs(pki["ca"].with_name("missing.crt"))
    with pytest.raises(ValueError):
        probes.read_certs(pki["key"])


def test_system_local_addresses_and_mtu() -> None:
    probes = SystemProbes()
    addresses = probes.local_addresses()
    assert addresses is not None
    assert LocalAddress("lo", IPv4Address("127.0.0.1")) in addresses
    assert LocalAddress("lo", IPv4Address("127.0.0.1")) in ioctl_addresses()
    link = subprocess.run(["ip", "-j", "link", "show", "lo"], capture_output=True, text=True)
    assert probes.mtu("lo") == json.loads(link.stdout)[0]["mtu"]
    assert probes.mtu("../lo") is None
    assert probes.mtu("no-such-if0") is None


def test_system_mtu_read(tmp_path: Path) -> None:
    (tmp_path / "eth9").mkdir()
    (tmp_path / "eth9" / "mtu").write_text("1400\n")
    (tmp_path / "wg0").mkdir()
    (tmp_path / "wg0" / "mtu").write_text("not a number\n")
    probes = SystemProbes(sys_class_net=tmp_path)
    assert (probes.mtu("eth9"), probes.mtu("wg0"), probes.mtu("eth0")) == (1400, None, None)


def _answers(monkeypatch: pytest.MonkeyPatch, stdout: str | None) -> None:
    """Every command the probes run answers ``stdout`` (``None``: it is not installed)."""

    def run(argv: list[str]) -> subprocess.CompletedProcess[str] | None:
        if stdout is None:
            return None
        return subprocess.CompletedProcess(argv, 0 if stdout else 1, stdout, "")

    monkeypatch.setattr(debug_module, "_run", run)


@pytest.mark.parametrize(
    ("timedatectl", "adjtimex", "expected"),
    [
        ("yes\n", None, ClockSync(True, "timedatectl NTPSynchronized=yes")),
        ("no\n", True, ClockSync(False, "timedatectl NTPSynchronized=no")),
        (None, True, ClockSync(True, "adjtimex STA_UNSYNC clear")),
        ("", False, ClockSync(False, "adjtimex STA_UNSYNC set")),  # no systemd answers
        (None, None, ClockSync(None, "no timedatectl answer, adjtimex unavailable")),
    ],
)
def test_system_clock_sync_sources(
    monkeypatch: pytest.MonkeyPatch,
    timedatectl: str | None,
    adjtimex: bool | None,
    expected: ClockSync,
) -> None:
    _answers(monkeypatch, timedatectl)
    monkeypatch.setattr(debug_module, "adjtimex_synced", lambda: adjtimex)
    assert SystemProbes().clock_sync() == expected


def test_system_adjtimex_answers_on_linux() -> None:
    # read-only adjtimex needs no privilege: on Linux with a libc it always answers
    assert adjtimex_synced() is not None


@pytest.mark.parametrize(
    ("stdout", "expected"),
    [
        ("active\n", True),
        ("reloading\n", True),
        ("inactive\n", False),
        ("failed\n", False),
        ("", None),  # systemctl present, systemd not running (as on this test machine)
        (None, None),  # no systemctl
    ],
)
def test_systemctl_is_active_states(
    monkeypatch: pytest.MonkeyPatch, stdout: str | None, expected: bool | None
) -> None:
    _answers(monkeypatch, stdout)
    assert systemctl_is_active("kubelet.service") is expected


def test_system_probes_end_to_end(tls_server: int, pki: dict[str, Path]) -> None:
    """The real probes against loopback; only the kubelet state is injected."""
    target = DebugTarget(
        api_endpoint=f"https://localhost:{tls_server}",
        ca_file=pki["ca"],
        cert_files=[pki["combined"]],
        node_ip=IPv4Address("127.0.0.1"),
        node_cidr=IPv4Network("127.0.0.0/8"),
        kubelet_unit="kubelet",
    )
    units: list[str] = []

    def is_active(unit: str) -> bool | None:
        units.append(unit)
        return True

    results = _by_name(run_checks(target, SystemProbes(is_active_fn=is_active), datetime.now(UTC)))
    for name in (
        "dns",
        "api-reachable",
        f"certificate:{pki['ca']}",
        f"certificate:{pki['combined']}",
        "node-ip",
        "mtu",
        "kubelet",
    ):
        assert results[name].status == "ok", results[name]
    assert "lo" in results["node-ip"].detail
    assert units == ["kubelet"]
