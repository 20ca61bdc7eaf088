"""Findings: what the checker reports, and the catalogue of rules it reports them under.

Every finding names a rule by a stable id (``pool.overlap``), the field it is about by
its wire path (``pools[edge1].podCIDR``: pools and nodes by name, see
:func:`tether.netplan.document.member_keys`), a message about that field that does not
repeat the path, and a severity. Errors make a document unplannable; warnings never do.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem found in a document. Serialises as ``{rule, path, message, severity}``."""

    rule: str
    path: str
    message: str
    severity: Severity = Severity.ERROR

    def as_dict(self) -> dict[str, str]:
        return {
            "rule": self.rule,
            "path": self.path,
            "message": self.message,
            "severity": self.severity.value,
        }

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR

    @property
    def text(self) -> str:
        """One line for a person: ``path: message``."""
        return f"{self.path}: {self.message}"


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    severity: Literal["error", "warning"]
    summary: str


#: Every rule the checker knows, in the order the documentation lists them.
RULES: tuple[Rule, ...] = (
    Rule("schema", "error", "The document has the right shape: known fields, right types."),
    Rule("document.api-version", "error", "apiVersion is tether.io/v1alpha1."),
    Rule("document.kind", "error", "kind is HybridNetwork."),
    Rule("address.cidr", "error", "A CIDR field holds an IPv4 network written a.b.c.d/len."),
    Rule("address.ipv4-only", "error", "Addresses and networks are IPv4, never IPv6."),
    Rule(
        "address.host-bits", "error", "A CIDR has no host bits set (10.1.0.0/16, not 10.1.2.3/16)."
    ),
    Rule("address.ip", "error", "An address field holds one IPv4 address."),
    Rule("cluster.name", "error", "cluster.name is a DNS-1123 label."),
    Rule("cluster.remote-prefix", "error", "Each remote network is between /8 and /32."),
    Rule(
        "cluster.remote-private",
        "error",
        "Each remote network lies in RFC 1918 space (or 100.64.0.0/10 with allowCGNAT).",
    ),
    Rule("cluster.remote-count", "error", "At most 15 remote node and 15 remote pod networks."),
    Rule("cluster.remote-overlap", "error", "Remote node and pod networks do not overlap."),
    Rule("cluster.remote-vpc-overlap", "error", "No remote network overlaps the VPC CIDR."),
    Rule("cluster.remote-service-overlap", "error", "No remote network overlaps the service CIDR."),
    Rule("cluster.vpc-service-overlap", "error", "The VPC CIDR and service CIDR do not overlap."),
    Rule("cluster.remote-unused", "warning", "A remote network holds no pool."),
    Rule("pool.name", "error", "A pool name is a DNS-1123 label and unique."),
    Rule("pool.site", "error", "A pool's site is a DNS-1123 label."),
    Rule("pool.node-cidr-in-remote", "error", "nodeCIDR lies inside one remote node network."),
    Rule("pool.pod-cidr-in-remote", "error", "podCIDR lies inside one remote pod network."),
    Rule("pool.overlap", "error", "No pool's node or pod CIDR overlaps another pool's."),
    Rule("pool.pod-mask", "error", "podCIDRMaskPerNode lies between the podCIDR prefix and /32."),
    Rule("pool.pod-capacity", "error", "The per-node pod mask leaves a block for every node."),
    Rule("pool.pod-utilisation", "warning", "More than 80% of the pool's pod blocks are used."),
    Rule("pool.asn", "error", "nodeASN and vpnServer.asn are valid AS numbers (1-4294967294)."),
    Rule("pool.main-router-ip", "error", "mainRouterIP is a usable address in nodeCIDR."),
    Rule("pool.empty", "warning", "The pool has no nodes."),
    Rule("vpn.asn-required", "error", "routing: bgp needs vpnServer.asn."),
    Rule("vpn.inside-ip", "error", "vpnServer.insideIP is a usable address in nodeCIDR."),
    Rule("vpn.public-ip-unique", "error", "Every pool has its own VPN server public IP."),
    Rule(
        "vpn.public-ip-overlap",
        "error",
        "No VPN public IP lies in the VPC, service or remote networks.",
    ),
    Rule("node.name", "error", "A node name is a DNS-1123 subdomain."),
    Rule("node.name-unique", "error", "Node names are unique in the cluster."),
    Rule("node.ip-unique", "error", "Node IPs are unique in the cluster."),
    Rule("node.ip-in-node-cidr", "error", "A node IP lies inside its pool's nodeCIDR."),
    Rule("node.ip-reserved", "error", "A node IP is not nodeCIDR's network or broadcast address."),
    Rule("node.ip-vpn-server", "error", "A node IP is not the VPN server's insideIP."),
    Rule("node.pod-cidr-in-pool", "error", "A pinned node podCIDR lies inside the pool's podCIDR."),
    Rule("node.pod-cidr-mask", "error", "A pinned node podCIDR has the podCIDRMaskPerNode prefix."),
    Rule("node.pod-cidr-overlap", "error", "Pinned node podCIDRs do not overlap."),
)

RULE_IDS: frozenset[str] = frozenset(rule.id for rule in RULES)


def has_errors(findings: list[Finding]) -> bool:
    return any(f.is_error for f in findings)
