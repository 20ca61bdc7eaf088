"""Revocation: enforced by verify_client_cert and published in a signed CRL."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest
from cryptography import x509

from tether.pki import RevocationList, RevokedEntry, TrustAnchor
from tether.pki.errors import CertificateRevoked, InvalidRevocation

MakeCSR = Callable[..., bytes]


def _serial(pem: bytes) -> int:
    return x509.load_pem_x509_certificate(pem).serial_number


def test_revoke_then_verify_fails_and_crl_lists_serial(
    anchor: TrustAnchor, make_csr: MakeCSR, now: datetime
) -> None:
    pem = anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now)
    keep = anchor.sign_host_csr(make_csr("edge-02"), "edge-02", now=now)
    identity = anchor.verify_client_cert(pem, now=now)

    later = now + timedelta(minutes=10)
    entry = anchor.revoke(identity.serial, "keyCompromise", later)
    assert entry == RevokedEntry(identity.serial, later, "keyCompromise")

    with pytest.raises(CertificateRevoked, match="revoked") as err:
        anchor.verify_client_cert(pem, now=later)
    assert err.value.rule == "pki.cert.revoked"
    assert err.value.details["serial"] == identity.serial
    anchor.verify_client_cert(keep, now=later)  # others unaffected

    crl = x509.load_pem_x509_crl(anchor.crl_pem(now=later, next_update=later + timedelta(hours=1)))
    assert crl.is_signature_valid(anchor.active.key.public_key())
    assert crl.issuer == anchor.active.subject
    assert crl.last_update_utc == later
    assert crl.next_update_utc == later + timedelta(hours=1)
    revoked = crl.get_revoked_certificate_by_serial_number(identity.serial)
    assert revoked is not None
    assert revoked.revocation_date_utc == later
    reason = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.key_compromise
    assert crl.get_revoked_certificate_by_serial_number(_serial(keep)) is None
    assert len(list(crl)) == 1
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > 0


def test_unspecified_reason_has_no_reason_code(
    anchor: TrustAnchor, make_csr: MakeCSR, now: datetime
) -> None:
    serial = _serial(anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now))
    anchor.revoke(serial, x509.ReasonFlags.unspecified, now)
    crl = x509.load_pem_x509_crl(anchor.crl_pem(now=now))
    revoked = crl.get_revoked_certificate_by_serial_number(serial)
    assert revoked is not None
    assert len(revoked.extensions) == 0
    assert crl.next_update_utc == now + timedelta(days=1)


def test_crl_from_explicit_list(anchor: TrustAnchor, now: datetime) -> None:
    entries = [RevokedEntry(1234, now, "superseded"), RevokedEntry(99, now, "cessationOfOperation")]
    crl = x509.load_pem_x509_crl(anchor.crl_pem(entries, now=now))
    assert sorted(r.serial_number for r in crl) == [99, 1234]


def test_revocation_is_idempotent(anchor: TrustAnchor, now: datetime) -> None:
    first = anchor.revoke(42, "superseded", now)
    again = anchor.revoke(42, "keyCompromise", now + timedelta(hours=1))
    assert again is first
    assert len(anchor.revocations.entries) == 1


def test_bad_reasons_and_serials(anchor: TrustAnchor, now: datetime) -> None:
    with pytest.raises(InvalidRevocation, match="unknown revocation reason") as err:
        anchor.revoke(1, "because", now)
    assert err.value.rule == "pki.revocation.invalid"
    with pytest.raises(InvalidRevocation):
        anchor.revoke(1, "removeFromCRL", now)
    with pytest.raises(InvalidRevocation):
        anchor.revoke(0, "superseded", now)
    with pytest.raises(InvalidRevocation, match="next_update"):
        anchor.crl_pem(now=now, next_update=now)


def test_records_round_trip_through_json(now: datetime) -> None:
    rl = RevocationList()
    rl.revoke(2**158 + 7, "keyCompromise", now, issuer_fingerprint="ab" * 32, not_after=now)
    rl.revoke(5, "superseded", now + timedelta(seconds=1))
    records = json.loads(json.dumps(rl.to_records()))
    assert records[0]["serial"] == format(2**158 + 7, "x")
    assert records[0]["revokedAt"] == now.isoformat()
    restored = RevocationList.from_records(records)
    assert restored == rl


@pytest.mark.parametrize(
    "record",
    [
        {"serial": "zz", "revokedAt": "2030-01-01T00:00:00+00:00"},
        {"serial": "0", "revokedAt": "2030-01-01T00:00:00+00:00"},
        {"serial": "ff", "revokedAt": "yesterday"},
        {"serial": "ff", "revokedAt": "2030-01-01T00:00:00"},  # naive
        {"serial": "ff", "revokedAt": "2030-01-01T00:00:00+00:00", "reason": "nope"},
        {"serial": "ff", "revokedAt": "2030-01-01T00:00:00+00:00", "issuer": 5},
    ],
)
def test_bad_records_refused(record: dict[str, object]) -> None:
    with pytest.raises((InvalidRevocation, ValueError)):
        RevocationList.from_records([record])


def test_prune_drops_expired_entries(anchor: TrustAnchor, make_csr: MakeCSR, now: datetime) -> None:
    identity = anchor.verify_client_cert(
        anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now), now=now
    )
    anchor.revoke_identity(identity, "superseded", now)
    anchor.revoke(77, "superseded", now)  # not_after unknown: kept
    assert anchor.revocations.prune(now + timedelta(hours=23)) == 0
    assert anchor.revocations.prune(now + timedelta(hours=25)) == 1
    assert [e.serial for e in anchor.revocations.entries] == [77]


def test_entry_for_another_issuer_does_not_apply(
    anchor: TrustAnchor, make_csr: MakeCSR, now: datetime
) -> None:
    pem = anchor.sign_host_csr(make_csr("edge-01"), "edge-01", now=now)
    anchor.revoke(_serial(pem), "superseded", now, issuer_fingerprint="00" * 32)
    anchor.verify_client_cert(pem, now=now)
    crl = x509.load_pem_x509_crl(anchor.crl_pem(now=now))
    assert len(list(crl)) == 0


class _CountedScans(list[RevokedEntry]):
    """A list that counts how often it is walked through."""

    scans = 0

    def __iter__(self) -> Iterator[RevokedEntry]:
        type(self).scans += 1
        return super().__iter__()


def test_revoking_and_looking_up_never_scan_the_list(now: datetime) -> None:
    """The plane rebuilds the list from the store every few seconds: revoke and lookup
    must not walk every entry, or the rebuild grows with the square of the revocations."""
    revoked = RevocationList(entries=_CountedScans())
    before = _CountedScans.scans
    for serial in range(1, 2001):
        revoked.revoke(serial, "keyCompromise", now, issuer_fingerprint="ca1")
    assert revoked.revoke(7, "superseded", now, issuer_fingerprint="ca1").reason == "keyCompromise"
    assert revoked.lookup(2000, "ca1") is not None
    assert revoked.lookup(2000, "ca2") is None
    assert revoked.lookup(2001, "ca1") is None
    assert len(revoked.entries) == 2000
    assert _CountedScans.scans == before
