"""Fixtures for the trust-anchor tests: a fixed virtual clock, an anchor, CSR builders."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from tether.pki import TrustAnchor

#: Virtual "now" for tests that do not talk to a real TLS stack.
T0 = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)

MakeCSR = Callable[..., bytes]


@pytest.fixture
def now() -> datetime:
    return T0


@pytest.fixture
def anchor(now: datetime) -> TrustAnchor:
    return TrustAnchor.create(now)


def build_csr(
    cn: str | None,
    *,
    key: CertificateIssuerPrivateKeyTypes | None = None,
    extra_subject: Sequence[x509.NameAttribute[str]] = (),
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
    san: bool = True,
) -> bytes:
    """A PEM CSR; by default CN=<cn> with SAN DNS:<cn>, signed by a new P-256 key."""
    key = key if key is not None else ec.generate_private_key(ec.SECP256R1())
    # _validate=False lets a test put an over-long (65 character) CN into a CSR, as a
    # hostile or buggy agent could; cryptography refuses to build one otherwise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn, _validate=False)] if cn else []
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([*attrs, *extra_subject])
    )
    if san and cn:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False
        )
    for ext, critical in extensions:
        builder = builder.add_extension(ext, critical=critical)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(Encoding.PEM)


@pytest.fixture
def make_csr() -> MakeCSR:
    return build_csr


@pytest.fixture
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
