"""Verifying host client certificates, in virtual time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from tether.pki import HostIdentity, TrustAnchor
from tether.pki.authority import CLOCK_SKEW
from tether.pki.errors import (
    CertificateExpired,
    CertificateNotYetValid,
    InvalidCertificate,
    NameNotAllowed,
    UntrustedIssuer,
    WrongKeyUsage,
)

MakeCSR = Callable[..., bytes]


def test_verify_returns_identity(anchor: TrustAnchor, make_csr: MakeCSR, now: datetime) -> None:
    pem = anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now)
    cert = x509.load_pem_x509_certificate(pem)
    identity = anchor.verify_client_cert(pem, now=now)
    assert identity == HostIdentity(
        node_name="edge-01",
        serial=cert.serial_number,
        not_after=now + timedelta(hours=24),
        issuer_fingerprint=anchor.active.fingerprint,
    )
    assert identity.serial_hex == format(cert.serial_number, "x")
    # DER (what a TLS stack hands over), str PEM and parsed certificates work too.
    assert anchor.verify_client_cert(cert.public_bytes(Encoding.DER), now=now) == identity
    assert anchor.verify_client_cert(pem.decode(), now=now) == identity
    assert anchor.verify_client_cert(cert, now=now) == identity


def test_expiry_in_virtual_time(anchor: TrustAnchor, make_csr: MakeCSR, now: datetime) -> None:
    pem = anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now)
    end = now + timedelta(hours=24)
    anchor.verify_client_cert(pem, now=end - timedelta(seconds=1))
    anchor.verify_client_cert(pem, now=end)  # RFC 5280: notAfter is inclusive
    with pytest.raises(CertificateExpired, match="expired at") as err:
        anchor.verify_client_cert(pem, now=end + timedelta(seconds=1))
    assert err.value.rule == "pki.cert.expired"
    assert err.value.details["not_after"] == end


def test_not_yet_valid(anchor: TrustAnchor, make_csr: MakeCSR, now: datetime) -> None:
    signed_at = now + timedelta(hours=1)
    pem = anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=signed_at)
    anchor.verify_client_cert(pem, now=signed_at - CLOCK_SKEW)  # back-dated for clock skew
    with pytest.raises(CertificateNotYetValid) as err:
        anchor.verify_client_cert(pem, now=signed_at - CLOCK_SKEW - timedelta(seconds=1))
    assert err.value.rule == "pki.cert.not_yet_valid"


def test_other_ca_is_untrusted(anchor: TrustAnchor, make_csr: MakeCSR, now: datetime) -> None:
    stranger = TrustAnchor.create(now, common_name="Tether CA")
    pem = stranger.sign_host_csr(make_csr("edge-01"), "edge-01", now=now)
    with pytest.raises(UntrustedIssuer, match="not signed by any CA") as err:
        anchor.verify_client_cert(pem, now=now)
    assert err.value.rule == "pki.cert.untrusted_issuer"


def test_same_subject_different_key_is_untrusted(
    anchor: TrustAnchor, make_csr: MakeCSR, now: datetime
) -> None:
    """An impostor CA copying the subject name must fail on the signature, not the name."""
    impostor_key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.load_pem_x509_csr(make_csr("edge-01"))
    forged = (
        x509.CertificateBuilder()
        .subject_name(csr.subject)
        .issuer_name(anchor.active.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("edge-01")]), False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .sign(impostor_key, hashes.SHA256())
    )
    with pytest.raises(UntrustedIssuer):
        anchor.verify_client_cert(forged.public_bytes(Encoding.PEM), now=now)


def test_server_cert_is_not_a_client_cert(anchor: TrustAnchor, now: datetime) -> None:
    cert_pem, _ = anchor.issue_server_cert(["plane.example.com"], now=now)
    with pytest.raises(WrongKeyUsage, match="clientAuth") as err:
        anchor.verify_client_cert(cert_pem, now=now)
    assert err.value.rule == "pki.cert.usage"


def test_ca_cert_is_not_a_client_cert(anchor: TrustAnchor, now: datetime) -> None:
    with pytest.raises(WrongKeyUsage, match="CA certificate"):
        anchor.verify_client_cert(anchor.active.cert_pem(), now=now)


@pytest.mark.parametrize("junk", [b"", b"garbage", b"-----BEGIN CERTIFICATE-----\nAA\n"])
def test_unreadable_cert(anchor: TrustAnchor, now: datetime, junk: bytes) -> None:
    with pytest.raises(InvalidCertificate, match="not a readable"):
        anchor.verify_client_cert(junk, now=now)


def test_expired_issuing_ca(make_csr: MakeCSR, now: datetime) -> None:
    anchor = TrustAnchor.create(now, lifetime=timedelta(hours=30))
    pem = anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now, lifetime=timedelta(days=2))
    with pytest.raises(UntrustedIssuer, match="outside its validity"):
        anchor.verify_client_cert(pem, now=now + timedelta(hours=31))


def test_server_cert_contents(anchor: TrustAnchor, now: datetime) -> None:
    cert_pem, key_pem = anchor.issue_server_cert(
        ["plane.example.com", "localhost"], ["127.0.0.1", "::1"], now=now
    )
    cert = x509.load_pem_x509_certificate(cert_pem)
    cert.verify_directly_issued_by(anchor.active.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["plane.example.com", "localhost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    assert cert.not_valid_after_utc == now + timedelta(days=90)
    assert b"PRIVATE KEY" in key_pem


@pytest.mark.parametrize(
    ("hostnames", "ips"),
    [([], []), (["*.example.com"], []), (["Bad_Name"], []), (["10.0.0.1"], []), ([], ["x"])],
)
def test_server_cert_name_checks(
    anchor: TrustAnchor, now: datetime, hostnames: list[str], ips: list[str]
) -> None:
    with pytest.raises(NameNotAllowed):
        anchor.issue_server_cert(hostnames, ips, now=now)
