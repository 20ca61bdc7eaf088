"""``TETHER_API_TRUSTED_PROXIES``: addresses or networks, refused by name otherwise."""

from __future__ import annotations

import pytest

from tether.settings import ApiSettings


@pytest.mark.parametrize(
    ("value", "kept"),
    [("", ""), (" 10.0.0.0/8 , 127.0.0.1,::1", "10.0.0.0/8,127.0.0.1,::1")],
)
def test_trusted_proxies_are_addresses_or_networks(value: str, kept: str) -> None:
    assert ApiSettings(trusted_proxies=value).trusted_proxies == kept


@pytest.mark.parametrize("value", ["*", "proxy.example", "10.0.0.0/33"])
def test_a_trusted_proxy_that_is_no_address_is_refused_by_name(value: str) -> None:
    with pytest.raises(ValueError, match=r"trusted_proxies[\s\S]*is not an IP address or network"):
        ApiSettings(trusted_proxies=value)
