"""Node identity: which kubelet certificate requests Tether approves, as a pure decision.

A joining host authenticates with a short-lived **bootstrap token** the plane minted
for it. The token's Secret carries two extra groups: :data:`BOOTSTRAP_GROUP` (bound to
``system:node-bootstrapper`` so the kubelet may create its CSR) and the host's own
group :func:`host_bootstrap_group`, which the API server puts into the CSR's
``spec.groups``. Requesters cannot forge groups, so the approver knows which host a
bootstrap CSR comes from.

Rules (:func:`decide_csr`), for the two kubelet signers only:

- ``kubernetes.io/kube-apiserver-client-kubelet`` (the kubelet's client certificate):
  subject exactly ``CN=system:node:<name>, O=system:nodes``; no SANs; usages within
  ``digital signature``, ``key encipherment``, ``client auth`` and including
  ``client auth``; requested by the bootstrap token minted for host ``<name>``, or by
  the node itself (``system:node:<name>``, a renewal).
- ``kubernetes.io/kubelet-serving`` (the kubelet's serving certificate, for
  ``kubectl logs/exec``): same subject; requested by the node itself; usages within
  ``digital signature``, ``key encipherment``, ``server auth`` and including
  ``server auth``; at least one SAN; DNS SANs only the node name or the host's own
  hostname; IP SANs only the host's known addresses (:func:`host_addresses`); no email
  or URI SANs.
- In both cases ``<name>`` must be a registered Tether host assigned to a pool of the
  cluster the CSR was made in.

A request that Tether has a say in and that breaks a rule is **denied**, with the rule
in the condition's reason and message. A request no Tether identity is involved in
(not from a Tether bootstrap token, not for or from a Tether host's node name, e.g. a
cloud node's kubelet in a hybrid cluster) is **ignored** by default: another approver
owns it, and a denial cannot be undone. ``deny_foreign=True`` denies those too, for
clusters where every node is a Tether host.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = [
    "BOOTSTRAP_GROUP",
    "KUBELET_CLIENT_SIGNER",
    "KUBELET_SERVING_SIGNER",
    "NODE_GROUP",
    "CSRDecision",
    "CSRFacts",
    "HostIdentity",
    "Verdict",
    "decide_csr",
    "host_addresses",
    "host_bootstrap_group",
    "host_hostnames",
    "node_name_from_subject",
]

KUBELET_CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
KUBELET_SERVING_SIGNER = "kubernetes.io/kubelet-serving"
#: Every bootstrap token Tether mints carries this group (``auth-extra-groups``).
BOOTSTRAP_GROUP = "system:bootstrappers:tether"
NODE_GROUP = "system:nodes"
_NODE_PREFIX = "system:node:"

_CLIENT_USAGES = frozenset({"digital signature", "key encipherment", "client auth"})
_SERVING_USAGES = frozenset({"digital signature", "key encipherment", "server auth"})


def host_bootstrap_group(host: str) -> str:
    """The group naming the host a bootstrap token was minted for.

    Valid as an ``auth-extra-groups`` entry (``system:bootstrappers:[a-z0-9:-]*``) because
    host names are DNS labels.
    """
    return f"{BOOTSTRAP_GROUP}:host:{host}"


def node_name_from_subject(common_name: str | None) -> str | None:
    """``system:node:<name>`` -> ``<name>``; anything else -> None."""
    if common_name and common_name.startswith(_NODE_PREFIX):
        name = common_name[len(_NODE_PREFIX) :]
        return name or None
    return None


@dataclass(frozen=True)
class CSRFacts:
    """A CertificateSigningRequest as the approver sees it (the PEM already parsed)."""

    name: str
    signer: str
    username: str
    groups: tuple[str, ...] = ()
    usages: tuple[str, ...] = ()
    common_name: str | None = None
    organizations: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    other_sans: tuple[str, ...] = ()  # email addresses, URIs
    parse_error: str | None = None  # the request is not a readable PKCS#10 CSR


@dataclass(frozen=True)
class HostIdentity:
    """What the plane knows about a host that a certificate may name."""

    name: str
    cluster: str | None  # cluster of the host's pool; None when unassigned
    pool: str | None = None
    addresses: frozenset[str] = field(default_factory=frozenset)
    hostnames: frozenset[str] = field(default_factory=frozenset)


class Verdict(StrEnum):
    APPROVE = "Approve"
    DENY = "Deny"
    IGNORE = "Ignore"  # not Tether's request to judge


@dataclass(frozen=True)
class CSRDecision:
    verdict: Verdict
    reason: str  # CamelCase, for the condition's reason and the event
    message: str
    host: str | None = None  # the Tether host it concerns, if any


def _usable_ip(text: str) -> str | None:
    """Canonical form of an address (``10.0.0.5`` or ``10.0.0.5/24``) a kubelet may serve on."""
    try:
        ip = ipaddress.ip_interface(text.strip()).ip
    except ValueError:
        return None
    if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
        return None
    return ip.compressed


def host_addresses(inventory: Mapping[str, Any]) -> frozenset[str]:
    """A host's known addresses: ``inventory.addresses`` and every ``inventory.nics[].addresses``.

    Entries may be plain addresses or ``address/prefix``. Loopback, link-local,
    unspecified and multicast addresses are left out: a kubelet never serves the control
    plane on them.
    """
    raw: list[str] = []
    top = inventory.get("addresses")
    if isinstance(top, list):
        raw += [a for a in top if isinstance(a, str)]
    nics = inventory.get("nics")
    if isinstance(nics, list):
        for nic in nics:
            if isinstance(nic, Mapping) and isinstance(nic.get("addresses"), list):
                raw += [a for a in nic["addresses"] if isinstance(a, str)]
    return frozenset(ip for ip in (_usable_ip(a) for a in raw) if ip is not None)


def host_hostnames(inventory: Mapping[str, Any]) -> frozenset[str]:
    """DNS names the host reported itself under (``inventory.hostname``, ``.hostnames``)."""
    names: list[str] = []
    if isinstance(inventory.get("hostname"), str):
        names.append(inventory["hostname"])
    if isinstance(inventory.get("hostnames"), list):
        names += [n for n in inventory["hostnames"] if isinstance(n, str)]
    return frozenset(n.strip().lower().rstrip(".") for n in names if n.strip())


def _claimed(csr: CSRFacts, node: str | None, hosts: Mapping[str, HostIdentity]) -> bool:
    """Whether a Tether identity is involved (so Tether must approve or deny it)."""
    if any(g == BOOTSTRAP_GROUP or g.startswith(BOOTSTRAP_GROUP + ":") for g in csr.groups):
        return True
    if node is not None and node in hosts:
        return True
    requester = node_name_from_subject(csr.username)
    return requester is not None and requester in hosts


def _deny(reason: str, message: str, host: str | None = None) -> CSRDecision:
    return CSRDecision(Verdict.DENY, reason, message, host)


def _check_usages(csr: CSRFacts, allowed: frozenset[str], needed: str) -> str | None:
    usages = set(csr.usages)
    extra = sorted(usages - allowed)
    if extra:
        return f"usages {', '.join(extra)} are not allowed for {csr.signer}"
    if needed not in usages:
        return f"usages must include {needed!r}"
    return None


def decide_csr(
    csr: CSRFacts,
    *,
    cluster: str,
    hosts: Mapping[str, HostIdentity],
    deny_foreign: bool = False,
) -> CSRDecision:
    """Approve, deny or ignore one pending kubelet CSR in ``cluster`` (rules: module doc).

    ``hosts`` are the plane's registered hosts by name (any state, any pool).
    """
    if csr.signer not in (KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER):
        return CSRDecision(Verdict.IGNORE, "OtherSigner", f"signer {csr.signer} is not a kubelet's")
    node = node_name_from_subject(csr.common_name)
    if not _claimed(csr, node, hosts):
        message = f"{csr.common_name or 'no CN'} requested by {csr.username} is not a Tether node"
        if deny_foreign:
            return _deny("UnknownNode", message)
        return CSRDecision(Verdict.IGNORE, "NotTether", message)
    if csr.parse_error is not None:
        return _deny("InvalidRequest", f"the request is not a readable CSR: {csr.parse_error}")
    if node is None or csr.organizations != (NODE_GROUP,):
        return _deny(
            "BadSubject",
            f"subject must be CN=system:node:<name>, O={NODE_GROUP}; got "
            f"CN={csr.common_name}, O={','.join(csr.organizations) or '-'}",
        )
    host = hosts.get(node)
    if host is None:
        return _deny("UnknownHost", f"node name {node!r} is not a registered Tether host", node)
    if host.cluster != cluster:
        where = f"cluster {host.cluster!r}" if host.cluster else "no pool"
        return _deny(
            "HostNotInCluster",
            f"host {node!r} is assigned to {where}, not to a pool of cluster {cluster!r}",
            node,
        )
    is_node_itself = csr.username == f"{_NODE_PREFIX}{node}" and NODE_GROUP in csr.groups
    if csr.signer == KUBELET_CLIENT_SIGNER:
        with_token = host_bootstrap_group(node) in csr.groups
        if not (with_token or is_node_itself):
            return _deny(
                "RequesterMismatch",
                f"a client certificate for {node!r} must be requested with the bootstrap "
                f"token minted for {node!r} or by the node itself, not by {csr.username}",
                node,
            )
        problem = _check_usages(csr, _CLIENT_USAGES, "client auth")
        if problem is not None:
            return _deny("BadUsages", problem, node)
        if csr.dns_names or csr.ip_addresses or csr.other_sans:
            return _deny("UnexpectedSANs", "a kubelet client certificate carries no SANs", node)
        how = "bootstrap token" if with_token else "renewal by the node"
        return CSRDecision(
            Verdict.APPROVE,
            "TetherApproved",
            f"kubelet client certificate for host {node} (pool {host.pool}), {how}",
            node,
        )
    # kubelet-serving
    if not is_node_itself:
        return _deny(
            "RequesterMismatch",
            f"a serving certificate for {node!r} must be requested by the node itself, "
            f"not by {csr.username}",
            node,
        )
    problem = _check_usages(csr, _SERVING_USAGES, "server auth")
    if problem is not None:
        return _deny("BadUsages", problem, node)
    if csr.other_sans:
        return _deny("UnexpectedSANs", "email and URI SANs are not allowed", node)
    if not (csr.dns_names or csr.ip_addresses):
        return _deny("UnexpectedSANs", "a serving certificate needs at least one SAN", node)
    dns_ok = {node, *host.hostnames}
    unknown_dns = sorted({d.lower().rstrip(".") for d in csr.dns_names} - dns_ok)
    unknown_ips = sorted(_unknown_ips(csr.ip_addresses, host.addresses))
    if unknown_dns or unknown_ips:
        return _deny(
            "SANsNotKnown",
            f"SANs not known for host {node}: " + ", ".join([*unknown_dns, *unknown_ips]),
            node,
        )
    return CSRDecision(
        Verdict.APPROVE,
        "TetherApproved",
        f"kubelet serving certificate for host {node} (pool {host.pool}) with SANs "
        + ", ".join([*csr.dns_names, *csr.ip_addresses]),
        node,
    )


def _unknown_ips(requested: Iterable[str], known: frozenset[str]) -> set[str]:
    unknown = set()
    for text in requested:
        try:
            canonical = ipaddress.ip_address(text).compressed
        except ValueError:
            unknown.add(text)
            continue
        if canonical not in known:
            unknown.add(text)
    return unknown
