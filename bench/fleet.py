"""Fleet benchmark: N simulated agents heartbeating over real mutual TLS against one plane.

    .venv/bin/python bench/fleet.py --backend sqlite --hosts 1000,10000,20000
    .venv/bin/python bench/fleet.py --backend postgres --postgres-url postgresql+psycopg://...

Each step starts a fresh plane (people's API + agent server, as ``tether serve`` does) in
this process, enrols N hosts straight in the store, and starts ``--load-procs`` load
processes. Each simulated agent has its own certificate (CN = its node name, signed by
the plane's CA), opens one TLS connection, and sends a heartbeat every ``--interval``
seconds (±10 % jitter) over HTTP/1.1 keep-alive, exactly the bytes the real agent sends.
Agents start spread over one interval (a fleet does not beat in lockstep). Latency is
measured from writing the request to reading the whole response, over a measurement
window after the ramp-up. Server CPU is this process's CPU time over the window.

Bytes per heartbeat are the HTTP request and response as sent; on the wire each adds a
TLS 1.3 record (5-byte header, 1-byte type, 16-byte tag: +22 bytes each way).

Everything runs on loopback and every step ends by itself (``--ramp`` + ``--measure``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import resource
import socket
import ssl
import statistics
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

from tether.domain.states import HostState
from tether.pki import TrustAnchor
from tether.pki.authority import private_key_pem
from tether.server import ServerThread
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


async def _agent(
    name: str,
    ctx: ssl.SSLContext,
    port: int,
    interval: float,
    start: float,
    measure_from: float,
    end: float,
    out: dict[str, Any],
    rng: random.Random,
) -> None:
    loop = asyncio.get_running_loop()
    # Connections are long-lived: open them spread over one interval, then beat, also
    # spread, so the measurement sees steady state rather than a handshake storm.
    await asyncio.sleep(max(0.0, start + rng.uniform(0, interval) - loop.time()))
    req = request_bytes(name)
    writer = None
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
        )
    except (OSError, ssl.SSLError) as exc:
        out["errors"] += 1
        out["last_error"] = repr(exc)[:120]
    await asyncio.sleep(max(0.0, start + interval + rng.uniform(0, interval) - loop.time()))
    while loop.time() < end:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
                )
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            latency = time.perf_counter() - t0
            status = int(head.split(b" ", 2)[1])
            if status != 204:
                out["errors"] += 1
                out["last_error"] = head[:80].decode(errors="replace")
            elif loop.time() >= measure_from:
                out["lat"].append(latency)
                out["bytes"] = len(req) + len(head)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError, ValueError) as exc:
            out["errors"] += 1
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
    ramp: float,
    measure: float,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    import gc

    workdir = Path(tempfile.mkdtemp(prefix="fleet-"))
    contexts = _certs(ca_dir, names, workdir)
    _raise_nofile()
    ready.put(len(contexts))
    go.wait()
    gc.freeze()
    out: dict[str, Any] = {"lat": [], "errors": 0, "bytes": 0, "last_error": ""}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        rng = random.Random(os.getpid())
        loop.call_at(start + ramp, lambda: out.__setitem__("cpu0", time.process_time()))
        loop.call_at(start + ramp + measure, lambda: out.__setitem__("cpu1", time.process_time()))
        await asyncio.gather(
            *(
                _agent(n, c, port, interval, start, start + ramp, start + ramp + measure, out, rng)
                for n, c in zip(names, contexts, strict=True)
            )
        )

    asyncio.run(main())
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


def run_step(args: argparse.Namespace, hosts: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="fleet-plane-"))
    url, drop = _database_url(args.backend, args.postgres_url, tmp)
    names = [f"h{i:06d}" for i in range(hosts)]
    t_setup = time.monotonic()
    seed_hosts(url, names)
    settings = Settings()
    settings.paths.data_dir = tmp / "data"
    settings.database.url = url
    settings.api.port = free_port()
    settings.agent.port = free_port()
    settings.agent.heartbeat_seconds = args.interval
    settings.agent.reconcile_seconds = 5
    # Simulated agents open their connection up to one interval before the first beat;
    # the plane closes a connection that sends no request head within this long.
    settings.agent.header_timeout_seconds = args.interval * 2 + 10
    server = ServerThread(settings, log_level="error").start()
    ca_dir = str(settings.pki_dir / "ca")
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    shares = [names[i :: args.load_procs] for i in range(args.load_procs)]
    procs = [
        ctx.Process(
            target=load_process,
            args=(
                ca_dir,
                share,
                server.ports["agent"],
                args.interval,
                args.ramp,
                args.measure,
                ready,
                go,
                results,
            ),
        )
        for share in shares
    ]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=1800)
    setup = time.monotonic() - t_setup
    go.set()
    time.sleep(args.ramp)
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    time.sleep(args.measure)
    cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    outs = [results.get(timeout=args.interval * 3 + 60) for _ in procs]
    for p in procs:
        p.join(30)
    server.stop()
    if drop:
        drop()
    lat = sorted(x for o in outs for x in o["lat"])
    errors = sum(o["errors"] for o in outs)
    cpu = (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / (wall1 - wall0)
    http_bytes = max(o["bytes"] for o in outs)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1000 if lat else float("nan")

    return {
        "backend": args.backend,
        "hosts": hosts,
        "intervalSeconds": args.interval,
        "targetRate": round(hosts / args.interval, 1),
        "heartbeats": len(lat),
        "rate": round(len(lat) / args.measure, 1),
        "errors": errors,
        "lastError": next((o["last_error"] for o in outs if o["last_error"]), ""),
        "p50ms": round(pct(0.50), 2),
        "p99ms": round(pct(0.99), 2),
        "meanMs": round(statistics.fmean(lat) * 1000, 2) if lat else None,
        "serverCPU": round(cpu, 3),
        "loadCPU": round(sum(o.get("cpu1", 0) - o.get("cpu0", 0) for o in outs) / args.measure, 3),
        "httpBytesPerHeartbeat": http_bytes,
        "wireBytesPerHeartbeat": http_bytes + 2 * TLS_RECORD_OVERHEAD,
        "setupSeconds": round(setup, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--postgres-url", default=os.environ.get("TETHER_TEST_POSTGRES_URL"))
    parser.add_argument("--hosts", default="1000,10000")
    parser.add_argument("--interval", type=float, default=30.0)
    parser.add_argument(
        "--ramp", type=float, default=None, help="seconds before measuring (2 intervals + 5)"
    )
    parser.add_argument("--measure", type=float, default=30.0)
    parser.add_argument("--load-procs", type=int, default=2)
    parser.add_argument("--stop-p99-ms", type=float, default=200.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.ramp is None:
        args.ramp = 2 * args.interval + 5
    _raise_nofile()
    rows = []
    for hosts in [int(h) for h in args.hosts.split(",")]:
        print(f"running {args.backend} with {hosts} hosts ...", file=sys.stderr, flush=True)
        row = run_step(args, hosts)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
        if row["p99ms"] > args.stop_p99_ms or row["errors"] > hosts * 0.01:
            print("stopping: over the latency or error budget", file=sys.stderr)
            break
    header = (
        f"{'backend':8} {'hosts':>7} {'target/s':>9} {'beats/s':>8} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'CPU':>6} {'B/beat':>7} {'errors':>6}"
    )
    print(header)
    for r in rows:
        print(
            f"{r['backend']:8} {r['hosts']:>7} {r['targetRate']:>9} {r['rate']:>8} "
            f"{r['p50ms']:>8} {r['p99ms']:>8} {r['serverCPU']:>6} "
            f"{r['httpBytesPerHeartbeat']:>4}+{2 * TLS_RECORD_OVERHEAD} {r['errors']:>6}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(args.out.read_text()) if args.out.exists() else {"runs": []}
    existing["runs"] = [
        r
        for r in existing["runs"]
        if (r["backend"], r["hosts"]) not in {(x["backend"], x["hosts"]) for x in rows}
    ] + rows
    existing["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    args.out.write_text(json.dumps(existing, indent=2) + "\n")


if __name__ == "__main__":
    main()
