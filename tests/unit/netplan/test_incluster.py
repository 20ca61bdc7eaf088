"""What the cluster must hold for a plan (pure): BGP objects, Node pod CIDRs, conditions."""

from __future__ import annotations

from typing import Any

from tether.netplan import PoolPlan, load_document
from tether.netplan.incluster import (
    KINDS,
    ManagedObject,
    ObservedNode,
    failed_condition,
    kind_of,
    observed_allocations,
    plan_cluster,
    plan_pools,
)

Doc = dict[str, Any]


def _pools(doc: Doc, previous: dict[str, str] | None = None) -> tuple[PoolPlan, ...]:
    parsed, findings = load_document(doc)
    assert parsed is not None, findings
    pools, findings = plan_pools(parsed, previous or {})
    assert pools, findings
    return pools


def _registered(*names: str, **cidrs: str) -> dict[str, ObservedNode]:
    nodes = {n: ObservedNode() for n in names}
    nodes.update({n: ObservedNode(pod_cidrs=(c,)) for n, c in cidrs.items()})
    return nodes


ALL = ("dc1-n1", "dc1-n2", "store7-n1", "store7-n2")


def test_every_registered_node_gets_its_planned_block_and_bgp_pools_their_objects(
    doc: Doc,
) -> None:
    pools = _pools(doc)
    out = plan_cluster("prod", pools, {}, _registered(*ALL), [])
    blocks = {n.name: str(n.pod_cidr) for p in pools for n in p.nodes}
    assert {name: patch for name, (_, patch) in out.node_patches.items()} == {
        name: {"spec": {"podCIDR": block, "podCIDRs": [block]}} for name, block in blocks.items()
    }
    assert blocks["store7-n2"] == "10.85.70.0/24"  # pinned in the document
    assert [(pool, obj["kind"]) for pool, obj in out.apply] == [
        ("dc1", "CiliumBGPClusterConfig"),
        ("dc1", "CiliumBGPPeerConfig"),
        ("dc1", "CiliumBGPAdvertisement"),
    ]
    assert all(obj["metadata"]["labels"]["tether.io/cluster"] == "prod" for _, obj in out.apply)
    assert {p: (c.status, c.reason) for p, c in out.pools.items()} == {
        "dc1": ("True", "Applied"),
        "store7": ("True", "Applied"),
    }


def test_a_node_that_has_its_block_is_left_alone(doc: Doc) -> None:
    first = plan_cluster("prod", _pools(doc), {}, _registered(*ALL), [])
    seen = {
        n: ObservedNode(pod_cidrs=(p["spec"]["podCIDR"],))
        for n, (_, p) in first.node_patches.items()
    }
    pools = _pools(doc, observed_allocations(seen))
    again = plan_cluster("prod", pools, {}, seen, [])
    assert again.node_patches == {}
    assert again.pools["store7"].reason == "Applied"


def test_observed_blocks_win_over_the_hash_and_foreign_ones_are_reported(doc: Doc) -> None:
    seen = _registered("dc1-n2", "store7-n1", "store7-n2", **{"dc1-n1": "10.85.33.0/24"})
    pools = _pools(doc, observed_allocations(seen))
    assert {n.name: str(n.pod_cidr) for n in pools[0].nodes}["dc1-n1"] == "10.85.33.0/24"
    assert "dc1-n1" not in plan_cluster("prod", pools, {}, seen, []).node_patches

    seen["store7-n1"] = ObservedNode(pod_cidrs=("10.244.1.0/24",))  # another IPAM's block
    pools = _pools(doc, observed_allocations(seen))
    out = plan_cluster("prod", pools, {}, seen, [])
    assert "store7-n1" not in out.node_patches  # immutable once set: never patched
    assert out.pools["store7"].status == "False"
    assert out.pools["store7"].reason == "PodCIDRConflict"
    assert "store7-n1 has 10.244.1.0/24" in out.pools["store7"].message


def test_unregistered_nodes_keep_the_condition_false(doc: Doc) -> None:
    out = plan_cluster("prod", _pools(doc), {}, _registered("dc1-n1"), [])
    assert (out.pools["dc1"].status, out.pools["dc1"].reason) == ("False", "NodesNotRegistered")
    assert "dc1-n2" in out.pools["dc1"].message
    assert set(out.node_patches) == {"dc1-n1"}


def test_calico_pools_get_calico_crds_and_the_node_as_annotation(doc: Doc) -> None:
    out = plan_cluster("prod", _pools(doc), {"dc1": "calico"}, _registered(*ALL), [])
    assert [(o["apiVersion"], o["kind"]) for _, o in out.apply] == [
        ("crd.projectcalico.org/v1", "IPPool"),
        ("crd.projectcalico.org/v1", "BGPPeer"),
    ]
    _, patch = out.node_patches["dc1-n1"]
    assert patch["metadata"] == {"annotations": {"projectcalico.org/ASNumber": "64512"}}
    _, static = out.node_patches["store7-n1"]
    assert "metadata" not in static  # static pools peer with nobody


def test_objects_of_gone_or_changed_pools_are_deleted_and_wanted_ones_kept(doc: Doc) -> None:
    cilium = {k.kind: k for k in KINDS}
    managed = [
        ManagedObject(cilium["CiliumBGPClusterConfig"], "tether-dc1", "dc1"),
        ManagedObject(cilium["CiliumBGPClusterConfig"], "tether-old", "old"),
        ManagedObject(cilium["BGPPeer"], "tether-dc1-vpn-server", "dc1"),  # CNI switched
    ]
    out = plan_cluster("prod", _pools(doc), {}, _registered(*ALL), managed)
    assert [(d.kind.kind, d.name) for d in out.delete] == [
        ("CiliumBGPClusterConfig", "tether-old"),
        ("BGPPeer", "tether-dc1-vpn-server"),
    ]
    assert kind_of(out.apply[0][1]).plural == "ciliumbgpclusterconfigs"


def test_static_pools_and_empty_bgp_pools_need_no_bgp_objects(doc: Doc) -> None:
    doc["pools"][0]["nodes"] = []
    out = plan_cluster("prod", _pools(doc), {}, _registered(*ALL), [])
    assert out.apply == []
    assert out.pools["dc1"].message == "podCIDR set on 0 node(s)"


def test_a_missing_crd_is_named_as_the_thing_to_install_first() -> None:
    cilium = [k for k in KINDS if k.api_version.startswith("cilium.io/")]
    calico = [k for k in KINDS if k not in cilium]
    got = failed_condition(cilium[:2], ["deleting BGPPeer x: 403 Forbidden"])
    assert (got.status, got.reason) == ("False", "CRDNotInstalled")
    assert got.message.startswith(
        "the cluster does not serve ciliumbgpclusterconfigs.cilium.io, "
        "ciliumbgppeerconfigs.cilium.io: install Cilium's CRDs"
    )
    assert got.message.endswith("; deleting BGPPeer x: 403 Forbidden")
    assert "install Calico's CRDs" in failed_condition(calico, []).message
    other = failed_condition([], ["applying IPPool p: 422 Invalid"])
    assert (other.reason, other.message) == ("ApplyFailed", "applying IPPool p: 422 Invalid")
