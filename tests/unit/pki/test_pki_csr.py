"""Signing host CSRs: the happy path and every refusal."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given
from hypothesis import strategies as st

from tether.pki import TrustAnchor
from tether.pki.authority import CLOCK_SKEW
from tether.pki.errors import (
    CAExpired,
    CSRExtensionNotAllowed,
    CSRKeyNotAllowed,
    CSRSignatureInvalid,
    CSRSubjectNotAllowed,
    InvalidCSR,
    InvalidLifetime,
    NameNotAllowed,
)
from tether.pki.names import node_name_problem

MakeCSR = Callable[..., bytes]


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def _public_der(key: Any) -> bytes:
    return bytes(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo))


def test_signs_csr_with_node_name_san_and_client_auth(
    anchor: TrustAnchor, make_csr: MakeCSR, now: datetime
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(anchor.sign_host_csr(make_csr("edge-01", key=key), "edge-01", now=now))

    assert cert.subject.rfc4514_string() == "CN=edge-01"
    assert cert.issuer == anchor.active.subject
    cert.verify_directly_issued_by(anchor.active.cert)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["edge-01"]
    assert list(san) == [x509.DNSName("edge-01")]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical
    assert bc.value.ca is False
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature
    assert not ku.key_cert_sign
    assert cert.serial_number > 0
    assert cert.not_valid_after_utc == now + timedelta(hours=24)
    assert cert.not_valid_before_utc == now - CLOCK_SKEW


def test_serials_are_unique(anchor: TrustAnchor, make_csr: MakeCSR, now: datetime) -> None:
    serials = {
        _cert(anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now)).serial_number
        for _ in range(20)
    }
    assert len(serials) == 20


def test_lifetime_is_configurable_per_anchor_and_per_call(make_csr: MakeCSR, now: datetime) -> None:
    anchor = TrustAnchor.create(now, host_cert_lifetime=timedelta(hours=6))
    cert = _cert(anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now))
    assert cert.not_valid_after_utc == now + timedelta(hours=6)
    cert = _cert(
        anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now, lifetime=timedelta(days=2))
    )
    assert cert.not_valid_after_utc == now + timedelta(days=2)


@pytest.mark.parametrize("lifetime", [timedelta(0), timedelta(seconds=-1), timedelta(days=366)])
def test_lifetime_bounds(
    anchor: TrustAnchor, make_csr: MakeCSR, now: datetime, lifetime: timedelta
) -> None:
    with pytest.raises(InvalidLifetime) as err:
        anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now, lifetime=lifetime)
    assert err.value.rule == "pki.lifetime"
    with pytest.raises(InvalidLifetime):
        TrustAnchor.create(now, host_cert_lifetime=lifetime)


def test_host_cert_never_outlives_the_ca(make_csr: MakeCSR, now: datetime) -> None:
    anchor = TrustAnchor.create(now, lifetime=timedelta(hours=10))
    cert = _cert(anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now))
    assert cert.not_valid_after_utc == anchor.active.not_after


def test_cn_mismatch_refused(anchor: TrustAnchor, make_csr: MakeCSR, now: datetime) -> None:
    with pytest.raises(CSRSubjectNotAllowed, match="does not match the node name") as err:
        anchor.sign_host_csr(make_csr("edge-02"), "edge-01", now=now)
    assert err.value.rule == "pki.csr.subject"
    assert isinstance(err.value, InvalidCSR)


def test_missing_cn_refused(anchor: TrustAnchor, make_csr: MakeCSR, now: datetime) -> None:
    csr = make_csr(None, extra_subject=[x509.NameAttribute(NameOID.ORGANIZATION_NAME, "x")])
    with pytest.raises(CSRSubjectNotAllowed, match="exactly one CN"):
        anchor.sign_host_csr(csr, "edge-01", now=now)


def test_extra_subject_attributes_refused(
    anchor: TrustAnchor, make_csr: MakeCSR, now: datetime
) -> None:
    csr = make_csr(
        "edge-01",
        extra_subject=[x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters")],
    )
    with pytest.raises(CSRSubjectNotAllowed, match="system:masters"):
        anchor.sign_host_csr(csr, "edge-01", now=now)


@pytest.mark.parametrize(
    "name",
    ["Edge-01", "edge_01", "-edge", "edge-", "edge.site", "", "edge 01", "édge", "a" * 65],
)
def test_bad_node_names_refused(
    anchor: TrustAnchor, make_csr: MakeCSR, now: datetime, name: str
) -> None:
    csr = make_csr(name or "x", san=False)  # CSR CN == name: the name check must refuse it
    with pytest.raises(NameNotAllowed) as err:
        anchor.sign_host_csr(csr, name, now=now)
    assert err.value.rule == "pki.name.invalid"


def test_64_char_name_accepted_65_refused(
    anchor: TrustAnchor, make_csr: MakeCSR, now: datetime
) -> None:
    name64 = "n" + "0" * 62 + "z"
    assert len(name64) == 64
    cert = _cert(anchor.sign_host_csr(make_csr(name64), name64, now=now))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name64
    name65 = name64 + "x"
    with pytest.raises(NameNotAllowed, match="65 characters long; the maximum is 64"):
        anchor.sign_host_csr(make_csr(name65, san=False), name65, now=now)


@given(st.from_regex(re.compile(r"[a-z0-9]([-a-z0-9]{0,62}[a-z0-9])?"), fullmatch=True))
def test_every_dns1123_label_up_to_64_is_accepted(name: str) -> None:
    assert node_name_problem(name) is None


@given(st.text(min_size=1, max_size=70))
def test_names_outside_the_charset_are_refused(name: str) -> None:
    valid = re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 64
    assert (node_name_problem(name) is None) == bool(valid)


def test_ca_true_in_csr_refused(anchor: TrustAnchor, make_csr: MakeCSR, now: datetime) -> None:
    csr = make_csr("edge-01", extensions=[(x509.BasicConstraints(ca=True, path_length=None), True)])
    with pytest.raises(CSRExtensionNotAllowed, match="CA:TRUE") as err:
        anchor.sign_host_csr(csr, "edge-01", now=now)
    assert err.value.rule == "pki.csr.extension"


def test_ca_false_in_csr_is_fine(anchor: TrustAnchor, make_csr: MakeCSR, now: datetime) -> None:
    csr = make_csr(
        "edge-01",
        extensions=[
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
        ],
    )
    cert = _cert(anchor.sign_host_csr(csr, "edge-01", now=now))
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


@pytest.mark.parametrize(
    ("extension", "message"),
    [
        (x509.SubjectAlternativeName([x509.DNSName("api.example.com")]), "subjectAltName"),
        (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), "extendedKeyUsage"),
        (
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            "keyCertSign",
        ),
        (x509.TLSFeature([x509.TLSFeatureType.status_request]), "does not issue"),
        (
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00"),
            "1.3.6.1.4.1.99999.1",
        ),
    ],
)
def test_unexpected_extensions_refused(
    anchor: TrustAnchor,
    make_csr: MakeCSR,
    now: datetime,
    extension: x509.ExtensionType,
    message: str,
) -> None:
    csr = make_csr("edge-01", san=False, extensions=[(extension, False)])
    with pytest.raises(CSRExtensionNotAllowed, match=message):
        anchor.sign_host_csr(csr, "edge-01", now=now)


def test_bad_csr_signature_refused(anchor: TrustAnchor, make_csr: MakeCSR, now: datetime) -> None:
    csr = x509.load_pem_x509_csr(make_csr("edge-01"))
    der = bytearray(csr.public_bytes(Encoding.DER))
    der[-1] ^= 0x01  # last byte of the ECDSA signature's s value
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(Encoding.PEM)
    with pytest.raises(CSRSignatureInvalid) as err:
        anchor.sign_host_csr(tampered, "edge-01", now=now)
    assert err.value.rule == "pki.csr.signature"


@pytest.mark.parametrize("junk", [b"", b"hello", b"-----BEGIN CERTIFICATE REQUEST-----\nAA\n"])
def test_unreadable_csr_refused(anchor: TrustAnchor, now: datetime, junk: bytes) -> None:
    with pytest.raises(InvalidCSR, match="not a readable PEM"):
        anchor.sign_host_csr(junk, "edge-01", now=now)


def test_weak_rsa_key_refused(anchor: TrustAnchor, make_csr: MakeCSR, now: datetime) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(CSRKeyNotAllowed, match="1024 bits"):
        anchor.sign_host_csr(make_csr("edge-01", key=weak), "edge-01", now=now)


def test_other_key_types_accepted(
    anchor: TrustAnchor, make_csr: MakeCSR, now: datetime, rsa_key: rsa.RSAPrivateKey
) -> None:
    cert = _cert(anchor.sign_host_csr(make_csr("edge-01", key=rsa_key), "edge-01", now=now))
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    ed = ed25519.Ed25519PrivateKey.generate()
    ed_cert = _cert(anchor.sign_host_csr(make_csr("edge-01", key=ed), "edge-01", now=now))
    assert _public_der(ed_cert.public_key()) == _public_der(ed.public_key())
    p384 = ec.generate_private_key(ec.SECP384R1())
    p384_cert = _cert(anchor.sign_host_csr(make_csr("edge-01", key=p384), "edge-01", now=now))
    assert _public_der(p384_cert.public_key()) == _public_der(p384.public_key())
    for cert in (ed_cert, p384_cert):
        assert cert.subject.rfc4514_string() == "CN=edge-01"
        cert.verify_directly_issued_by(anchor.active.cert)


def test_str_pem_accepted(anchor: TrustAnchor, make_csr: MakeCSR, now: datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(anchor.sign_host_csr(make_csr("edge-01", key=key).decode(), "edge-01", now=now))
    assert cert.subject.rfc4514_string() == "CN=edge-01"
    assert _public_der(cert.public_key()) == _public_der(key.public_key())


def test_naive_now_refused(anchor: TrustAnchor, make_csr: MakeCSR) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=datetime(2030, 1, 1))


def test_expired_ca_cannot_sign(make_csr: MakeCSR, now: datetime) -> None:
    anchor = TrustAnchor.create(now, lifetime=timedelta(days=1))
    with pytest.raises(CAExpired, match="expired"):
        anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now + timedelta(days=2))


def test_timezone_is_normalised(anchor: TrustAnchor, make_csr: MakeCSR, now: datetime) -> None:
    plus2 = now.astimezone(timezone(timedelta(hours=2)))
    cert = _cert(anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=plus2))
    assert cert.not_valid_after_utc == now.astimezone(UTC) + timedelta(hours=24)
