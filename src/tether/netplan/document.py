"""The ``HybridNetwork`` document: one cluster and its hybrid node pools.

Addresses and networks are kept as the strings the user wrote. The checker
(:mod:`tether.netplan.rules`) parses them and reports every bad one as a finding with
a rule id and a path, instead of letting one parse error hide all the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationError

from tether.domain.base import Model
from tether.netplan.addresses import collector_paused
from tether.netplan.findings import Finding

API_VERSION = "tether.io/v1alpha1"
KIND = "HybridNetwork"

Routing = Literal["bgp", "static"]


class VpnEndpoint(Model):
    """The cloud side of every site-to-site VPN (the VPC's VPN gateway)."""

    public_ip: str = Field(description="Outside address of tunnel 1 on the cloud side.")
    secondary_public_ip: str | None = Field(
        default=None,
        description="Outside address of tunnel 2 on the cloud side; defaults to publicIP.",
    )


class VpnServer(Model):
    """A site's IPsec VPN server, which terminates the pool's two tunnels."""

    public_ip: str = Field(description="Address the cloud reaches the VPN server on.")
    inside_ip: str = Field(description="The VPN server's address inside the pool's nodeCIDR.")
    is_main_router: bool = Field(
        default=True,
        description="True when the VPN server is the nodes' default gateway.",
    )
    asn: int | None = Field(
        default=None, description="The VPN server's BGP AS number (needed for routing: bgp)."
    )


class Node(Model):
    """One hybrid node of a pool."""

    name: str = Field(description="Kubernetes node name (DNS-1123 subdomain).")
    ip: str = Field(description="The node's address inside the pool's nodeCIDR.")
    pod_cidr: str | None = Field(
        default=None,
        description="Pins the node's pod CIDR block; allocated by the planner when absent.",
    )


class Pool(Model):
    """A hybrid node pool: one site's hosts serving the cluster."""

    name: str = Field(description="Pool name (DNS-1123 label), unique in the document.")
    site: str = Field(description="The site (DNS-1123 label) the pool's hosts are in.")
    node_cidr: str = Field(description="The pool's node network, inside a remote node network.")
    pod_cidr: str = Field(description="The pool's pod network, inside a remote pod network.")
    pod_cidr_mask_per_node: int = Field(
        default=24, description="Prefix length of each node's pod CIDR block."
    )
    routing: Routing = Field(
        default="static",
        description="How the site learns pod routes: bgp (CNI peers) or static routes.",
    )
    node_asn: int = Field(default=64512, description="AS number the nodes' CNI speaks BGP with.")
    main_router_ip: str | None = Field(
        default=None,
        description="The site's main router (nodes' gateway) when the VPN server is not it.",
    )
    vpn_server: VpnServer = Field(description="The site VPN server for this pool.")
    nodes: list[Node] = Field(default_factory=list, description="The pool's nodes.")


class Cluster(Model):
    """The hybrid-enabled cluster whose control plane runs in the cloud."""

    name: str = Field(description="Cluster name (DNS-1123 label).")
    vpc_cidr: str = Field(description="The cloud VPC's network.")
    service_cidr: str = Field(description="The Kubernetes service network.")
    remote_node_networks: list[str] = Field(
        default_factory=list, description="On-prem networks hybrid nodes live in (at most 15)."
    )
    remote_pod_networks: list[str] = Field(
        default_factory=list, description="On-prem networks hybrid pods live in (at most 15)."
    )
    allow_cgnat: bool = Field(
        default=False,
        alias="allowCGNAT",
        description="Also allow remote networks inside 100.64.0.0/10.",
    )
    vpn_endpoint: VpnEndpoint = Field(description="The cloud side of the site VPNs.")


class HybridNetwork(Model):
    """The whole document: ``kind: HybridNetwork``."""

    api_version: str = Field(description="Always tether.io/v1alpha1.")
    kind: str = Field(description="Always HybridNetwork.")
    cluster: Cluster
    pools: list[Pool] = Field(default_factory=list)


def loc_path(loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location as a wire path: ``pools[0].vpnServer.publicIP``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out or "$"


def schema_findings(error: ValidationError, prefix: tuple[int | str, ...] = ()) -> list[Finding]:
    """Turn a pydantic ``ValidationError`` into ``schema`` findings."""
    findings = []
    for item in error.errors(include_url=False):
        loc = prefix + tuple(part for part in item["loc"] if not isinstance(part, str) or part)
        path = loc_path(loc)
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown field"
        elif item["type"] == "missing":
            msg = "required field is missing"
        findings.append(Finding("schema", path, f"{path}: {msg}"))
    return findings


def parse_document(data: Any) -> tuple[HybridNetwork | None, list[Finding]]:
    """Validate the shape of ``data``; return the document or ``schema`` findings."""
    if not isinstance(data, Mapping):
        return None, [Finding("schema", "$", "$: the document must be a mapping")]
    try:
        with collector_paused():
            return HybridNetwork.model_validate(data), []
    except ValidationError as error:
        return None, schema_findings(error)
