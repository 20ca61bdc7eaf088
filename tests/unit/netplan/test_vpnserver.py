"""Which document each site's VPN server host gets, and when it is written (pure)."""

from __future__ import annotations

import copy
from typing import Any

from tether.domain.agent import document_hash
from tether.netplan import HybridNetwork, Plan, plan
from tether.netplan.vpnserver import server_documents, to_push, vpn_server_document

Doc = dict[str, Any]


def planned(doc: Doc) -> Plan:
    return plan(HybridNetwork.model_validate(doc), lambda tunnel: f"key-of-{tunnel}")


def test_each_served_site_gets_its_own_pools_document(doc: Doc) -> None:
    result = planned(doc)
    found = server_documents([result], {"store7": "vpn-s7", "elsewhere": "vpn-x"})
    assert found.problems == {}
    assert list(found.documents) == ["vpn-s7"]  # dc1 has no server; "elsewhere" no pool
    pool, document = found.documents["vpn-s7"]
    assert pool == "store7"
    assert document == vpn_server_document(result, "store7")
    files = document["vpnServer"]["files"]
    assert "key-of-store7-t1" in files["swanctl/secrets.conf"]
    assert "key-of-dc1-t1" not in files["swanctl/secrets.conf"]
    assert "10.85.64.0/20" in files["swanctl/swanctl.conf"]


def test_a_site_with_two_pools_gets_no_document_and_both_pools_say_why(doc: Doc) -> None:
    other = copy.deepcopy(doc)
    other["cluster"]["name"] = "prod2"
    other["pools"] = [{**doc["pools"][1], "name": "store7b"}]
    found = server_documents([planned(doc), planned(other)], {"store7": "vpn-s7"})
    assert found.documents == {}
    assert set(found.problems) == {"store7", "store7b"}
    assert found.problems["store7"] == (
        "spec.site: site store7 has pools store7, store7b; its vpn-server host vpn-s7 serves "
        "one pool"
    )


def test_only_documents_whose_hash_differs_are_written(doc: Doc) -> None:
    found = server_documents([planned(doc)], {"dc1": "vpn-dc1", "store7": "vpn-s7"})
    wanted = {host: document for host, (_, document) in found.documents.items()}
    stored = {host: document_hash(document) for host, document in wanted.items()}
    assert to_push(wanted, stored) == {}  # nothing changed: nothing written

    moved = copy.deepcopy(doc)
    moved["pools"][1]["podCIDR"] = "10.85.80.0/20"
    for node in moved["pools"][1]["nodes"]:
        node.pop("podCIDR", None)
    again = server_documents([planned(moved)], {"dc1": "vpn-dc1", "store7": "vpn-s7"})
    wanted = {host: document for host, (_, document) in again.documents.items()}
    assert list(to_push(wanted, stored)) == ["vpn-s7"]  # dc1's plan is the same
    assert to_push(wanted, {}) == wanted  # never written: every one
