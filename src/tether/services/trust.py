"""The plane's trust anchor in use: CA on disk, agent-server certificate, revocations.

``<data dir>/pki/`` holds::

    ca/                 the trust anchor (see docs/pki.md: active/, previous/<fp>/)
    server.crt          the agent server's TLS certificate (0644)
    server.key          its key (0600)

Revocations live in the store (``host_certificates.revoked_at``) so every plane process
and the CLI see the same list; :class:`PlaneTrust` keeps an in-memory copy that it
refreshes (:meth:`PlaneTrust.refresh`), and a revocation made through it takes effect
in this process at once.

Verification of a host's client certificate is cached by certificate: the signature
and chain are checked once, and each request re-checks only what can change (expiry,
revocation, whether the issuer is still trusted), so a heartbeat costs a dict lookup.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.domain.models import EventType, ObjectKind
from tether.files import write_atomic
from tether.pki import HostIdentity, TrustAnchor
from tether.pki.authority import CertificateAuthority
from tether.pki.errors import CertificateExpired, CertificateRevoked, PKIError
from tether.pki.revocation import RevocationList
from tether.services import events
from tether.settings import Settings
from tether.store.db import Database
from tether.store.schema import HostAgentRow, HostCertRow, utcnow

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
SERVER_CERT = "server.crt"
SERVER_KEY = "server.key"
_CACHE_SIZE = 200_000


@dataclass(frozen=True)
class ServerFiles:
    cert: Path
    key: Path


def _ca_signature(ca_dir: Path) -> tuple[tuple[str, float], ...]:
    """A cheap fingerprint of the CA directory: changes when a rotation or import lands."""
    entries: list[tuple[str, float]] = []
    for path in (ca_dir / "active" / "ca.crt", ca_dir / "previous"):
        try:
            entries.append((str(path), path.stat().st_mtime))
        except FileNotFoundError:
            entries.append((str(path), 0.0))
    prev = ca_dir / "previous"
    if prev.is_dir():
        entries.extend((child.name, 0.0) for child in sorted(prev.iterdir()))
    return tuple(entries)


class PlaneTrust:
    """The trust anchor, server certificate and revocation list of one plane process."""

    def __init__(self, settings: Settings, *, clock: Clock = utcnow) -> None:
        self.settings = settings
        self.clock = clock
        self.dir = settings.pki_dir
        self.ca_dir = self.dir / "ca"
        self._lock = threading.Lock()
        self.anchor = TrustAnchor.load_or_create(
            self.ca_dir, clock(), host_cert_lifetime=self.host_cert_lifetime
        )
        self._ca_sig = _ca_signature(self.ca_dir)
        self._revoked: set[tuple[int, str]] = set()
        #: Revocations made in this process that the store has not yet shown a reload:
        #: a reload that read the store before their transaction committed must not drop
        #: them (:meth:`load_revocations`).
        self._noted: set[tuple[int, str]] = set()
        self._cache: OrderedDict[bytes, HostIdentity] = OrderedDict()
        self.generation = 0  # bumped whenever the CA set changes

    @property
    def host_cert_lifetime(self) -> timedelta:
        return timedelta(seconds=self.settings.pki.host_cert_lifetime_seconds)

    # --- CA ---------------------------------------------------------------------------------

    def reload_ca_if_changed(self) -> bool:
        """Re-read the CA directory if a rotation or import changed it (another process)."""
        sig = _ca_signature(self.ca_dir)
        if sig == self._ca_sig:
            return False
        anchor = TrustAnchor.load(
            self.ca_dir,
            revocations=self.anchor.revocations,
            host_cert_lifetime=self.host_cert_lifetime,
        )
        with self._lock:
            self.anchor = anchor
            self._ca_sig = sig
            self._cache.clear()
            self.generation += 1
        log.info("trust anchor reloaded: active CA %s", anchor.active.fingerprint[:16])
        return True

    def bundle_pem(self) -> bytes:
        return self.anchor.bundle_pem(self.clock())

    def all_ca_pem(self) -> bytes:
        """Every CA held (for the TLS layer, which the application check then narrows)."""
        return b"".join(ca.cert_pem() for ca in self.anchor.bundle.authorities())

    def rotate(self, overlap: timedelta, new_ca: CertificateAuthority | None = None) -> str:
        now = self.clock()
        ca = self.anchor.rotate(now, overlap, new_ca=new_ca)
        self.anchor.save(self.ca_dir)
        self._ca_sig = _ca_signature(self.ca_dir)
        self._cache.clear()
        self.generation += 1
        return ca.fingerprint

    def prune(self) -> int:
        gone = self.anchor.prune(self.clock())
        if gone:
            self.anchor.save(self.ca_dir)
            self._ca_sig = _ca_signature(self.ca_dir)
        return len(gone)

    # --- the agent server's certificate -----------------------------------------------------

    def server_files(self, *, reissue: bool = False) -> ServerFiles:
        """The agent server's certificate and key, issued now if missing or due.

        Re-issued when asked, when a third of its life is left, or when its issuer is no
        longer trusted. After a rotation it stays with the old CA (agents trust only the
        old CA until they renew) until ``reissue`` (``tether pki server-cert --reissue``).
        """
        cert_path, key_path = self.dir / SERVER_CERT, self.dir / SERVER_KEY
        now = self.clock()
        if not reissue and cert_path.is_file() and key_path.is_file():
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            life = cert.not_valid_after_utc - cert.not_valid_before_utc
            trusted = any(ca.signed(cert) for ca in self.anchor.bundle.trusted(now))
            if trusted and cert.not_valid_after_utc - now > life / 3:
                return ServerFiles(cert_path, key_path)
        names = [n.strip() for n in self.settings.pki.server_names.split(",") if n.strip()]
        hostnames: list[str] = []
        ips: list[str] = []
        for name in names:
            (ips if _is_ip(name) else hostnames).append(name)
        cert_pem, key_pem = self.anchor.issue_server_cert(
            hostnames,
            ips,
            now=now,
            lifetime=timedelta(days=self.settings.pki.server_cert_lifetime_days),
        )
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(key_path, key_pem, 0o600)
        write_atomic(cert_path, cert_pem, 0o644)
        log.info("issued the agent server certificate for %s", ", ".join(names))
        return ServerFiles(cert_path, key_path)

    # --- revocations ------------------------------------------------------------------------

    def load_revocations(self, db: Database) -> int:
        """Replace the in-memory revocation list with the store's (live entries only).

        Revocations this process noted (:meth:`note_revoked`) stay in force until a reload
        finds them in the store: the read may have run before their transaction committed,
        and replacing the list with it would make a revoked certificate good again until
        the next reload. A noted revocation whose transaction rolled back stays in force in
        this process (it fails closed) until the process restarts."""
        now = self.clock()
        with db.session() as session:
            rows = session.execute(
                select(
                    HostCertRow.serial,
                    HostCertRow.issuer,
                    HostCertRow.revoked_at,
                    HostCertRow.reason,
                    HostCertRow.not_after,
                ).where(HostCertRow.revoked_at.is_not(None), HostCertRow.not_after > now)
            ).all()
        revocations = RevocationList()
        revoked: set[tuple[int, str]] = set()
        for serial, issuer, revoked_at, reason, not_after in rows:
            number = int(serial, 16)
            revocations.revoke(
                number,
                reason or "unspecified",
                revoked_at or now,
                issuer_fingerprint=issuer,
                not_after=not_after,
            )
            revoked.add((number, issuer))
        with self._lock:
            self._noted -= revoked
            for noted, fingerprint in self._noted:
                revocations.revoke(noted, "unspecified", now, issuer_fingerprint=fingerprint)
            self.anchor.revocations = revocations
            self._revoked = revoked | self._noted
        return len(revoked)

    def note_revoked(self, serial: int, issuer: str) -> None:
        """Make a revocation written to the store effective in this process now."""
        with self._lock:
            self._noted.add((serial, issuer))
            self._revoked.add((serial, issuer))
            self.anchor.revocations.revoke(
                serial, "unspecified", self.clock(), issuer_fingerprint=issuer
            )

    def crl_bundle_pem(self) -> bytes:
        return self.anchor.crl_bundle_pem(now=self.clock())

    # --- verification -----------------------------------------------------------------------

    def verify(self, der: bytes) -> HostIdentity:
        """Identify the host behind a client certificate (DER), or raise a PKIError."""
        now = self.clock()
        key = hashlib.sha256(der).digest()
        identity = self._cache.get(key)
        if identity is None:
            identity = self.anchor.verify_client_cert(der, now=now)
            with self._lock:
                self._cache[key] = identity
                if len(self._cache) > _CACHE_SIZE:
                    self._cache.popitem(last=False)
            return identity
        # Cached: the signature was checked; re-check what changes with time.
        if (identity.serial, identity.issuer_fingerprint) in self._revoked:
            raise CertificateRevoked(
                f"certificate serial {identity.serial:x} was revoked", serial=identity.serial
            )
        if now > identity.not_after:
            raise CertificateExpired(
                f"certificate expired at {identity.not_after.isoformat()}; the host must renew it",
                serial=identity.serial,
            )
        if identity.issuer_fingerprint not in {
            ca.fingerprint for ca in self.anchor.bundle.trusted(now)
        }:
            self._cache.pop(key, None)
            self.anchor.verify_client_cert(der, now=now)  # raises the precise reason
        return identity

    def sign(self, csr_pem: str, node_name: str) -> tuple[bytes, x509.Certificate]:
        pem = self.anchor.sign_host_csr(
            csr_pem, node_name, now=self.clock(), lifetime=self.host_cert_lifetime
        )
        return pem, x509.load_pem_x509_certificate(pem)


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def record_certificate(
    session: Session, host_name: str, cert: x509.Certificate, issuer: str, now: datetime
) -> HostCertRow:
    row = HostCertRow(
        serial=format(cert.serial_number, "x"),
        host_name=host_name,
        issuer=issuer,
        issued_at=now,
        not_after=cert.not_valid_after_utc,
    )
    session.add(row)
    return row


def revoke_host_certificates(
    session: Session, host_name: str, reason: str, now: datetime
) -> list[tuple[int, str]]:
    """Revoke every live certificate of ``host_name``; returns ``(serial, issuer)`` pairs."""
    rows = session.scalars(
        select(HostCertRow).where(
            HostCertRow.host_name == host_name,
            HostCertRow.revoked_at.is_(None),
            HostCertRow.not_after > now,
        )
    ).all()
    for row in rows:
        row.revoked_at = now
        row.reason = reason
    return [(int(r.serial, 16), r.issuer) for r in rows]


def reopen_enrolment(
    session: Session, host_name: str, why: str, *, now: datetime, pool: str | None = None
) -> list[tuple[int, str]]:
    """Revoke every live certificate of ``host_name`` and let it enrol once more under its
    name (with an activation of its site), in the caller's transaction; an
    ``EnrolmentReset`` event gives ``why``. Returns the revoked ``(serial, issuer)`` pairs."""
    agent = session.get(HostAgentRow, host_name, with_for_update=True)  # see enrolment.renew
    if agent is None:
        agent = HostAgentRow(host_name=host_name, failing_checks={}, enrolled_at=now)
        session.add(agent)
    agent.reenrol_allowed = True
    revoked = revoke_host_certificates(session, host_name, "cessationOfOperation", now)
    events.record(
        session,
        ObjectKind.HOST,
        host_name,
        "EnrolmentReset",
        f"{why}; {len(revoked)} certificate(s) revoked; the host may enrol again",
        EventType.WARNING,
        now=now,
        pool=pool,
    )
    return revoked


def pki_error_status(error: PKIError) -> int:
    """HTTP status for a trust-anchor refusal: bad input 422, failed credentials 401."""
    rule = error.rule
    if rule.startswith(("pki.csr", "pki.name.invalid", "pki.lifetime")):
        return 422
    if rule == "pki.name.in_use":
        return 409
    return 401


def secure_write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data, mode)
    os.chmod(path, mode)
