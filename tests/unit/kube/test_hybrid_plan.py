"""The hybrid-mode planner (pure): labels, affinity, idempotence and exact reversal."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tether.domain.hybrid import (
    AFFINITY_ANNOTATION,
    COMPUTE_TYPE_LABEL,
    EKS_COMPUTE_TYPE_LABEL,
    LABELS_ANNOTATION,
    POOL_LABEL,
    SITE_LABEL,
    DaemonSetFacts,
    DaemonSetRole,
    HybridHost,
    NodeFacts,
    merge_patch,
    plan_daemonset,
    plan_hybrid,
    plan_node,
    requirement_for,
    with_requirement,
    without_requirement,
)

HOSTS = [HybridHost("edge-1", site="dc1", pool="dc1-pool")]


def apply_merge(target: Any, patch: Any) -> Any:
    """RFC 7386, as the API server applies a merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply_merge(result.get(key), value)
    return result


def applied_node(node: NodeFacts, patch: dict[str, Any]) -> NodeFacts:
    meta = apply_merge(
        {"labels": dict(node.labels), "annotations": dict(node.annotations)}, patch["metadata"]
    )
    return NodeFacts(
        name=node.name,
        labels=meta.get("labels") or {},
        annotations=meta.get("annotations") or {},
        provider_id=node.provider_id,
    )


def applied_ds(ds: DaemonSetFacts, patch: dict[str, Any]) -> DaemonSetFacts:
    annotations = apply_merge(dict(ds.annotations), patch["metadata"].get("annotations", {}))
    affinity = ds.affinity
    if "spec" in patch:
        affinity = apply_merge(
            {"affinity": ds.affinity} if ds.affinity else {}, patch["spec"]["template"]["spec"]
        ).get("affinity")
    return DaemonSetFacts(
        namespace=ds.namespace,
        name=ds.name,
        role=ds.role,
        affinity=affinity,
        annotations=annotations or {},
    )


def test_hybrid_node_gets_compute_site_and_pool_labels() -> None:
    node = NodeFacts("edge-1", labels={"kubernetes.io/hostname": "edge-1"}, resource_version="7")
    cloud = NodeFacts("ip-10-0-0-1", labels={"kubernetes.io/hostname": "ip-10-0-0-1"})
    plan = plan_hybrid(cluster="prod", enable=True, nodes=[node, cloud], daemonsets=[], hosts=HOSTS)
    assert [p.node for p in plan.nodes] == ["edge-1"]
    patch = plan.nodes[0]
    assert patch.set == {
        COMPUTE_TYPE_LABEL: "hybrid",
        SITE_LABEL: "dc1",
        POOL_LABEL: "dc1-pool",
    }
    assert patch.patch["metadata"]["resourceVersion"] == "7"
    owned = json.loads(patch.patch["metadata"]["annotations"][LABELS_ANNOTATION])
    assert owned[SITE_LABEL] == {"value": "dc1", "previous": None}
    assert "set node-restriction.kubernetes.io/tether-pool=dc1-pool" in patch.describe()


def test_provider_id_marks_a_hybrid_node_without_a_host() -> None:
    node = NodeFacts("n9", provider_id="tether://prod/n9")
    other = NodeFacts("n8", provider_id="tether://staging/n8")
    plan = plan_hybrid(
        cluster="prod", enable=True, nodes=[node, other], daemonsets=[], eks_labels=True
    )
    assert [p.node for p in plan.nodes] == ["n9"]
    assert plan.nodes[0].set == {COMPUTE_TYPE_LABEL: "hybrid", EKS_COMPUTE_TYPE_LABEL: "hybrid"}


def test_enable_twice_plans_nothing_the_second_time() -> None:
    node = NodeFacts("edge-1")
    ds = DaemonSetFacts("kube-system", "cilium", DaemonSetRole.CNI)
    first = plan_hybrid(cluster="prod", enable=True, nodes=[node], daemonsets=[ds], hosts=HOSTS)
    node2 = applied_node(node, dict(first.nodes[0].patch))
    ds2 = applied_ds(ds, dict(first.daemonsets[0].patch))
    second = plan_hybrid(cluster="prod", enable=True, nodes=[node2], daemonsets=[ds2], hosts=HOSTS)
    assert second.empty


def test_labels_someone_else_set_are_not_taken_over() -> None:
    node = NodeFacts("edge-1", labels={COMPUTE_TYPE_LABEL: "hybrid"})
    patch = plan_node(node, {COMPUTE_TYPE_LABEL: "hybrid", SITE_LABEL: "dc1"})
    assert patch is not None
    owned = json.loads(patch.patch["metadata"]["annotations"][LABELS_ANNOTATION])
    assert set(owned) == {SITE_LABEL}
    after = applied_node(node, dict(patch.patch))
    undo = plan_node(after, {})
    assert undo is not None
    final = applied_node(after, dict(undo.patch))
    assert dict(final.labels) == {COMPUTE_TYPE_LABEL: "hybrid"}
    assert LABELS_ANNOTATION not in final.annotations


def test_an_overwritten_label_gets_its_old_value_back() -> None:
    node = NodeFacts("edge-1", labels={SITE_LABEL: "old-site"})
    patch = plan_node(node, {SITE_LABEL: "dc1"})
    assert patch is not None
    after = applied_node(node, dict(patch.patch))
    assert after.labels[SITE_LABEL] == "dc1"
    undo = plan_node(after, {})
    assert undo is not None
    assert undo.set == {SITE_LABEL: "old-site"}
    assert applied_node(after, dict(undo.patch)).labels == {SITE_LABEL: "old-site"}


def test_a_label_changed_since_is_left_alone_on_disable() -> None:
    node = NodeFacts("edge-1")
    patch = plan_node(node, {SITE_LABEL: "dc1"})
    assert patch is not None
    after = applied_node(node, dict(patch.patch))
    changed = NodeFacts(after.name, labels={SITE_LABEL: "moved"}, annotations=after.annotations)
    undo = plan_node(changed, {})
    assert undo is not None
    assert undo.removed == ()
    assert applied_node(changed, dict(undo.patch)).labels == {SITE_LABEL: "moved"}


def test_a_released_host_loses_its_labels_on_the_next_enable() -> None:
    node = NodeFacts("edge-1")
    first = plan_hybrid(cluster="prod", enable=True, nodes=[node], daemonsets=[], hosts=HOSTS)
    labelled = applied_node(node, dict(first.nodes[0].patch))
    again = plan_hybrid(cluster="prod", enable=True, nodes=[labelled], daemonsets=[], hosts=[])
    assert set(again.nodes[0].removed) == {COMPUTE_TYPE_LABEL, POOL_LABEL, SITE_LABEL}


def test_cni_affinity_is_anded_into_every_term() -> None:
    existing = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}
                        ]
                    },
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["x"]}]},
                ]
            }
        },
        "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []},
    }
    req = requirement_for(DaemonSetRole.CNI)
    result = with_requirement(existing, req)
    terms = result["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert all(req in t["matchExpressions"] for t in terms)
    assert (
        terms[1]["matchFields"]
        == existing["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ][1]["matchFields"]
    )
    assert without_requirement(result, req) == existing


def test_cloud_only_daemonset_gets_not_in() -> None:
    ds = DaemonSetFacts("kube-system", "aws-node", DaemonSetRole.CLOUD_ONLY)
    patch = plan_daemonset(ds, enable=True)
    assert patch is not None
    assert patch.requirement == {
        "key": COMPUTE_TYPE_LABEL,
        "operator": "NotIn",
        "values": ["hybrid"],
    }
    assert "NotIn (hybrid)" in patch.describe()
    assert (
        json.loads(patch.patch["metadata"]["annotations"][AFFINITY_ANNOTATION]) == patch.requirement
    )


def test_a_requirement_that_was_already_there_is_not_owned() -> None:
    req = requirement_for(DaemonSetRole.CNI)
    ds = DaemonSetFacts(
        "kube-system", "cilium", DaemonSetRole.CNI, affinity=with_requirement(None, req)
    )
    assert plan_daemonset(ds, enable=True) is None
    assert plan_daemonset(ds, enable=False) is None


def test_merge_patch_deletes_with_null() -> None:
    assert merge_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": 2}}) == {
        "a": None,
        "b": {"d": None},
    }
    assert merge_patch({"a": 1}, {}) is None
    assert merge_patch(None, {"a": [1]}) == {"a": [1]}


# Property: enable then disable gives back exactly the original objects.

_label_keys = st.sampled_from(
    [COMPUTE_TYPE_LABEL, SITE_LABEL, POOL_LABEL, EKS_COMPUTE_TYPE_LABEL, "team", "zone"]
)
_labels = st.dictionaries(_label_keys, st.sampled_from(["hybrid", "dc1", "x", "cloud"]), max_size=4)
_expr = st.fixed_dictionaries(
    {
        "key": st.sampled_from(["kubernetes.io/os", "kubernetes.io/arch", COMPUTE_TYPE_LABEL]),
        "operator": st.sampled_from(["In", "NotIn"]),
        "values": st.lists(st.sampled_from(["linux", "amd64", "fargate"]), min_size=1, max_size=2),
    }
)
_term = st.fixed_dictionaries({"matchExpressions": st.lists(_expr, min_size=1, max_size=3)})
_affinity = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {
            "nodeAffinity": st.fixed_dictionaries(
                {
                    "requiredDuringSchedulingIgnoredDuringExecution": st.fixed_dictionaries(
                        {"nodeSelectorTerms": st.lists(_term, min_size=1, max_size=3)}
                    )
                }
            )
        }
    ),
)


@given(labels=_labels, provider=st.booleans(), eks=st.booleans(), hosted=st.booleans())
def test_enable_then_disable_restores_node_labels(
    labels: dict[str, str], provider: bool, eks: bool, hosted: bool
) -> None:
    node = NodeFacts(
        "edge-1", labels=labels, provider_id="tether://prod/edge-1" if provider else None
    )
    hosts = HOSTS if hosted else []
    on = plan_hybrid(
        cluster="prod", enable=True, nodes=[node], daemonsets=[], hosts=hosts, eks_labels=eks
    )
    enabled = applied_node(node, dict(on.nodes[0].patch)) if on.nodes else node
    again = plan_hybrid(
        cluster="prod", enable=True, nodes=[enabled], daemonsets=[], hosts=hosts, eks_labels=eks
    )
    assert again.empty
    off = plan_hybrid(cluster="prod", enable=False, nodes=[enabled], daemonsets=[])
    disabled = applied_node(enabled, dict(off.nodes[0].patch)) if off.nodes else enabled
    assert dict(disabled.labels) == labels
    assert LABELS_ANNOTATION not in disabled.annotations
    assert plan_hybrid(cluster="prod", enable=False, nodes=[disabled], daemonsets=[]).empty


@given(affinity=_affinity, role=st.sampled_from(list(DaemonSetRole)))
def test_enable_then_disable_restores_daemonset_affinity(
    affinity: dict[str, Any] | None, role: DaemonSetRole
) -> None:
    ds = DaemonSetFacts("kube-system", "cilium", role, affinity=affinity)
    on = plan_daemonset(ds, enable=True)
    enabled = applied_ds(ds, dict(on.patch)) if on else ds
    req = requirement_for(role)
    terms = (
        enabled.affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
            "nodeSelectorTerms"
        ]
        if enabled.affinity
        else []
    )
    assert terms and all(req in t["matchExpressions"] for t in terms)
    assert plan_daemonset(enabled, enable=True) is None
    off = plan_daemonset(enabled, enable=False)
    disabled = applied_ds(enabled, dict(off.patch)) if off else enabled
    assert (disabled.affinity or None) == (affinity or None)
    assert AFFINITY_ANNOTATION not in disabled.annotations
