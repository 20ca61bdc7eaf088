"""Field rules of the domain models and their wire names."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tether.domain.base import wire_name
from tether.domain.models import ClusterSpec, ProfileSpec, UpdateStrategy, semver_key


def _cluster(**overrides: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "kubernetesVersion": "1.34",
        "vpcCIDR": "10.226.0.0/16",
        "serviceCIDR": "172.20.0.0/16",
    }
    spec.update(overrides)
    return spec


@pytest.mark.parametrize(
    ("field", "wire"),
    [
        ("vpc_cidr", "vpcCIDR"),
        ("pod_cidr_mask_per_node", "podCIDRMaskPerNode"),
        ("public_ip", "publicIP"),
        ("api_endpoint", "apiEndpoint"),
        ("id", "id"),
    ],
)
def test_wire_names_keep_acronyms(field: str, wire: str) -> None:
    assert wire_name(field) == wire


def test_cluster_round_trips_by_wire_name() -> None:
    spec = ClusterSpec.model_validate(_cluster(remoteNodeNetworks=["10.80.0.0/16"]))
    dumped = spec.model_dump(mode="json", by_alias=True)
    assert dumped["vpcCIDR"] == "10.226.0.0/16"
    assert dumped["remoteNodeNetworks"] == ["10.80.0.0/16"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"vpcCIDR": "10.226.0.1/16"}, "vpcCIDR"),  # host bits set
        ({"vpcCIDR": "fd00::/8"}, "vpcCIDR"),  # IPv6
        ({"kubernetesVersion": "v1.34"}, "kubernetesVersion"),
        ({"apiEndpoint": "http://plain.example"}, "apiEndpoint"),
        ({"remoteNodeNetworks": [f"10.{i}.0.0/16" for i in range(16)]}, "remoteNodeNetworks"),
        ({"surprise": 1}, "surprise"),
        ({"vpcCIDR": True}, "vpcCIDR"),  # pydantic alone would read a bool as 0.0.0.1/32
        ({"serviceCIDR": 167772160}, "serviceCIDR"),
    ],
)
def test_cluster_rejects_bad_fields_naming_them(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        ClusterSpec.model_validate(_cluster(**overrides))
    assert field in {str(e["loc"][0]) for e in info.value.errors()}


def test_hybrid_needs_remote_networks() -> None:
    with pytest.raises(ValidationError, match="hybridEnabled"):
        ClusterSpec.model_validate(_cluster(hybridEnabled=True))


@pytest.mark.parametrize(
    ("strategy", "message"),
    [
        ({"type": "Rolling", "maxSurge": 0, "maxUnavailable": 0}, "cannot both be 0"),
        ({"type": "Rolling", "maxSurge": "0%", "maxUnavailable": 0}, "cannot both be 0"),
        ({"type": "ExpandFirst", "maxUnavailable": 1}, "use Rolling"),
        ({"type": "ContractFirst", "maxSurge": 1}, "use Rolling"),
        ({"type": "Rolling", "maxSurge": "150%"}, "maxSurge"),
        ({"type": "Rolling", "maxSurge": True}, "not a boolean"),
    ],
)
def test_update_strategy_must_be_able_to_progress(
    strategy: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        UpdateStrategy.model_validate(strategy)


def test_update_strategy_takes_counts_and_percentages() -> None:
    strategy = UpdateStrategy.model_validate(
        {"type": "Rolling", "maxSurge": "25%", "maxUnavailable": 2}
    )
    assert (strategy.max_surge, strategy.max_unavailable) == ("25%", 2)


def test_profile_variables_are_unique() -> None:
    layers = {"os": {"image": "img"}, "kubernetes": {"version": "1.34"}}
    with pytest.raises(ValidationError, match="repeated: a"):
        ProfileSpec.model_validate(
            {"version": "1.0.0", "layers": layers, "variables": [{"name": "a"}, {"name": "a"}]}
        )


def test_semver_orders_prereleases_before_releases() -> None:
    versions = ["1.10.0", "1.2.0", "1.2.0-rc.1", "0.9.9"]
    assert sorted(versions, key=semver_key) == ["0.9.9", "1.2.0-rc.1", "1.2.0", "1.10.0"]
