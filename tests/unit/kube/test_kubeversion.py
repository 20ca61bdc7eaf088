"""Supported Kubernetes versions and the node/control-plane skew rule (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tether.domain.kubeversion import (
    MAX_NODE_SKEW,
    MAX_SUPPORTED,
    MIN_SUPPORTED,
    KubeMinor,
    check_control_plane,
    check_node_skew,
    control_plane_problem,
    node_skew_problem,
    parse_version,
)
from tether.errors import Invalid


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.37", KubeMinor(1, 37)),
        ("v1.37.2", KubeMinor(1, 37, 2)),
        ("1.31.4-eks-4096722", KubeMinor(1, 31, 4)),
        ("v1.33.1+k3s1", KubeMinor(1, 33, 1)),
        ("1.34+", KubeMinor(1, 34)),
    ],
)
def test_parse_accepts_the_forms_clusters_report(text: str, expected: KubeMinor) -> None:
    parsed = parse_version(text)
    assert parsed == expected
    assert parsed.patch == expected.patch


@pytest.mark.parametrize("text", ["", "latest", "1", "v1.x", "one.two"])
def test_parse_refuses_non_versions(text: str) -> None:
    with pytest.raises(Invalid) as info:
        parse_version(text)
    assert info.value.rule == "kube_version"


def test_supported_range_is_1_31_to_1_37() -> None:
    assert (str(MIN_SUPPORTED), str(MAX_SUPPORTED)) == ("1.31", "1.37")
    for minor in range(31, 38):
        assert control_plane_problem(KubeMinor(1, minor)) is None
    for minor in (29, 30, 38):
        problem = control_plane_problem(KubeMinor(1, minor))
        assert problem is not None and "1.31 to 1.37" in problem
    with pytest.raises(Invalid) as info:
        check_control_plane(parse_version("v1.38.0"))
    assert info.value.rule == "supported_version"
    assert check_control_plane(parse_version("v1.37.2")) == KubeMinor(1, 37)


@pytest.mark.parametrize(
    ("control_plane", "node", "ok"),
    [
        ("1.37", "1.37", True),
        ("1.37", "1.34", True),  # exactly 3 behind
        ("1.37", "1.33", False),  # 4 behind
        ("1.37", "1.38", False),  # ahead
        ("1.37.0", "1.37.9", True),  # patch levels do not matter
        ("1.31", "1.28", True),
    ],
)
def test_node_skew_rule(control_plane: str, node: str, ok: bool) -> None:
    problem = node_skew_problem(parse_version(control_plane), parse_version(node))
    assert (problem is None) is ok
    if not ok:
        with pytest.raises(Invalid):
            check_node_skew(parse_version(control_plane), parse_version(node))


@given(st.integers(0, 60), st.integers(0, 60))
def test_skew_rule_is_at_most_three_behind_and_never_ahead(cp: int, node: int) -> None:
    problem = node_skew_problem(KubeMinor(1, cp), KubeMinor(1, node))
    assert (problem is None) == (0 <= cp - node <= MAX_NODE_SKEW)


def test_another_major_is_never_within_skew() -> None:
    assert node_skew_problem(KubeMinor(2, 0), KubeMinor(1, 37)) is not None
    assert node_skew_problem(KubeMinor(1, 37), KubeMinor(2, 0)) is not None
