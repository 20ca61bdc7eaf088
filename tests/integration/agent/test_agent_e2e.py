"""Real plane, real agent processes, real mutual TLS on loopback."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from sqlalchemy import func, select

from tether.agent.identity import Identity
from tether.domain.states import HostState
from tether.services import desired
from tether.services.trust import revoke_host_certificates
from tether.settings import Settings
from tether.store.schema import (
    ActivationRow,
    AuditRow,
    EventRow,
    HostAgentRow,
    HostRow,
    utcnow,
)

from .conftest import Plane, host_events

pytestmark = pytest.mark.integration


def snapshot(plane: Plane) -> dict[str, Any]:
    """What a refused request must leave unchanged: everything but the audit log."""
    with plane.db.session() as s:
        return {
            "hosts": s.execute(
                select(HostRow.name, HostRow.state, HostRow.resource_version).order_by(HostRow.id)
            ).all(),
            "agents": s.execute(
                select(HostAgentRow.host_name, HostAgentRow.cert_serial).order_by(
                    HostAgentRow.host_name
                )
            ).all(),
            "activations": s.execute(
                select(ActivationRow.activation_id, ActivationRow.registrations).order_by(
                    ActivationRow.id
                )
            ).all(),
            "events": s.scalar(select(func.count()).select_from(EventRow)),
        }


def audit_since(plane: Plane, after: int) -> list[AuditRow]:
    with plane.db.session() as s:
        return list(s.scalars(select(AuditRow).where(AuditRow.id > after).order_by(AuditRow.id)))


def last_audit_id(plane: Plane) -> int:
    with plane.db.session() as s:
        return s.scalar(select(func.max(AuditRow.id))) or 0


def settled(plane: Plane) -> dict[str, Any]:
    """The snapshot once the plane's buffered heartbeats are written (the agent stopped, a
    last beat may still wait for the next flush): two reads a few flushes apart agree."""
    before = snapshot(plane)
    for _ in range(50):
        time.sleep(4 * plane.settings.agent.flush_seconds)
        after = snapshot(plane)
        if after == before:
            return after
        before = after
    raise AssertionError("the store kept changing after the agent stopped")


def enrol(plane: Plane, name: str, **extra: Any) -> Path:
    """Start a real agent for ``name`` and wait until its host is Ready; return its state dir."""
    act = plane.activation()
    config = plane.agent_config(name, act, **extra)
    plane.start_agent(config)
    plane.wait_for(lambda: plane.host(name).status.state is HostState.READY, 30, f"{name} Ready")
    import yaml

    return Path(yaml.safe_load(config.read_text())["stateDir"])


def test_agents_enrol_heartbeat_and_become_ready(plane: Plane) -> None:
    act = plane.activation(uses=2)
    states = []
    for name in ("edge-1", "edge-2"):
        config = plane.agent_config(name, act, tags={"static": {"rack": "r1"}})
        plane.start_agent(config)
        import yaml

        states.append(Path(yaml.safe_load(config.read_text())["stateDir"]))
    for name in ("edge-1", "edge-2"):
        plane.wait_for(lambda n=name: plane.host(n).status.state is HostState.READY, 30, name)
    host = plane.host("edge-1")
    assert host.spec.site == "dc1" and host.spec.tags == {"rack": "r1"}
    assert host.status.health == "Healthy" and host.status.last_heartbeat is not None
    inventory = host.status.inventory
    assert inventory["cpu"]["count"] >= 1 and inventory["memoryBytes"] > 0
    assert any(nic["name"] == "lo" for nic in inventory["nics"])
    # Keys and certificates are 0600, the state directory 0700.
    ident = Identity(states[0])
    for path in (ident.key_path, ident.cert_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(states[0].stat().st_mode) == 0o700
    cert = x509.load_pem_x509_certificate(ident.cert_path.read_bytes())
    assert cert.subject.rfc4514_string() == "CN=edge-1"
    # Every transition is an event.
    events = plane.api.get("/api/v1/events", params={"kind": "Host", "name": "edge-1"}).json()
    reasons = [e["reason"] for e in events["items"]]
    assert {"Registered", "Enrolled", "StateChanged"} <= set(reasons)
    act_view = plane.api.get(f"/api/v1/activations/{act.id}").json()
    assert (act_view["registrations"], act_view["remaining"]) == (2, 0)


def test_a_second_agent_on_the_same_host_is_refused_by_the_lock(plane: Plane) -> None:
    state = enrol(plane, "edge-lock")
    config = plane.agent_config("edge-lock", None, stateDir=str(state))
    second = plane.start_agent(config)
    assert second.wait(20) == 3
    assert "one agent runs per host" in config.with_suffix(".log").read_text()


def test_unhealthy_then_unreachable_then_back(plane: Plane, tmp_path: Path) -> None:
    flag = tmp_path / "sick"
    check = {"name": "flag", "command": ["sh", "-c", f"test ! -e {flag}"]}
    enrol(plane, "edge-h", checks=[check])
    flag.touch()
    plane.wait_for(lambda: plane.host("edge-h").status.state is HostState.UNHEALTHY, 20, "sick")
    flag.unlink()
    plane.wait_for(lambda: plane.host("edge-h").status.state is HostState.READY, 20, "healthy")
    plane.processes[-1].send_signal(__import__("signal").SIGSTOP)  # silent, still alive
    try:
        plane.wait_for(
            lambda: plane.host("edge-h").status.state is HostState.UNREACHABLE, 20, "silent"
        )
    finally:
        plane.processes[-1].send_signal(__import__("signal").SIGCONT)
    plane.wait_for(lambda: plane.host("edge-h").status.state is HostState.READY, 20, "back")
    events = plane.api.get("/api/v1/events", params={"kind": "Host", "name": "edge-h"}).json()
    messages = " | ".join(e["message"] for e in events["items"])
    for step in (
        "Ready -> Unhealthy",
        "Unhealthy -> Ready",
        "Ready -> Unreachable",
        "Unreachable -> Ready",
    ):
        assert step in messages


def long_polls(settings: Settings) -> None:
    settings.agent.long_poll_seconds = 60


@pytest.mark.parametrize("tune_plane", [long_polls])
def test_desired_state_long_poll_and_applied_report(plane: Plane) -> None:
    """Long polls of 60 s (the fixture's are 2 s): an agent that took the write within
    30 s was woken by it, not by its poll's end."""
    enrol(plane, "edge-d", longPollSeconds=60)
    doc = {"kubelet": {"version": "1.34.1"}, "labels": {"a": "b"}}
    started = time.monotonic()
    put = plane.api.put("/api/v1/hosts/edge-d/desired", json={"document": doc})
    assert put.status_code == 200, put.text
    digest = put.json()["hash"]

    def applied() -> bool:
        status = plane.api.get("/api/v1/hosts/edge-d/desired").json()
        return bool(status["inSync"]) and status["appliedHash"] == digest

    plane.wait_for(applied, 30, "applied")
    assert time.monotonic() - started < 30  # woken by the write, not by a poll timeout
    status = plane.api.get("/api/v1/hosts/edge-d/desired").json()
    assert status["appliedResult"]["ok"] is True


def test_certificate_renewal_at_two_thirds(plane: Plane) -> None:
    plane.server.settings.pki.host_cert_lifetime_seconds = 6
    state = enrol(plane, "edge-r")
    first = Identity(state).certificate().serial_number
    plane.wait_for(lambda: Identity(state).certificate().serial_number != first, 20, "renewed")
    # It goes on beating with the new certificate, and stays (or is again) Ready: waited
    # for, not looked at once, since a stalled machine may miss a beat or two meanwhile.
    before = plane.host("edge-r").status.last_heartbeat
    plane.wait_for(lambda: plane.host("edge-r").status.last_heartbeat != before, 15, "beats")
    plane.wait_for(lambda: plane.host("edge-r").status.state is HostState.READY, 15, "Ready")


def test_refusals_are_clear_audited_and_change_nothing(plane: Plane) -> None:
    state_a = enrol(plane, "host-a")
    enrol(plane, "host-b")
    used = plane.activation(uses=1)
    with plane.db.session() as s:
        s.execute(
            ActivationRow.__table__.update()
            .where(ActivationRow.activation_id == used.id)
            .values(registrations=1)
        )
    expired = plane.activation()
    with plane.db.session() as s:
        s.execute(
            ActivationRow.__table__.update()
            .where(ActivationRow.activation_id == expired.id)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    revoked = plane.activation()
    assert plane.api.delete(f"/api/v1/activations/{revoked.id}").json()["state"] == "Revoked"
    good = plane.activation()
    anonymous = plane.client(None, None)
    csr = Identity(plane.tmp / "x").new_csr("host-new")[1].decode()

    def register(act_id: str, code: str, name: str = "host-new") -> httpx.Response:
        body = {"activationID": act_id, "code": code, "name": name, "hostID": name, "csr": csr}
        return anonymous.post("/agent/v1/register", json=body)

    a = plane.agent_client(state_a)
    expired_cert = plane.sign(
        "host-a", now=datetime.now(UTC) - timedelta(minutes=4), lifetime=timedelta(minutes=1)
    )
    cases: list[tuple[str, Any, int, str]] = [
        ("wrong code", lambda: register(good.id, "x" * 27), 401, "pki.activation.code"),
        ("unknown id", lambda: register("act-aaaaaaaaaaaa", good.code), 401, "pki.activation.code"),
        (
            "expired activation",
            lambda: register(expired.id, expired.code),
            403,
            "pki.activation.expired",
        ),
        (
            "revoked activation",
            lambda: register(revoked.id, revoked.code),
            403,
            "pki.activation.revoked",
        ),
        (
            "used-up activation",
            lambda: register(used.id, used.code),
            403,
            "pki.activation.exhausted",
        ),
        (
            "known host again",
            lambda: register(good.id, good.code, "host-a"),
            409,
            "already_registered",
        ),
        (
            "A's cert for B",
            lambda: a.post("/agent/v1/hosts/host-b/heartbeat", json={}),
            403,
            "agent.own_host_only",
        ),
        ("A's cert reads B", lambda: a.get("/agent/v1/hosts/host-b"), 403, "agent.own_host_only"),
        (
            "expired cert",
            lambda: plane.client(*expired_cert).post("/agent/v1/hosts/host-a/heartbeat", json={}),
            401,
            "pki.cert.expired",
        ),
        (
            "no cert",
            lambda: anonymous.post("/agent/v1/hosts/host-a/heartbeat", json={}),
            401,
            "agent.client_cert_required",
        ),
        (
            "people token at agent endpoint",
            lambda: anonymous.get("/agent/v1/hosts/host-a", headers=plane.admin),
            401,
            "agent.client_cert_only",
        ),
        (
            "host cert at people endpoint",
            lambda: a.get("/api/v1/hosts"),
            403,
            "agent.people_endpoint",
        ),
        (
            "plain HTTP",
            lambda: httpx.post(f"{plane.server.api_url}/agent/v1/hosts/host-a/heartbeat", json={}),
            403,
            "agent.tls_required",
        ),
    ]
    for what, call, code, rule in cases:
        before, mark = snapshot(plane), last_audit_id(plane)
        response = call()
        assert response.status_code == code, (what, response.text)
        body = response.json()
        assert body["rule"] == rule, (what, body)
        assert body["message"] and set(body) >= {"code", "message", "rule"}, what
        assert snapshot(plane) == before, what
        records = audit_since(plane, mark)
        assert records and records[-1].status_code == code, what
    # Plain HTTP to the TLS port: the handshake fails, nothing is served.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{plane.server.ports['agent']}/agent/v1/ca", timeout=5)


def test_revoked_certificate_is_refused_on_the_next_call(plane: Plane) -> None:
    state = enrol(plane, "edge-x")
    client = plane.agent_client(state)
    assert client.get("/agent/v1/crl").status_code == 200
    plane.processes[-1].terminate()
    plane.processes[-1].wait(10)
    response = plane.api.post("/api/v1/hosts/edge-x/revoke-certificates")
    assert response.json() == {"revoked": 1}
    before = settled(plane)
    refused = client.post("/agent/v1/hosts/edge-x/heartbeat", json={})
    assert refused.status_code == 401 and refused.json()["rule"] == "pki.cert.revoked"
    assert snapshot(plane) == before
    crl_pem = plane.api.get("/api/v1/pki/crl").content
    crl = x509.load_pem_x509_crl(crl_pem)
    serial = Identity(state).certificate().serial_number
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None


def test_a_certificate_revoked_elsewhere_cannot_be_renewed(plane: Plane) -> None:
    """Another plane process revokes the certificate (straight in the shared store); before
    this server's revocation cache refreshes, a renewal with it is still refused."""
    plane.server.settings.agent.revocation_refresh_seconds = 3600
    state = enrol(plane, "edge-rv")
    plane.processes[-1].terminate()
    plane.processes[-1].wait(10)
    with plane.db.session() as s:
        assert revoke_host_certificates(s, "edge-rv", "keyCompromise", utcnow())
    client = plane.agent_client(state)
    _, csr = Identity(state).new_csr("edge-rv")  # what the agent would send
    refused = client.post("/agent/v1/hosts/edge-rv/certificate", json={"csr": csr.decode()})
    assert refused.status_code == 401, refused.text
    assert refused.json()["rule"] == "pki.cert.revoked"


def test_an_unpaired_host_certificate_dies_with_it(plane: Plane) -> None:
    state = enrol(plane, "edge-gone")
    client = plane.agent_client(state)
    plane.processes[-1].terminate()
    plane.processes[-1].wait(10)
    assert plane.api.delete("/api/v1/hosts/edge-gone").status_code == 204
    refused = client.post("/agent/v1/hosts/edge-gone/heartbeat", json={})
    assert refused.status_code == 401 and refused.json()["rule"] == "pki.cert.revoked"
    crl = x509.load_pem_x509_crl(plane.api.get("/api/v1/pki/crl").content)
    serial = Identity(state).certificate().serial_number
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None


def test_reenrol_only_after_reset(plane: Plane) -> None:
    state = enrol(plane, "edge-z")
    plane.processes[-1].terminate()
    plane.processes[-1].wait(10)
    Identity(state).reset()
    act = plane.activation()
    again = plane.start_agent(plane.agent_config("edge-z", act, stateDir=str(state)))
    assert again.wait(20) == 2  # refused: already registered
    assert "already registered" in plane.logs[-1].read_text()
    reset = plane.api.post("/api/v1/hosts/edge-z/reset-enrolment")
    assert reset.status_code == 200 and reset.json()["status"]["state"] == "Registered"
    plane.start_agent(plane.agent_config("edge-z", act, stateDir=str(state)))
    plane.wait_for(lambda: plane.host("edge-z").status.state is HostState.READY, 30, "again")


def test_ca_rotation_keeps_hosts_working_through_the_overlap(plane: Plane) -> None:
    plane.server.settings.pki.host_cert_lifetime_seconds = 6
    state = enrol(plane, "edge-rot")
    ident = Identity(state)
    old_issuer = ident.certificate().issuer
    env = {**os.environ, "TETHER_DATA_DIR": str(plane.settings.paths.data_dir)}
    cli = [
        sys.executable,
        "-c",
        "from tether.cli.main import app; from tether.cli import "
        "bootstrap; bootstrap.register(app, site_app=app, host_app=app); app()",
    ]
    done = subprocess.run(
        [*cli, "pki", "rotate", "--overlap", "48h"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # The agent renews under the new CA while the old server certificate still serves.
    plane.wait_for(lambda: ident.certificate().issuer != old_issuer, 30, "cert from new CA")
    assert ident.ca_path.read_text().count("BEGIN CERTIFICATE") == 2  # old + new trusted
    done = subprocess.run(
        [*cli, "pki", "server-cert", "--reissue"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    time.sleep(2)  # the server reloads its certificate

    before = plane.host("edge-rot").status.last_heartbeat
    plane.wait_for(lambda: plane.host("edge-rot").status.last_heartbeat != before, 15, "beats")
    plane.wait_for(lambda: plane.host("edge-rot").status.state is HostState.READY, 15, "Ready")
    status = subprocess.run([*cli, "pki", "status"], env=env, capture_output=True, text=True)
    assert "previous CA" in status.stdout


def test_no_secret_in_logs_or_responses(plane: Plane) -> None:
    state = enrol(plane, "edge-s")
    listed = plane.api.get("/api/v1/activations").text
    hosts = plane.api.get("/api/v1/hosts").text
    events = plane.api.get("/api/v1/events").text
    audit = plane.api.get("/api/v1/audit").text
    key_pem = Identity(state).key_path.read_text()
    key_body = "".join(key_pem.splitlines()[1:-1])
    secrets = [*plane.secrets, key_body[60:100]]  # the first 40 are P-256's PKCS#8 header
    logs = "\n".join(plane.capture.lines)  # type: ignore[attr-defined]
    logs += "\n".join(p.read_text() for p in plane.logs)
    for secret in secrets:
        for where, text in (
            ("logs", logs),
            ("activations", listed),
            ("hosts", hosts),
            ("events", events),
            ("audit", audit),
        ):
            assert secret not in text, f"a secret leaked into {where}"
    assert json.loads(listed)["items"] and "code" not in json.loads(listed)["items"][0]


def test_a_reimage_report_ends_the_enrolment_once_and_only_that_machine_enrols_again(
    plane: Plane,
) -> None:
    """A re-image plan reported applied resets the enrolment: at once in this server's
    revocation cache, once per plan (a failed report before does not count), and a
    renewal is refused. During the re-image only the same machine (its DMI product UUID)
    may enrol under the name, and its enrolment drops the old re-image plan."""
    plane.server.settings.agent.revocation_refresh_seconds = 3600
    state = enrol(plane, "edge-ri")
    plane.processes[-1].terminate()
    plane.processes[-1].wait(10)
    with plane.db.session() as s:
        host = s.scalars(select(HostRow).where(HostRow.name == "edge-ri")).one()
        host.inventory = {**(host.inventory or {}), "productUuid": "uuid-a"}
        digest = desired.set_desired(
            s, "edge-ri", {"node": {"action": "reimage", "image": "img-2"}}
        ).hash
    client = plane.agent_client(state)
    failed = {"hash": digest, "result": {"ok": False, "retryable": True, "message": "x"}}
    assert client.post("/agent/v1/hosts/edge-ri/applied", json=failed).status_code == 200
    assert client.post("/agent/v1/hosts/edge-ri/heartbeat", json={}).status_code != 401
    done = {"hash": digest, "result": {"ok": True}}
    assert client.post("/agent/v1/hosts/edge-ri/applied", json=done).status_code == 200
    refused = client.post("/agent/v1/hosts/edge-ri/heartbeat", json={})
    assert refused.status_code == 401 and refused.json()["rule"] == "pki.cert.revoked"
    _, csr = Identity(state).new_csr("edge-ri")
    renewal = client.post("/agent/v1/hosts/edge-ri/certificate", json={"csr": csr.decode()})
    assert renewal.status_code == 401, renewal.text
    resets = [e for e in host_events(plane, "edge-ri") if e["reason"] == "EnrolmentReset"]
    assert len(resets) == 1

    act = plane.activation()
    anonymous = plane.client(None, None)

    def register(product_uuid: str) -> httpx.Response:
        _, csr = Identity(plane.tmp / f"new-{product_uuid}").new_csr("edge-ri")
        body = {
            "activationID": act.id,
            "code": act.code,
            "name": "edge-ri",
            "hostID": "edge-ri",
            "csr": csr.decode(),
            "inventory": {"productUuid": product_uuid},
        }
        return anonymous.post("/agent/v1/register", json=body)

    other = register("uuid-b")
    assert other.status_code == 409 and other.json()["rule"] == "same_machine", other.text
    assert register("uuid-a").status_code == 201
    with plane.db.session() as s:
        assert desired.get_document(s, "edge-ri") is None  # the new system never runs it
