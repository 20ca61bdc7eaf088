"""The checker's addresses and networks format their text once and are otherwise the
``ipaddress`` objects of the same value."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from hypothesis import given
from hypothesis import strategies as st

from tether.netplan.addresses import Address, Network, parse_cidr, parse_ip

addresses = st.integers(0, 2**32 - 1)


@given(addresses, st.integers(0, 32))
def test_a_network_is_the_ipaddress_network_of_its_value(value: int, prefix: int) -> None:
    start = value & ~(0xFFFFFFFF >> prefix) & 0xFFFFFFFF
    plain = IPv4Network((start, prefix))
    net = Network((start, prefix))
    assert (str(net), f"{net}", str(net)) == (str(plain),) * 3  # the second time from the cache
    assert net == plain and hash(net) == hash(plain) and not net < plain
    assert parse_cidr(str(plain), "p", []) == plain
    if prefix < 32:
        derived = list(net.subnets())
        assert [type(n) for n in derived] == [Network, Network]
        assert [str(n) for n in derived] == [str(n) for n in plain.subnets()]


@given(addresses)
def test_an_address_is_the_ipaddress_address_of_its_value(value: int) -> None:
    plain = IPv4Address(value)
    address = Address(value)
    assert (str(address), f"{address}", str(address)) == (str(plain),) * 3
    assert address == plain and hash(address) == hash(plain) and int(address) == value
    parsed = parse_ip(str(plain), "p", [])
    assert parsed == plain and str(parsed) == str(plain)
