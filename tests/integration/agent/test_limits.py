"""A served plane (both ports) against slow, idle, greedy and revoked clients.

Connections that send nothing, drip headers or never finish a TLS handshake are closed
at their deadline while long polls and kept-alive connections keep working; each port
caps its open connections; refused handshakes are logged and audited; the agent port
bounds bodies and inventories; a host that is not enrolled reads no events; a
certificate revoked while its long poll waits never receives the next document.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tether.agent.identity import Identity
from tether.domain.agent import DesiredSet
from tether.pki import TrustAnchor
from tether.services import desired, enrolment
from tether.settings import Settings
from tether.store.schema import AuditRow, utcnow

from .conftest import Plane

pytestmark = pytest.mark.integration

TIMEOUT = 0.6  # header, handshake and body deadlines of the plane under test


@pytest.fixture
def tune_plane() -> Callable[[Settings], None]:
    return limits


def limits(settings: Settings) -> None:
    """Small deadlines and caps; in-memory revocations refreshed rarely (so a revocation
    written to the store by "another process" is seen only through the store)."""
    settings.api.header_timeout_seconds = TIMEOUT
    settings.agent.header_timeout_seconds = TIMEOUT
    settings.agent.handshake_timeout_seconds = TIMEOUT
    settings.api.body_timeout_seconds = TIMEOUT
    settings.api.max_connections = 6
    settings.agent.max_connections = 6
    settings.agent.max_inventory_bytes = 4096
    settings.agent.revocation_refresh_seconds = 600
    settings.agent.long_poll_seconds = 20
    settings.api.max_streams_per_token = 2
    settings.api.max_streams = 3
    settings.api.sse_poll_seconds = 0.2


def connect(port: int, tls: ssl.SSLContext | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    return tls.wrap_socket(sock, server_hostname="127.0.0.1") if tls else sock


def closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """Whether the server closes ``sock`` within ``seconds``, and what it sent first."""
    sock.settimeout(seconds)
    answer = b""
    try:
        while data := sock.recv(4096):
            answer += data
        return True, answer
    except TimeoutError:
        return False, answer
    except OSError:
        return True, answer
    finally:
        sock.close()


def tls(plane: Plane, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(plane.server.ca_bundle))
    if cert is not None:
        ctx.load_cert_chain(*cert)
    return ctx


def register(plane: Plane, name: str, **extra: Any) -> httpx.Response:
    key_pem, csr = Identity(plane.tmp / name).new_csr(name)
    act = plane.activation()
    body = {"activationID": act.id, "code": act.code, "name": name, "hostID": name}
    with plane.client(None, None) as client:
        response = client.post("/agent/v1/register", json={**body, "csr": csr.decode(), **extra})
    if response.status_code == 201:
        (plane.tmp / f"{name}.crt").write_text(response.json()["certificate"])
        (plane.tmp / f"{name}.key").write_bytes(key_pem)
    return response


@pytest.fixture
def host(plane: Plane) -> tuple[Path, Path]:
    """``edge-1`` enrolled by hand: its certificate and key."""
    assert register(plane, "edge-1").status_code == 201
    return plane.tmp / "edge-1.crt", plane.tmp / "edge-1.key"


def audit_rows(plane: Plane) -> list[tuple[str, str, str, int]]:
    with plane.db.session() as s:
        rows = s.scalars(select(AuditRow).order_by(AuditRow.id)).all()
        return [(r.actor, r.action, r.target, r.status_code) for r in rows]


# Deadlines ---------------------------------------------------------------------------------


def test_silent_dripping_and_handshake_less_connections_are_closed(
    plane: Plane, host: tuple[Path, Path]
) -> None:
    api, agent = plane.server.ports["api"], plane.server.ports["agent"]
    silent = [connect(api), connect(agent), connect(agent, tls(plane, host))]
    drips = [connect(api), connect(agent, tls(plane, host))]
    stop = threading.Event()

    def drip() -> None:
        for i in range(40):
            for sock in drips:
                with contextlib.suppress(OSError):
                    sock.sendall(b"GET /healthz HTTP/1.1\r\n" if i == 0 else b"X")
            if stop.wait(0.2):
                return

    dripping = threading.Thread(target=drip)
    dripping.start()
    try:
        for sock in silent + drips:
            assert closed_within(sock, TIMEOUT * 4)[0]
    finally:
        stop.set()
        dripping.join()


def test_long_polls_and_idle_keep_alive_connections_outlive_the_head_deadline(
    plane: Plane, host: tuple[Path, Path]
) -> None:
    with plane.client(*host) as client:
        current = client.get("/agent/v1/hosts/edge-1/desired", params={"timeout": 0})
        assert current.status_code == 304
        started = time.monotonic()
        waited = client.get("/agent/v1/hosts/edge-1/desired", params={"timeout": TIMEOUT * 3})
        assert waited.status_code == 304 and time.monotonic() - started >= TIMEOUT * 3
        time.sleep(TIMEOUT * 2)  # idle on a kept-alive connection, past the head deadline
        assert client.get("/agent/v1/hosts/edge-1/events").status_code == 200
    with httpx.Client(base_url=plane.server.api_url, headers=plane.admin) as people:
        assert people.get("/api/v1/whoami").status_code == 200
        assert people.post("/api/v1/sites", json={"name": "dc9"}).status_code == 201


def test_a_dribbled_body_gets_408_and_the_connection_closes(plane: Plane) -> None:
    token = plane.admin["Authorization"]
    sock = connect(plane.server.ports["api"])
    sock.sendall(
        b"POST /api/v1/sites HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: {token}\r\nContent-Length: 100\r\n\r\n{{".encode()
    )
    closed, answer = closed_within(sock, TIMEOUT * 10)
    assert closed and answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["rule"] == "body_timeout"


def test_refused_tls_handshakes_are_logged_and_audited(plane: Plane, tmp_path: Path) -> None:
    key_pem, csr = Identity(tmp_path / "intruder").new_csr("edge-1")
    stranger = TrustAnchor.create(utcnow())  # a CA the plane does not trust
    (tmp_path / "x.crt").write_bytes(stranger.sign_host_csr(csr, "edge-1", now=utcnow()))
    (tmp_path / "x.key").write_bytes(key_pem)
    intruder = tls(plane, (tmp_path / "x.crt", tmp_path / "x.key"))
    # TLS 1.3: the client finishes first; the server's refusal is an alert, or a close.
    with contextlib.suppress(ssl.SSLError, OSError):
        assert connect(plane.server.ports["agent"], intruder).recv(1) == b""
    plane.wait_for(
        lambda: any(r[1] == "TLS" for r in audit_rows(plane)), 10, "the TLS refusal audited"
    )
    rows = [r for r in audit_rows(plane) if r[1] == "TLS"]
    assert rows == [("anonymous", "TLS", "handshake: CERTIFICATE_VERIFY_FAILED", 495)]
    lines = plane.capture.lines  # type: ignore[attr-defined]
    refused = "TLS handshake from 127.0.0.1 refused: CERTIFICATE_VERIFY_FAILED"
    assert any(refused in line for line in lines)


# Caps --------------------------------------------------------------------------------------


def caps_with_long_deadlines(settings: Settings) -> None:
    """:func:`limits` with deadlines that no held connection reaches during the test: one
    closed at the header deadline would free its slot for the connection over the cap."""
    limits(settings)
    settings.api.header_timeout_seconds = settings.agent.header_timeout_seconds = 30
    settings.agent.handshake_timeout_seconds = 30


@pytest.mark.parametrize("tune_plane", [caps_with_long_deadlines])
def test_each_port_caps_its_open_connections(plane: Plane) -> None:
    api, agent = plane.server.ports["api"], plane.server.ports["agent"]
    settings = plane.settings
    held = [connect(api) for _ in range(settings.api.max_connections)]
    held += [connect(agent) for _ in range(settings.agent.max_connections)]
    time.sleep(0.2)
    closed, answer = closed_within(connect(api), 2)
    assert closed and answer.startswith(b"HTTP/1.1 503 ")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["rule"] == "max_connections"
    assert closed_within(connect(agent), 2) == (True, b"")
    for sock in held:
        sock.close()
    time.sleep(0.3)
    assert httpx.get(f"{plane.server.api_url}/healthz").status_code == 200


# The agent API -----------------------------------------------------------------------------


def test_agent_bodies_and_inventories_are_bounded(plane: Plane, host: tuple[Path, Path]) -> None:
    settings = plane.settings
    with plane.client(None, None) as client:
        big = client.post(
            "/agent/v1/register",
            content=b"{" + b" " * settings.agent.max_register_bytes + b"}",
            headers={"Content-Type": "application/json"},
        )
    assert big.status_code == 413 and big.json()["field"] == "body"
    nics = [{"name": f"eth{i}", "addresses": [f"10.0.0.{i}/24"] * 20} for i in range(20)]
    fat = register(plane, "edge-fat", inventory={"nics": nics})
    assert fat.status_code == 422 and fat.json()["field"] == "inventory", fat.text
    assert fat.json()["rule"] == "max_bytes"
    with plane.client(*host) as client:
        event = {"reason": "Big", "message": "m" * settings.agent.max_body_bytes}
        assert client.post("/agent/v1/hosts/edge-1/events", json=event).status_code == 413


def test_a_host_that_is_not_enrolled_reads_no_events(plane: Plane) -> None:
    ghost = plane.sign("ghost")  # signed by the plane's CA, but no host was ever enrolled
    with plane.client(*ghost) as client:
        response = client.get("/agent/v1/hosts/ghost/events")
    assert response.status_code == 401
    assert response.json()["rule"] == "agent.not_enrolled"


@pytest.fixture
def polling(plane: Plane, host: tuple[Path, Path]) -> Iterator[dict[str, Any]]:
    """A long poll of ``edge-1`` waiting on its current document (in a thread)."""
    with plane.db.session() as s:
        current = desired.set_desired(s, "edge-1", {"plan": 1}).hash
    time.sleep(1.5)  # the plane's desired-state refresh (1 s) has seen it: no early wake-up
    result: dict[str, Any] = {}

    def poll() -> None:
        with plane.client(*host) as client:
            r = client.get(
                "/agent/v1/hosts/edge-1/desired", params={"hash": current, "timeout": 20}
            )
        result.update(status=r.status_code, body=r.text)

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(1.0)
    yield result
    thread.join(30)


def test_a_certificate_revoked_while_its_poll_waits_gets_no_document(
    plane: Plane, polling: dict[str, Any]
) -> None:
    with plane.db.session() as s:
        # Revoked by another process: only the store knows (the plane reloads rarely).
        enrolment.revoke_certificates(s, None, "edge-1", now=utcnow())
        desired.set_desired(s, "edge-1", DesiredSet(document={"plan": "next"}).document)
    plane.wait_for(lambda: "status" in polling, 15, "the poll answered")
    assert polling["status"] == 401, polling
    assert "next" not in polling["body"]
    assert json.loads(polling["body"])["rule"] == "pki.cert.revoked"


# Event streams -----------------------------------------------------------------------------


class Stream:
    """An event stream of the people's API, read in a thread until the server ends it."""

    def __init__(self, plane: Plane, token: str) -> None:
        self.status: int | None = None
        self.body = ""
        self.lines: list[str] = []
        self.opened = threading.Event()
        self.ended = threading.Event()
        threading.Thread(target=self._read, args=(plane, token), daemon=True).start()

    def _read(self, plane: Plane, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}"}
        try:
            with (
                httpx.Client(base_url=plane.server.api_url, timeout=30) as client,
                client.stream("GET", "/api/v1/events/stream", headers=headers) as response,
            ):
                if response.status_code != 200:
                    self.body = response.read().decode()
                self.status = response.status_code
                self.opened.set()
                for line in response.iter_lines():
                    self.lines.append(line)
        except httpx.HTTPError as exc:  # the plane stopped under it (teardown)
            self.lines.append(f"error: {exc}")
        finally:
            self.opened.set()
            self.ended.set()


def token(plane: Plane, name: str) -> tuple[str, str]:
    made = plane.api.post("/api/v1/tokens", json={"name": name, "role": "viewer"}).json()
    return made["token"], made["id"]


def test_event_streams_are_capped_and_end_with_their_token(plane: Plane) -> None:
    first, first_id = token(plane, "one")
    second, _ = token(plane, "two")
    mine = [Stream(plane, first) for _ in range(3)]
    for stream in mine:
        assert stream.opened.wait(10)
    assert sorted(s.status or 0 for s in mine) == [200, 200, 429]
    refused = next(s for s in mine if s.status == 429)
    assert json.loads(refused.body)["rule"] == "streams.per_token"
    others = [Stream(plane, second) for _ in range(2)]
    for stream in others:
        assert stream.opened.wait(10)
    assert sorted(s.status or 0 for s in others) == [200, 429]  # 3 open: the plane's cap
    refused = next(s for s in others if s.status == 429)
    assert json.loads(refused.body)["rule"] == "streams.total"

    assert plane.api.delete(f"/api/v1/tokens/{first_id}").status_code == 200
    for stream in mine:
        if stream.status == 200:
            assert stream.ended.wait(5), "a stream outlived its revoked token"
            assert stream.lines[-2:] == [
                ": stream closed: the token was revoked or has expired",
                "",
            ]
    assert not next(s for s in others if s.status == 200).ended.is_set()
