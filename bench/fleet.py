"""Fleet benchmark: N simulated agents heartbeating over real mutual TLS against one plane.

    .venv/bin/python bench/fleet.py --backend sqlite --hosts 1000,10000,18000
    .venv/bin/python bench/fleet.py --backend postgres --hosts 1000,10000,18000

(``--postgres-url`` defaults to ``TETHER_TEST_POSTGRES_URL``; the bench creates and drops
its own database in that server.)

Each step enrols N hosts straight in the store, creates the plane's CA, lets
``--load-procs`` load processes sign a certificate for each host, then starts a fresh
plane (people's API + agent server, as ``tether serve`` does) in this process and lets
the load go. The plane starts only once the hosts' certificates exist, as it would for
a running fleet: a plane that watched its hosts stay silent through a long setup would
rightly call them Unreachable, and the step would measure their recovery instead.

Each simulated agent has its own certificate (CN = its node name), opens one TLS
connection, and sends a heartbeat every ``--interval`` seconds (±10 % jitter) over
HTTP/1.1 keep-alive, exactly the bytes the real agent sends. Agents connect spread over
one interval and beat spread over the next (a fleet does not beat in lockstep). Latency
is measured from writing the request to reading the whole response, over a measurement
window after the ramp-up. Server CPU is this process's CPU time (the plane, which runs
here) over the window and over the ramp; loop lag is the plane's own probe
(:mod:`tether.services.looplag`) over the window, as bucket upper bounds.

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
import asyncio
import json
import multiprocessing as mp
import os
import random
import resource
import shutil
import socket
import ssl
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
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


# --- load process ---------------------------------------------------------------------------


def _certs(ca_dir: str, names: list[str], workdir: Path) -> list[ssl.SSLContext]:
    anchor = TrustAnchor.load(Path(ca_dir), host_cert_lifetime=timedelta(hours=2))
    key = ec.generate_private_key(ec.SECP256R1())
    key_path = workdir / "host.key"
    key_path.write_bytes(private_key_pem(key))
    ca_path = Path(ca_dir) / "active" / "ca.crt"
    contexts = []
    now = utcnow()
    for name in names:
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )
        cert_path = workdir / f"{name}.crt"
        cert_path.write_bytes(anchor.sign_host_csr(csr, name, now=now))
        ctx = ssl.create_default_context(cafile=str(ca_path))
        ctx.load_cert_chain(cert_path, key_path)
        contexts.append(ctx)
    return contexts


@dataclass
class Phases:
    """What the load processes share with the bench: how many agents are connected, and
    whether the measurement window is open or over."""

    connected: Any  # multiprocessing Value("i")
    measuring: Any  # multiprocessing Event
    done: Any  # multiprocessing Event

    def count_connected(self) -> None:
        with self.connected.get_lock():
            self.connected.value += 1


async def _agent(
    name: str,
    ctx: ssl.SSLContext,
    port: int,
    interval: float,
    start: float,
    phases: Phases,
    out: dict[str, Any],
    rng: random.Random,
) -> None:
    loop = asyncio.get_running_loop()

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        t0 = time.perf_counter()
        conn = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
        )
        out["connect"].append(time.perf_counter() - t0)
        return conn

    # Connections are long-lived: open them spread over one interval, then beat, also
    # spread, so the measurement sees steady state rather than a handshake storm.
    await asyncio.sleep(max(0.0, start + rng.uniform(0, interval) - loop.time()))
    req = request_bytes(name)
    writer = None
    counted = False
    try:
        reader, writer = await connect()
    except (OSError, ssl.SSLError) as exc:
        out["ramp_errors"] += 1
        out["last_error"] = repr(exc)[:120]
    await asyncio.sleep(max(0.0, start + interval + rng.uniform(0, interval) - loop.time()))
    while not phases.done.is_set():
        try:
            if writer is None:
                reader, writer = await connect()
            if not counted:
                phases.count_connected()
                counted = True
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            latency = time.perf_counter() - t0
            status = int(head.split(b" ", 2)[1])
            if status != 204:
                out["errors" if phases.measuring.is_set() else "ramp_errors"] += 1
                out["last_error"] = head[:80].decode(errors="replace")
            elif phases.measuring.is_set():
                out["lat"].append(latency)
                out["bytes"] = len(req) + len(head)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError, ValueError) as exc:
            out["errors" if phases.measuring.is_set() else "ramp_errors"] += 1
            out["last_error"] = repr(exc)[:120]
            writer = None
        await asyncio.sleep(interval * (1 + rng.uniform(-0.1, 0.1)))
    if writer is not None:
        writer.close()


def load_process(
    ca_dir: str,
    names: list[str],
    port: int,
    interval: float,
    ready: Any,
    go: Any,
    phases: Phases,
    results: Any,
) -> None:
    import gc

    workdir = Path(tempfile.mkdtemp(prefix="fleet-"))
    contexts = _certs(ca_dir, names, workdir)
    _raise_nofile()
    ready.put(len(contexts))
    go.wait()
    gc.freeze()
    out: dict[str, Any] = {
        "lat": [],
        "connect": [],
        "errors": 0,
        "ramp_errors": 0,
        "bytes": 0,
        "last_error": "",
    }

    async def main() -> None:
        start = asyncio.get_running_loop().time()
        rng = random.Random(os.getpid())
        await asyncio.gather(
            *(
                _agent(n, c, port, interval, start, phases, out, rng)
                for n, c in zip(names, contexts, strict=True)
            )
        )

    asyncio.run(main())
    shutil.rmtree(workdir, ignore_errors=True)
    results.put(out)


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
    ca_dir = str(settings.pki_dir / "ca")
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    phases = Phases(ctx.Value("i", 0), ctx.Event(), ctx.Event())
    shares = [names[i :: args.load_procs] for i in range(args.load_procs)]
    procs = [
        ctx.Process(
            target=load_process,
            args=(ca_dir, share, settings.agent.port, args.interval, ready, go, phases, results),
        )
        for share in shares
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=1800)
    server = ServerThread(settings, log_level="error").start()
    assert server.plane is not None
    setup = time.monotonic() - t_setup
    go.set()
    ramp0, go_at = _cpu_seconds(), time.monotonic()
    time.sleep(args.ramp)
    # Steady state: every agent is connected and has had its first heartbeat answered.
    while phases.connected.value < hosts and time.monotonic() - go_at < args.connect_timeout:
        time.sleep(0.5)
    connected_after = time.monotonic() - go_at
    if phases.connected.value < hosts:
        print(f"only {phases.connected.value} agents connected", file=sys.stderr)
    ramp_cpu = (_cpu_seconds() - ramp0) / (time.monotonic() - go_at)
    load0 = sum(proc_cpu_seconds(p.pid) for p in procs)
    phases.measuring.set()
    cpu0, wall0, lag0 = _cpu_seconds(), time.monotonic(), server.plane.lag.snapshot()
    time.sleep(args.measure)
    cpu1, wall1, lag1 = _cpu_seconds(), time.monotonic(), server.plane.lag.snapshot()
    load1 = sum(proc_cpu_seconds(p.pid) for p in procs)
    phases.measuring.clear()
    phases.done.set()
    rss = round(proc_rss_mib(os.getpid()), 1)
    outs = [results.get(timeout=args.interval * 3 + 60) for _ in procs]
    for p in procs:
        p.join(30)
    server.stop()
    if drop:
        drop()
    shutil.rmtree(tmp, ignore_errors=True)
    lat = sorted(x for o in outs for x in o["lat"])
    connect = sorted(x for o in outs for x in o["connect"])
    errors = sum(o["errors"] for o in outs)
    http_bytes = max(o["bytes"] for o in outs)
    lag = lag1.since(lag0)
    return {
        "backend": args.backend,
        "hosts": hosts,
        "intervalSeconds": args.interval,
        "targetRate": round(hosts / args.interval, 1),
        "heartbeats": len(lat),
        "rate": round(len(lat) / (wall1 - wall0), 1),
        "errors": errors,
        "rampErrors": sum(o["ramp_errors"] for o in outs),
        "lastError": next((o["last_error"] for o in outs if o["last_error"]), ""),
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
    parser.add_argument("--load-procs", type=int, default=2)
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
