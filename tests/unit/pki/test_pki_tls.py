"""Real TLS on loopback: the plane's server cert, client certs from CSRs, bundle and CRL.

OpenSSL checks validity against the real clock, so these tests use the wall clock rather
than the virtual ``now`` fixture.
"""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tether.pki import TrustAnchor
from tether.pki.authority import private_key_pem

MakeCSR = Callable[..., bytes]
TIMEOUT = 10.0


@dataclass
class ServerSide:
    peer_der: bytes | None = None
    error: BaseException | None = None


@dataclass
class Host:
    cert: Path
    key: Path
    cert_pem: bytes


@pytest.fixture
def wall_now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def plane(wall_now: datetime) -> TrustAnchor:
    return TrustAnchor.create(wall_now)


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _host(anchor: TrustAnchor, name: str, tmp_path: Path, make_csr: MakeCSR, now: datetime) -> Host:
    """Enrol a host the real way: key made 'on the host', only the CSR goes to the plane."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert_pem = anchor.sign_host_csr(make_csr(name, key=key), name, now=now)
    return Host(
        cert=_write(tmp_path / f"{name}-{id(anchor)}.crt", cert_pem, 0o644),
        key=_write(tmp_path / f"{name}-{id(anchor)}.key", private_key_pem(key)),
        cert_pem=cert_pem,
    )


def _server_ctx(
    anchor: TrustAnchor,
    tmp_path: Path,
    now: datetime,
    *,
    trust: bytes,
    crl: bytes | None = None,
    issuer: str | None = None,
) -> ssl.SSLContext:
    cert_pem, key_pem = anchor.issue_server_cert(
        ["localhost"], ["127.0.0.1"], now=now, issuer_fingerprint=issuer
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(
        _write(tmp_path / "server.crt", cert_pem, 0o644), _write(tmp_path / "server.key", key_pem)
    )
    ctx.verify_mode = ssl.CERT_REQUIRED
    if crl is None:
        ctx.load_verify_locations(cadata=trust.decode())
    else:
        # CRLs are only read from files; OpenSSL needs one per issuer with CRL_CHECK.
        ctx.load_verify_locations(cafile=_write(tmp_path / "trust+crl.pem", trust + crl))
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


def _client_ctx(bundle: bytes, host: Host) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=bundle.decode())
    ctx.load_cert_chain(host.cert, host.key)
    return ctx


@contextmanager
def _serve_once(ctx: ssl.SSLContext) -> Iterator[tuple[int, ServerSide]]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    side = ServerSide()

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError as exc:
            side.error = exc
            return
        with conn:
            conn.settimeout(TIMEOUT)
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    side.peer_der = tls.getpeercert(binary_form=True)
                    tls.sendall(b"hello " + tls.recv(64))
            except (ssl.SSLError, OSError) as exc:
                side.error = exc

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], side
    finally:
        thread.join(TIMEOUT)
        listener.close()
    assert not thread.is_alive()


def _talk(port: int, ctx: ssl.SSLContext) -> bytes | BaseException:
    """The server's reply, or the exception the client saw."""
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            tls.sendall(b"edge")
            return tls.recv(64)
    except (ssl.SSLError, OSError) as exc:
        return exc


def test_handshake_with_host_cert_from_csr(
    plane: TrustAnchor, tmp_path: Path, make_csr: MakeCSR, wall_now: datetime
) -> None:
    host = _host(plane, "edge-01", tmp_path, make_csr, wall_now)
    bundle = plane.bundle_pem(wall_now)
    with _serve_once(_server_ctx(plane, tmp_path, wall_now, trust=bundle)) as (port, side):
        reply = _talk(port, _client_ctx(bundle, host))
    assert reply == b"hello edge", reply
    assert side.error is None
    assert side.peer_der is not None
    assert plane.verify_client_cert(side.peer_der, now=wall_now).node_name == "edge-01"


def test_handshake_fails_with_cert_from_another_ca(
    plane: TrustAnchor, tmp_path: Path, make_csr: MakeCSR, wall_now: datetime
) -> None:
    stranger = TrustAnchor.create(wall_now)
    host = _host(stranger, "edge-01", tmp_path, make_csr, wall_now)
    bundle = plane.bundle_pem(wall_now)
    with _serve_once(_server_ctx(plane, tmp_path, wall_now, trust=bundle)) as (port, side):
        reply = _talk(port, _client_ctx(bundle, host))
    assert reply != b"hello edge"
    assert isinstance(side.error, ssl.SSLError)
    assert "certificate verify failed" in str(side.error)
    assert side.peer_der is None


def test_crl_is_enforced_by_openssl(
    plane: TrustAnchor, tmp_path: Path, make_csr: MakeCSR, wall_now: datetime
) -> None:
    good = _host(plane, "edge-01", tmp_path, make_csr, wall_now)
    bad = _host(plane, "edge-02", tmp_path, make_csr, wall_now)
    plane.revoke_identity(
        plane.verify_client_cert(bad.cert_pem, now=wall_now), "keyCompromise", wall_now
    )
    bundle = plane.bundle_pem(wall_now)
    crl = plane.crl_bundle_pem(now=wall_now - timedelta(minutes=1))

    ctx = _server_ctx(plane, tmp_path, wall_now, trust=bundle, crl=crl)
    with _serve_once(ctx) as (port, side):
        assert _talk(port, _client_ctx(bundle, good)) == b"hello edge"
    assert side.error is None

    with _serve_once(ctx) as (port, side):
        assert _talk(port, _client_ctx(bundle, bad)) != b"hello edge"
    assert isinstance(side.error, ssl.SSLError)
    assert "revoked" in str(side.error)


def test_rotation_overlap_over_tls(
    plane: TrustAnchor, tmp_path: Path, make_csr: MakeCSR, wall_now: datetime
) -> None:
    old_host = _host(plane, "edge-01", tmp_path, make_csr, wall_now)
    old_ca, before = plane.active.fingerprint, plane.bundle_pem(wall_now)
    overlap = timedelta(days=1)
    plane.rotate(wall_now, overlap)
    new_host = _host(plane, "edge-02", tmp_path, make_csr, wall_now)

    # Right after the rotation an agent still holds only the old bundle: the plane keeps
    # serving a server certificate from the old CA, so the agent can connect and renew.
    ctx = _server_ctx(plane, tmp_path, wall_now, trust=plane.bundle_pem(wall_now), issuer=old_ca)
    with _serve_once(ctx) as (port, side):
        assert _talk(port, _client_ctx(before, old_host)) == b"hello edge"
    assert side.error is None

    during = plane.bundle_pem(wall_now)  # old + new
    ctx = _server_ctx(plane, tmp_path, wall_now, trust=during)  # server cert from the new CA
    for host in (old_host, new_host):
        with _serve_once(ctx) as (port, side):
            assert _talk(port, _client_ctx(during, host)) == b"hello edge"
        assert side.error is None

    after = plane.bundle_pem(wall_now + overlap)  # the client-CA list once the overlap ends
    ctx = _server_ctx(plane, tmp_path, wall_now, trust=after)
    with _serve_once(ctx) as (port, side):
        assert _talk(port, _client_ctx(during, old_host)) != b"hello edge"
    assert isinstance(side.error, ssl.SSLError)
    with _serve_once(ctx) as (port, side):
        assert _talk(port, _client_ctx(after, new_host)) == b"hello edge"
    assert side.error is None
