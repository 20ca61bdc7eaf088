"""The checker: every rule fires with its id, the field path, and all errors at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tether.netplan import (
    RULE_IDS,
    RULES,
    Finding,
    Severity,
    check,
    check_data,
    load_document,
    member_keys,
)

Doc = dict[str, Any]


def _errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity is Severity.ERROR]


def test_the_example_is_valid(doc: Doc) -> None:
    parsed, findings = load_document(doc)
    assert findings == []
    assert parsed is not None
    assert check(parsed) == []
    assert check_data(doc) == []


def test_the_shipped_example_files_are_valid() -> None:
    import pathlib

    import yaml

    root = pathlib.Path(__file__).resolve().parents[3] / "examples"
    files = sorted(root.glob("hybrid-network*.yaml"))
    assert files
    for path in files:
        assert _errors(check_data(yaml.safe_load(path.read_text()))) == [], path


def test_every_mutation_reports_its_rule_with_a_path_not_repeated_in_the_message(
    make_doc: Callable[[], Doc], mutations: Any, mutate: Any
) -> None:
    seen: set[str] = set()
    for mutation in mutations:
        data = make_doc()
        assert mutate(data, mutation), mutation.name
        findings = check_data(data)
        rules = {f.rule for f in _errors(findings)}
        assert mutation.rule in rules, (mutation.name, findings)
        assert rules <= {mutation.rule} | mutation.also, (mutation.name, findings)
        for finding in findings:
            assert finding.path and finding.path not in finding.message
            assert finding.rule in RULE_IDS
        seen.add(mutation.rule)
    warnings_only = {r.id for r in RULES if r.severity == "warning"}
    assert RULE_IDS - warnings_only <= seen, "every error rule has a mutation"


@pytest.mark.parametrize(
    ("setup", "rule", "path"),
    [
        (lambda d: d["cluster"]["remoteNodeNetworks"].append("8.8.8.0/24"),
         "cluster.remote-private", "cluster.remoteNodeNetworks[1]"),
        (lambda d: d["pools"][0]["nodes"][1].update(ip="10.80.1.11"),
         "node.ip-unique", "pools[dc1].nodes[dc1-n2].ip"),
        (lambda d: d["pools"][1].update(podCIDR="10.85.32.0/20"),
         "pool.overlap", "pools[store7].podCIDR"),
        (lambda d: d["pools"][1]["nodes"][1].update(podCIDR="10.85.70.0/25"),
         "node.pod-cidr-mask", "pools[store7].nodes[store7-n2].podCIDR"),
        (lambda d: d["pools"][0]["vpnServer"].update(asn=None),
         "vpn.asn-required", "pools[dc1].vpnServer.asn"),
        (lambda d: d["pools"][0].pop("nodeCIDR"), "schema", "pools[dc1].nodeCIDR"),
    ],
)  # fmt: skip
def test_paths_name_the_field(doc: Doc, setup: Callable[[Doc], Any], rule: str, path: str) -> None:
    setup(doc)
    found = [f for f in check_data(doc) if f.rule == rule]
    assert [f.path for f in found] == [path]
    assert path not in found[0].message
    assert found[0].text == f"{path}: {found[0].message}"


def test_all_errors_are_reported_at_once(doc: Doc) -> None:
    doc["cluster"]["remotePodNetworks"].append("fd00::/8")
    doc["cluster"]["serviceCIDR"] = "10.226.128.0/17"
    doc["pools"][0]["nodes"][0]["ip"] = "10.80.9.9"
    doc["pools"][0]["nodes"][1]["name"] = "store7-n1"
    doc["pools"][1]["vpnServer"]["publicIP"] = "203.0.113.5"
    rules = {f.rule for f in _errors(check_data(doc))}
    assert rules == {
        "address.ipv4-only",
        "cluster.vpc-service-overlap",
        "node.ip-in-node-cidr",
        "node.name-unique",
        "vpn.public-ip-unique",
    }


def test_a_schema_error_does_not_hide_rule_errors_elsewhere(doc: Doc) -> None:
    doc["pools"][0]["vpnServer"]["colour"] = "blue"
    doc["pools"][1]["nodes"][0]["ip"] = "10.80.9.9"
    findings = check_data(doc)
    assert {(f.rule, f.path) for f in _errors(findings)} == {
        ("schema", "pools[dc1].vpnServer.colour"),
        ("node.ip-in-node-cidr", "pools[store7].nodes[store7-n1].ip"),
    }
    parsed, schema = load_document(doc)
    assert parsed is None
    assert [f.rule for f in schema] == ["schema"]


def test_a_missing_required_field_does_not_hide_the_pools_other_findings(doc: Doc) -> None:
    del doc["pools"][0]["nodeCIDR"]
    doc["pools"][0]["podCIDR"] = "10.85.0.1/18"
    doc["pools"][0]["nodes"][1]["name"] = "Bad_Name"
    del doc["pools"][1]["vpnServer"]
    doc["pools"][1]["nodes"][0]["ip"] = "10.80.9.9"
    assert {(f.rule, f.path) for f in check_data(doc)} == {
        ("schema", "pools[dc1].nodeCIDR"),
        ("address.host-bits", "pools[dc1].podCIDR"),
        ("node.name", "pools[dc1].nodes[1].name"),
        ("schema", "pools[store7].vpnServer"),
        # the stand-in vpnServer (isMainRouter true) does not make mainRouterIP wrong
        ("node.ip-in-node-cidr", "pools[store7].nodes[store7-n1].ip"),
    }


def test_a_broken_cluster_does_not_hide_the_pools_findings(doc: Doc) -> None:
    del doc["cluster"]["name"]
    doc["cluster"]["remoteNodeNetworks"] = "10.80.0.0/16"  # a string, not a list
    doc["cluster"]["vpnEndpoint"] = None
    doc["pools"][1]["nodes"][0]["ip"] = "10.80.9.9"
    assert {(f.rule, f.path) for f in check_data(doc)} == {
        ("schema", "cluster.name"),
        ("schema", "cluster.remoteNodeNetworks"),
        ("schema", "cluster.vpnEndpoint"),
        # nodeCIDRs are not judged against the unreadable remoteNodeNetworks
        ("node.ip-in-node-cidr", "pools[store7].nodes[store7-n1].ip"),
    }


def test_a_pool_that_is_not_a_mapping_is_one_finding(doc: Doc) -> None:
    doc["pools"].insert(1, "store9")
    assert [(f.rule, f.path) for f in check_data(doc)] == [("schema", "pools[1]")]


@pytest.mark.parametrize(
    ("names", "keys"),
    [
        (["dc1", "store7"], ["dc1", "store7"]),
        (["a", "b", "a"], ["0", "b", "2"]),  # duplicates: by position, never ambiguous
        (["7", "Bad_Name", "", None, 3, "n.example"], ["0", "1", "2", "3", "4", "n.example"]),
    ],
)
def test_members_are_named_by_name_when_unambiguous(names: list[Any], keys: list[str]) -> None:
    assert member_keys(names) == keys


def test_schema_findings_name_pools_and_nodes_by_name(doc: Doc) -> None:
    doc["pools"][1]["nodes"][1]["ip"] = 7
    doc["pools"][0]["nodes"][0]["colour"] = "blue"
    assert [(f.path, f.message) for f in check_data(doc)] == [
        ("pools[dc1].nodes[dc1-n1].colour", "unknown field"),
        ("pools[store7].nodes[store7-n2].ip", "Input should be a valid string"),
    ]


def test_not_a_mapping_is_a_schema_error() -> None:
    assert [f.as_dict() for f in check_data(["a", "list"])] == [
        {
            "rule": "schema",
            "path": "$",
            "message": "the document must be a mapping",
            "severity": "error",
        }
    ]


def test_findings_serialise_with_exactly_four_keys(doc: Doc) -> None:
    doc["kind"] = "Other"
    (finding,) = check_data(doc)
    assert finding.as_dict() == {
        "rule": "document.kind",
        "path": "kind",
        "message": "must be HybridNetwork",
        "severity": "error",
    }


def test_cgnat_is_allowed_only_when_enabled(doc: Doc) -> None:
    doc["cluster"]["remotePodNetworks"].append("100.64.0.0/16")
    assert "cluster.remote-private" in {f.rule for f in check_data(doc)}
    doc["cluster"]["allowCGNAT"] = True
    assert _errors(check_data(doc)) == []


@pytest.mark.parametrize("prefix", [8, 20, 32])
def test_remote_prefix_bounds_are_inclusive(doc: Doc, prefix: int) -> None:
    net = {8: "10.0.0.0/8", 20: "192.168.16.0/20", 32: "192.168.1.1/32"}[prefix]
    doc["cluster"]["remoteNodeNetworks"] = [net] if prefix == 8 else [net, "10.80.0.0/16"]
    if prefix == 8:
        doc["cluster"]["remotePodNetworks"] = ["172.16.0.0/12"]
        doc["cluster"]["serviceCIDR"] = "192.168.0.0/16"
        doc["cluster"]["vpcCIDR"] = "100.100.0.0/16"
        doc["pools"][0]["podCIDR"] = "172.16.0.0/18"
        doc["pools"][1]["podCIDR"] = "172.16.64.0/20"
        doc["pools"][1]["nodes"][1]["podCIDR"] = "172.16.70.0/24"
    assert _errors(check_data(doc)) == []


def test_fifteen_remote_networks_are_allowed_sixteen_are_not(doc: Doc) -> None:
    doc["cluster"]["remotePodNetworks"] += [f"192.168.{i}.0/24" for i in range(14)]
    assert _errors(check_data(doc)) == []
    doc["cluster"]["remotePodNetworks"].append("192.168.99.0/24")
    (finding,) = _errors(check_data(doc))
    assert (finding.rule, finding.path) == ("cluster.remote-count", "cluster.remotePodNetworks")


def test_warnings_are_separate_from_errors(doc: Doc) -> None:
    doc["cluster"]["remotePodNetworks"].append("192.168.0.0/16")  # holds no pool
    doc["pools"][1]["podCIDR"] = "10.85.64.0/23"  # 2 /24 blocks for 2 nodes: 100%
    doc["pools"][1]["nodes"][1]["podCIDR"] = "10.85.65.0/24"
    doc["pools"].append(
        {
            "name": "empty",
            "site": "edge",
            "nodeCIDR": "10.80.3.0/24",
            "podCIDR": "10.85.128.0/20",
            "vpnServer": {"publicIP": "203.0.113.99", "insideIP": "10.80.3.1"},
        }
    )
    findings = check_data(doc)
    assert _errors(findings) == []
    warnings = {(f.rule, f.path) for f in findings if f.severity is Severity.WARNING}
    assert warnings == {
        ("cluster.remote-unused", "cluster.remotePodNetworks[1]"),
        ("pool.pod-utilisation", "pools[store7].podCIDR"),
        ("pool.empty", "pools[empty].nodes"),
    }


def test_overlap_reports_name_both_sides(doc: Doc) -> None:
    doc["pools"][1]["nodeCIDR"] = "10.80.1.128/25"
    doc["pools"][1]["vpnServer"]["insideIP"] = "10.80.1.130"
    doc["pools"][1]["mainRouterIP"] = "10.80.1.129"
    doc["pools"][1]["nodes"][0]["ip"] = "10.80.1.140"
    doc["pools"][1]["nodes"][1]["ip"] = "10.80.1.141"
    (finding,) = _errors(check_data(doc))
    assert finding.rule == "pool.overlap"
    assert finding.path == "pools[store7].nodeCIDR"
    assert "pools[dc1].nodeCIDR (10.80.1.0/24)" in finding.message


def test_rule_catalogue_is_unique_and_documented() -> None:
    import pathlib

    ids = [r.id for r in RULES]
    assert len(ids) == len(set(ids))
    doc_file = pathlib.Path(__file__).resolve().parents[3] / "docs" / "network.md"
    text = doc_file.read_text()
    missing = [rule_id for rule_id in ids if f"`{rule_id}`" not in text]
    assert missing == []


def test_an_error_without_a_path_is_a_finding_not_a_crash() -> None:
    """Schemathesis sent ``{"": null, ...}``: the unknown field ``""`` has an empty path,
    which the stand-in document cannot replace (the API answered 500)."""
    findings = check_data({"": None, "apiVersion": "", "kind": "", "cluster": {}})
    assert findings and all(f.rule == "schema" for f in findings if f.is_error)
    assert any("cluster" in f.path for f in findings)
