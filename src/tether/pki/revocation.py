"""Revocation: a plain, serialisable list of revoked serials and signed X.509 CRLs.

The plane persists the list (as :meth:`RevocationList.to_records`) wherever it keeps its
state; this module only builds and checks it. Serials are random 159-bit numbers, so a
serial identifies a certificate across all CAs in practice; an entry may still name its
issuer (``issuer_fingerprint``) so each CA's CRL lists only its own certificates. An
entry without an issuer applies to (and is listed in the CRL of) every CA.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tether.pki.authority import CertificateAuthority, aware_utc, signing_hash
from tether.pki.errors import InvalidRevocation

#: Default ``next_update`` distance of a CRL; the plane should re-issue well before it.
DEFAULT_CRL_VALIDITY = timedelta(days=1)

#: Reasons a caller may give, by their RFC 5280 names (``x509.ReasonFlags`` values).
REASONS: frozenset[str] = frozenset(
    r.value for r in x509.ReasonFlags if r is not x509.ReasonFlags.remove_from_crl
)


def _reason(reason: str | x509.ReasonFlags) -> x509.ReasonFlags:
    value = reason.value if isinstance(reason, x509.ReasonFlags) else reason
    if value not in REASONS:
        raise InvalidRevocation(
            f"unknown revocation reason {reason!r}; use one of {sorted(REASONS)}",
            reason=str(reason),
        )
    return x509.ReasonFlags(value)


def _iso(dt: datetime) -> str:
    return aware_utc(dt).isoformat()


def _parse_dt(value: object, key: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidRevocation(f"revocation record field {key!r} must be an ISO 8601 string")
    try:
        return aware_utc(datetime.fromisoformat(value), key)
    except ValueError as exc:
        raise InvalidRevocation(f"revocation record field {key!r}: {exc}") from exc


@dataclass(frozen=True)
class RevokedEntry:
    """One revoked certificate: ``(serial, revoked_at, reason)`` plus optional context.

    ``not_after`` (the certificate's own expiry), when known, lets :meth:`RevocationList.prune`
    drop the entry once the certificate could not verify anyway.
    """

    serial: int
    revoked_at: datetime
    reason: str = x509.ReasonFlags.unspecified.value
    issuer_fingerprint: str | None = None
    not_after: datetime | None = None

    def applies_to(self, serial: int, issuer_fingerprint: str) -> bool:
        return self.serial == serial and self.issuer_fingerprint in (None, issuer_fingerprint)

    def to_record(self) -> dict[str, str | None]:
        """Plain JSON-ready form; the serial is hex because it does not fit a JSON double."""
        return {
            "serial": format(self.serial, "x"),
            "revokedAt": _iso(self.revoked_at),
            "reason": self.reason,
            "issuer": self.issuer_fingerprint,
            "notAfter": _iso(self.not_after) if self.not_after else None,
        }

    @classmethod
    def from_record(cls, record: Mapping[str, object]) -> RevokedEntry:
        serial = record.get("serial")
        try:
            serial_int = int(serial, 16) if isinstance(serial, str) else -1
        except ValueError:
            serial_int = -1
        if serial_int <= 0:
            raise InvalidRevocation(f"revocation record has a bad serial: {serial!r}")
        reason = record.get("reason", x509.ReasonFlags.unspecified.value)
        issuer = record.get("issuer")
        if issuer is not None and not isinstance(issuer, str):
            raise InvalidRevocation("revocation record field 'issuer' must be a string or null")
        not_after = record.get("notAfter")
        return cls(
            serial=serial_int,
            revoked_at=_parse_dt(record.get("revokedAt"), "revokedAt"),
            reason=_reason(str(reason)).value,
            issuer_fingerprint=issuer,
            not_after=_parse_dt(not_after, "notAfter") if not_after is not None else None,
        )


@dataclass
class RevocationList:
    """In-memory revocation list; the caller persists :meth:`to_records` and restores it
    with :meth:`from_records`.

    Entries are indexed by serial, so revoking and looking up cost the same with ten
    revocations or ten thousand: the plane rebuilds this list from the store every few
    seconds, and a scan per entry made that rebuild quadratic.
    """

    entries: list[RevokedEntry] = field(default_factory=list)
    _by_serial: dict[int, list[RevokedEntry]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self._index()

    def _index(self) -> None:
        self._by_serial = {}
        for entry in self.entries:
            self._by_serial.setdefault(entry.serial, []).append(entry)

    def revoke(
        self,
        serial: int,
        reason: str | x509.ReasonFlags,
        now: datetime,
        *,
        issuer_fingerprint: str | None = None,
        not_after: datetime | None = None,
    ) -> RevokedEntry:
        """Add ``serial``; revoking an already revoked serial returns the existing entry."""
        if serial <= 0:
            raise InvalidRevocation(f"serial must be a positive integer, got {serial}")
        flag = _reason(reason)
        for existing in self._by_serial.get(serial, ()):
            if issuer_fingerprint is None or existing.issuer_fingerprint in (
                None,
                issuer_fingerprint,
            ):
                return existing
        entry = RevokedEntry(
            serial=serial,
            revoked_at=aware_utc(now),
            reason=flag.value,
            issuer_fingerprint=issuer_fingerprint,
            not_after=aware_utc(not_after, "not_after") if not_after else None,
        )
        self.entries.append(entry)
        self._by_serial.setdefault(serial, []).append(entry)
        return entry

    def lookup(self, serial: int, issuer_fingerprint: str) -> RevokedEntry | None:
        for entry in self._by_serial.get(serial, ()):
            if entry.applies_to(serial, issuer_fingerprint):
                return entry
        return None

    def prune(self, now: datetime, *, live_issuers: Iterable[str] | None = None) -> int:
        """Drop entries for certificates that have expired or whose issuer is gone.

        Returns how many entries were dropped.
        """
        now = aware_utc(now)
        issuers = set(live_issuers) if live_issuers is not None else None
        kept = [
            e
            for e in self.entries
            if not (e.not_after is not None and e.not_after < now)
            and not (
                issuers is not None
                and e.issuer_fingerprint is not None
                and e.issuer_fingerprint not in issuers
            )
        ]
        dropped = len(self.entries) - len(kept)
        self.entries = kept
        self._index()
        return dropped

    def to_records(self) -> list[dict[str, str | None]]:
        return [e.to_record() for e in self.entries]

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, object]]) -> RevocationList:
        return cls(entries=[RevokedEntry.from_record(r) for r in records])


def build_crl(
    ca: CertificateAuthority,
    revoked: Iterable[RevokedEntry],
    now: datetime,
    next_update: datetime | None = None,
    *,
    crl_number: int | None = None,
) -> x509.CertificateRevocationList:
    """A CRL signed by ``ca`` listing the entries that apply to it.

    ``crl_number`` defaults to ``now`` in Unix seconds, which increases monotonically as
    RFC 5280 requires as long as CRLs are not issued twice within a second.
    """
    now = aware_utc(now)
    next_update = (
        aware_utc(next_update, "next_update") if next_update else now + DEFAULT_CRL_VALIDITY
    )
    if next_update <= now:
        raise InvalidRevocation(
            f"CRL next_update {next_update.isoformat()} must be after now {now.isoformat()}"
        )
    fp = ca.fingerprint
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now)
        .next_update(next_update)
        .add_extension(
            x509.CRLNumber(crl_number if crl_number is not None else int(now.timestamp())),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    for entry in revoked:
        if entry.issuer_fingerprint not in (None, fp):
            continue
        rc = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(aware_utc(entry.revoked_at))
        )
        reason = _reason(entry.reason)
        # RFC 5280 5.3.1: omit reasonCode rather than say "unspecified".
        if reason is not x509.ReasonFlags.unspecified:
            rc = rc.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(rc.build())
    return builder.sign(ca.key, signing_hash(ca.key))


def crl_to_pem(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.PEM)
