"""The planner: routes, tunnels, site routing, manifests, files and secrets."""

from __future__ import annotations

import gc
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tether.netplan import (
    MissingSecretError,
    Plan,
    PlanError,
    load_document,
    parse_allocations,
    plan,
    psk_ids,
)

Doc = dict[str, Any]
KEY = "c0ffee" * 8


def _plan(data: Doc, previous: dict[str, str] | None = None) -> Plan:
    doc, findings = load_document(data)
    assert doc is not None, findings
    return plan(doc, {i: f"{KEY}{n:02x}" for n, i in enumerate(psk_ids(doc))}, previous)


def parse_strongswan(text: str) -> dict[str, Any]:
    """Parse strongSwan's settings syntax (sections in braces, key = value)."""
    root: dict[str, Any] = {}
    stack = [root]
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.endswith("{"):
            section: dict[str, Any] = {}
            stack[-1][line[:-1].strip()] = section
            stack.append(section)
        elif line == "}":
            stack.pop()
        elif line.startswith("include "):
            stack[-1].setdefault("__include__", []).append(line.split(None, 1)[1])
        else:
            key, _, value = line.partition("=")
            stack[-1][key.strip()] = value.strip()
    assert len(stack) == 1, "unbalanced braces"
    return root


def test_vpc_routes_and_vpn_static_routes(doc: Doc) -> None:
    result = _plan(doc)
    dc1 = result.pools[0]
    assert [(str(r.destination), r.target) for r in dc1.vpc_routes] == [
        ("10.80.1.0/24", "vpn-attachment/dc1"),
        ("10.85.0.0/18", "vpn-attachment/dc1"),
    ]
    for pool in result.pools:
        assert [str(r) for r in pool.static_routes] == [str(pool.node_cidr), str(pool.pod_cidr)]
    table = yaml.safe_load(result.files()["cloud/vpc-route-table.yaml"])
    assert len(table["routes"]) == 4
    connections = yaml.safe_load(result.files()["cloud/vpn-connections.yaml"])["connections"]
    assert [len(c["staticRoutes"]) for c in connections] == [2, 2]
    assert [len(c["tunnels"]) for c in connections] == [2, 2]


def test_each_site_has_two_tunnels_with_node_and_pod_children(doc: Doc) -> None:
    files = _plan(doc).files()
    conf = parse_strongswan(files["pools/dc1/vpn-server/swanctl/swanctl.conf"])
    conns = conf["connections"]
    assert sorted(conns) == ["dc1-t1", "dc1-t2"]
    for name, conn in conns.items():
        assert conn["remote_addrs"] == "198.51.100.10"
        assert conn["local"]["auth"] == conn["remote"]["auth"] == "psk"
        children = conn["children"]
        assert children[f"{name}-node"]["local_ts"] == "10.80.1.0/24"
        assert children[f"{name}-pod"]["local_ts"] == "10.85.0.0/18"
        assert {c["remote_ts"] for c in children.values()} == {"10.226.0.0/16"}
        assert {c["start_action"] for c in children.values()} == {"start"}
    assert conf["__include__"] == ["secrets.conf"]
    assert "secret =" not in files["pools/dc1/vpn-server/swanctl/swanctl.conf"]


def test_the_cloud_side_mirrors_every_site(doc: Doc) -> None:
    doc["cluster"]["vpnEndpoint"]["secondaryPublicIP"] = "198.51.100.11"
    result = _plan(doc)
    files = result.files()
    cloud = parse_strongswan(files["cloud/swanctl/swanctl.conf"])["connections"]
    assert sorted(cloud) == ["dc1-t1", "dc1-t2", "store7-t1", "store7-t2"]
    for pool in result.pools:
        site = parse_strongswan(files[f"pools/{pool.name}/vpn-server/swanctl/swanctl.conf"])
        for name, conn in site["connections"].items():
            mirror = cloud[name]
            assert mirror["remote_addrs"] == str(pool.vpn_public_ip)
            assert mirror["local_addrs"] == conn["remote_addrs"]
            assert mirror["local"]["id"] == conn["remote"]["id"]
            assert mirror["remote"]["id"] == conn["local"]["id"]
            for child, ts in conn["children"].items():
                assert mirror["children"][child]["local_ts"] == ts["remote_ts"]
                assert mirror["children"][child]["remote_ts"] == ts["local_ts"]
    assert cloud["dc1-t1"]["local_addrs"] == "198.51.100.10"
    assert cloud["dc1-t2"]["local_addrs"] == "198.51.100.11"


def test_secrets_match_on_both_sides_and_are_only_in_secret_files(doc: Doc) -> None:
    result = _plan(doc)
    files = result.files()
    site = parse_strongswan(files["pools/dc1/vpn-server/swanctl/secrets.conf"])["secrets"]
    cloud = parse_strongswan(files["cloud/swanctl/secrets.conf"])["secrets"]
    assert site["ike-dc1-t1"] == cloud["ike-dc1-t1"]
    assert site["ike-dc1-t1"]["secret"] != site["ike-dc1-t2"]["secret"]
    assert re.fullmatch(r"0x[0-9a-f]{50}", site["ike-dc1-t1"]["secret"])
    for path, content in files.items():
        if path not in result.secret_files():
            assert KEY not in content, path
    public = result.files(include_secrets=False)
    assert set(files) - set(public) == set(result.secret_files())
    assert KEY not in repr(result)
    assert KEY not in json.dumps(result.as_dict())


def test_non_hex_keys_are_quoted(doc: Doc) -> None:
    parsed, _ = load_document(doc)
    assert parsed is not None
    result = plan(parsed, lambda psk_id: f'pass "{psk_id}"')
    text = result.files()["cloud/swanctl/secrets.conf"]
    assert 'secret = "pass \\"dc1-t1\\""' in text


def test_missing_keys_and_invalid_documents_are_refused(doc: Doc) -> None:
    parsed, _ = load_document(doc)
    assert parsed is not None
    with pytest.raises(MissingSecretError, match="dc1-t2"):
        plan(parsed, {"dc1-t1": "aa"})
    doc["pools"][1]["podCIDR"] = doc["pools"][0]["podCIDR"]
    bad, _ = load_document(doc)
    assert bad is not None
    with pytest.raises(PlanError) as caught:
        plan(bad, lambda _i: "aa")
    assert {f.rule for f in caught.value.findings if f.is_error} >= {"pool.overlap"}


def test_static_routing_routes_each_node_block_via_the_node(doc: Doc) -> None:
    result = _plan(doc)
    store7 = result.pools[1]
    assert [(str(r.destination), r.target) for r in store7.vpn_server_routes] == [
        (str(n.pod_cidr), str(n.ip)) for n in store7.nodes
    ]
    script = result.files()["pools/store7/vpn-server/routes.sh"]
    for node in store7.nodes:
        assert f"ip route replace {node.pod_cidr} via {node.ip}" in script
    assert "net.ipv4.ip_forward=1" in script
    assert "pools/store7/vpn-server/bird.conf" not in result.files()
    assert result.pools[0].vpn_server_routes == ()


def test_a_separate_main_router_gets_the_vpc_and_pods_via_the_vpn_server(doc: Doc) -> None:
    result = _plan(doc)
    files = result.files()
    script = files["pools/store7/main-router/routes.sh"]
    assert "ip route replace 10.226.0.0/16 via 10.80.2.2" in script
    assert "ip route replace 10.85.64.0/20 via 10.80.2.2" in script
    assert "pools/dc1/main-router/routes.sh" not in files
    assert result.pools[0].main_router_routes == ()


def test_bird_peers_with_every_node_and_accepts_only_pool_blocks(doc: Doc) -> None:
    doc["pools"][0]["nodes"].append({"name": "dc1.n-1", "ip": "10.80.1.13"})
    doc["pools"][0]["nodes"].append({"name": "dc1-n-1", "ip": "10.80.1.14"})
    text = _plan(doc).files()["pools/dc1/vpn-server/bird.conf"]
    assert "router id 10.80.1.1;" in text
    assert "local 10.80.1.1 as 64513;" in text
    for ip in ("10.80.1.11", "10.80.1.12", "10.80.1.13", "10.80.1.14"):
        assert f"neighbor {ip} as 64512;" in text
    names = re.findall(r"protocol bgp (\S+) from", text)
    assert len(names) == len(set(names)) == 4
    assert "if net ~ [ 10.85.0.0/18{24,32} ] then accept;" in text
    assert "export filter tether_pod_blocks;" in text


def test_cilium_manifests_use_the_current_v2_resources(doc: Doc) -> None:
    text = _plan(doc).files()["pools/dc1/cilium-bgp.yaml"]
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert [(d["apiVersion"], d["kind"]) for d in docs] == [
        ("cilium.io/v2", "CiliumBGPClusterConfig"),
        ("cilium.io/v2", "CiliumBGPPeerConfig"),
        ("cilium.io/v2", "CiliumBGPAdvertisement"),
    ]
    assert "CiliumBGPPeeringPolicy" not in text
    cluster_config, peer_config, advert = docs
    selector = cluster_config["spec"]["nodeSelector"]
    assert selector["matchLabels"] == {"tether.io/compute-type": "hybrid"}
    assert selector["matchExpressions"][0]["values"] == ["dc1-n1", "dc1-n2"]
    (instance,) = cluster_config["spec"]["bgpInstances"]
    assert instance["localASN"] == 64512
    (peer,) = instance["peers"]
    assert (peer["peerASN"], peer["peerAddress"]) == (64513, "10.80.1.1")
    assert peer["peerConfigRef"]["name"] == peer_config["metadata"]["name"]
    wanted = peer_config["spec"]["families"][0]["advertisements"]["matchLabels"]
    assert wanted.items() <= advert["metadata"]["labels"].items()
    assert advert["spec"]["advertisements"] == [{"advertisementType": "PodCIDR"}]


def test_calico_alternative_keeps_the_original_next_hop(doc: Doc) -> None:
    text = _plan(doc).files()["pools/dc1/calico-bgp.yaml"]
    ip_pool, peer = [d for d in yaml.safe_load_all(text) if d]
    assert peer["kind"] == "BGPPeer"
    assert peer["spec"]["keepOriginalNextHop"] is True
    assert peer["spec"]["peerIP"] == "10.80.1.1"
    assert "'dc1-n1'" in peer["spec"]["nodeSelector"]
    assert ip_pool["spec"]["cidr"] == "10.85.0.0/18"
    assert ip_pool["spec"]["blockSize"] == 24


def test_cni_affinity_patches_select_hybrid_nodes(doc: Doc) -> None:
    files = _plan(doc).files()
    for path in ("cni/cilium-affinity-patch.yaml", "cni/calico-node-affinity-patch.yaml"):
        patch = yaml.safe_load(files[path])
        terms = patch["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        keys = {t["matchExpressions"][0]["key"] for t in terms}
        assert keys == {"tether.io/compute-type", "eks.amazonaws.com/compute-type"}
        assert all(t["matchExpressions"][0]["values"] == ["hybrid"] for t in terms)


def test_files_per_mode(doc: Doc) -> None:
    files = set(_plan(doc).files())
    assert {
        "plan.json",
        "allocations.json",
        "pools/dc1/vpn-server/bird.conf",
        "pools/dc1/cilium-bgp.yaml",
        "pools/dc1/calico-bgp.yaml",
        "pools/store7/vpn-server/routes.sh",
        "pools/store7/main-router/routes.sh",
    } <= files
    assert not {"pools/store7/cilium-bgp.yaml", "pools/store7/vpn-server/bird.conf"} & files


def test_allocations_round_trip_and_pins_are_kept(doc: Doc) -> None:
    first = _plan(doc)
    assert first.allocations()["store7-n2"] == "10.85.70.0/24"
    saved = parse_allocations(json.loads(first.files()["allocations.json"]))
    assert saved == first.allocations()
    doc["pools"][0]["nodes"].append({"name": "dc1-n3", "ip": "10.80.1.13"})
    del doc["pools"][0]["nodes"][0]
    second = _plan(doc, previous=saved)
    for name in ("dc1-n2", "store7-n1", "store7-n2"):
        assert second.allocations()[name] == first.allocations()[name]
    sources = {n.name: n.source.value for p in second.pools for n in p.nodes}
    assert sources == {
        "dc1-n2": "previous",
        "dc1-n3": "allocated",
        "store7-n1": "previous",
        "store7-n2": "pinned",
    }
    assert parse_allocations("nonsense") == {}
    assert parse_allocations({"nodes": {"a": 1, "b": "10.0.0.0/24"}}) == {"b": "10.0.0.0/24"}


def test_summary_rows(doc: Doc) -> None:
    rows = _plan(doc).summary()
    assert [(r["pool"], r["routing"], r["nodes"], r["podBlocks"]) for r in rows] == [
        ("dc1", "bgp", 2, "2/64 /24"),
        ("store7", "static", 2, "2/16 /24"),
    ]


def test_plan_json_is_complete_and_secret_free(doc: Doc) -> None:
    result = _plan(doc)
    data = json.loads(result.files()["plan.json"])
    assert data["kind"] == "HybridNetworkPlan"
    assert [p["name"] for p in data["pools"]] == ["dc1", "store7"]
    dc1 = data["pools"][0]
    assert dc1["vpnConnection"]["staticRoutes"] == ["10.80.1.0/24", "10.85.0.0/18"]
    assert len(dc1["vpnConnection"]["tunnels"]) == 2
    assert all(len(t["children"]) == 2 for t in dc1["vpnConnection"]["tunnels"])


def test_calico_peer_carries_only_bgppeer_fields_and_names_the_node_as(doc: Doc) -> None:
    text = _plan(doc).files()["pools/dc1/calico-bgp.yaml"]
    _, peer = [d for d in yaml.safe_load_all(text) if d]
    # BGPPeer has no field for the nodes' own AS: Calico reads it from a Node annotation.
    assert set(peer["spec"]) == {"peerIP", "asNumber", "nodeSelector", "keepOriginalNextHop"}
    assert "projectcalico.org/ASNumber=64512" in text


def test_cni_config_says_kubernetes_ipam(doc: Doc) -> None:
    files = _plan(doc).files()
    values = yaml.safe_load(files["cni/cilium-values.yaml"])
    assert values["ipam"] == {"mode": "kubernetes"}
    assert values["k8s"] == {"requireIPv4PodCIDR": True}
    assert yaml.safe_load(files["cni/calico-cni-ipam.yaml"]) == {
        "ipam": {"type": "host-local", "subnet": "usePodCidr"}
    }


def test_route_scripts_come_with_a_boot_unit(doc: Doc, tmp_path: Path) -> None:
    files = _plan(doc).files()
    units = {p: t for p, t in files.items() if p.endswith(".service")}
    assert sorted(units) == [
        "pools/dc1/vpn-server/tether-routes-dc1-vpn-server.service",
        "pools/store7/main-router/tether-routes-store7-main-router.service",
        "pools/store7/vpn-server/tether-routes-store7-vpn-server.service",
    ]
    unit = units["pools/store7/vpn-server/tether-routes-store7-vpn-server.service"]
    lines = unit.splitlines()
    assert "ExecStart=/bin/sh /etc/tether/routes/store7-vpn-server.sh" in lines
    assert {"Type=oneshot", "RemainAfterExit=yes", "WantedBy=multi-user.target"} <= set(lines)
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    for path, text in units.items():
        target = tmp_path / path.rsplit("/", 1)[1]
        target.write_text(text)
        checked = subprocess.run(
            [analyze, "verify", str(target)], capture_output=True, text=True, check=False
        )
        assert (checked.returncode, checked.stderr) == (0, ""), path


def test_files_render_with_the_cyclic_collector_paused_and_restore_it(
    doc: Doc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rendering 10,000 pools took a quarter longer with the collector walking the plan."""
    from tether.netplan.render import kube

    result = _plan(doc)
    seen: list[bool] = []
    real = kube.cilium_values

    def values() -> str:
        seen.append(gc.isenabled())
        return real()

    monkeypatch.setattr(kube, "cilium_values", values)
    assert gc.isenabled()
    files = result.files()
    assert seen == [False] and gc.isenabled()
    assert files["cni/cilium-values.yaml"] == real()
