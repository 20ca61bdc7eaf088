"""Name rules for certificate subjects.

A host's certificate CN is its Kubernetes node name. The rule is the DNS-1123 *label*
character set (lower-case letters, digits and ``-``, starting and ending with a letter
or digit, so the name is also a valid hostname and a valid ``DNS:`` SAN) with a length
limit of **64** characters, which is the X.509 upper bound for a CN (``ub-common-name``)
and Linux's ``HOST_NAME_MAX``. Note that a DNS label proper is limited to 63 octets; a
64-character node name is accepted here because the issue fixes the limit at 64, and
Kubernetes (which validates node names as DNS-1123 *subdomains*) accepts it too.
"""

from __future__ import annotations

import ipaddress
import re

from tether.pki.errors import NameNotAllowed

#: Longest node name accepted as a certificate CN.
MAX_NODE_NAME_LENGTH = 64

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_HOST_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def node_name_problem(name: str) -> str | None:
    """Say why ``name`` is not an acceptable node name, or return ``None`` if it is."""
    if not name:
        return "node name must not be empty"
    if len(name) > MAX_NODE_NAME_LENGTH:
        return f"node name is {len(name)} characters long; the maximum is {MAX_NODE_NAME_LENGTH}"
    if not _LABEL.fullmatch(name):
        return (
            "node name must be a DNS-1123 label: lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return None


def validate_node_name(name: str) -> str:
    """Return ``name`` if it is a valid node name, else raise :class:`NameNotAllowed`."""
    problem = node_name_problem(name)
    if problem is not None:
        raise NameNotAllowed(f"{problem}: {name!r}", node_name=name)
    return name


def validate_server_hostname(name: str) -> str:
    """Check a DNS name for the plane's server certificate (DNS-1123 subdomain, no wildcard)."""
    if not name or len(name) > 253:
        raise NameNotAllowed(f"server hostname must be 1..253 characters: {name!r}", name=name)
    labels = name.split(".")
    if not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise NameNotAllowed(
            "server hostname must be a DNS-1123 subdomain (lower-case labels of letters, "
            f"digits and '-', at most 63 each; no wildcards): {name!r}",
            name=name,
        )
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name
    raise NameNotAllowed(f"{name!r} is an IP address; pass it in ips, not hostnames", name=name)
