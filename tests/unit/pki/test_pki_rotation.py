"""CA rotation: old and new CA both trusted during the overlap, only the new one after."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from tether.pki import CertificateAuthority, TrustAnchor
from tether.pki.errors import IssuerRetired, RotationError, UntrustedIssuer

MakeCSR = Callable[..., bytes]
OVERLAP = timedelta(days=2)


def _pems(bundle: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(bundle)


def test_old_ca_cert_valid_during_overlap_invalid_after(
    anchor: TrustAnchor, make_csr: MakeCSR, now: datetime
) -> None:
    old = anchor.active
    old_host = anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now, lifetime=OVERLAP * 2)

    rotated_at = now + timedelta(hours=1)
    new = anchor.rotate(rotated_at, OVERLAP)
    assert anchor.active is new
    assert new.fingerprint != old.fingerprint
    assert new.subject != old.subject

    # New certificates come from the new CA.
    new_host = anchor.sign_host_csr(
        make_csr("edge-02"), "edge-02", now=rotated_at, lifetime=OVERLAP * 2
    )
    assert x509.load_pem_x509_certificate(new_host).issuer == new.subject

    # During the overlap both verify, and the bundle holds both CAs (active first).
    during = rotated_at + OVERLAP - timedelta(seconds=1)
    assert anchor.verify_client_cert(old_host, now=during).issuer_fingerprint == old.fingerprint
    assert anchor.verify_client_cert(new_host, now=during).issuer_fingerprint == new.fingerprint
    assert [c.subject for c in _pems(anchor.bundle_pem(during))] == [new.subject, old.subject]

    # From overlap_until on, the old CA's certificate fails with a clear error.
    after = rotated_at + OVERLAP
    with pytest.raises(IssuerRetired, match="overlap ended") as err:
        anchor.verify_client_cert(old_host, now=after)
    assert err.value.rule == "pki.cert.issuer_retired"
    assert isinstance(err.value, UntrustedIssuer)
    assert err.value.details["issuer_fingerprint"] == old.fingerprint
    anchor.verify_client_cert(new_host, now=after)
    assert [c.subject for c in _pems(anchor.bundle_pem(after))] == [new.subject]

    # Once pruned, the old CA is simply unknown.
    assert [p.authority.fingerprint for p in anchor.prune(after)] == [old.fingerprint]
    with pytest.raises(UntrustedIssuer) as err2:
        anchor.verify_client_cert(old_host, now=after)
    assert not isinstance(err2.value, IssuerRetired)


def test_zero_overlap_is_a_hard_cutover(
    anchor: TrustAnchor, make_csr: MakeCSR, now: datetime
) -> None:
    old_host = anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now)
    anchor.rotate(now, timedelta(0))
    with pytest.raises(IssuerRetired):
        anchor.verify_client_cert(old_host, now=now)


def test_rotation_refusals(anchor: TrustAnchor, now: datetime) -> None:
    with pytest.raises(RotationError, match="negative") as err:
        anchor.rotate(now, timedelta(seconds=-1))
    assert err.value.rule == "pki.ca.rotation"
    with pytest.raises(RotationError, match="already in the trust bundle"):
        anchor.rotate(now, OVERLAP, new_ca=anchor.active)


def test_rotate_to_an_imported_ca(anchor: TrustAnchor, make_csr: MakeCSR, now: datetime) -> None:
    user_ca = CertificateAuthority.generate(now, common_name="ACME Edge CA")
    imported = CertificateAuthority.from_pem(user_ca.cert_pem(), user_ca.key_pem(), now)
    anchor.rotate(now, OVERLAP, new_ca=imported)
    host = anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now)
    assert anchor.verify_client_cert(host, now=now).issuer_fingerprint == user_ca.fingerprint


def test_crls_during_overlap(anchor: TrustAnchor, make_csr: MakeCSR, now: datetime) -> None:
    old = anchor.active
    old_host = anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now)
    new = anchor.rotate(now, OVERLAP)
    new_host = anchor.sign_host_csr(make_csr("edge-02"), "edge-02", now=now)
    for pem in (old_host, new_host):
        anchor.revoke_identity(anchor.verify_client_cert(pem, now=now), "superseded", now)

    crls = [
        x509.load_pem_x509_crl(b"-----BEGIN X509 CRL-----" + part)
        for part in anchor.crl_bundle_pem(now=now).split(b"-----BEGIN X509 CRL-----")[1:]
    ]
    assert [c.issuer for c in crls] == [new.subject, old.subject]
    for crl, ca, host in zip(crls, (new, old), (new_host, old_host), strict=True):
        assert crl.is_signature_valid(ca.key.public_key())
        assert [r.serial_number for r in crl] == [
            x509.load_pem_x509_certificate(host).serial_number
        ]
    old_crl = x509.load_pem_x509_crl(anchor.crl_pem(now=now, issuer_fingerprint=old.fingerprint))
    assert old_crl.issuer == old.subject
    with pytest.raises(UntrustedIssuer):
        anchor.crl_pem(now=now, issuer_fingerprint="00" * 32)


def test_rotation_persists(
    anchor: TrustAnchor, make_csr: MakeCSR, now: datetime, tmp_path: Path
) -> None:
    root = tmp_path / "ca"
    anchor.save(root)
    old = anchor.active
    old_host = anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now)
    new = anchor.rotate(now, OVERLAP)
    anchor.save(root)

    prev_dir = root / "previous" / old.fingerprint
    assert sorted(p.name for p in prev_dir.iterdir()) == ["ca.crt", "ca.key", "meta.json"]
    assert stat.S_IMODE((prev_dir / "ca.key").stat().st_mode) == 0o600
    meta = json.loads((prev_dir / "meta.json").read_text())
    assert meta == {
        "fingerprint": old.fingerprint,
        "retiredAt": now.isoformat(),
        "overlapUntil": (now + OVERLAP).isoformat(),
    }
    assert (root / "active" / "ca.crt").read_bytes() == new.cert_pem()

    loaded = TrustAnchor.load(root)
    assert loaded.active.fingerprint == new.fingerprint
    assert [p.authority.fingerprint for p in loaded.bundle.previous] == [old.fingerprint]
    assert loaded.bundle.previous[0].overlap_until == now + OVERLAP
    loaded.verify_client_cert(old_host, now=now)
    with pytest.raises(IssuerRetired):
        loaded.verify_client_cert(old_host, now=now + OVERLAP)

    # Pruning and saving deletes the retired CA's directory, key included.
    loaded.prune(now + OVERLAP)
    loaded.save(root)
    assert list((root / "previous").iterdir()) == []
    assert TrustAnchor.load(root).bundle.previous == []


def test_two_rotations_in_one_overlap(
    anchor: TrustAnchor, make_csr: MakeCSR, now: datetime
) -> None:
    first = anchor.active
    host = anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now, lifetime=OVERLAP)
    anchor.rotate(now, OVERLAP)
    anchor.rotate(now + timedelta(hours=1), OVERLAP)
    assert len(_pems(anchor.bundle_pem(now + timedelta(hours=2)))) == 3
    assert anchor.verify_client_cert(host, now=now + timedelta(hours=2)).issuer_fingerprint == (
        first.fingerprint
    )


def test_server_cert_from_previous_ca_during_overlap(anchor: TrustAnchor, now: datetime) -> None:
    old = anchor.active
    anchor.rotate(now, OVERLAP)
    cert_pem, _ = anchor.issue_server_cert(["plane"], now=now, issuer_fingerprint=old.fingerprint)
    assert x509.load_pem_x509_certificate(cert_pem).issuer == old.subject
    with pytest.raises(UntrustedIssuer, match="no longer trusted"):
        anchor.issue_server_cert(["plane"], now=now + OVERLAP, issuer_fingerprint=old.fingerprint)
