"""Property tests: random valid documents pass and allocate disjoint blocks; one broken
rule is always reported under that rule."""

from __future__ import annotations

import copy
import itertools
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tether.netplan import Severity, check, check_data, load_document, plan, psk_ids

Doc = dict[str, Any]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _net(base: str, offset: int, prefix: int) -> IPv4Network:
    return IPv4Network((int(IPv4Address(base)) + offset, prefix))


@st.composite
def documents(draw: st.DrawFn) -> Doc:
    """A valid HybridNetwork with 1-6 pools spread over 1-3 remote node/pod networks."""
    n_pools = draw(st.integers(1, 6))
    allow_cgnat = draw(st.booleans())
    pod_space = "100.64.0.0" if allow_cgnat and draw(st.booleans()) else "10.64.0.0"
    n_node_nets = draw(st.integers(1, 3))
    n_pod_nets = draw(st.integers(1, 3))
    node_nets = [_net("10.0.0.0", i << 20, 12) for i in range(n_node_nets)]
    pod_nets = [_net(pod_space, i << 20, 12) for i in range(n_pod_nets)]
    vpc = _net("172.16.0.0", draw(st.integers(0, 7)) << 16, 16)
    service = draw(st.sampled_from([IPv4Network("172.24.0.0/13"), _net("172.24.0.0", 5 << 16, 16)]))
    pools = []
    for i in range(n_pools):
        node_prefix = draw(st.integers(22, 28))
        node_cidr = _net(
            str(node_nets[i % n_node_nets].network_address), (i // n_node_nets) << 10, 22
        )
        node_cidr = IPv4Network((node_cidr.network_address, node_prefix))
        n_nodes = draw(st.integers(0, 6))
        pod_prefix = draw(st.integers(16, 24))
        pod_cidr = _net(str(pod_nets[i % n_pod_nets].network_address), (i // n_pod_nets) << 16, 16)
        pod_cidr = IPv4Network((pod_cidr.network_address, pod_prefix))
        need = (n_nodes - 1).bit_length() if n_nodes > 1 else 0
        mask = draw(st.integers(pod_prefix + need, min(pod_prefix + 8, 32)))
        slots = 1 << (mask - pod_prefix)
        pinned_slots = draw(
            st.lists(st.integers(0, min(slots, 256) - 1), unique=True, max_size=n_nodes)
        )
        nodes: list[dict[str, Any]] = []
        for j in range(n_nodes):
            node: dict[str, Any] = {"name": f"p{i}-n{j}", "ip": str(node_cidr[2 + j])}
            if j < len(pinned_slots):
                node["podCIDR"] = str(
                    IPv4Network(
                        (int(pod_cidr.network_address) + (pinned_slots[j] << (32 - mask)), mask)
                    )
                )
            nodes.append(node)
        routing = draw(st.sampled_from(["bgp", "static"]))
        main_router = draw(st.booleans())
        pool: dict[str, Any] = {
            "name": f"p{i}",
            "site": f"s{i % 3}",
            "nodeCIDR": str(node_cidr),
            "podCIDR": str(pod_cidr),
            "podCIDRMaskPerNode": mask,
            "routing": routing,
            "vpnServer": {
                "publicIP": f"203.0.113.{i + 1}",
                "insideIP": str(node_cidr[1]),
                "isMainRouter": main_router,
            },
            "nodes": nodes,
        }
        if routing == "bgp" or draw(st.booleans()):
            pool["vpnServer"]["asn"] = 64600 + i
        if not main_router and draw(st.booleans()):
            pool["mainRouterIP"] = str(node_cidr[-2])
        pools.append(pool)
    return {
        "apiVersion": "tether.io/v1alpha1",
        "kind": "HybridNetwork",
        "cluster": {
            "name": "c1",
            "vpcCIDR": str(vpc),
            "serviceCIDR": str(service),
            "remoteNodeNetworks": [str(n) for n in node_nets],
            "remotePodNetworks": [str(n) for n in pod_nets],
            "allowCGNAT": allow_cgnat,
            "vpnEndpoint": {"publicIP": "198.51.100.10"},
        },
        "pools": pools,
    }


def _plan_of(data: Doc, previous: dict[str, str] | None = None) -> Any:
    doc, findings = load_document(data)
    assert doc is not None, findings
    return plan(doc, dict.fromkeys(psk_ids(doc), "ab" * 16), previous)


@SETTINGS
@given(documents())
def test_random_valid_documents_pass_and_allocations_never_overlap(data: Doc) -> None:
    doc, findings = load_document(data)
    assert doc is not None, findings
    errors = [f for f in check(doc) if f.severity is Severity.ERROR]
    assert errors == []
    result = _plan_of(data)
    blocks: list[IPv4Network] = []
    for pool_plan, pool in zip(result.pools, data["pools"], strict=True):
        for node_plan, node in zip(pool_plan.nodes, pool["nodes"], strict=True):
            assert node_plan.pod_cidr.subnet_of(pool_plan.pod_cidr)
            assert node_plan.pod_cidr.prefixlen == pool["podCIDRMaskPerNode"]
            if "podCIDR" in node:
                assert str(node_plan.pod_cidr) == node["podCIDR"]
            blocks.append(node_plan.pod_cidr)
    ordered = sorted(blocks, key=lambda b: int(b.network_address))
    for a, b in itertools.pairwise(ordered):
        assert not a.overlaps(b), (a, b)


@SETTINGS
@given(documents(), st.data())
def test_removing_or_adding_a_node_never_moves_another_block(
    data: Doc, draw: st.DataObject
) -> None:
    first = _plan_of(data).allocations()
    changed = copy.deepcopy(data)
    candidates = [p for p in changed["pools"] if p["nodes"]]
    assume(candidates)
    pool = draw.draw(st.sampled_from(candidates))
    if draw.draw(st.booleans()):
        removed = pool["nodes"].pop(draw.draw(st.integers(0, len(pool["nodes"]) - 1)))
        first.pop(removed["name"])
    else:
        prefix = int(pool["podCIDR"].split("/")[1])
        assume(len(pool["nodes"]) < 1 << (pool["podCIDRMaskPerNode"] - prefix))
        node_cidr = IPv4Network(pool["nodeCIDR"])
        pool["nodes"].append({"name": f"{pool['name']}-new", "ip": str(node_cidr[12])})
    second = _plan_of(changed, previous=first).allocations()
    assert {name: second[name] for name in first} == first


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=documents())
def test_a_mutation_is_reported_with_its_rule(data: Doc, mutation: Any, mutate: Any) -> None:
    assume(mutate(data, mutation))
    findings = check_data(data)
    rules = {f.rule for f in findings if f.severity is Severity.ERROR}
    assert mutation.rule in rules, (mutation, findings)
    assert rules <= {mutation.rule} | mutation.also, (mutation, findings)
