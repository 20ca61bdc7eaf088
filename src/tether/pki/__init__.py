"""The trust anchor: the plane's CA, host certificates, revocation, rotation, activations.

Modules: :mod:`~tether.pki.ca` (:class:`TrustAnchor`), :mod:`~tether.pki.authority` (one CA
and the :class:`TrustBundle`), :mod:`~tether.pki.revocation` (revocation list and CRLs),
:mod:`~tether.pki.store` (disk layout), :mod:`~tether.pki.activation` (activation codes and
host tokens), :mod:`~tether.pki.names` (node-name rules), :mod:`~tether.pki.errors`.
"""

from tether.pki.activation import (
    IssuedToken,
    NewActivation,
    check_activation,
    hash_secret,
    new_activation,
    new_host_token,
    verify_code,
    verify_host_token,
    verify_secret,
)
from tether.pki.authority import CertificateAuthority, PreviousCA, TrustBundle
from tether.pki.ca import (
    DEFAULT_HOST_CERT_LIFETIME,
    HostIdentity,
    TrustAnchor,
)
from tether.pki.errors import PKIError
from tether.pki.names import MAX_NODE_NAME_LENGTH, validate_node_name
from tether.pki.revocation import RevocationList, RevokedEntry

__all__ = [
    "DEFAULT_HOST_CERT_LIFETIME",
    "MAX_NODE_NAME_LENGTH",
    "CertificateAuthority",
    "HostIdentity",
    "IssuedToken",
    "NewActivation",
    "PKIError",
    "PreviousCA",
    "RevocationList",
    "RevokedEntry",
    "TrustAnchor",
    "TrustBundle",
    "check_activation",
    "hash_secret",
    "new_activation",
    "new_host_token",
    "validate_node_name",
    "verify_code",
    "verify_host_token",
    "verify_secret",
]
