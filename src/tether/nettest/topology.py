"""The testbed's layout: which namespaces, links and addresses a plan becomes (pure).

::

    [vpc] --vpc0/vpc-gw-- [cgw] --siteN/wan0-- [vsN] ==lan-br== [nN-M]  (one per node)
     VPC host              cloud VPN gateway    site VPN server   \\== [rtN] main router
                           (public IPs on lo)   (bridge = site LAN)      (when separate)

* ``vpc`` holds one address of the VPC CIDR and the VPC route table of the plan: each
  pool's node and pod CIDR via the gateway (all VPN attachments live on ``cgw``).
* ``cgw`` runs charon with the plan's cloud-side ``swanctl.conf``.
* ``vsN`` runs charon with the pool's site ``swanctl.conf``, its ``routes.sh`` and, for
  ``routing: bgp``, BIRD with the pool's ``bird.conf``.
* ``nN-M`` carries the node IP and, on ``lo``, the first address of its pod CIDR; with
  ``routing: bgp`` it runs BIRD announcing that block, as the CNI would.
* ``rtN`` exists when the VPN server is not the main router: the nodes' gateway, with the
  plan's main-router ``routes.sh``.

One testbed-only detail: strongSwan's userspace ESP (kernel-libipsec) routes each child
SA's traffic into its TUN device with a source address taken from the child's local
traffic selector, and refuses a child when the host has no address in it. A real VPN
server with kernel ESP needs none, but here ``vsN`` gets one address (on ``lo``) from a
pod CIDR block that no node uses, so the pod child can be installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from tether.netplan import NodePlan, Plan, PoolPlan

VPC_HOST_OFFSET = 10
VPC_GATEWAY_OFFSET = 1


class TopologyError(ValueError):
    """The plan cannot be laid out as a testbed (e.g. a VPC CIDR too small)."""


@dataclass(frozen=True, slots=True)
class NodeSpot:
    node: NodePlan
    ns: str
    gateway: IPv4Address


@dataclass(frozen=True, slots=True)
class SiteSpot:
    index: int
    pool: PoolPlan
    vpn_ns: str
    router_ns: str | None
    router_ip: IPv4Address | None
    nodes: tuple[NodeSpot, ...]
    #: An address of the pool's pod CIDR outside every node block (see module notes).
    vpn_pod_address: IPv4Address

    @property
    def inside(self) -> IPv4Interface:
        return IPv4Interface((self.pool.vpn_inside_ip, self.pool.node_cidr.prefixlen))


@dataclass(frozen=True, slots=True)
class Topology:
    prefix: str
    vpc_ns: str
    cgw_ns: str
    vpc_host: IPv4Interface
    vpc_gateway: IPv4Interface
    endpoint_ips: tuple[IPv4Address, ...]
    sites: tuple[SiteSpot, ...]

    @property
    def namespaces(self) -> list[str]:
        names = [self.vpc_ns, self.cgw_ns]
        for site in self.sites:
            names.append(site.vpn_ns)
            if site.router_ns is not None:
                names.append(site.router_ns)
            names.extend(n.ns for n in site.nodes)
        return names


def _router_ip(pool: PoolPlan) -> IPv4Address:
    if pool.main_router_ip is not None:
        return pool.main_router_ip
    used = {pool.vpn_inside_ip, *(n.ip for n in pool.nodes)}
    for host in pool.node_cidr.hosts():
        if host not in used:
            return host
    raise TopologyError(f"pool {pool.name}: no free address in {pool.node_cidr} for a router")


def _spare_pod_address(pool: PoolPlan) -> IPv4Address:
    used = {n.pod_cidr for n in pool.nodes}
    mask = pool.pod_cidr_mask_per_node
    size = 1 << (32 - mask)
    base = int(pool.pod_cidr.network_address)
    for slot in range(pool.pod_blocks - 1, -1, -1):
        block = IPv4Network((base + slot * size, mask))
        if block not in used:
            return block[-2] if block.num_addresses >= 4 else block[0]
    raise TopologyError(
        f"pool {pool.name}: every pod CIDR block is used; the testbed needs one spare "
        "address in the pod CIDR for strongSwan's userspace ESP"
    )


def layout(plan: Plan, prefix: str) -> Topology:
    """Lay ``plan`` out as namespaces named ``{prefix}-…``."""
    vpc = plan.vpc_cidr
    if vpc.num_addresses < 16:
        raise TopologyError(f"VPC CIDR {vpc} is too small for a testbed (needs /28 or larger)")
    sites = []
    for i, pool in enumerate(plan.pools):
        router_ns = router_ip = None
        if not pool.is_main_router:
            router_ns = f"{prefix}-rt{i}"
            router_ip = _router_ip(pool)
        gateway = router_ip if router_ip is not None else pool.vpn_inside_ip
        nodes = tuple(
            NodeSpot(node, f"{prefix}-n{i}-{j}", gateway) for j, node in enumerate(pool.nodes)
        )
        sites.append(
            SiteSpot(
                i, pool, f"{prefix}-vs{i}", router_ns, router_ip, nodes, _spare_pod_address(pool)
            )
        )
    return Topology(
        prefix=prefix,
        vpc_ns=f"{prefix}-vpc",
        cgw_ns=f"{prefix}-cgw",
        vpc_host=IPv4Interface((vpc.network_address + VPC_HOST_OFFSET, vpc.prefixlen)),
        vpc_gateway=IPv4Interface((vpc.network_address + VPC_GATEWAY_OFFSET, vpc.prefixlen)),
        endpoint_ips=plan.endpoint_ips,
        sites=tuple(sites),
    )
