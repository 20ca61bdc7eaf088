"""Fleet benchmark: N simulated agents heartbeating over real mutual TLS against one plane.

    .venv/bin/python bench/fleet.py --backend sqlite --hosts 1000,10000,18000
    .venv/bin/python bench/fleet.py --backend postgres --hosts 1000,10000,18000

(``--postgres-url`` defaults to ``TETHER_TEST_POSTGRES_URL``; the bench creates and drops
its own database in that server.)

Each step enrols N hosts straight in the store, creates the plane's CA, signs a
certificate for each host (one process per core), starts the load program
(``bench/fleetload``, built with Go), then starts a fresh plane (people's API + agent
server, as ``tether serve`` does) in this process and lets the load go. The plane starts
only once the hosts' certificates exist, as it would for a running fleet: a plane that
watched its hosts stay silent through a long setup would rightly call them Unreachable,
and the step would measure their recovery instead.

Each simulated agent has its own certificate (CN = its node name), opens one TLS
connection, and sends a heartbeat every ``--interval`` seconds (±10 % jitter) over
HTTP/1.1 keep-alive, exactly the bytes the real agent sends. Agents connect spread over
one interval and beat spread over the next (a fleet does not beat in lockstep). Latency
is measured from writing the request to reading the whole response, over a measurement
window after the ramp-up. The load is a Go program because plane and load share this
machine: simulated agents in Python took about one of its two cores at 18,000 hosts,
which the plane then lacked, and their own event loops' delays were counted as the
plane's latency (``loadCPU`` is the load's CPU over the window). Server CPU is this
process's CPU time (the plane, which runs here) over the window and over the ramp; loop
lag is the plane's own probe (:mod:`tether.services.looplag`) over the window, as bucket
upper bounds.

Bytes per heartbeat are the HTTP request and response as sent; on the wire each adds a
TLS 1.3 record (5-byte header, 1-byte type, 16-byte tag: +22 bytes each way).

The window opens after ``--ramp`` seconds, once every agent has connected and had its
first heartbeat answered (at the latest ``--connect-timeout`` seconds after the load
starts): a connection storm the plane cannot absorb in time shows as a long
``allConnectedSeconds``, many ``rampErrors`` (handshakes that timed out) and
``rampServerCPU``, and, if it outlasts ``--connect-timeout``, in the window too.
Everything runs on loopback and every step ends by itself.
Each row of ``bench/results/fleet.json`` carries the machine facts (:mod:`machine`) and
the load average before and after the step: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import create_engine, insert, text
from sqlalchemy.engine import make_url

from machine import facts, load_average, proc_cpu_seconds, proc_rss_mib
from tether.domain.states import HostState
from tether.pki import TrustAnchor
from tether.pki.authority import private_key_pem
from tether.server import ServerThread
from tether.services.trust import PlaneTrust
from tether.settings import Settings
from tether.store.db import Database, migrate
from tether.store.schema import HostAgentRow, HostRow, SiteRow, utcnow

TLS_RECORD_OVERHEAD = 22
RESULTS = Path(__file__).parent / "results" / "fleet.json"


def _raise_nofile() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request_bytes(name: str) -> bytes:
    body = b'{"n":1}'
    return (
        f"POST /agent/v1/hosts/{name}/heartbeat HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# --- load ---------------------------------------------------------------------------------------

LOAD_SOURCE = Path(__file__).parent / "fleetload" / "main.go"
LOAD_BINARY = Path.home() / ".cache" / "tether" / "bench" / "fleetload"


def write_certs(ca_dir: str, names: list[str], workdir: Path) -> None:
    """Sign a certificate (CN and DNS name = the host's name) for each name into
    ``workdir/NAME.crt``, all for the key ``workdir/host.key`` (made if missing), next to
    the CA (``ca.crt``)."""
    key_path = workdir / "host.key"
    if not key_path.exists():
        key_path.write_bytes(private_key_pem(ec.generate_private_key(ec.SECP256R1())))
        shutil.copyfile(Path(ca_dir) / "active" / "ca.crt", workdir / "ca.crt")
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    anchor = TrustAnchor.load(Path(ca_dir), host_cert_lifetime=timedelta(hours=2))
    now = utcnow()
    for name in names:
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )
        (workdir / f"{name}.crt").write_bytes(anchor.sign_host_csr(csr, name, now=now))


def _certs(ca_dir: str, names: list[str], workdir: Path) -> list[ssl.SSLContext]:
    """Python TLS client contexts for ``names`` (for benches whose load is Python)."""
    write_certs(ca_dir, names, workdir)
    contexts = []
    for name in names:
        ctx = ssl.create_default_context(cafile=str(workdir / "ca.crt"))
        ctx.load_cert_chain(workdir / f"{name}.crt", workdir / "host.key")
        contexts.append(ctx)
    return contexts


class Load:
    """The Go load program (``bench/fleetload``) for ``names``, driven over its stdin."""

    def __init__(self, ca_dir: str, names: list[str], port: int, interval: float) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="fleet-load-"))
        write_certs(ca_dir, [], self.workdir)  # the key and the CA
        (self.workdir / "names").write_text("\n".join(names) + "\n")
        # Signing 18,000 certificates takes a while: one process per core.
        cores = os.cpu_count() or 1
        with mp.get_context("spawn").Pool(cores) as pool:
            pool.starmap(
                write_certs, [(ca_dir, names[i::cores], self.workdir) for i in range(cores)]
            )
        self.process = subprocess.Popen(
            [str(build_load()), "-dir", str(self.workdir), "-port", str(port),
             "-interval", str(interval)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.expect("ready") == len(names)

    def expect(self, word: str) -> int:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        if line[:1] != [word]:
            raise RuntimeError(f"fleetload said {line!r}, expected {word!r}")
        return int(line[1])

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def connected(self) -> int:
        self.send("status")
        return self.expect("connected")

    def finish(self) -> dict[str, Any]:
        self.send("done")
        assert self.process.stdout is not None
        out: dict[str, Any] = json.loads(self.process.stdout.readline())
        self.process.wait(30)
        shutil.rmtree(self.workdir, ignore_errors=True)
        return out


def build_load() -> Path:
    """Build the load program (Go's build cache makes a rebuild of unchanged code quick)."""
    LOAD_BINARY.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["go", "build", "-trimpath", "-o", str(LOAD_BINARY), str(LOAD_SOURCE)],
        check=True, env=os.environ | {"GOFLAGS": "-mod=mod"},
    )  # fmt: skip
    return LOAD_BINARY


# --- plane --------------------------------------------------------------------------------------


def _database_url(backend: str, pg_url: str | None, tmp: Path) -> tuple[str, Any]:
    if backend == "sqlite":
        return f"sqlite:///{tmp / 'tether.db'}", None
    assert pg_url, "--postgres-url (or TETHER_TEST_POSTGRES_URL) is needed for postgres"
    base = make_url(pg_url)
    name = f"tether_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return base.set(database=name).render_as_string(hide_password=False), drop


def seed_hosts(url: str, names: list[str]) -> None:
    db = Database.connect(url)
    migrate(db.engine)
    now = utcnow()
    with db.session() as s:
        s.execute(
            insert(SiteRow),
            [
                {
                    "name": "dc1",
                    "spec": {},
                    "resource_version": 1,
                    "created_at": now,
                    "updated_at": now,
                }
            ],
        )
        for i in range(0, len(names), 5000):
            chunk = names[i : i + 5000]
            s.execute(
                insert(HostRow),
                [
                    {
                        "name": n,
                        "host_id": n,
                        "site": "dc1",
                        "pool": None,
                        "state": HostState.READY.value,
                        "health": "Healthy",
                        "inventory": {},
                        "spec": {"site": "dc1"},
                        "resource_version": 1,
                        "created_at": now,
                        "updated_at": now,
                        "last_heartbeat": now,
                    }
                    for n in chunk
                ],
            )
            s.execute(
                insert(HostAgentRow),
                [
                    {
                        "host_name": n,
                        "failing_checks": {},
                        "enrolled_at": now,
                        "reenrol_allowed": False,
                        "agent_version": "0.1.0",
                    }
                    for n in chunk
                ],
            )
    db.dispose()


def plane_settings(tmp: Path, url: str, interval: float) -> Settings:
    """A fresh plane's settings (store ``url``, free ports, heartbeats every ``interval``),
    its trust anchor made, so that the hosts' certificates can exist before it starts."""
    settings = Settings()
    settings.paths.data_dir = tmp / "data"
    settings.database.url = url
    settings.api.port = free_port()
    settings.agent.port = free_port()
    settings.agent.heartbeat_seconds = interval
    PlaneTrust(settings)
    return settings


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))] * 1000 if values else float("nan")


def run_step(args: argparse.Namespace, hosts: int) -> dict[str, Any]:
    load_before = load_average()
    tmp = Path(tempfile.mkdtemp(prefix="fleet-plane-"))
    url, drop = _database_url(args.backend, args.postgres_url, tmp)
    names = [f"h{i:06d}" for i in range(hosts)]
    t_setup = time.monotonic()
    seed_hosts(url, names)
    settings = plane_settings(tmp, url, args.interval)
    settings.agent.reconcile_seconds = 5
    # Simulated agents open their connection up to one interval before the first beat;
    # the plane closes a connection that sends no request head within this long.
    settings.agent.header_timeout_seconds = args.interval * 2 + 10
    load = Load(str(settings.pki_dir / "ca"), names, settings.agent.port, args.interval)
    server = ServerThread(settings, log_level="error").start()
    assert server.plane is not None
    setup = time.monotonic() - t_setup
    load.send("go")
    ramp0, go_at = _cpu_seconds(), time.monotonic()
    time.sleep(args.ramp)
    # Steady state: every agent is connected and has had its first heartbeat answered.
    while (
        connected := load.connected()
    ) < hosts and time.monotonic() - go_at < args.connect_timeout:
        time.sleep(0.5)
    connected_after = time.monotonic() - go_at
    if connected < hosts:
        print(f"only {connected} agents connected", file=sys.stderr)
    ramp_cpu = (_cpu_seconds() - ramp0) / (time.monotonic() - go_at)
    load0 = proc_cpu_seconds(load.process.pid)
    load.send("measure")
    cpu0, wall0, lag0 = _cpu_seconds(), time.monotonic(), server.plane.lag.snapshot()
    time.sleep(args.measure)
    cpu1, wall1, lag1 = _cpu_seconds(), time.monotonic(), server.plane.lag.snapshot()
    load1 = proc_cpu_seconds(load.process.pid)
    rss = round(proc_rss_mib(os.getpid()), 1)
    out = load.finish()
    server.stop()
    if drop:
        drop()
    shutil.rmtree(tmp, ignore_errors=True)
    lat, connect = sorted(out["lat"]), sorted(out["connect"])
    errors, http_bytes = out["errors"], out["bytes"]
    lag = lag1.since(lag0)
    return {
        "backend": args.backend,
        "hosts": hosts,
        "intervalSeconds": args.interval,
        "targetRate": round(hosts / args.interval, 1),
        "heartbeats": len(lat),
        "rate": round(len(lat) / (wall1 - wall0), 1),
        "errors": errors,
        "rampErrors": out["ramp_errors"],
        "lastError": out["last_error"],
        "p50ms": round(_pct(lat, 0.50), 2),
        "p99ms": round(_pct(lat, 0.99), 2),
        "meanMs": round(statistics.fmean(lat) * 1000, 2) if lat else None,
        "serverCPU": round((cpu1 - cpu0) / (wall1 - wall0), 3),
        "rampServerCPU": round(ramp_cpu, 3),
        "connectP99ms": round(_pct(connect, 0.99), 1),
        "allConnectedSeconds": round(connected_after, 1),
        "loopLagP99ms": lag.quantile(0.99) * 1000,
        "loopLagMaxMs": lag.max * 1000,
        "serverRSSMiB": rss,
        "loadCPU": round((load1 - load0) / (wall1 - wall0), 3),
        "httpBytesPerHeartbeat": http_bytes,
        "wireBytesPerHeartbeat": http_bytes + 2 * TLS_RECORD_OVERHEAD,
        "setupSeconds": round(setup, 1),
        "loadAverageBefore": load_before,
        "loadAverageAfter": load_average(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--postgres-url", default=os.environ.get("TETHER_TEST_POSTGRES_URL"))
    parser.add_argument("--hosts", default="1000,10000,18000")
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument(
        "--ramp", type=float, default=None, help="seconds before measuring (2 intervals + 5)"
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=600.0,
        help="open the window at the latest this long after the load starts, even if not "
        "every agent has connected yet",
    )
    parser.add_argument("--measure", type=float, default=30.0)
    parser.add_argument("--stop-p99-ms", type=float, default=1000.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.ramp is None:
        args.ramp = 2 * args.interval + 5
    _raise_nofile()
    machine = facts(postgres_url=args.postgres_url if args.backend == "postgres" else None)
    rows = []
    for hosts in [int(h) for h in args.hosts.split(",")]:
        print(f"running {args.backend} with {hosts} hosts ...", file=sys.stderr, flush=True)
        row = run_step(args, hosts) | {"machine": machine}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if row["p99ms"] > args.stop_p99_ms or row["errors"] > hosts * 0.01:
            print("stopping: over the latency or error budget", file=sys.stderr)
            break
    print(
        f"{'backend':8} {'hosts':>6} {'beats/s':>8} {'p50 ms':>7} {'p99 ms':>8} {'CPU':>6}"
        f" {'lag p99':>8} {'lag max':>8} {'ramp CPU':>8} {'RSS MiB':>8} {'errors':>6}"
        f"  load before / after"
    )
    for r in rows:
        print(
            f"{r['backend']:8} {r['hosts']:>6} {r['rate']:>8} {r['p50ms']:>7} {r['p99ms']:>8} "
            f"{r['serverCPU']:>6} {r['loopLagP99ms']:>8g} {r['loopLagMaxMs']:>8g} "
            f"{r['rampServerCPU']:>8} {r['serverRSSMiB']:>8} {r['errors']:>6}  "
            f"{r['loadAverageBefore'][0]} / {r['loadAverageAfter'][0]}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(args.out.read_text()) if args.out.exists() else {"runs": []}
    done = {(x["backend"], x["hosts"]) for x in rows}
    kept = [r for r in existing["runs"] if (r["backend"], r["hosts"]) not in done]
    existing["runs"] = sorted(kept + rows, key=lambda r: (r["backend"], r["hosts"]))
    existing.pop("machine", None)  # facts are per run: runs may come from different days
    args.out.write_text(json.dumps(existing, indent=2) + "\n")


if __name__ == "__main__":
    main()
