"""The checker: every rule of a ``HybridNetwork`` document, all findings at once.

The checker parses each address once into a :class:`Resolved` view that the planner
reuses. Overlaps are found by sorting and sweeping (:func:`sweep_overlaps`), never by
comparing every pair, so ten thousand pools check in well under a second. Inside a pool
addresses are compared as integers (an ``IPv4Address`` hashes through ``hex()`` and
``in`` on an ``IPv4Network`` checks types first): that halved the rules' time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from tether.netplan.addresses import (
    CGNAT,
    RFC1918,
    collector_paused,
    contains,
    is_dns1123_label,
    is_dns1123_subdomain,
    parse_cidr,
    parse_ip,
    span,
    sweep_overlaps,
)
from tether.netplan.document import API_VERSION, KIND, HybridNetwork, Pool, member_keys
from tether.netplan.findings import Finding, Severity

MAX_REMOTE_NETWORKS = 15
MIN_REMOTE_PREFIX = 8
UTILISATION_WARNING = 0.8
MAX_ASN = 4_294_967_294


@dataclass(slots=True)
class RNode:
    name: str
    ip: IPv4Address | None
    pod_cidr: IPv4Network | None  # pinned in the document


@dataclass(slots=True)
class RPool:
    path: str  # pools[edge1]: how findings name this pool
    pool: Pool
    node_cidr: IPv4Network | None
    pod_cidr: IPv4Network | None
    inside_ip: IPv4Address | None
    public_ip: IPv4Address | None
    main_router_ip: IPv4Address | None
    nodes: list[RNode] = field(default_factory=list)


@dataclass(slots=True)
class Resolved:
    """The document with every address parsed (``None`` where parsing failed)."""

    doc: HybridNetwork
    vpc_cidr: IPv4Network | None
    service_cidr: IPv4Network | None
    endpoint_ips: list[IPv4Address]
    remote_nodes: list[tuple[IPv4Network, str]]  # (network, path)
    remote_pods: list[tuple[IPv4Network, str]]
    pools: list[RPool]


def _err(out: list[Finding], rule: str, path: str, message: str) -> None:
    out.append(Finding(rule, path, message))


def _warn(out: list[Finding], rule: str, path: str, message: str) -> None:
    out.append(Finding(rule, path, message, Severity.WARNING))


def check_document(doc: HybridNetwork) -> tuple[Resolved, list[Finding]]:
    """Run every rule over ``doc``; return the parsed view and all findings."""
    with collector_paused():
        return _check(doc)


def _check(doc: HybridNetwork) -> tuple[Resolved, list[Finding]]:
    out: list[Finding] = []
    if doc.api_version != API_VERSION:
        _err(out, "document.api-version", "apiVersion", f"must be {API_VERSION}")
    if doc.kind != KIND:
        _err(out, "document.kind", "kind", f"must be {KIND}")
    resolved = _check_cluster(doc, out)
    _check_pools(resolved, out)
    return resolved, out


# Cluster -------------------------------------------------------------------------------


def _remote_list(
    values: list[str], path: str, allow_cgnat: bool, out: list[Finding]
) -> list[tuple[IPv4Network, str]]:
    if len(values) > MAX_REMOTE_NETWORKS:
        _err(
            out,
            "cluster.remote-count",
            path,
            f"{len(values)} networks; at most {MAX_REMOTE_NETWORKS} are allowed",
        )
    parsed: list[tuple[IPv4Network, str]] = []
    for i, value in enumerate(values):
        item = f"{path}[{i}]"
        net = parse_cidr(value, item, out)
        if net is None:
            continue
        if not MIN_REMOTE_PREFIX <= net.prefixlen <= 32:
            _err(out, "cluster.remote-prefix", item, f"{net} must be between /8 and /32")
        allowed = RFC1918 + ((CGNAT,) if allow_cgnat else ())
        if not any(net.subnet_of(block) for block in allowed):
            hint = "" if allow_cgnat or not net.subnet_of(CGNAT) else " (set allowCGNAT: true)"
            space = "RFC 1918" + (" or 100.64.0.0/10" if allow_cgnat else "")
            _err(out, "cluster.remote-private", item, f"{net} is not in {space} space{hint}")
        parsed.append((net, item))
    return parsed


def _check_cluster(doc: HybridNetwork, out: list[Finding]) -> Resolved:
    c = doc.cluster
    if not is_dns1123_label(c.name):
        _err(out, "cluster.name", "cluster.name", f"{c.name!r} is not a DNS-1123 label")
    vpc = parse_cidr(c.vpc_cidr, "cluster.vpcCIDR", out)
    service = parse_cidr(c.service_cidr, "cluster.serviceCIDR", out)
    if vpc is not None and service is not None and vpc.overlaps(service):
        _err(
            out,
            "cluster.vpc-service-overlap",
            "cluster.serviceCIDR",
            f"{service} overlaps cluster.vpcCIDR {vpc}",
        )
    endpoint_ips = []
    ip = parse_ip(c.vpn_endpoint.public_ip, "cluster.vpnEndpoint.publicIP", out)
    if ip is not None:
        endpoint_ips.append(ip)
    if c.vpn_endpoint.secondary_public_ip is not None:
        ip = parse_ip(
            c.vpn_endpoint.secondary_public_ip, "cluster.vpnEndpoint.secondaryPublicIP", out
        )
        if ip is not None:
            endpoint_ips.append(ip)

    nodes = _remote_list(c.remote_node_networks, "cluster.remoteNodeNetworks", c.allow_cgnat, out)
    pods = _remote_list(c.remote_pod_networks, "cluster.remotePodNetworks", c.allow_cgnat, out)
    remote = nodes + pods
    for later, earlier in sweep_overlaps((*span(net), (net, path)) for net, path in remote):
        _err(
            out,
            "cluster.remote-overlap",
            later[1],
            f"{later[0]} overlaps {earlier[1]} ({earlier[0]})",
        )
    for net, path in remote:
        if vpc is not None and net.overlaps(vpc):
            _err(out, "cluster.remote-vpc-overlap", path, f"{net} overlaps cluster.vpcCIDR {vpc}")
        if service is not None and net.overlaps(service):
            _err(
                out,
                "cluster.remote-service-overlap",
                path,
                f"{net} overlaps cluster.serviceCIDR {service}",
            )
    around = _public_ip_spaces(vpc, service, remote)
    for ip in endpoint_ips:
        _check_public_ip(ip, "cluster.vpnEndpoint", around, out)
    return Resolved(
        doc=doc,
        vpc_cidr=vpc,
        service_cidr=service,
        endpoint_ips=endpoint_ips,
        remote_nodes=nodes,
        remote_pods=pods,
        pools=[],
    )


#: A network no public address may lie in: (first, last, where, network).
_Space = tuple[int, int, str, IPv4Network]


def _public_ip_spaces(
    vpc: IPv4Network | None, service: IPv4Network | None, remote: list[tuple[IPv4Network, str]]
) -> list[_Space]:
    """The VPC, the service network and the remote networks, in the order findings name
    the first one a public address lies in."""
    named = [("cluster.vpcCIDR", vpc), ("cluster.serviceCIDR", service)]
    named += [(where, net) for net, where in remote]
    return [(*span(net), where, net) for where, net in named if net is not None]


def _check_public_ip(ip: IPv4Address, path: str, spaces: list[_Space], out: list[Finding]) -> None:
    value = int(ip)
    for first, last, where, net in spaces:
        if first <= value <= last:
            _err(
                out,
                "vpn.public-ip-overlap",
                path,
                f"public address {ip} lies inside {where} ({net}); IKE would enter the tunnel",
            )
            return


def _usable(net: IPv4Network, first: int, last: int, value: int) -> bool:
    """Whether ``value``, an address inside ``net`` (``first`` to ``last``), may be a
    host's: anything but the network and broadcast address of a /30 or larger."""
    return net.prefixlen >= 31 or first < value < last


# Pools ---------------------------------------------------------------------------------


def _within_any(s: tuple[int, int], candidates: list[tuple[tuple[int, int], int]]) -> int | None:
    for outer, idx in candidates:
        if contains(outer, s):
            return idx
    return None


def _check_pools(res: Resolved, out: list[Finding]) -> None:
    remote_node_spans = [(span(net), i) for i, (net, _) in enumerate(res.remote_nodes)]
    remote_pod_spans = [(span(net), i) for i, (net, _) in enumerate(res.remote_pods)]
    used_nodes: set[int] = set()
    used_pods: set[int] = set()
    pool_names: dict[str, str] = {}
    node_names: dict[str, str] = {}
    node_ips: dict[int, str] = {}
    public_ips = dict.fromkeys(map(int, res.endpoint_ips), "cluster.vpnEndpoint")
    intervals: list[tuple[int, int, tuple[str, IPv4Network]]] = []
    spaces = _public_ip_spaces(res.vpc_cidr, res.service_cidr, res.remote_nodes + res.remote_pods)

    keys = member_keys([pool.name for pool in res.doc.pools])
    for key, pool in zip(keys, res.doc.pools, strict=True):
        p = f"pools[{key}]"
        if not is_dns1123_label(pool.name):
            _err(out, "pool.name", f"{p}.name", f"{pool.name!r} is not a DNS-1123 label")
        elif pool.name in pool_names:
            _err(
                out,
                "pool.name",
                f"{p}.name",
                f"{pool.name!r} is already the name of {pool_names[pool.name]}",
            )
        else:
            pool_names[pool.name] = p
        if not is_dns1123_label(pool.site):
            _err(out, "pool.site", f"{p}.site", f"{pool.site!r} is not a DNS-1123 label")

        node_cidr = parse_cidr(pool.node_cidr, f"{p}.nodeCIDR", out)
        pod_cidr = parse_cidr(pool.pod_cidr, f"{p}.podCIDR", out)
        vs = pool.vpn_server
        inside_ip = parse_ip(vs.inside_ip, f"{p}.vpnServer.insideIP", out)
        public_ip = parse_ip(vs.public_ip, f"{p}.vpnServer.publicIP", out)
        main_router_ip = (
            parse_ip(pool.main_router_ip, f"{p}.mainRouterIP", out)
            if pool.main_router_ip is not None
            else None
        )
        rpool = RPool(p, pool, node_cidr, pod_cidr, inside_ip, public_ip, main_router_ip)
        res.pools.append(rpool)

        node_span = None
        if node_cidr is not None:
            node_span = span(node_cidr)
            intervals.append((*node_span, (f"{p}.nodeCIDR", node_cidr)))
            hit = _within_any(node_span, remote_node_spans)
            if hit is None:
                _err(
                    out,
                    "pool.node-cidr-in-remote",
                    f"{p}.nodeCIDR",
                    f"{node_cidr} is not inside any cluster.remoteNodeNetworks entry",
                )
            else:
                used_nodes.add(hit)
        if pod_cidr is not None:
            pod_span = span(pod_cidr)
            intervals.append((*pod_span, (f"{p}.podCIDR", pod_cidr)))
            hit = _within_any(pod_span, remote_pod_spans)
            if hit is None:
                _err(
                    out,
                    "pool.pod-cidr-in-remote",
                    f"{p}.podCIDR",
                    f"{pod_cidr} is not inside any cluster.remotePodNetworks entry",
                )
            else:
                used_pods.add(hit)
            _check_pod_mask(pool, pod_cidr, p, out)

        for asn, where in ((pool.node_asn, f"{p}.nodeASN"), (vs.asn, f"{p}.vpnServer.asn")):
            if asn is not None and not 1 <= asn <= MAX_ASN:
                _err(out, "pool.asn", where, f"{asn} is not a valid AS number (1-{MAX_ASN})")
        if pool.routing == "bgp" and vs.asn is None:
            _err(out, "vpn.asn-required", f"{p}.vpnServer.asn", "routing: bgp needs an AS number")

        if inside_ip is not None and node_cidr is not None and node_span is not None:
            if not node_span[0] <= int(inside_ip) <= node_span[1]:
                _err(
                    out,
                    "vpn.inside-ip",
                    f"{p}.vpnServer.insideIP",
                    f"{inside_ip} is not inside nodeCIDR {node_cidr}",
                )
            elif not _usable(node_cidr, *node_span, int(inside_ip)):
                _err(
                    out,
                    "vpn.inside-ip",
                    f"{p}.vpnServer.insideIP",
                    f"{inside_ip} is the network or broadcast address of {node_cidr}",
                )
        if public_ip is not None:
            where, server = f"{p}.vpnServer.publicIP", f"{p}.vpnServer"
            if (known := public_ips.setdefault(int(public_ip), server)) is not server:
                _err(
                    out,
                    "vpn.public-ip-unique",
                    where,
                    f"{public_ip} is already used by {known}; every pool needs its own VPN server",
                )
            _check_public_ip(public_ip, where, spaces, out)
        _check_main_router(rpool, p, node_span, out)

        if not pool.nodes:
            _warn(out, "pool.empty", f"{p}.nodes", "the pool has no nodes")
        _check_nodes(rpool, p, node_span, node_names, node_ips, out)

    for later, earlier in sweep_overlaps(intervals):
        _err(
            out,
            "pool.overlap",
            later[0],
            f"{later[1]} overlaps {earlier[0]} ({earlier[1]})",
        )
    if res.doc.pools:
        for used, nets, what in (
            (used_nodes, res.remote_nodes, "nodeCIDR"),
            (used_pods, res.remote_pods, "podCIDR"),
        ):
            for i, (net, path) in enumerate(nets):
                if i not in used:
                    _warn(out, "cluster.remote-unused", path, f"no pool's {what} lies in {net}")


def _check_pod_mask(pool: Pool, pod_cidr: IPv4Network, p: str, out: list[Finding]) -> None:
    mask = pool.pod_cidr_mask_per_node
    where = f"{p}.podCIDRMaskPerNode"
    if not pod_cidr.prefixlen <= mask <= 32:
        _err(
            out,
            "pool.pod-mask",
            where,
            f"/{mask} must be between the podCIDR prefix /{pod_cidr.prefixlen} and /32",
        )
        return
    blocks = 1 << (mask - pod_cidr.prefixlen)
    count = len(pool.nodes)
    if count > blocks:
        _err(
            out,
            "pool.pod-capacity",
            where,
            f"/{mask} blocks in {pod_cidr} give {blocks} node blocks for {count} nodes; "
            f"use a longer mask (at least /{pod_cidr.prefixlen + (count - 1).bit_length()}) "
            "or a larger podCIDR",
        )
    elif count > UTILISATION_WARNING * blocks:
        _warn(
            out,
            "pool.pod-utilisation",
            f"{p}.podCIDR",
            f"{count} of {blocks} /{mask} blocks used (more than 80%)",
        )


def _check_main_router(
    rpool: RPool, p: str, node_span: tuple[int, int] | None, out: list[Finding]
) -> None:
    ip = rpool.main_router_ip
    where = f"{p}.mainRouterIP"
    if ip is None:
        return
    if rpool.pool.vpn_server.is_main_router:
        _err(
            out,
            "pool.main-router-ip",
            where,
            "set only when vpnServer.isMainRouter is false",
        )
    elif (
        rpool.node_cidr is not None
        and node_span is not None
        and not (
            node_span[0] <= int(ip) <= node_span[1]
            and _usable(rpool.node_cidr, *node_span, int(ip))
        )
    ):
        _err(
            out,
            "pool.main-router-ip",
            where,
            f"{ip} is not a usable address of nodeCIDR {rpool.node_cidr}",
        )
    elif ip == rpool.inside_ip:
        _err(out, "pool.main-router-ip", where, f"{ip} is the VPN server's insideIP")


def _check_nodes(
    rpool: RPool,
    p: str,
    node_span: tuple[int, int] | None,
    node_names: dict[str, str],
    node_ips: dict[int, str],
    out: list[Finding],
) -> None:
    node_cidr = rpool.node_cidr
    first, last = node_span if node_span is not None else (0, -1)
    inside = -1 if rpool.inside_ip is None else int(rpool.inside_ip)
    main_router = -1 if rpool.main_router_ip is None else int(rpool.main_router_ip)
    pod_cidr = rpool.pod_cidr
    mask = rpool.pool.pod_cidr_mask_per_node
    pinned: list[tuple[int, int, tuple[str, IPv4Network]]] = []
    keys = member_keys([node.name for node in rpool.pool.nodes])
    for key, node in zip(keys, rpool.pool.nodes, strict=True):
        n = f"{p}.nodes[{key}]"
        if not is_dns1123_subdomain(node.name):
            _err(out, "node.name", f"{n}.name", f"{node.name!r} is not a DNS-1123 subdomain")
        elif node.name in node_names:
            _err(
                out,
                "node.name-unique",
                f"{n}.name",
                f"{node.name!r} is already the name of {node_names[node.name]}",
            )
        else:
            node_names[node.name] = n
        ip = parse_ip(node.ip, f"{n}.ip", out)
        if ip is not None:
            value = int(ip)
            if (known := node_ips.setdefault(value, n)) is not n:
                _err(out, "node.ip-unique", f"{n}.ip", f"{ip} is already used by {known}")
            if node_cidr is not None:
                if not first <= value <= last:
                    _err(
                        out,
                        "node.ip-in-node-cidr",
                        f"{n}.ip",
                        f"{ip} is not inside the pool's nodeCIDR {node_cidr}",
                    )
                elif not _usable(node_cidr, first, last, value):
                    _err(
                        out,
                        "node.ip-reserved",
                        f"{n}.ip",
                        f"{ip} is the network or broadcast address of {node_cidr}",
                    )
            if value == inside:
                _err(out, "node.ip-vpn-server", f"{n}.ip", f"{ip} is the VPN server's insideIP")
            if value == main_router:
                _err(out, "node.ip-reserved", f"{n}.ip", f"{ip} is the pool's mainRouterIP")
        pinned_cidr = None
        if node.pod_cidr is not None:
            where = f"{n}.podCIDR"
            pinned_cidr = parse_cidr(node.pod_cidr, where, out)
            if pinned_cidr is not None and pod_cidr is not None:
                if not pinned_cidr.subnet_of(pod_cidr):
                    _err(
                        out,
                        "node.pod-cidr-in-pool",
                        where,
                        f"{pinned_cidr} is not inside the pool's podCIDR {pod_cidr}",
                    )
                    pinned_cidr = None
                elif pinned_cidr.prefixlen != mask:
                    _err(
                        out,
                        "node.pod-cidr-mask",
                        where,
                        f"{pinned_cidr} is not a /{mask} (podCIDRMaskPerNode)",
                    )
                    pinned_cidr = None
                else:
                    pinned.append((*span(pinned_cidr), (where, pinned_cidr)))
        rpool.nodes.append(RNode(node.name, ip, pinned_cidr))
    for later, earlier in sweep_overlaps(pinned) if pinned else ():
        _err(
            out,
            "node.pod-cidr-overlap",
            later[0],
            f"{later[1]} overlaps {earlier[0]} ({earlier[1]})",
        )


__all__ = ["RNode", "RPool", "Resolved", "check_document"]
