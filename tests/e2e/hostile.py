"""Hostile clients against a served plane: each attack class counts what got through.

The plane runs as ``tether serve`` in a subprocess (umask 0, small timeouts and stream
caps through its ``TETHER_*`` settings) and is attacked over loopback on both ports:
oversize bodies, slow and idle connections, stream floods, out-of-range and malformed
input, tokens in query strings, revoked credentials on open streams and long polls.

:func:`run` returns a :class:`Report`: per attack class, how many attempts were made
and how many the plane answered wrongly (a 5xx, no refusal where one is due, the wrong
error shape, a connection held past its deadline, a stream that outlives its token),
plus what the whole run measured: responses >= 500, the plane's RSS growth, ``/healthz``
latency under load against an unloaded baseline, whether the store changed, and whether
every refusal reached the audit log. ``tests/e2e/test_hostile.py`` asserts on it in CI.

Run by hand to count against another source tree (``PATH/src`` goes first on the
plane's ``PYTHONPATH``; settings that tree does not know are simply ignored)::

    .venv/bin/python tests/e2e/hostile.py [--src PATH]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from tether.agent.identity import Identity
from tether.services.trust import PlaneTrust
from tether.settings import Settings
from tether.store.schema import utcnow

from ..conftest import free_port

#: The limits the plane under attack runs with (small, so the run stays short).
HEADER_TIMEOUT = 1.5
LIMITS = {
    "TETHER_API_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
    "TETHER_AGENT_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
    "TETHER_AGENT_HANDSHAKE_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
    "TETHER_API_BODY_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
    "TETHER_AGENT_BODY_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
    "TETHER_API_MAX_STREAMS_PER_TOKEN": "4",  # STREAMS_PER_TOKEN below
    "TETHER_API_MAX_STREAMS": "12",
    "TETHER_API_SSE_POLL_SECONDS": "0.2",
    "TETHER_AGENT_HEARTBEAT_SECONDS": "3600",  # no host changes state during the run
    "TETHER_AGENT_REVOCATION_REFRESH_SECONDS": "0.5",
    "TETHER_AGENT_LONG_POLL_SECONDS": "20",
}
MiB = 1 << 20
STREAMS_PER_TOKEN = 4
#: Streams one viewer token tries to open at once (the issue saw 200 make /healthz 40x slower).
STREAM_FLOOD = 100
INT64_MAX = (1 << 63) - 1
TOKEN_QUERY_MARK = "tth_"


@dataclass
class Outcome:
    """One attack class: attempts, wrong answers and what they were."""

    name: str
    attempts: int = 0
    failures: int = 0
    examples: list[str] = field(default_factory=list)

    def check(self, ok: bool, what: str) -> None:
        self.attempts += 1
        if not ok:
            self.failures += 1
            if len(self.examples) < 6:
                self.examples.append(what)


@dataclass
class Report:
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    rss_growth_mib: float = 0.0
    healthz_baseline_ms: float = 0.0
    healthz_loaded_ms: float = 0.0
    store_changes: list[str] = field(default_factory=list)
    audit_missing: list[str] = field(default_factory=list)
    audit_unexpected: list[str] = field(default_factory=list)
    audit_expected: int = 0
    seconds: float = 0.0

    def outcome(self, name: str) -> Outcome:
        return self.outcomes.setdefault(name, Outcome(name))

    @property
    def failures(self) -> int:
        return sum(o.failures for o in self.outcomes.values())

    def table(self) -> str:
        rows = [f"{'attack class':<18} {'attempts':>8} {'failures':>8}  examples"]
        for o in self.outcomes.values():
            rows.append(f"{o.name:<18} {o.attempts:>8} {o.failures:>8}  {'; '.join(o.examples)}")
        rows += [
            f"responses >= 500: {len(self.server_errors)} {self.server_errors[:5]}",
            f"RSS growth: {self.rss_growth_mib:.1f} MiB",
            f"/healthz p50: {self.healthz_baseline_ms:.1f} ms unloaded, "
            f"{self.healthz_loaded_ms:.1f} ms under load",
            f"store changes: {self.store_changes}",
            f"refusals not audited: {len(self.audit_missing)} of {self.audit_expected} "
            f"{self.audit_missing[:5]}",
            f"audit rows no request explains: {len(self.audit_unexpected)} "
            f"{self.audit_unexpected[:5]}",
            f"run time: {self.seconds:.1f} s",
        ]
        return "\n".join(rows)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def csr_for(tmp: Path, name: str) -> tuple[str, bytes]:
    """A CSR for ``name`` as the agent makes it, and its key (PEM)."""
    key_pem, csr = Identity(tmp / f"id-{name}").new_csr(name)
    return csr.decode(), key_pem


def nested(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"leaf": True}
    for _ in range(depth - 1):
        doc = {"a": doc}
    return doc


class Plane:
    """``tether serve`` in a subprocess, with an admin, a viewer and an enrolled host."""

    def __init__(self, tmp: Path, src: Path | None = None) -> None:
        self.tmp = tmp
        self.data = tmp / "data"
        self.api_port, self.agent_port = free_port(), free_port()
        self.env = {
            **os.environ,
            **LIMITS,
            "TETHER_DATA_DIR": str(self.data),
            "TETHER_API_PORT": str(self.api_port),
            "TETHER_AGENT_PORT": str(self.agent_port),
            "TETHER_CONFIG": str(tmp / "cli.yaml"),
        }
        if src is not None:
            self.env["PYTHONPATH"] = os.pathsep.join(
                [str(src / "src"), self.env.get("PYTHONPATH", "")]
            )
        self.log = tmp / "plane.log"
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.agent = f"https://127.0.0.1:{self.agent_port}"
        self.proc: subprocess.Popen[bytes] | None = None
        #: Every response the attacks got: (method, path, status, authenticated).
        self.seen: list[tuple[str, str, int, bool]] = []
        self.server_errors: list[str] = []

    # Process -------------------------------------------------------------------------

    def _tether(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "tether.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=lambda: os.umask(0),
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def start(self) -> None:
        self.admin_token = self._tether("admin", "bootstrap").strip().splitlines()[-1]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tether.cli", "serve"],
            env=self.env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            preexec_fn=lambda: os.umask(0),
        )
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.api}/healthz").status_code == 200:
                    break
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the plane did not start"
            time.sleep(0.2)
        self.admin = {"Authorization": f"Bearer {self.admin_token}"}
        self.ca = self.data / "pki" / "ca" / "active" / "ca.crt"
        self.call("POST", "/api/v1/sites", json={"name": "dc1"}, headers=self.admin)
        self.viewer_token, self.viewer_id = self.token("viewer")
        self.viewer = {"Authorization": f"Bearer {self.viewer_token}"}
        self.host_cert = self.enrol("edge-1")
        self.spare = self.call(
            "POST", "/api/v1/activations", json={"site": "dc1"}, headers=self.admin
        ).json()
        self.call(
            "PUT",
            "/api/v1/hosts/edge-1/desired",
            json={"document": {"plan": 1}},
            headers=self.admin,
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def token(self, role: str) -> tuple[str, str]:
        made = self.call(
            "POST", "/api/v1/tokens", json={"name": f"{role}-x", "role": role}, headers=self.admin
        ).json()
        return made["token"], made["id"]

    def enrol(self, name: str) -> tuple[Path, Path]:
        act = self.call(
            "POST", "/api/v1/activations", json={"site": "dc1"}, headers=self.admin
        ).json()
        csr, key_pem = csr_for(self.tmp, name)
        body = {
            "activationID": act["id"],
            "code": act["code"],
            "name": name,
            "hostID": f"id-{name}",
            "csr": csr,
        }
        with self.agent_client(None) as client:
            made = client.post("/agent/v1/register", json=body)
        assert made.status_code == 201, made.text
        cert, key = self.tmp / f"{name}.crt", self.tmp / f"{name}.key"
        cert.write_text(made.json()["certificate"])
        key.write_bytes(key_pem)
        return cert, key

    # HTTP ----------------------------------------------------------------------------

    def tls(self, cert: tuple[Path, Path] | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if cert is not None:
            ctx.load_cert_chain(*cert)
        return ctx

    def agent_client(self, cert: tuple[Path, Path] | None) -> httpx.Client:
        return httpx.Client(base_url=self.agent, verify=self.tls(cert), timeout=30)

    def note(self, method: str, path: str, status: int, authenticated: bool) -> None:
        self.seen.append((method, path, status, authenticated))
        if status >= 500:
            self.server_errors.append(f"{method} {path} -> {status}")

    def call(
        self,
        method: str,
        path: str,
        *,
        agent: bool = False,
        cert: tuple[Path, Path] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One request (``agent``: on the mTLS port, with ``cert``); noted for the audit."""
        client = self.agent_client(cert) if agent else httpx.Client(base_url=self.api, timeout=30)
        with client:
            response = client.request(method, path, **kwargs)
        headers = kwargs.get("headers") or {}
        self.note(method, path, response.status_code, "Authorization" in headers or bool(cert))
        return response

    def error_shape(self, response: httpx.Response, status: int, field: str | None) -> str:
        """'' when ``response`` is a ``status`` refusal in the documented shape naming
        ``field`` (any field when None); else what is wrong with it."""
        try:
            body = response.json()
        except ValueError:
            return f"{response.status_code} not JSON: {response.text[:60]!r}"
        problems = []
        if response.status_code != status:
            problems.append(f"status {response.status_code} (want {status})")
        if not isinstance(body, dict) or not {"code", "message"} <= set(body):
            return f"{response.status_code} not the error shape: {str(body)[:80]}"
        got = body.get("field")
        if body["code"] == "http_error":
            problems.append("code http_error")
        if field is not None and got != field:
            problems.append(f"field {got!r} (want {field!r})")
        if field is None and (not got or str(got).split(".")[0].isdigit()):
            problems.append(f"field {got!r}")
        return ", ".join(problems)

    # Store ---------------------------------------------------------------------------

    def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every table but the audit log (and the schema version), row by row."""
        with contextlib.closing(sqlite3.connect(self.data / "tether.db", timeout=30)) as db:
            tables = [
                row[0]
                for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
                if row[0] not in ("audit_records", "alembic_version")
            ]
            return {t: sorted(map(tuple, db.execute(f"SELECT * FROM {t}"))) for t in tables}

    def audit_rows(self) -> list[tuple[str, str, str, int]]:
        with contextlib.closing(sqlite3.connect(self.data / "tether.db", timeout=30)) as db:
            return list(db.execute("SELECT actor, action, target, status_code FROM audit_records"))

    def healthz_ms(self, samples: int = 15) -> float:
        times = []
        with httpx.Client(base_url=self.api, timeout=30) as client:
            for _ in range(samples):
                started = time.perf_counter()
                client.get("/healthz")
                times.append((time.perf_counter() - started) * 1000)
                time.sleep(0.02)
        return statistics.median(times)


# Attacks -----------------------------------------------------------------------------------


def oversize(plane: Plane, report: Report) -> None:
    """Bodies far above the limits, before authentication, on both ports."""
    out = report.outcome("body-size")
    big = b'{"name": "' + b"x" * (8 * MiB) + b'"}'

    def chunked() -> Iterator[bytes]:
        return (big[i : i + MiB] for i in range(0, len(big), MiB))

    json_type = {"Content-Type": "application/json"}
    for _ in range(3):
        r = plane.call("POST", "/api/v1/sites", content=big, headers=json_type)
        out.check(r.status_code == 413, f"unauthenticated 8 MiB POST /sites -> {r.status_code}")
        # Without a length and without a token: refused before a byte is read.
        r = plane.call("POST", "/api/v1/sites", content=chunked(), headers=json_type)
        out.check(r.status_code in (401, 413), f"chunked 8 MiB, no token -> {r.status_code}")
        r = plane.call(
            "POST", "/api/v1/sites", content=chunked(), headers={**plane.admin, **json_type}
        )
        out.check(r.status_code == 413, f"chunked 8 MiB with a token -> {r.status_code}")
        r = plane.call("POST", "/agent/v1/register", agent=True, content=big, headers=json_type)
        out.check(r.status_code == 413, f"8 MiB register without cert -> {r.status_code}")
        r = plane.call("POST", "/agent/v1/register", agent=True, content=chunked())
        out.check(r.status_code == 413, f"chunked 8 MiB register -> {r.status_code}")
    desired = {"document": {"blob": "y" * (2 * MiB)}}
    r = plane.call("PUT", "/api/v1/hosts/edge-1/desired", json=desired, headers=plane.admin)
    out.check(r.status_code == 413, f"2 MiB desired state -> {r.status_code}")
    csr, _ = csr_for(plane.tmp, "edge-big")
    nics = [
        {"name": f"eth{i}", "addresses": [f"10.0.{i}.{j}/24" for j in range(60)]}
        for i in range(100)
    ]
    body = {
        "activationID": plane.spare["id"],
        "code": plane.spare["code"],
        "name": "edge-big",
        "hostID": "id-edge-big",
        "csr": csr,
        "inventory": {"nics": nics},
    }
    r = plane.call("POST", "/agent/v1/register", agent=True, json=body)
    size = len(json.dumps(nics)) // 1024
    out.check(r.status_code in (413, 422), f"{size} KiB inventory -> {r.status_code}")


def _open(port: int, tls: ssl.SSLContext | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    if tls is not None:
        sock = tls.wrap_socket(sock, server_hostname="127.0.0.1")
    return sock


def _closed(sock: socket.socket, wait: float) -> tuple[bool, bytes]:
    """Whether the server closes ``sock`` within ``wait`` seconds, and what it sent."""
    sock.settimeout(wait)
    answer = b""
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True, answer
            answer += data
    except TimeoutError:
        return False, answer
    except (OSError, ssl.SSLError):
        return True, answer


def slow_clients(plane: Plane, report: Report) -> None:
    """Dripping headers, dribbling bodies, idle TLS and silent TCP, on both ports."""
    out = report.outcome("slow-clients")
    held: list[tuple[str, socket.socket]] = []
    tls = plane.tls(plane.host_cert)
    for _ in range(8):
        held.append(("silent TCP on the API port", _open(plane.api_port)))
        held.append(("idle TLS (no handshake) on the agent port", _open(plane.agent_port)))
        held.append(("silent TLS on the agent port", _open(plane.agent_port, tls)))
    drips = []
    for _ in range(8):
        drips.append(("headers dripped on the API port", _open(plane.api_port)))
        drips.append(("headers dripped on the agent port", _open(plane.agent_port, tls)))
        body = _open(plane.api_port)
        body.sendall(
            b"POST /api/v1/sites HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {plane.admin_token}\r\n".encode()
            + b"Content-Length: 1000\r\n\r\n{"
        )
        held.append(("body dribbled on the API port", body))
    stop = threading.Event()

    def drip() -> None:
        for i in range(200):
            for _, sock in drips:
                with contextlib.suppress(OSError):
                    sock.sendall(b"GET /healthz HTTP/1.1\r\n" if i == 0 else b"X")
            if stop.wait(0.3):
                return

    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    report.healthz_loaded_ms = max(report.healthz_loaded_ms, plane.healthz_ms())
    deadline = time.monotonic() + HEADER_TIMEOUT * 2 + 1.5
    for what, sock in held + drips:
        closed, answer = _closed(sock, max(0.05, deadline - time.monotonic()))
        out.check(closed, f"{what} held open")
        if answer.startswith(b"HTTP/1.1 "):  # a refused request (the dribbled bodies)
            plane.note("POST", "/api/v1/sites", int(answer[9:12]), True)
        elif "idle TLS" in what and closed:
            plane.note("TLS", "handshake", 495, False)
    stop.set()
    dripper.join()
    for _, sock in held + drips:
        sock.close()


class Stream:
    """An event stream read in a thread; ``ended`` once the server closes it."""

    def __init__(self, plane: Plane, headers: dict[str, str], query: str = "") -> None:
        self.status: int | None = None
        self.ended = threading.Event()
        self.started = threading.Event()
        self.error: str | None = None
        self.frames = 0
        self.thread = threading.Thread(target=self._run, args=(plane, headers, query), daemon=True)
        self.thread.start()

    def _run(self, plane: Plane, headers: dict[str, str], query: str) -> None:
        try:
            with (
                httpx.Client(base_url=plane.api, timeout=httpx.Timeout(30, read=60)) as client,
                client.stream("GET", f"/api/v1/events/stream{query}", headers=headers) as r,
            ):
                self.status = r.status_code
                plane.note("GET", "/api/v1/events/stream", r.status_code, True)
                self.started.set()
                for line in r.iter_lines():
                    self.frames += bool(line.startswith("data:"))
        except httpx.HTTPError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.started.set()
            self.ended.set()


def streams(plane: Plane, report: Report) -> list[Stream]:
    """One viewer token opens many streams; returns the ones the plane let through."""
    out = report.outcome("streams")
    opened = [Stream(plane, plane.viewer) for _ in range(STREAM_FLOOD)]
    deadline = time.monotonic() + 20
    for s in opened:
        s.started.wait(max(0.0, deadline - time.monotonic()))
    accepted = [s for s in opened if s.status == 200]
    for index, _ in enumerate(accepted):
        past = index >= STREAMS_PER_TOKEN
        out.check(not past, f"a stream past the cap of {STREAMS_PER_TOKEN} was opened")
    for s in opened:
        if s.status != 200:
            out.check(s.status == 429, f"stream over the cap -> {s.status}")
    report.healthz_loaded_ms = max(report.healthz_loaded_ms, plane.healthz_ms())
    return accepted


def bad_input(plane: Plane, report: Report) -> None:
    """Out-of-range numbers, far-away times, deep documents, booleans as numbers, unknown
    keys, broken JSON: a 4xx naming the field, never a 500, nothing stored."""
    out = report.outcome("bad-input")
    admin = plane.admin

    def expect(r: httpx.Response, status: int, field: str | None, what: str) -> None:
        problem = plane.error_shape(r, status, field)
        out.check(not problem, f"{what}: {problem}")

    huge = str(INT64_MAX + 1)
    r = plane.call("DELETE", f"/api/v1/sites/dc1?resourceVersion={huge}", headers=admin)
    expect(r, 422, "resourceVersion", "DELETE resourceVersion 2^63")
    r = plane.call(
        "PUT", "/api/v1/sites/dc1", json={"resourceVersion": INT64_MAX + 1}, headers=admin
    )
    expect(r, 422, "resourceVersion", "PUT resourceVersion 2^63")
    cursor = base64.urlsafe_b64encode(f"id:{INT64_MAX + 1}".encode()).decode().rstrip("=")
    r = plane.call("GET", f"/api/v1/sites?continue={cursor}", headers=admin)
    expect(r, 422, "continue", "continue cursor 2^63")
    for since in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
        try:
            r = plane.call(
                "GET",
                "/api/v1/events/stream",
                params={"since": since, "timeoutSeconds": "1"},
                headers=admin,
            )
            expect(r, 422, "since", f"stream since={since}")
        except httpx.HTTPError as exc:
            out.check(False, f"stream since={since} broke: {type(exc).__name__}")
    deep = plane.call(
        "PUT", "/api/v1/hosts/edge-1/desired", json={"document": nested(300)}, headers=admin
    )
    expect(deep, 422, None, "desired state nested 300 deep")
    r = plane.call("GET", "/api/v1/hosts/edge-1/desired", headers=admin)
    out.check(r.status_code == 200, f"GET desired after a deep write -> {r.status_code}")
    r = plane.call(
        "POST", "/api/v1/activations", json={"site": "dc1", "expiresIn": True}, headers=admin
    )
    expect(r, 422, "expiresIn", "expiresIn true")
    r = plane.call(
        "POST", "/api/v1/activations", json={"site": "dc1", "maxRegistrations": True}, headers=admin
    )
    expect(r, 422, "maxRegistrations", "maxRegistrations true")
    r = plane.call("POST", "/api/v1/network/plan", json={"document": {}, "bogus": 1}, headers=admin)
    expect(r, 422, "bogus", "unknown key in /network/plan")
    json_headers = {**admin, "Content-Type": "application/json"}
    for what, body in (
        ("invalid UTF-8", b'{"name": "\xff\xfe"}'),
        ("100000 nested arrays", b"[" * 100_000),
        ("truncated JSON", b'{"name": "s9",'),
    ):
        r = plane.call("POST", "/api/v1/sites", content=body, headers=json_headers)
        expect(r, 422, None, what)
    r = plane.call(
        "POST",
        "/api/v1/sites",
        content=b'{"name": ',
        headers={"Content-Type": "application/json"},
    )
    expect(r, 401, "Authorization", "broken JSON without a token")
    r = plane.call(
        "POST",
        "/agent/v1/hosts/edge-1/events",
        agent=True,
        cert=plane.host_cert,
        content=b'{"reason": ',
        headers={"Content-Type": "application/json"},
    )
    expect(r, 422, None, "broken JSON to the agent API")


def secrets(plane: Plane, report: Report) -> None:
    """Tokens in query strings; file modes of the data directory and the database."""
    out = report.outcome("secrets")
    for name in ("token", "access_token", "t"):
        r = plane.call("GET", f"/api/v1/whoami?{name}={plane.admin_token}")
        out.check(
            r.status_code in (400, 401, 422) and r.json().get("field"),
            f"?{name}=<token> -> {r.status_code}",
        )
    time.sleep(0.5)
    log = plane.log.read_text(errors="replace")
    secret = plane.admin_token.split("_", 2)[2]  # tth_<id>_<secret>; "_" is base64url
    out.check(secret not in log, "the token sent in a query string is in the plane's log")
    modes = {plane.data: 0o700}
    for suffix in ("", "-wal", "-shm"):
        modes[plane.data / f"tether.db{suffix}"] = 0o600
    for path, want in modes.items():
        got = path.stat().st_mode & 0o777 if path.exists() else None
        out.check(got == want, f"{path.name} mode {oct(got or 0)} (want {oct(want)})")


def agent_endpoints(plane: Plane, report: Report) -> None:
    """A valid certificate for a host that is not enrolled reads no events."""
    out = report.outcome("agent-endpoints")
    settings = Settings()
    settings.paths.data_dir = plane.data
    trust = PlaneTrust(settings)
    csr, key_pem = csr_for(plane.tmp, "ghost")
    pem = trust.anchor.sign_host_csr(
        csr.encode(), "ghost", now=utcnow(), lifetime=timedelta(hours=1)
    )
    cert, key = plane.tmp / "ghost.crt", plane.tmp / "ghost.key"
    cert.write_bytes(pem)
    key.write_bytes(key_pem)
    for path in ("/agent/v1/hosts/ghost/events", "/agent/v1/hosts/ghost/desired?timeout=0"):
        r = plane.call("GET", path, agent=True, cert=(cert, key))
        out.check(r.status_code == 401, f"GET {path} for a host never enrolled -> {r.status_code}")


def revoked_credentials(plane: Plane, report: Report, open_streams: list[Stream]) -> None:
    """Revoking a token ends its streams; revoking a host's certificate ends its poll."""
    out = report.outcome("revocation")
    plane.call("DELETE", f"/api/v1/tokens/{plane.viewer_id}", headers=plane.admin)
    deadline = time.monotonic() + 4
    for s in open_streams:
        ended = s.ended.wait(max(0.0, deadline - time.monotonic()))
        out.check(ended, "a stream of a revoked token still open after 4 s")
    # A fresh document (an earlier attack may have left one the plane cannot serve).
    current = plane.call(
        "PUT", "/api/v1/hosts/edge-1/desired", json={"document": {"plan": 2}}, headers=plane.admin
    ).json()
    time.sleep(1.5)  # the plane's desired-state refresh has seen it
    result: dict[str, Any] = {}

    def poll() -> None:
        try:
            with plane.agent_client(plane.host_cert) as client:
                r = client.get(
                    "/agent/v1/hosts/edge-1/desired",
                    params={"hash": current["hash"], "timeout": 15},
                    timeout=30,
                )
            result["status"] = r.status_code
            result["body"] = r.text
        except httpx.HTTPError as exc:
            result["error"] = type(exc).__name__

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    time.sleep(1.0)
    plane.call("POST", "/api/v1/hosts/edge-1/revoke-certificates", headers=plane.admin)
    plane.call(
        "PUT",
        "/api/v1/hosts/edge-1/desired",
        json={"document": {"plan": "secret-next"}},
        headers=plane.admin,
    )
    poller.join(30)
    leaked = "secret-next" in result.get("body", "")
    out.check(
        not leaked, f"a revoked certificate's poll got the next document ({result.get('status')})"
    )
    if "status" in result:
        plane.note("GET", "/agent/v1/hosts/edge-1/desired", result["status"], True)


# The run -----------------------------------------------------------------------------------


def audited(plane: Plane, before: int, report: Report) -> None:
    """The audit log gained exactly the refusals (and changes) the attacks got: each one a
    row, or counted in a summary row of the rate limit."""
    rows = plane.audit_rows()[before:]
    pending: dict[tuple[str, int], int] = {}
    suppressed = 0
    for _, action, target, status in rows:
        if action == "SUPPRESSED":
            suppressed += int(target.split()[0])
            continue
        key = (target.split(":")[0] if action == "TLS" else target, status)
        pending[key] = pending.get(key, 0) + 1
    for method, path, status, _ in plane.seen:
        mutation = method not in ("GET", "HEAD") and not path.endswith("/heartbeat")
        if status < 400 and not mutation:
            continue
        report.audit_expected += 1
        key = (path.split("?")[0], status)
        if pending.get(key):
            pending[key] -= 1
        elif suppressed:
            suppressed -= 1
        else:
            report.audit_missing.append(f"{method} {path} {status}")
    report.audit_unexpected = [f"{t} {s}" for (t, s), n in pending.items() for _ in range(n)]
    report.audit_unexpected += [f"{suppressed} suppressed"] if suppressed else []


def run(tmp: Path, src: Path | None = None) -> Report:
    started = time.monotonic()
    report = Report()
    plane = Plane(tmp, src)
    try:
        plane.start()
        assert plane.proc is not None
        report.healthz_baseline_ms = plane.healthz_ms(25)
        rss_before = rss_mib(plane.proc.pid)
        store_before = plane.dump()
        audit_before = len(plane.audit_rows())
        plane.seen.clear()
        oversize(plane, report)
        slow_clients(plane, report)
        open_streams = streams(plane, report)
        bad_input(plane, report)
        secrets(plane, report)
        agent_endpoints(plane, report)
        time.sleep(1.0)
        report.store_changes = [
            table for table, rows in plane.dump().items() if rows != store_before.get(table)
        ]
        revoked_credentials(plane, report, open_streams)
        report.rss_growth_mib = rss_mib(plane.proc.pid) - rss_before
        plane.stop()  # the plane writes what it holds back (suppressed refusals) on exit
        audited(plane, audit_before, report)
        report.server_errors = plane.server_errors
    finally:
        plane.stop()
        report.seconds = time.monotonic() - started
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, help="a source tree to serve instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tether-hostile-") as tmp:
        print(run(Path(tmp), args.src).table())


if __name__ == "__main__":
    main()
