"""Importing a CA from the user's PKI (cert + key PEM files)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from tether.pki import TrustAnchor
from tether.pki.errors import CAExpired, CAKeyMismatch, CAKeyNotSupported, InvalidCA, NotACA

MakeCSR = Callable[..., bytes]


def _user_ca(
    now: datetime,
    key: CertificateIssuerPrivateKeyTypes,
    *,
    ca: bool = True,
    crl_sign: bool = True,
    days: int = 365,
    start: timedelta = timedelta(days=-1),
) -> x509.Certificate:
    """A CA the way a user's own PKI (openssl, step-ca, ...) might have made it."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "DE"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ACME GmbH"),
            x509.NameAttribute(NameOID.COMMON_NAME, "ACME Edge Hosts CA"),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + start)
        .not_valid_after(now + start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=crl_sign,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    return builder.sign(key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: CertificateIssuerPrivateKeyTypes, password: bytes | None = None) -> bytes:
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL
        if isinstance(key, rsa.RSAPrivateKey)
        else serialization.PrivateFormat.PKCS8,
        enc,
    )


def test_import_user_rsa_ca_issues_and_verifies(
    tmp_path: Path, now: datetime, make_csr: MakeCSR, rsa_key: rsa.RSAPrivateKey
) -> None:
    cert = _user_ca(now, rsa_key)
    (tmp_path / "user.crt").write_bytes(_pem(cert))
    (tmp_path / "user.key").write_bytes(_key_pem(rsa_key))
    anchor = TrustAnchor.import_files(tmp_path / "user.crt", tmp_path / "user.key", now)
    assert anchor.active.cert == cert

    host = anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now)
    x509.load_pem_x509_certificate(host).verify_directly_issued_by(cert)
    assert anchor.verify_client_cert(host, now=now).node_name == "edge-01"

    # Persisted like a generated CA, key 0600.
    anchor.save(tmp_path / "ca")
    assert (tmp_path / "ca" / "active" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert TrustAnchor.load(tmp_path / "ca").active.fingerprint == anchor.active.fingerprint


def test_import_p384_ca_with_encrypted_key(now: datetime, make_csr: MakeCSR) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    cert = _user_ca(now, key)
    anchor = TrustAnchor.import_pem(_pem(cert), _key_pem(key, b"s3cret"), now, password=b"s3cret")
    host = anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now)
    assert anchor.verify_client_cert(host, now=now).issuer_fingerprint == anchor.active.fingerprint
    with pytest.raises(InvalidCA, match="not a readable PEM private key"):
        TrustAnchor.import_pem(_pem(cert), _key_pem(key, b"s3cret"), now, password=b"wrong")


def test_mismatched_key_refused(now: datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(CAKeyMismatch, match="does not belong") as err:
        TrustAnchor.import_pem(_pem(_user_ca(now, key)), _key_pem(other), now)
    assert err.value.rule == "pki.ca.key_mismatch"


def test_leaf_certificate_refused(now: datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(NotACA, match="not a CA") as err:
        TrustAnchor.import_pem(_pem(_user_ca(now, key, ca=False)), _key_pem(key), now)
    assert err.value.rule == "pki.ca.not_ca"


def test_ca_without_crl_sign_refused(now: datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(NotACA, match="cRLSign"):
        TrustAnchor.import_pem(_pem(_user_ca(now, key, crl_sign=False)), _key_pem(key), now)


def test_expired_and_future_ca_refused(now: datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    expired = _user_ca(now, key, start=timedelta(days=-400))
    with pytest.raises(CAExpired, match="expired at") as err:
        TrustAnchor.import_pem(_pem(expired), _key_pem(key), now)
    assert err.value.rule == "pki.ca.expired"
    future = _user_ca(now, key, start=timedelta(days=1))
    with pytest.raises(CAExpired, match="not valid before"):
        TrustAnchor.import_pem(_pem(future), _key_pem(key), now)


def test_weak_ca_key_refused(now: datetime) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(CAKeyNotSupported, match="2048"):
        TrustAnchor.import_pem(_pem(_user_ca(now, key)), _key_pem(key), now)


def test_garbage_and_missing_files(tmp_path: Path, now: datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(InvalidCA, match="not a readable PEM certificate"):
        TrustAnchor.import_pem(b"nope", _key_pem(key), now)
    with pytest.raises(InvalidCA, match="cannot read CA file"):
        TrustAnchor.import_files(tmp_path / "missing.crt", tmp_path / "missing.key", now)
