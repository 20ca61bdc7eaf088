"""Profile variables, node targets and the change rules (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.domain.models import ClusterSpec, HostSpec, PoolSpec, ProfileSpec, ProfileVariable
from tether.domain.nodeplan import (
    NodeTarget,
    TargetError,
    node_config,
    node_target,
    plan_document,
)
from tether.domain.profiles import (
    REDACTED,
    Action,
    diff,
    redact,
    render,
    resolve_values,
    rule_for,
    strongest,
)
from tether.node.nodeconfig import parse_node_config

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def _var(**fields: Any) -> ProfileVariable:
    return ProfileVariable.model_validate(fields)


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ({"name": "n", "type": "number"}, "5", "must be a number"),
        ({"name": "n", "type": "number"}, True, "must be a number"),
        ({"name": "b", "type": "boolean"}, "true", "must be true or false"),
        ({"name": "i", "type": "ipv4"}, "10.0.0.300", "IPv4 address"),
        ({"name": "c", "type": "ipv4cidr"}, "10.0.0.1/24", "IPv4 CIDR"),
        ({"name": "v", "type": "version"}, "latest", "must be a version"),
        ({"name": "s", "regex": "^[a-z]+$"}, "ABC", "does not match"),
    ],
)
def test_a_value_that_breaks_its_variable_is_refused_naming_it(
    var: dict[str, Any], value: Any, message: str
) -> None:
    _, problems = resolve_values([_var(**var)], {var["name"]: value})
    assert [(p.field, message in p.message) for p in problems] == [
        (f"spec.variables.{var['name']}", True)
    ]


def test_required_defaults_and_unknown_names() -> None:
    variables = [_var(name="a", required=True), _var(name="b", default=3, type="number")]
    values, problems = resolve_values(variables, {"zzz": 1})
    assert values == {"b": 3}
    assert {p.field: p.message for p in problems} == {
        "spec.variables.zzz": "the profile declares no such variable",
        "spec.variables.a": "is required and the profile has no default",
    }


def test_render_keeps_a_whole_placeholder_typed_and_interpolates_text() -> None:
    doc = {"maxPods": "{{ pods }}", "flag": "--name={{name}}-x", "list": ["{{ on }}"]}
    assert render(doc, {"pods": 110, "name": "edge", "on": False}) == {
        "maxPods": 110,
        "flag": "--name=edge-x",
        "list": [False],
    }


def test_redact_hides_every_occurrence_of_a_secret() -> None:
    doc = {"a": 'user:s3cr"et@host', "b": ['s3cr"et'], "c": 1}
    assert redact(doc, ['s3cr"et']) == {"a": f"user:{REDACTED}@host", "b": [REDACTED], "c": 1}


@pytest.mark.parametrize(
    ("field", "action"),
    [
        ("os.image", Action.REPAVE),
        ("os.cloudInit.timezone", Action.REPAVE),
        ("os.kernelModules", Action.REBOOT),
        ("os.sysctls.vm.max_map_count", Action.IN_PLACE),
        ("kubernetes.version", Action.UPGRADE),
        ("kubernetes.kubeletConfig.maxPods", Action.RESTART),
        ("node.labels.tier", Action.IN_PLACE),
        ("addons", Action.NONE),
        ("something.new", Action.REPAVE),
    ],
)
def test_each_field_has_its_action(field: str, action: Action) -> None:
    assert rule_for(field)[0] is action


def test_the_strongest_action_decides() -> None:
    old = {"os": {"image": "a", "sysctls": {}}, "kubernetes": {"version": "1.33"}}
    new = {"os": {"image": "a", "sysctls": {"x": "1"}}, "kubernetes": {"version": "1.34"}}
    changes = diff(old, new)
    assert [(c.field, c.action) for c in changes] == [
        ("kubernetes.version", Action.UPGRADE),
        ("os.sysctls.x", Action.IN_PLACE),
    ]
    assert strongest(changes) is Action.UPGRADE
    assert strongest([]) is Action.NONE


@given(
    st.recursive(
        st.none() | st.integers() | st.text(max_size=3),
        lambda c: st.dictionaries(st.text(max_size=3), c, max_size=3),
        max_leaves=10,
    )
)
def test_a_document_never_differs_from_itself(doc: Any) -> None:
    assert diff({"x": doc}, {"x": doc}) == []


# Node targets -----------------------------------------------------------------------


def _cluster(**extra: Any) -> ClusterSpec:
    return ClusterSpec.model_validate(
        {
            "kubernetesVersion": "1.37",
            "apiEndpoint": "https://10.226.0.10:6443",
            "caBundle": CA,
            "vpcCIDR": "10.226.0.0/16",
            "serviceCIDR": "172.20.0.0/16",
            **extra,
        }
    )


def _pool(**extra: Any) -> PoolSpec:
    return PoolSpec.model_validate(
        {
            "cluster": "prod",
            "site": "dc1",
            "nodeCIDR": "10.80.1.0/24",
            "podCIDR": "10.85.0.0/16",
            "vpnServer": {"publicIP": "203.0.113.1", "insideIP": "10.80.1.254"},
            "profile": {"name": "std", "version": "1.0.0"},
            "nodeLabels": {"tier": "edge"},
            "nodeTaints": [{"key": "site", "value": "dc1", "effect": "NoSchedule"}],
            **extra,
        }
    )


def _profile(**kube: Any) -> ProfileSpec:
    return ProfileSpec.model_validate(
        {
            "version": "1.0.0",
            "layers": {
                "os": {"image": "debian-12", "sysctls": {"vm.max_map_count": "{{ maps }}"}},
                "kubernetes": {
                    "version": "1.36",
                    "kubeletConfig": {"maxPods": "{{ pods }}"},
                    "kubeletExtraArgs": {"v": "2"},
                    **kube,
                },
            },
            "variables": [
                {"name": "pods", "type": "number", "default": 110},
                {"name": "maps", "type": "string", "default": "262144"},
            ],
        }
    )


INVENTORY = {"nics": [{"name": "eth0", "addresses": ["192.168.1.5/24", "10.80.1.17/24"]}]}


def test_a_target_renders_a_node_config_the_node_tool_accepts() -> None:
    target = node_target(
        cluster_name="prod",
        cluster=_cluster(),
        pool_name="dc1",
        pool=_pool(variables={"pods": 64}),
        host_name="edge-1",
        host=HostSpec(site="dc1"),
        inventory=INVENTORY,
        profile=_profile(),
    )
    doc = node_config(target)
    doc["spec"]["credentials"] = {"bootstrapToken": {"tokenFile": "/etc/tether/token"}}
    config = parse_node_config(doc)  # the node tool's own rules
    assert str(config.spec.node.ip) == "10.80.1.17"  # the inventory address in the node CIDR
    assert config.spec.kubelet.config == {"maxPods": 64}
    assert config.spec.kubelet.flags == ["--v=2", "--register-with-taints=site=dc1:NoSchedule"]
    assert config.spec.node.labels == {
        "tether.io/pool": "dc1",
        "tether.io/site": "dc1",
        "tier": "edge",
    }
    assert config.spec.os.sysctls == {"vm.max_map_count": "262144"}
    plan = plan_document("join", target, step="r/1/0")
    assert plan["node"]["version"] == "1.36" and plan["node"]["step"] == "r/1/0"


def test_a_host_override_wins_and_a_missing_address_is_named() -> None:
    kwargs: dict[str, Any] = {
        "cluster_name": "prod",
        "cluster": _cluster(),
        "pool_name": "dc1",
        "pool": _pool(),
        "host_name": "edge-1",
        "profile": _profile(),
    }
    target = node_target(host=HostSpec(site="dc1", nodeIP="10.80.1.99"), inventory={}, **kwargs)
    assert target.spec["node"]["ip"] == "10.80.1.99"
    with pytest.raises(TargetError) as info:
        node_target(
            host=HostSpec(site="dc1"),
            inventory={},
            **{**kwargs, "cluster": _cluster(apiEndpoint=None)},
        )
    assert {p.field for p in info.value.problems} == {
        "cluster.spec.apiEndpoint",
        "host.edge-1.spec.nodeIP",
    }


def test_targets_hash_what_decides_the_node() -> None:
    kwargs: dict[str, Any] = {
        "cluster_name": "prod",
        "cluster": _cluster(),
        "pool_name": "dc1",
        "host_name": "edge-1",
        "host": HostSpec(site="dc1"),
        "inventory": INVENTORY,
        "profile": _profile(),
    }
    a = node_target(pool=_pool(), **kwargs)
    b = node_target(pool=_pool(nodeLabels={"tier": "core"}), **kwargs)
    assert a.hash != b.hash
    assert strongest(diff(a.spec, b.spec)) is Action.IN_PLACE
    c = node_target(pool=_pool(variables={"pods": 99}), **kwargs)
    assert strongest(diff(a.spec, c.spec)) is Action.RESTART


def _host_target(host: HostSpec) -> NodeTarget:
    return node_target(
        cluster_name="prod",
        cluster=_cluster(),
        pool_name="dc1",
        pool=_pool(),
        host_name="edge-1",
        host=host,
        inventory=INVENTORY,
        profile=_profile(),
    )


def test_a_host_with_its_own_vpn_server_gets_a_vpc_route_kept_in_place() -> None:
    plain = _host_target(HostSpec(site="dc1"))
    routed = _host_target(HostSpec(site="dc1", vpnServerIP="10.80.1.200"))
    route = {"destination": "10.226.0.0/16", "via": "10.80.1.200"}
    assert routed.spec["node"]["routes"] == [route]
    assert "routes" not in plain.spec["node"]  # hosts without one keep their hash
    changes = diff(plain.spec, routed.spec)
    assert [(c.field, c.action) for c in changes] == [("node.routes", Action.IN_PLACE)]
    for action in ("join", "upgrade", "reboot"):
        assert plan_document(action, routed, step="s")["routes"] == [route]  # type: ignore[arg-type]
    assert "routes" not in plan_document("uninstall", routed, step="s")
    assert "routes" not in plan_document("join", plain, step="s")
