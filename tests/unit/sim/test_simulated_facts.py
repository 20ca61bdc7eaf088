"""A SIMULATED host's addresses decide node validation's "is the node IP on this host"."""

from __future__ import annotations

from ipaddress import IPv4Address

from tether.sim.kubelet_host import SimulatedFacts


def test_a_simulated_host_has_only_the_addresses_it_reports() -> None:
    facts = SimulatedFacts(["10.80.2.12/24", "192.168.7.3"])
    assert facts.has_address(IPv4Address("10.80.2.12"))
    assert facts.has_address(IPv4Address("192.168.7.3"))
    assert not facts.has_address(IPv4Address("10.80.2.250"))  # a mistyped node IP


def test_without_addresses_any_node_ip_is_on_it() -> None:
    assert SimulatedFacts().has_address(IPv4Address("10.80.2.250"))
