"""Shared pieces of the network planner tests: a valid document and rule-breaking mutations.

The mutations are exposed through session fixtures so both the example-based tests and
the hypothesis property tests use the same table (test modules are imported by path,
so they cannot import each other).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

Doc = dict[str, Any]


def example_doc() -> Doc:
    """Two sites: dc1 with BGP, store7 static behind a separate main router."""
    return {
        "apiVersion": "tether.io/v1alpha1",
        "kind": "HybridNetwork",
        "cluster": {
            "name": "prod",
            "vpcCIDR": "10.226.0.0/16",
            "serviceCIDR": "172.20.0.0/16",
            "remoteNodeNetworks": ["10.80.0.0/16"],
            "remotePodNetworks": ["10.85.0.0/16"],
            "allowCGNAT": False,
            "vpnEndpoint": {"publicIP": "198.51.100.10"},
        },
        "pools": [
            {
                "name": "dc1",
                "site": "dc1",
                "nodeCIDR": "10.80.1.0/24",
                "podCIDR": "10.85.0.0/18",
                "podCIDRMaskPerNode": 24,
                "routing": "bgp",
                "vpnServer": {
                    "publicIP": "203.0.113.5",
                    "insideIP": "10.80.1.1",
                    "isMainRouter": True,
                    "asn": 64513,
                },
                "nodes": [
                    {"name": "dc1-n1", "ip": "10.80.1.11"},
                    {"name": "dc1-n2", "ip": "10.80.1.12"},
                ],
            },
            {
                "name": "store7",
                "site": "store7",
                "nodeCIDR": "10.80.2.0/24",
                "podCIDR": "10.85.64.0/20",
                "podCIDRMaskPerNode": 24,
                "routing": "static",
                "vpnServer": {
                    "publicIP": "203.0.113.77",
                    "insideIP": "10.80.2.2",
                    "isMainRouter": False,
                },
                "mainRouterIP": "10.80.2.1",
                "nodes": [
                    {"name": "store7-n1", "ip": "10.80.2.11"},
                    {"name": "store7-n2", "ip": "10.80.2.12", "podCIDR": "10.85.70.0/24"},
                ],
            },
        ],
    }


@dataclass(frozen=True)
class Mutation:
    """Breaks one rule of a valid document, in place; returns False when not applicable."""

    name: str
    rule: str
    apply: Callable[[Doc], bool]
    #: other error rules the same change may trigger as a consequence
    also: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        return self.name


def _pool_with_nodes(doc: Doc, count: int) -> dict[str, Any] | None:
    for pool in doc["pools"]:
        if len(pool["nodes"]) >= count:
            return pool  # type: ignore[no-any-return]
    return None


def _unpin(pool: dict[str, Any]) -> None:
    for node in pool["nodes"]:
        node.pop("podCIDR", None)


def _m_remote_append(key: str, value: str) -> Callable[[Doc], bool]:
    def apply(doc: Doc) -> bool:
        doc["cluster"][key].append(value)
        return True

    return apply


def _cgnat_not_allowed(doc: Doc) -> bool:
    cluster = doc["cluster"]
    if any(
        n.startswith("100.") for n in cluster["remoteNodeNetworks"] + cluster["remotePodNetworks"]
    ):
        return False  # the document relies on CGNAT already
    cluster["allowCGNAT"] = False
    cluster["remotePodNetworks"].append("100.64.0.0/16")
    return True


def _m_remote_count(doc: Doc) -> bool:
    nets = doc["cluster"]["remoteNodeNetworks"]
    nets.extend(f"192.168.{i}.0/24" for i in range(16 - len(nets)))
    return True


def _m_vpc_service(doc: Doc) -> bool:
    vpc = doc["cluster"]["vpcCIDR"]
    doc["cluster"]["serviceCIDR"] = vpc
    return True


def _m_node_cidr_outside(doc: Doc) -> bool:
    pool = doc["pools"][0]
    pool["nodeCIDR"] = "192.168.77.0/24"
    return True


def _m_pod_cidr_outside(doc: Doc) -> bool:
    pool = doc["pools"][0]
    _unpin(pool)
    pool["podCIDR"] = "192.168.0.0/16"
    pool["podCIDRMaskPerNode"] = 24
    return True


def _m_pools_overlap(doc: Doc) -> bool:
    if len(doc["pools"]) < 2:
        return False
    first, second = doc["pools"][0], doc["pools"][1]
    _unpin(second)
    second["podCIDR"] = first["podCIDR"]
    second["podCIDRMaskPerNode"] = first["podCIDRMaskPerNode"]
    return True


def _m_pod_capacity(doc: Doc) -> bool:
    pool = _pool_with_nodes(doc, 2)
    if pool is None:
        return False
    _unpin(pool)
    prefix = int(pool["podCIDR"].split("/")[1])
    pool["podCIDRMaskPerNode"] = prefix  # one block for two or more nodes
    return True


def _m_pod_mask(doc: Doc) -> bool:
    pool = doc["pools"][0]
    _unpin(pool)
    prefix = int(pool["podCIDR"].split("/")[1])
    pool["podCIDRMaskPerNode"] = prefix - 1
    return True


def _m_node(field: str, value: Callable[[dict[str, Any], dict[str, Any]], Any]) -> Any:
    def apply(doc: Doc) -> bool:
        pool = _pool_with_nodes(doc, 1)
        if pool is None:
            return False
        pool["nodes"][0][field] = value(pool, pool["nodes"][0])
        return True

    return apply


def _m_second_node_copies(field: str) -> Callable[[Doc], bool]:
    def apply(doc: Doc) -> bool:
        pool = _pool_with_nodes(doc, 2)
        if pool is None:
            return False
        pool["nodes"][1][field] = pool["nodes"][0][field]
        return True

    return apply


def _network_address(pool: dict[str, Any], _node: dict[str, Any]) -> str:
    return str(pool["nodeCIDR"].split("/")[0])


def _pin_overlap(doc: Doc) -> bool:
    pool = _pool_with_nodes(doc, 2)
    if pool is None:
        return False
    import ipaddress

    block = next(
        ipaddress.IPv4Network(pool["podCIDR"]).subnets(new_prefix=pool["podCIDRMaskPerNode"])
    )
    _unpin(pool)
    pool["nodes"][0]["podCIDR"] = str(block)
    pool["nodes"][1]["podCIDR"] = str(block)
    return True


def _pin_wrong_mask(doc: Doc) -> bool:
    pool = _pool_with_nodes(doc, 1)
    if pool is None or pool["podCIDRMaskPerNode"] >= 32:
        return False
    import ipaddress

    _unpin(pool)
    block = next(
        ipaddress.IPv4Network(pool["podCIDR"]).subnets(new_prefix=pool["podCIDRMaskPerNode"] + 1)
    )
    pool["nodes"][0]["podCIDR"] = str(block)
    return True


def _pin_outside(doc: Doc) -> bool:
    pool = _pool_with_nodes(doc, 1)
    if pool is None:
        return False
    _unpin(pool)
    pool["nodes"][0]["podCIDR"] = f"192.168.0.0/{pool['podCIDRMaskPerNode']}"
    return True


def _bgp_without_asn(doc: Doc) -> bool:
    pool = doc["pools"][0]
    pool["routing"] = "bgp"
    pool["vpnServer"].pop("asn", None)
    return True


def _public_ip_dup(doc: Doc) -> bool:
    if len(doc["pools"]) < 2:
        return False
    doc["pools"][1]["vpnServer"]["publicIP"] = doc["pools"][0]["vpnServer"]["publicIP"]
    return True


def _public_ip_in_vpc(doc: Doc) -> bool:
    vpc = doc["cluster"]["vpcCIDR"].split("/")[0]
    doc["pools"][0]["vpnServer"]["publicIP"] = vpc[: vpc.rindex(".")] + ".200"
    return True


def _inside_ip_outside(doc: Doc) -> bool:
    doc["pools"][0]["vpnServer"]["insideIP"] = "192.168.254.1"
    return True


def _pool_name_dup(doc: Doc) -> bool:
    if len(doc["pools"]) < 2:
        return False
    doc["pools"][1]["name"] = doc["pools"][0]["name"]
    return True


def _set(path: list[str | int], value: Any) -> Callable[[Doc], bool]:
    def apply(doc: Doc) -> bool:
        target: Any = doc
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value
        return True

    return apply


def _main_router_contradiction(doc: Doc) -> bool:
    pool = doc["pools"][0]
    pool["vpnServer"]["isMainRouter"] = True
    node_cidr = pool["nodeCIDR"].split("/")[0]
    pool["mainRouterIP"] = node_cidr[: node_cidr.rindex(".")] + ".250"
    return True


def _node_ip_is_inside_ip(doc: Doc) -> bool:
    pool = _pool_with_nodes(doc, 1)
    if pool is None:
        return False
    pool["nodes"][0]["ip"] = pool["vpnServer"]["insideIP"]
    return True


MUTATIONS: tuple[Mutation, ...] = (
    Mutation("schema-unknown-field", "schema", _set(["cluster", "colour"], "blue")),
    Mutation("schema-wrong-type", "schema", _set(["pools", 0, "podCIDRMaskPerNode"], "wide")),
    Mutation("api-version", "document.api-version", _set(["apiVersion"], "v1")),
    Mutation("kind", "document.kind", _set(["kind"], "Network")),
    Mutation(
        "cidr-syntax",
        "address.cidr",
        _m_remote_append("remotePodNetworks", "10.99.0.0"),
    ),
    Mutation(
        "ipv6-remote",
        "address.ipv4-only",
        _m_remote_append("remoteNodeNetworks", "fd00::/8"),
    ),
    Mutation(
        "host-bits",
        "address.host-bits",
        _m_remote_append("remoteNodeNetworks", "192.168.1.1/24"),
    ),
    Mutation("ip-syntax", "address.ip", _m_node("ip", lambda _p, _n: "not-an-ip")),
    Mutation("cluster-name", "cluster.name", _set(["cluster", "name"], "Prod_1")),
    Mutation(
        "remote-too-wide",
        "cluster.remote-prefix",
        _m_remote_append("remotePodNetworks", "12.0.0.0/7"),
        also=frozenset({"cluster.remote-private"}),
    ),
    Mutation(
        "remote-public",
        "cluster.remote-private",
        _m_remote_append("remoteNodeNetworks", "8.8.8.0/24"),
    ),
    Mutation(
        "remote-cgnat-not-allowed",
        "cluster.remote-private",
        _cgnat_not_allowed,
    ),
    Mutation("remote-count", "cluster.remote-count", _m_remote_count),
    Mutation(
        "remote-overlap",
        "cluster.remote-overlap",
        _m_remote_append("remotePodNetworks", "PLACEHOLDER-NODE0"),
    ),
    Mutation(
        "remote-vpc-overlap",
        "cluster.remote-vpc-overlap",
        _m_remote_append("remoteNodeNetworks", "PLACEHOLDER-VPC"),
    ),
    Mutation(
        "remote-service-overlap",
        "cluster.remote-service-overlap",
        _m_remote_append("remoteNodeNetworks", "PLACEHOLDER-SERVICE"),
    ),
    Mutation("vpc-service-overlap", "cluster.vpc-service-overlap", _m_vpc_service),
    Mutation(
        "pool-node-cidr-outside",
        "pool.node-cidr-in-remote",
        _m_node_cidr_outside,
        also=frozenset({"node.ip-in-node-cidr", "vpn.inside-ip", "pool.main-router-ip"}),
    ),
    Mutation("pool-pod-cidr-outside", "pool.pod-cidr-in-remote", _m_pod_cidr_outside),
    Mutation(
        "pools-overlap",
        "pool.overlap",
        _m_pools_overlap,
        also=frozenset({"pool.pod-capacity"}),
    ),
    Mutation("pod-capacity", "pool.pod-capacity", _m_pod_capacity),
    Mutation("pod-mask", "pool.pod-mask", _m_pod_mask),
    Mutation("pool-name-dup", "pool.name", _pool_name_dup),
    Mutation("pool-site", "pool.site", _set(["pools", 0, "site"], "DC 1")),
    Mutation("asn-range", "pool.asn", _set(["pools", 0, "nodeASN"], 0)),
    Mutation(
        "main-router-contradiction",
        "pool.main-router-ip",
        _main_router_contradiction,
        also=frozenset({"node.ip-reserved"}),
    ),
    Mutation("bgp-without-asn", "vpn.asn-required", _bgp_without_asn),
    Mutation("inside-ip-outside", "vpn.inside-ip", _inside_ip_outside),
    Mutation("public-ip-dup", "vpn.public-ip-unique", _public_ip_dup),
    Mutation("public-ip-in-vpc", "vpn.public-ip-overlap", _public_ip_in_vpc),
    Mutation("node-name", "node.name", _m_node("name", lambda _p, _n: "Node_1")),
    Mutation("node-name-dup", "node.name-unique", _m_second_node_copies("name")),
    Mutation("node-ip-dup", "node.ip-unique", _m_second_node_copies("ip")),
    Mutation(
        "node-ip-outside", "node.ip-in-node-cidr", _m_node("ip", lambda _p, _n: "192.168.254.9")
    ),
    Mutation("node-ip-network", "node.ip-reserved", _m_node("ip", _network_address)),
    Mutation("node-ip-vpn", "node.ip-vpn-server", _node_ip_is_inside_ip),
    Mutation("pin-outside", "node.pod-cidr-in-pool", _pin_outside),
    Mutation("pin-mask", "node.pod-cidr-mask", _pin_wrong_mask),
    Mutation("pin-overlap", "node.pod-cidr-overlap", _pin_overlap),
)


def apply_mutation(doc: Doc, mutation: Mutation) -> bool:
    """Apply ``mutation`` to ``doc`` (placeholders resolved against the document)."""
    applied = mutation.apply(doc)
    cluster = doc["cluster"]
    for key in ("remoteNodeNetworks", "remotePodNetworks"):
        nets = cluster[key]
        for i, net in enumerate(nets):
            if net == "PLACEHOLDER-VPC":
                nets[i] = _inner(cluster["vpcCIDR"])
            elif net == "PLACEHOLDER-SERVICE":
                nets[i] = _inner(cluster["serviceCIDR"])
            elif net == "PLACEHOLDER-NODE0":
                nets[i] = _inner(cluster["remoteNodeNetworks"][0])
    return applied


def _inner(cidr: str) -> str:
    import ipaddress

    net = ipaddress.IPv4Network(cidr)
    return str(next(net.subnets(new_prefix=min(32, max(net.prefixlen + 1, 24)))))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests asking for ``mutation`` run once per mutation of the table."""
    if "mutation" in metafunc.fixturenames:
        metafunc.parametrize("mutation", MUTATIONS, ids=[m.name for m in MUTATIONS])


@pytest.fixture
def doc() -> Doc:
    return example_doc()


@pytest.fixture(scope="session")
def make_doc() -> Callable[[], Doc]:
    return example_doc


@pytest.fixture(scope="session")
def mutations() -> tuple[Mutation, ...]:
    return MUTATIONS


@pytest.fixture(scope="session")
def mutate() -> Callable[[Doc, Mutation], bool]:
    return apply_mutation


def clone(doc: Doc) -> Doc:
    return copy.deepcopy(doc)
