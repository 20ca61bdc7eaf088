"""The testbed layout (pure): namespaces, gateways and addresses of a plan."""

from __future__ import annotations

from typing import Any

import pytest

from tether.netplan import load_document, plan, psk_ids
from tether.nettest import TopologyError, layout
from tether.nettest.configs import node_bird_conf, strongswan_conf


def _plan(data: dict[str, Any]) -> Any:
    doc, findings = load_document(data)
    assert doc is not None, findings
    return plan(doc, dict.fromkeys(psk_ids(doc), "aa"))


def test_layout_names_and_gateways(doc: dict[str, Any]) -> None:
    topo = layout(_plan(doc), "tntx")
    assert topo.namespaces == [
        "tntx-vpc",
        "tntx-cgw",
        "tntx-vs0",
        "tntx-n0-0",
        "tntx-n0-1",
        "tntx-vs1",
        "tntx-rt1",
        "tntx-n1-0",
        "tntx-n1-1",
    ]
    assert str(topo.vpc_host) == "10.226.0.10/16"
    assert str(topo.vpc_gateway) == "10.226.0.1/16"
    dc1, store7 = topo.sites
    assert {str(n.gateway) for n in dc1.nodes} == {"10.80.1.1"}  # the VPN server
    assert str(store7.router_ip) == "10.80.2.1"
    assert {str(n.gateway) for n in store7.nodes} == {"10.80.2.1"}  # the main router
    for site in topo.sites:
        assert site.vpn_pod_address in site.pool.pod_cidr
        assert all(site.vpn_pod_address not in n.node.pod_cidr for n in site.nodes)


def test_a_missing_main_router_address_is_picked_free(doc: dict[str, Any]) -> None:
    del doc["pools"][1]["mainRouterIP"]
    (_, store7) = layout(_plan(doc), "tntx").sites
    used = {"10.80.2.2", "10.80.2.11", "10.80.2.12"}
    assert store7.router_ip is not None
    assert str(store7.router_ip) not in used


def test_a_full_pod_cidr_cannot_be_laid_out(doc: dict[str, Any]) -> None:
    doc["pools"][1]["podCIDR"] = "10.85.64.0/23"
    doc["pools"][1]["nodes"][1]["podCIDR"] = "10.85.65.0/24"
    with pytest.raises(TopologyError, match="every pod CIDR block is used"):
        layout(_plan(doc), "tntx")


def test_testbed_configs(doc: dict[str, Any], tmp_path: Any) -> None:
    text = strongswan_conf(tmp_path / "charon.vici", tmp_path / "charon.log")
    assert "kernel-libipsec" in text
    assert f"socket = unix://{tmp_path / 'charon.vici'}" in text
    p = _plan(doc)
    dc1 = p.pools[0]
    bird = node_bird_conf(dc1, dc1.nodes[0])
    assert f"route {dc1.nodes[0].pod_cidr} blackhole;" in bird
    assert "neighbor 10.80.1.1 as 64513;" in bird
