"""What a plan is made of: allocations, routes, tunnels, per pool.

Plain frozen dataclasses (not pydantic models): a plan for ten thousand pools holds
hundreds of thousands of these, and they are built from already-checked values.
``as_dict`` gives the camelCase wire form used in ``plan.json`` and by the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from tether.netplan.allocate import Source


@dataclass(slots=True)
class NodePlan:
    name: str
    ip: IPv4Address
    pod_cidr: IPv4Network
    source: Source

    @property
    def pod_address(self) -> IPv4Address:
        """A representative pod address in the node's block (its first usable one)."""
        if self.pod_cidr.prefixlen >= 31:
            return self.pod_cidr.network_address
        return self.pod_cidr.network_address + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ip": str(self.ip),
            "podCIDR": str(self.pod_cidr),
            "source": self.source.value,
        }


@dataclass(slots=True)
class Route:
    """``destination`` goes to ``target``: a next-hop address or an attachment name."""

    destination: IPv4Network
    target: str

    def as_dict(self) -> dict[str, Any]:
        return {"destination": str(self.destination), "target": self.target}


@dataclass(slots=True)
class Child:
    """One child SA: ``site_ts`` (node or pod CIDR) to ``cloud_ts`` (the VPC CIDR)."""

    name: str
    site_ts: IPv4Network
    cloud_ts: IPv4Network

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "siteTS": str(self.site_ts), "cloudTS": str(self.cloud_ts)}


@dataclass(slots=True)
class Tunnel:
    """One IKE SA between the site VPN server and the cloud endpoint."""

    name: str
    psk_id: str
    cloud_ip: IPv4Address
    site_ip: IPv4Address
    cloud_id: str
    site_id: str
    children: tuple[Child, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pskID": self.psk_id,
            "cloudIP": str(self.cloud_ip),
            "siteIP": str(self.site_ip),
            "cloudID": self.cloud_id,
            "siteID": self.site_id,
            "children": [c.as_dict() for c in self.children],
        }


@dataclass(slots=True)
class PoolPlan:
    name: str
    site: str
    routing: str
    node_cidr: IPv4Network
    pod_cidr: IPv4Network
    pod_cidr_mask_per_node: int
    node_asn: int
    vpn_public_ip: IPv4Address
    vpn_inside_ip: IPv4Address
    vpn_asn: int | None
    is_main_router: bool
    main_router_ip: IPv4Address | None
    nodes: tuple[NodePlan, ...]
    #: The VPC route table entries for this pool (towards its VPN attachment).
    vpc_routes: tuple[Route, ...]
    #: The VPN connection's two static routes: node CIDR and pod CIDR.
    static_routes: tuple[IPv4Network, IPv4Network]
    tunnels: tuple[Tunnel, ...]
    #: Static mode: one route per node pod block on the VPN server (empty for bgp).
    vpn_server_routes: tuple[Route, ...]
    #: When the VPN server is not the main router: the routes the main router needs.
    main_router_routes: tuple[Route, ...]

    @property
    def attachment(self) -> str:
        return f"vpn-attachment/{self.name}"

    @property
    def pod_blocks(self) -> int:
        return 1 << (self.pod_cidr_mask_per_node - self.pod_cidr.prefixlen)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "site": self.site,
            "routing": self.routing,
            "nodeCIDR": str(self.node_cidr),
            "podCIDR": str(self.pod_cidr),
            "podCIDRMaskPerNode": self.pod_cidr_mask_per_node,
            "podBlocks": {"used": len(self.nodes), "total": self.pod_blocks},
            "nodeASN": self.node_asn,
            "vpnServer": {
                "publicIP": str(self.vpn_public_ip),
                "insideIP": str(self.vpn_inside_ip),
                "asn": self.vpn_asn,
                "isMainRouter": self.is_main_router,
            },
            "mainRouterIP": None if self.main_router_ip is None else str(self.main_router_ip),
            "nodes": [n.as_dict() for n in self.nodes],
            "vpcRoutes": [r.as_dict() for r in self.vpc_routes],
            "vpnConnection": {
                "name": self.name,
                "attachment": self.attachment,
                "customerGatewayIP": str(self.vpn_public_ip),
                "staticRoutes": [str(r) for r in self.static_routes],
                "tunnels": [t.as_dict() for t in self.tunnels],
            },
            "vpnServerRoutes": [r.as_dict() for r in self.vpn_server_routes],
            "mainRouterRoutes": [r.as_dict() for r in self.main_router_routes],
        }
