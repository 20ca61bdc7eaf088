"""The trust anchor: the plane's CA, host certificates from CSRs, revocation and rotation.

Typical use by the plane::

    anchor = TrustAnchor.load_or_create(state_dir / "ca", now=clock())
    cert_pem, key_pem = anchor.issue_server_cert(["plane.example.com"], ["10.0.0.5"], now=...)
    host_cert = anchor.sign_host_csr(csr_pem, node_name, now=...)     # at enrolment/renewal
    identity = anchor.verify_client_cert(peer_cert, now=...)           # on every host request

Every method that depends on time takes an explicit, timezone-aware ``now`` so callers
inject their clock and tests run in virtual time.

The host's private key is generated on the host; the plane only ever sees its CSR. The
node name is the certificate's CN and its only ``DNS:`` SAN; uniqueness of node names per
cluster is the store's job (it raises :class:`~tether.pki.errors.NameInUse`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tether.pki import store
from tether.pki.authority import (
    CLOCK_SKEW,
    DEFAULT_CA_LIFETIME,
    DEFAULT_CA_NAME,
    LEAF_KEY_USAGE,
    RSA_LEAF_KEY_USAGE,
    CertificateAuthority,
    PemInput,
    PreviousCA,
    TrustBundle,
    as_bytes,
    aware_utc,
    check_lifetime,
    generate_p256_key,
    private_key_pem,
)
from tether.pki.errors import (
    CertificateExpired,
    CertificateNotYetValid,
    CertificateRevoked,
    CSRExtensionNotAllowed,
    CSRKeyNotAllowed,
    CSRSignatureInvalid,
    CSRSubjectNotAllowed,
    InvalidCA,
    InvalidCertificate,
    InvalidCSR,
    IssuerRetired,
    NameNotAllowed,
    UntrustedIssuer,
    WrongKeyUsage,
)
from tether.pki.names import node_name_problem, validate_node_name, validate_server_hostname
from tether.pki.revocation import (
    RevocationList,
    RevokedEntry,
    build_crl,
    crl_to_pem,
)

#: Lifetime of a host certificate unless configured otherwise. Agents renew before it ends.
DEFAULT_HOST_CERT_LIFETIME = timedelta(hours=24)
#: Upper bound for a configured host certificate lifetime.
MAX_HOST_CERT_LIFETIME = timedelta(days=365)
#: Lifetime of the plane's own TLS server certificate.
DEFAULT_SERVER_CERT_LIFETIME = timedelta(days=90)
MAX_SERVER_CERT_LIFETIME = timedelta(days=397)

IPInput = str | ipaddress.IPv4Address | ipaddress.IPv6Address

# CSR extensions a host may ask for; their content is checked, and the issued certificate
# carries the plane's own choice of values, never the requested ones.
_ALLOWED_CSR_EXTENSIONS = (
    x509.BasicConstraints,
    x509.SubjectAlternativeName,
    x509.KeyUsage,
    x509.ExtendedKeyUsage,
    x509.SubjectKeyIdentifier,
)


@dataclass(frozen=True)
class HostIdentity:
    """Who a verified client certificate says the host is."""

    node_name: str
    serial: int
    not_after: datetime
    issuer_fingerprint: str

    @property
    def serial_hex(self) -> str:
        return format(self.serial, "x")


def _check_host_key(key: CertificatePublicKeyTypes) -> None:
    """Accept keys every TLS stack handles and hosts can keep in a TPM or on disk."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name in ("secp256r1", "secp384r1", "secp521r1"):
            return
        raise CSRKeyNotAllowed(f"CSR key uses curve {key.curve.name}; use P-256 or P-384")
    if isinstance(key, rsa.RSAPublicKey):
        if 2048 <= key.key_size <= 8192:
            return
        raise CSRKeyNotAllowed(f"CSR RSA key is {key.key_size} bits; 2048..8192 accepted")
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return
    raise CSRKeyNotAllowed(
        f"CSR key type {type(key).__name__} is not accepted; use ECDSA P-256 (preferred), "
        "P-384, Ed25519 or RSA >= 2048"
    )


def _load_csr(csr_pem: PemInput) -> x509.CertificateSigningRequest:
    try:
        return x509.load_pem_x509_csr(as_bytes(csr_pem))
    except ValueError as exc:
        raise InvalidCSR(f"not a readable PEM certificate signing request: {exc}") from exc


def _check_csr_subject(csr: x509.CertificateSigningRequest, node_name: str) -> None:
    attrs = list(csr.subject)
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(cns) != 1:
        raise CSRSubjectNotAllowed(
            f"CSR subject must hold exactly one CN (the node name), found {len(cns)}",
            node_name=node_name,
        )
    cn = cns[0].value
    cn_str = cn if isinstance(cn, str) else cn.decode("utf-8", "replace")
    if cn_str != node_name:
        raise CSRSubjectNotAllowed(
            f"CSR CN {cn_str!r} does not match the node name {node_name!r}",
            node_name=node_name,
            csr_cn=cn_str,
        )
    if len(attrs) != 1:
        # Refuse rather than drop: Kubernetes, for one, reads O= as group membership, so
        # a CSR asking for O=system:masters must fail loudly, not be silently trimmed.
        extra = ", ".join(a.rfc4514_string() for a in attrs if a.oid != NameOID.COMMON_NAME)
        raise CSRSubjectNotAllowed(
            f"CSR subject may only contain CN=<node name>; remove: {extra}",
            node_name=node_name,
        )


def _check_csr_extensions(csr: x509.CertificateSigningRequest, node_name: str) -> None:
    try:
        extensions = list(csr.extensions)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as exc:
        raise InvalidCSR(f"CSR extensions are malformed: {exc}") from exc
    for ext in extensions:
        value = ext.value
        if isinstance(value, x509.BasicConstraints):
            if value.ca:
                raise CSRExtensionNotAllowed(
                    "CSR requests a CA certificate (basicConstraints CA:TRUE); "
                    "hosts only get leaf certificates",
                    node_name=node_name,
                )
        elif isinstance(value, x509.SubjectAlternativeName):
            names = list(value)
            if any(not isinstance(n, x509.DNSName) or n.value != node_name for n in names):
                shown = ", ".join(str(getattr(n, "value", n)) for n in names)
                raise CSRExtensionNotAllowed(
                    f"CSR subjectAltName may only be DNS:{node_name}; got {shown}",
                    node_name=node_name,
                )
        elif isinstance(value, x509.KeyUsage):
            if value.key_cert_sign or value.crl_sign:
                raise CSRExtensionNotAllowed(
                    "CSR keyUsage asks for keyCertSign/cRLSign; hosts cannot sign certificates",
                    node_name=node_name,
                )
        elif isinstance(value, x509.ExtendedKeyUsage):
            if list(value) != [ExtendedKeyUsageOID.CLIENT_AUTH]:
                shown = ", ".join(getattr(o, "_name", o.dotted_string) for o in value)
                raise CSRExtensionNotAllowed(
                    f"CSR extendedKeyUsage may only be clientAuth; got {shown}",
                    node_name=node_name,
                )
        elif not isinstance(value, _ALLOWED_CSR_EXTENSIONS):
            raise CSRExtensionNotAllowed(
                f"CSR carries an extension the plane does not issue: {ext.oid.dotted_string}"
                f" ({getattr(ext.oid, '_name', 'unknown')})",
                node_name=node_name,
                oid=ext.oid.dotted_string,
            )


def _load_cert(cert: PemInput | x509.Certificate) -> x509.Certificate:
    if isinstance(cert, x509.Certificate):
        return cert
    data = as_bytes(cert)
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise InvalidCertificate(f"not a readable X.509 certificate: {exc}") from exc


class TrustAnchor:
    """The plane's CA(s) and revocation list, and everything signed or checked with them."""

    def __init__(
        self,
        bundle: TrustBundle,
        revocations: RevocationList | None = None,
        *,
        host_cert_lifetime: timedelta = DEFAULT_HOST_CERT_LIFETIME,
    ) -> None:
        check_lifetime(host_cert_lifetime, MAX_HOST_CERT_LIFETIME, "host certificate")
        self.bundle = bundle
        self.revocations = revocations if revocations is not None else RevocationList()
        self.host_cert_lifetime = host_cert_lifetime

    # --- creation, import, persistence ---------------------------------------------------

    @classmethod
    def create(
        cls,
        now: datetime,
        *,
        common_name: str = DEFAULT_CA_NAME,
        lifetime: timedelta = DEFAULT_CA_LIFETIME,
        host_cert_lifetime: timedelta = DEFAULT_HOST_CERT_LIFETIME,
    ) -> TrustAnchor:
        """A new anchor with a freshly generated ECDSA P-256 CA."""
        ca = CertificateAuthority.generate(now, common_name=common_name, lifetime=lifetime)
        return cls(TrustBundle(active=ca), host_cert_lifetime=host_cert_lifetime)

    @classmethod
    def import_pem(
        cls,
        cert_pem: PemInput,
        key_pem: PemInput,
        now: datetime,
        *,
        password: bytes | None = None,
        host_cert_lifetime: timedelta = DEFAULT_HOST_CERT_LIFETIME,
    ) -> TrustAnchor:
        """An anchor around a CA from the user's PKI (validated: CA, key matches, in date)."""
        ca = CertificateAuthority.from_pem(cert_pem, key_pem, now, password=password)
        return cls(TrustBundle(active=ca), host_cert_lifetime=host_cert_lifetime)

    @classmethod
    def import_files(
        cls,
        cert_path: Path,
        key_path: Path,
        now: datetime,
        *,
        password: bytes | None = None,
        host_cert_lifetime: timedelta = DEFAULT_HOST_CERT_LIFETIME,
    ) -> TrustAnchor:
        try:
            cert_pem, key_pem = Path(cert_path).read_bytes(), Path(key_path).read_bytes()
        except OSError as exc:
            raise InvalidCA(f"cannot read CA file {exc.filename}: {exc.strerror}") from exc
        return cls.import_pem(
            cert_pem, key_pem, now, password=password, host_cert_lifetime=host_cert_lifetime
        )

    @classmethod
    def load(
        cls,
        directory: Path,
        *,
        revocations: RevocationList | None = None,
        host_cert_lifetime: timedelta = DEFAULT_HOST_CERT_LIFETIME,
    ) -> TrustAnchor:
        """Load an anchor saved with :meth:`save` (the revocation list is the caller's)."""
        bundle = store.load_bundle(Path(directory))
        return cls(bundle, revocations, host_cert_lifetime=host_cert_lifetime)

    @classmethod
    def load_or_create(
        cls,
        directory: Path,
        now: datetime,
        *,
        revocations: RevocationList | None = None,
        host_cert_lifetime: timedelta = DEFAULT_HOST_CERT_LIFETIME,
    ) -> TrustAnchor:
        """Load the anchor under ``directory``, generating and saving one on first start."""
        directory = Path(directory)
        if store.has_bundle(directory):
            return cls.load(
                directory, revocations=revocations, host_cert_lifetime=host_cert_lifetime
            )
        anchor = cls.create(now, host_cert_lifetime=host_cert_lifetime)
        if revocations is not None:
            anchor.revocations = revocations
        anchor.save(directory)
        return anchor

    def save(self, directory: Path) -> None:
        """Write the bundle (keys 0600, atomically); see :mod:`tether.pki.store`."""
        store.save_bundle(Path(directory), self.bundle)

    # --- the active CA ---------------------------------------------------------------------

    @property
    def active(self) -> CertificateAuthority:
        return self.bundle.active

    def _signer(self, now: datetime) -> CertificateAuthority:
        ca = self.bundle.active
        ca.require_valid_at(now)
        return ca

    def _trusted(self, fp: str, now: datetime) -> CertificateAuthority:
        ca = next((c for c in self.bundle.trusted(now) if c.fingerprint == fp), None)
        if ca is None:
            raise UntrustedIssuer(
                f"CA {fp[:16]} is not in the trust bundle or no longer trusted at "
                f"{now.isoformat()}",
                issuer_fingerprint=fp,
            )
        return ca

    def _not_after(self, ca: CertificateAuthority, now: datetime, lifetime: timedelta) -> datetime:
        # A certificate never outlives its issuer; near the end of the CA's life the
        # lifetime is shortened rather than issuance failing (rotate well before then).
        return min(now + lifetime, ca.not_after)

    def issue_server_cert(
        self,
        hostnames: Sequence[str],
        ips: Sequence[IPInput] = (),
        *,
        now: datetime,
        lifetime: timedelta = DEFAULT_SERVER_CERT_LIFETIME,
        issuer_fingerprint: str | None = None,
    ) -> tuple[bytes, bytes]:
        """A fresh P-256 key and a serverAuth certificate for the plane's TLS endpoint.

        Returns ``(cert_pem, key_pem)``; the key PEM is unencrypted, store it 0600.
        Issued by the active CA unless ``issuer_fingerprint`` names another CA trusted at
        ``now``: right after a rotation, agents still trust only the old CA until they
        fetch the new bundle, so the plane keeps a server certificate from the old CA for
        the first part of the overlap (see docs/pki.md).
        """
        now = aware_utc(now)
        check_lifetime(lifetime, MAX_SERVER_CERT_LIFETIME, "server certificate")
        names = [validate_server_hostname(h) for h in hostnames]
        try:
            addrs = [ipaddress.ip_address(ip) for ip in ips]
        except ValueError as exc:
            raise NameNotAllowed(f"not an IP address: {exc}") from exc
        if not names and not addrs:
            raise NameNotAllowed("a server certificate needs at least one hostname or IP")
        ca = (
            self._signer(now)
            if issuer_fingerprint is None
            else self._trusted(issuer_fingerprint, now)
        )
        key = generate_p256_key()
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        sans += [x509.IPAddress(a) for a in addrs]
        cn = names[0] if names else str(addrs[0])
        cert = ca.issue(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]),
            key.public_key(),
            not_before=now - CLOCK_SKEW,
            not_after=self._not_after(ca, now, lifetime),
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            sans=sans,
        )
        return cert.public_bytes(serialization.Encoding.PEM), private_key_pem(key)

    def sign_host_csr(
        self,
        csr_pem: PemInput,
        node_name: str,
        *,
        now: datetime,
        lifetime: timedelta | None = None,
    ) -> bytes:
        """Check a host's CSR and return its clientAuth certificate (PEM).

        Refused (subclasses of :class:`~tether.pki.errors.InvalidCSR` or
        :class:`~tether.pki.errors.NameNotAllowed`) when: the CSR is unreadable or its
        self-signature is bad; ``node_name`` is not a DNS-1123 label of at most 64
        characters; the subject is anything but ``CN=<node_name>``; it asks for CA:TRUE,
        a SAN other than ``DNS:<node_name>``, an EKU other than clientAuth, or any other
        extension; or its key is weak. ``lifetime`` defaults to the anchor's
        ``host_cert_lifetime`` (24 h unless configured).
        """
        now = aware_utc(now)
        lifetime = self.host_cert_lifetime if lifetime is None else lifetime
        check_lifetime(lifetime, MAX_HOST_CERT_LIFETIME, "host certificate")
        validate_node_name(node_name)
        csr = _load_csr(csr_pem)
        if not csr.is_signature_valid:
            raise CSRSignatureInvalid(
                "CSR signature does not verify with its own public key", node_name=node_name
            )
        public_key = csr.public_key()
        _check_host_key(public_key)
        _check_csr_subject(csr, node_name)
        _check_csr_extensions(csr, node_name)

        ca = self._signer(now)
        cert = ca.issue(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_name)]),
            public_key,
            not_before=now - CLOCK_SKEW,
            not_after=self._not_after(ca, now, lifetime),
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
            sans=[x509.DNSName(node_name)],
            key_usage=RSA_LEAF_KEY_USAGE
            if isinstance(public_key, rsa.RSAPublicKey)
            else LEAF_KEY_USAGE,
        )
        return cert.public_bytes(serialization.Encoding.PEM)

    # --- verification ----------------------------------------------------------------------

    def _issuer_of(self, cert: x509.Certificate, now: datetime) -> CertificateAuthority:
        signer = next((ca for ca in self.bundle.authorities() if ca.signed(cert)), None)
        if signer is None:
            raise UntrustedIssuer(
                f"certificate issued by {cert.issuer.rfc4514_string()!r} is not signed by any "
                "CA this plane trusts",
                issuer=cert.issuer.rfc4514_string(),
            )
        prev: PreviousCA | None = self.bundle.previous_entry(signer.fingerprint)
        if prev is not None and now >= prev.overlap_until:
            raise IssuerRetired(
                f"certificate was issued by CA {signer.fingerprint[:16]}, retired by a rotation "
                f"at {prev.retired_at.isoformat()}; its overlap ended at "
                f"{prev.overlap_until.isoformat()}. The host must re-enrol to get a "
                "certificate from the active CA",
                issuer_fingerprint=signer.fingerprint,
                overlap_until=prev.overlap_until,
            )
        if not signer.is_valid_at(now):
            raise UntrustedIssuer(
                f"issuing CA {signer.fingerprint[:16]} is outside its validity period "
                f"({signer.not_before.isoformat()} .. {signer.not_after.isoformat()})",
                issuer_fingerprint=signer.fingerprint,
            )
        return signer

    def verify_client_cert(
        self, cert_pem: PemInput | x509.Certificate, *, now: datetime
    ) -> HostIdentity:
        """Verify a host's client certificate and say which node it identifies.

        Checks, in order: it parses (PEM or DER); it is signed by a CA in the bundle that
        is trusted at ``now`` (:class:`UntrustedIssuer`, :class:`IssuerRetired`); it is not
        revoked (:class:`CertificateRevoked`); ``now`` is within its validity
        (:class:`CertificateNotYetValid`, :class:`CertificateExpired`); it is a leaf with
        the clientAuth EKU (:class:`WrongKeyUsage`); its CN is a valid node name that is
        also its DNS SAN (:class:`InvalidCertificate`). The caller still checks that the
        node name belongs to an enrolled host of the right cluster.
        """
        now = aware_utc(now)
        cert = _load_cert(cert_pem)
        issuer = self._issuer_of(cert, now)
        serial = cert.serial_number
        entry = self.revocations.lookup(serial, issuer.fingerprint)
        if entry is not None:
            raise CertificateRevoked(
                f"certificate serial {serial:x} was revoked at {entry.revoked_at.isoformat()} "
                f"({entry.reason})",
                serial=serial,
                reason=entry.reason,
                revoked_at=entry.revoked_at,
            )
        if now < cert.not_valid_before_utc:
            raise CertificateNotYetValid(
                f"certificate is not valid before {cert.not_valid_before_utc.isoformat()} "
                "(check the clocks)",
                serial=serial,
            )
        if now > cert.not_valid_after_utc:
            raise CertificateExpired(
                f"certificate expired at {cert.not_valid_after_utc.isoformat()}; the host must "
                "renew it",
                serial=serial,
                not_after=cert.not_valid_after_utc,
            )
        try:
            bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            if bc.ca:
                raise WrongKeyUsage("a CA certificate cannot identify a host", serial=serial)
            eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound as exc:
            raise WrongKeyUsage(
                f"certificate lacks {exc.oid.dotted_string}; host certificates carry "
                "basicConstraints and extendedKeyUsage clientAuth",
                serial=serial,
            ) from exc
        if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
            raise WrongKeyUsage(
                "certificate is not for client authentication (no clientAuth EKU)", serial=serial
            )
        node_name = self._node_name(cert)
        return HostIdentity(
            node_name=node_name,
            serial=serial,
            not_after=cert.not_valid_after_utc,
            issuer_fingerprint=issuer.fingerprint,
        )

    @staticmethod
    def _node_name(cert: x509.Certificate) -> str:
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        cn = cns[0].value if len(cns) == 1 else None
        if not isinstance(cn, str) or node_name_problem(cn) is not None:
            raise InvalidCertificate(
                "certificate CN is not a valid node name", subject=cert.subject.rfc4514_string()
            )
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            san = None
        if san is None or cn not in san.get_values_for_type(x509.DNSName):
            raise InvalidCertificate(
                f"certificate CN {cn!r} is not among its DNS subjectAltNames", node_name=cn
            )
        return cn

    # --- revocation ------------------------------------------------------------------------

    def revoke(
        self,
        serial: int,
        reason: str | x509.ReasonFlags,
        now: datetime,
        *,
        issuer_fingerprint: str | None = None,
        not_after: datetime | None = None,
    ) -> RevokedEntry:
        """Revoke a certificate by serial (effective at once in :meth:`verify_client_cert`).

        The caller persists ``self.revocations.to_records()`` and re-publishes the CRL.
        """
        return self.revocations.revoke(
            serial, reason, now, issuer_fingerprint=issuer_fingerprint, not_after=not_after
        )

    def revoke_identity(
        self, identity: HostIdentity, reason: str | x509.ReasonFlags, now: datetime
    ) -> RevokedEntry:
        return self.revoke(
            identity.serial,
            reason,
            now,
            issuer_fingerprint=identity.issuer_fingerprint,
            not_after=identity.not_after,
        )

    def crl_pem(
        self,
        revoked: Iterable[RevokedEntry] | None = None,
        *,
        now: datetime,
        next_update: datetime | None = None,
        issuer_fingerprint: str | None = None,
    ) -> bytes:
        """A CRL (PEM) signed by the active CA, or by the bundle's CA ``issuer_fingerprint``.

        ``revoked`` defaults to this anchor's revocation list.
        """
        ca = self.active if issuer_fingerprint is None else self.bundle.find(issuer_fingerprint)
        if ca is None:
            raise UntrustedIssuer(
                f"no CA {issuer_fingerprint} in the trust bundle",
                issuer_fingerprint=issuer_fingerprint,
            )
        entries = self.revocations.entries if revoked is None else revoked
        return crl_to_pem(build_crl(ca, entries, now, next_update))

    def crl_bundle_pem(
        self,
        revoked: Iterable[RevokedEntry] | None = None,
        *,
        now: datetime,
        next_update: datetime | None = None,
    ) -> bytes:
        """One CRL per CA trusted at ``now``, concatenated.

        This is what a TLS terminator doing CRL checks (OpenSSL ``crl_check``) needs: a
        CRL for the issuer of every certificate it may see, including previous CAs during
        a rotation overlap.
        """
        entries = list(self.revocations.entries if revoked is None else revoked)
        return b"".join(
            crl_to_pem(build_crl(ca, entries, now, next_update)) for ca in self.bundle.trusted(now)
        )

    # --- rotation --------------------------------------------------------------------------

    def bundle_pem(self, now: datetime) -> bytes:
        """PEMs of the CAs trusted at ``now``: the TLS client-CA list and the agents' bundle."""
        return self.bundle.bundle_pem(now)

    def rotate(
        self,
        now: datetime,
        overlap: timedelta,
        *,
        new_ca: CertificateAuthority | None = None,
    ) -> CertificateAuthority:
        """Make a new active CA; the old one stays trusted for ``overlap``.

        See :meth:`TrustBundle.rotate`. Afterwards: save, re-issue the server certificate
        once agents have fetched the new bundle, and let hosts renew.
        """
        return self.bundle.rotate(now, overlap, new_ca=new_ca)

    def prune(self, now: datetime) -> list[PreviousCA]:
        """Drop previous CAs past their overlap and revocation entries that no longer matter."""
        gone = self.bundle.prune(now)
        self.revocations.prune(
            now, live_issuers=[ca.fingerprint for ca in self.bundle.authorities()]
        )
        return gone
