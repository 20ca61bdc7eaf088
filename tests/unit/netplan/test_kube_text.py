"""The BGP manifests written as text are what dumping their objects writes."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.netplan.allocate import Source
from tether.netplan.model import NodePlan, PoolPlan
from tether.netplan.render import kube
from tether.netplan.render.yamltext import dump_all

#: Names near the edges of YAML's plain style, besides ordinary ones.
NAMES = st.one_of(
    st.sampled_from(["dc1", "yes", "null", "1", "0x1f", "1e3", "a: b", "a #b", "x" * 600]),
    st.text(alphabet="ab1.-_/ :#'\"{}", min_size=1, max_size=12),
)


def _pool(name: str, nodes: list[str], node_asn: int, vpn_asn: int | None, mask: int) -> PoolPlan:
    net = IPv4Network("10.1.0.0/16")
    return PoolPlan(
        name=name,
        site="s",
        routing="bgp",
        node_cidr=net,
        pod_cidr=IPv4Network("10.2.0.0/16"),
        pod_cidr_mask_per_node=mask,
        node_asn=node_asn,
        vpn_public_ip=IPv4Address("198.18.0.1"),
        vpn_inside_ip=IPv4Address("10.1.0.1"),
        vpn_asn=vpn_asn,
        is_main_router=True,
        main_router_ip=None,
        nodes=tuple(
            NodePlan(n, IPv4Address("10.1.0.2"), IPv4Network("10.2.0.0/24"), Source.ALLOCATED)
            for n in nodes
        ),
        vpc_routes=(),
        static_routes=(net, net),
        tunnels=(),
        vpn_server_routes=(),
        main_router_routes=(),
    )


POOLS = st.builds(
    _pool,
    NAMES,
    st.lists(NAMES, max_size=3),
    st.integers(1, 4294967295),
    st.one_of(st.none(), st.integers(1, 4294967295)),
    st.integers(16, 32),
)


@settings(max_examples=300, deadline=None)
@given(POOLS)
def test_the_bgp_manifests_are_the_dumped_objects(pool: PoolPlan) -> None:
    cilium, calico = kube.cilium_bgp("c", pool), kube.calico_bgp("c", pool)
    assert cilium == dump_all(kube.cilium_bgp_objects(pool), cilium.partition("---\n")[0])
    assert calico == dump_all(kube.calico_bgp_objects(pool), calico.partition("---\n")[0])


def test_an_ordinary_pool_is_written_as_text(monkeypatch: Any) -> None:
    """The fast path is taken for a pool of a checked plan (not the objects behind it)."""
    pool = _pool("dc1", ["dc1-n1", "dc1-n2"], 64512, 65000, 25)
    expected = kube.cilium_bgp("c", pool), kube.calico_bgp("c", pool)
    monkeypatch.setattr(kube, "dump_all", None)
    assert (kube.cilium_bgp("c", pool), kube.calico_bgp("c", pool)) == expected
