"""Errors raised by the trust anchor, with a stable ``rule`` each.

Every error carries a ``rule`` (a stable, dotted identifier the API layer can map to a
status code and that tests and logs can match on) and a human message (``str(err)``)
that says what was wrong and, where it helps, what to do about it. Catch a parent class
to handle a whole family; never parse the message.

::

    PKIError                          pki
    ├── InvalidCSR                    pki.csr.invalid         unreadable CSR
    │   ├── CSRSignatureInvalid       pki.csr.signature       CSR not signed by its own key
    │   ├── CSRSubjectNotAllowed      pki.csr.subject         CN != node name, extra attributes
    │   ├── CSRExtensionNotAllowed    pki.csr.extension       CA:true, foreign SANs, other exts
    │   └── CSRKeyNotAllowed          pki.csr.key             weak or unsupported key type
    ├── NameNotAllowed                pki.name.invalid        not a DNS-1123 label, too long
    ├── NameInUse                     pki.name.in_use         raised by the store, not by pki
    ├── InvalidLifetime               pki.lifetime            <= 0 or above the allowed maximum
    ├── InvalidCertificate            pki.cert.invalid        unreadable or wrongly shaped cert
    │   └── WrongKeyUsage             pki.cert.usage          no clientAuth EKU, or a CA cert
    ├── CertificateNotYetValid        pki.cert.not_yet_valid
    ├── CertificateExpired            pki.cert.expired
    ├── CertificateRevoked            pki.cert.revoked
    ├── UntrustedIssuer               pki.cert.untrusted_issuer  no trusted CA signed it
    │   └── IssuerRetired             pki.cert.issuer_retired    signed by a CA whose
    │                                                            rotation overlap has ended
    ├── InvalidCA                     pki.ca.invalid          import/load refused
    │   ├── NotACA                    pki.ca.not_ca           no basicConstraints CA:true
    │   ├── CAKeyMismatch             pki.ca.key_mismatch     key does not belong to cert
    │   ├── CAExpired                 pki.ca.expired          outside its validity period
    │   └── CAKeyNotSupported         pki.ca.key              key type/size not usable
    ├── RotationError                 pki.ca.rotation         e.g. rotating to the same CA
    ├── CAStoreError                  pki.store               missing/corrupt files on disk
    ├── InvalidRevocation             pki.revocation.invalid  bad reason, bad record
    ├── InvalidSecretHash             pki.secret.hash_invalid stored hash is malformed
    └── InvalidActivation             pki.activation.invalid
        ├── ActivationSettingInvalid  pki.activation.setting  names the field (``field``)
        ├── ActivationExpired         pki.activation.expired
        ├── ActivationExhausted       pki.activation.exhausted
        └── ActivationCodeMismatch    pki.activation.code
"""

from __future__ import annotations

from typing import ClassVar


class PKIError(Exception):
    """Base of every trust-anchor error.

    ``details`` holds machine-readable context (a serial, a fingerprint, a field name)
    so callers never need to parse the message.
    """

    rule: ClassVar[str] = "pki"

    def __init__(self, message: str, **details: object) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, object] = dict(details)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rule={self.rule!r}, message={self.message!r})"


# --- certificate signing requests ---------------------------------------------------------


class InvalidCSR(PKIError):
    rule = "pki.csr.invalid"


class CSRSignatureInvalid(InvalidCSR):
    rule = "pki.csr.signature"


class CSRSubjectNotAllowed(InvalidCSR):
    rule = "pki.csr.subject"


class CSRExtensionNotAllowed(InvalidCSR):
    rule = "pki.csr.extension"


class CSRKeyNotAllowed(InvalidCSR):
    rule = "pki.csr.key"


# --- names and lifetimes ------------------------------------------------------------------


class NameNotAllowed(PKIError):
    rule = "pki.name.invalid"


class NameInUse(PKIError):
    """The node name already belongs to another host of the cluster.

    The PKI cannot see the other hosts; the store/service that enforces uniqueness
    raises this so every caller reports the same rule.
    """

    rule = "pki.name.in_use"

    def __init__(self, node_name: str, cluster: str | None = None) -> None:
        where = f" in cluster {cluster!r}" if cluster else ""
        super().__init__(
            f"node name {node_name!r} is already used by another host{where}; "
            "node names (the certificate CN) must be unique per cluster",
            node_name=node_name,
            cluster=cluster,
        )


class InvalidLifetime(PKIError):
    rule = "pki.lifetime"


# --- verification of presented certificates -----------------------------------------------


class InvalidCertificate(PKIError):
    rule = "pki.cert.invalid"


class WrongKeyUsage(InvalidCertificate):
    rule = "pki.cert.usage"


class CertificateNotYetValid(PKIError):
    rule = "pki.cert.not_yet_valid"


class CertificateExpired(PKIError):
    rule = "pki.cert.expired"


class CertificateRevoked(PKIError):
    rule = "pki.cert.revoked"


class UntrustedIssuer(PKIError):
    rule = "pki.cert.untrusted_issuer"


class IssuerRetired(UntrustedIssuer):
    rule = "pki.cert.issuer_retired"


# --- the CA itself ------------------------------------------------------------------------


class InvalidCA(PKIError):
    rule = "pki.ca.invalid"


class NotACA(InvalidCA):
    rule = "pki.ca.not_ca"


class CAKeyMismatch(InvalidCA):
    rule = "pki.ca.key_mismatch"


class CAExpired(InvalidCA):
    rule = "pki.ca.expired"


class CAKeyNotSupported(InvalidCA):
    rule = "pki.ca.key"


class RotationError(PKIError):
    rule = "pki.ca.rotation"


class CAStoreError(PKIError):
    rule = "pki.store"


class InvalidRevocation(PKIError):
    rule = "pki.revocation.invalid"


class InvalidSecretHash(PKIError):
    rule = "pki.secret.hash_invalid"


# --- activations --------------------------------------------------------------------------


class InvalidActivation(PKIError):
    rule = "pki.activation.invalid"


class ActivationSettingInvalid(InvalidActivation):
    """A requested activation setting is out of bounds; ``field`` names it."""

    rule = "pki.activation.setting"

    def __init__(self, field: str, message: str, **details: object) -> None:
        super().__init__(f"{field}: {message}", field=field, **details)
        self.field = field


class ActivationExpired(InvalidActivation):
    rule = "pki.activation.expired"


class ActivationExhausted(InvalidActivation):
    rule = "pki.activation.exhausted"


class ActivationCodeMismatch(InvalidActivation):
    rule = "pki.activation.code"
