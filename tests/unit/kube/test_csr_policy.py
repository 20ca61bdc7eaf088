"""Which kubelet CSRs Tether approves, denies or leaves alone (pure)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tether.domain.nodeidentity import (
    BOOTSTRAP_GROUP,
    KUBELET_CLIENT_SIGNER,
    KUBELET_SERVING_SIGNER,
    CSRFacts,
    HostIdentity,
    Verdict,
    decide_csr,
    host_addresses,
    host_bootstrap_group,
    host_hostnames,
)

HOSTS = {
    "edge-1": HostIdentity(
        "edge-1",
        cluster="prod",
        pool="dc1-pool",
        addresses=frozenset({"10.80.1.11"}),
        hostnames=frozenset({"edge-1.dc1.example"}),
    ),
    "edge-2": HostIdentity("edge-2", cluster="prod", pool="dc1-pool"),
    "spare": HostIdentity("spare", cluster=None),
    "other": HostIdentity("other", cluster="staging", pool="s-pool"),
}

CLIENT = CSRFacts(
    name="csr-1",
    signer=KUBELET_CLIENT_SIGNER,
    username="system:bootstrap:abc123",
    groups=(
        "system:bootstrappers",
        BOOTSTRAP_GROUP,
        host_bootstrap_group("edge-1"),
        "system:authenticated",
    ),
    usages=("digital signature", "client auth"),
    common_name="system:node:edge-1",
    organizations=("system:nodes",),
)
SERVING = CSRFacts(
    name="csr-2",
    signer=KUBELET_SERVING_SIGNER,
    username="system:node:edge-1",
    groups=("system:nodes", "system:authenticated"),
    usages=("digital signature", "server auth"),
    common_name="system:node:edge-1",
    organizations=("system:nodes",),
    dns_names=("edge-1", "edge-1.dc1.example"),
    ip_addresses=("10.80.1.11",),
)


def decide(csr: CSRFacts, **kw: bool) -> tuple[Verdict, str]:
    d = decide_csr(csr, cluster="prod", hosts=HOSTS, **kw)
    return d.verdict, d.reason


def test_client_csr_with_the_hosts_bootstrap_token_is_approved() -> None:
    decision = decide_csr(CLIENT, cluster="prod", hosts=HOSTS)
    assert decision.verdict is Verdict.APPROVE
    assert decision.host == "edge-1"
    assert "bootstrap token" in decision.message


def test_client_renewal_by_the_node_itself_is_approved() -> None:
    renewal = replace(CLIENT, username="system:node:edge-1", groups=("system:nodes",))
    assert decide(renewal) == (Verdict.APPROVE, "TetherApproved")


def test_serving_csr_with_known_sans_is_approved() -> None:
    assert decide(SERVING) == (Verdict.APPROVE, "TetherApproved")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        # another host's token asking for edge-1's identity
        ({"groups": (BOOTSTRAP_GROUP, host_bootstrap_group("edge-2"))}, "RequesterMismatch"),
        ({"common_name": "system:node:nobody"}, "UnknownHost"),
        ({"common_name": "system:node:spare"}, "HostNotInCluster"),
        ({"common_name": "system:node:other"}, "HostNotInCluster"),
        ({"common_name": "edge-1"}, "BadSubject"),
        ({"organizations": ("system:nodes", "system:masters")}, "BadSubject"),
        ({"usages": ("digital signature", "client auth", "server auth")}, "BadUsages"),
        ({"usages": ("digital signature",)}, "BadUsages"),
        ({"dns_names": ("edge-1",)}, "UnexpectedSANs"),
        ({"parse_error": "not PEM"}, "InvalidRequest"),
    ],
)
def test_client_csr_breaking_a_rule_is_denied(change: dict[str, object], reason: str) -> None:
    assert decide(replace(CLIENT, **change)) == (Verdict.DENY, reason)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"ip_addresses": ("10.80.1.99",)}, "SANsNotKnown"),
        ({"dns_names": ("evil.example",)}, "SANsNotKnown"),
        ({"dns_names": (), "ip_addresses": ()}, "UnexpectedSANs"),
        ({"other_sans": ("admin@example.com",)}, "UnexpectedSANs"),
        ({"username": "system:node:edge-2"}, "RequesterMismatch"),
        (
            {"username": "system:bootstrap:abc123", "groups": (BOOTSTRAP_GROUP,)},
            "RequesterMismatch",
        ),
        ({"usages": ("digital signature", "client auth")}, "BadUsages"),
    ],
)
def test_serving_csr_breaking_a_rule_is_denied(change: dict[str, object], reason: str) -> None:
    assert decide(replace(SERVING, **change)) == (Verdict.DENY, reason)  # type: ignore[arg-type]


def test_foreign_csrs_are_ignored_unless_asked_to_deny() -> None:
    cloud = replace(
        SERVING,
        username="system:node:ip-10-0-0-1",
        common_name="system:node:ip-10-0-0-1",
        dns_names=("ip-10-0-0-1",),
        ip_addresses=("10.0.0.1",),
    )
    assert decide(cloud) == (Verdict.IGNORE, "NotTether")
    assert decide(cloud, deny_foreign=True) == (Verdict.DENY, "UnknownNode")


def test_other_signers_are_never_touched() -> None:
    other = replace(CLIENT, signer="kubernetes.io/kube-apiserver-client")
    assert decide(other, deny_foreign=True) == (Verdict.IGNORE, "OtherSigner")


def test_host_addresses_come_from_inventory_and_skip_loopback() -> None:
    inventory = {
        "addresses": ["10.80.1.11", "127.0.0.1"],
        "nics": [
            {"name": "eth0", "addresses": ["10.80.1.12/24", "fe80::1/64"]},
            {"name": "lo", "addresses": ["::1/128"]},
            {"name": "bad", "addresses": ["nonsense", 5]},
        ],
        "hostname": "Edge-1.DC1.example.",
    }
    assert host_addresses(inventory) == {"10.80.1.11", "10.80.1.12"}
    assert host_hostnames(inventory) == {"edge-1.dc1.example"}
    assert host_addresses({}) == frozenset()
