"""Hybrid mode on a real kube-apiserver, through Tether's own (least-privilege) credentials."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from lightkube.models.apps_v1 import DaemonSetSpec
from lightkube.models.core_v1 import Affinity, Container, PodSpec, PodTemplateSpec
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.resources.apps_v1 import DaemonSet
from lightkube.resources.core_v1 import Node

from tether.domain.hybrid import (
    AFFINITY_ANNOTATION,
    COMPUTE_TYPE_LABEL,
    EKS_COMPUTE_TYPE_LABEL,
    LABELS_ANNOTATION,
    POOL_LABEL,
    SITE_LABEL,
)
from tether.kube.client import KubeClient
from tether.kube.errors import Forbidden
from tether.services.hybrid import set_hybrid
from tether.sim.envtest import LocalControlPlane
from tether.sim.kubesim import KubeletFleet, SimulatedNode

pytestmark = pytest.mark.integration

Namer = Callable[[str], str]

# The VPC CNI's real affinity (EKS ships aws-node with it).
AWS_NODE_AFFINITY: dict[str, Any] = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
                        {
                            "key": "kubernetes.io/arch",
                            "operator": "In",
                            "values": ["amd64", "arm64"],
                        },
                        {
                            "key": "eks.amazonaws.com/compute-type",
                            "operator": "NotIn",
                            "values": ["fargate", "hybrid", "auto"],
                        },
                    ]
                }
            ]
        }
    }
}


def daemonset(name: str, affinity: dict[str, Any] | None = None) -> DaemonSet:
    labels = {"k8s-app": name}
    return DaemonSet(
        metadata=ObjectMeta(name=name, namespace="kube-system"),
        spec=DaemonSetSpec(
            selector=LabelSelector(matchLabels=labels),
            template=PodTemplateSpec(
                metadata=ObjectMeta(labels=labels),
                spec=PodSpec(
                    containers=[Container(name=name, image=f"registry.invalid/{name}:1")],
                    affinity=Affinity.from_dict(affinity) if affinity else None,
                ),
            ),
        ),
    )


@pytest.fixture
def daemonsets(kube: KubeClient) -> Iterator[None]:
    """cilium (CNI), aws-node (cloud only, with EKS's affinity), kube-proxy (everywhere)."""
    for name, affinity in (("cilium", None), ("aws-node", AWS_NODE_AFFINITY), ("kube-proxy", None)):
        kube.create(daemonset(name, affinity))
    yield
    for name in ("cilium", "aws-node", "kube-proxy"):
        kube.delete(DaemonSet, name, namespace="kube-system", missing_ok=True)


def affinity_of(kube: KubeClient, name: str) -> dict[str, Any] | None:
    ds = kube.get(DaemonSet, name, namespace="kube-system")
    assert ds.spec is not None and ds.spec.template.spec is not None
    aff = ds.spec.template.spec.affinity
    return aff.to_dict() if aff is not None else None


def node_meta(kube: KubeClient, name: str) -> tuple[dict[str, str], dict[str, str]]:
    meta = kube.get(Node, name).metadata
    assert meta is not None
    return dict(meta.labels or {}), dict(meta.annotations or {})


def test_enable_is_idempotent_and_disable_removes_exactly_what_enable_added(
    plane: Any,
    kube: KubeClient,
    kube_cluster: LocalControlPlane,
    daemonsets: None,
    unique_name: Namer,
) -> None:
    cluster = unique_name("hyb")
    plane.import_cluster(cluster)
    edge_a, edge_b, spare = unique_name("edge-a"), unique_name("edge-b"), unique_name("spare")
    plane.pool(cluster, f"{cluster}-dc1", [edge_a, edge_b], site=f"{cluster}-dc1", spare=(spare,))
    by_provider, cloud = unique_name("pid"), unique_name("ip-10-0-0")
    nodes = [
        SimulatedNode(edge_a, cluster=cluster, labels={"team": "edge"}),
        # edge-b already carries the compute-type label (set by its kubelet): not Tether's.
        SimulatedNode(edge_b, cluster=cluster, labels={COMPUTE_TYPE_LABEL: "hybrid"}),
        SimulatedNode(spare, cluster="elsewhere"),  # a host, but in no pool of this cluster
        SimulatedNode(by_provider, cluster=cluster),  # providerID tether://<cluster>/<name>
        SimulatedNode(
            cloud,
            cluster="aws",
            provider_id="aws:///eu-west-1a/i-0abc",
            labels={EKS_COMPUTE_TYPE_LABEL: "ec2"},
        ),
    ]
    fleet = KubeletFleet(kube)
    fleet.register(nodes)
    names = [n.name for n in nodes]
    before = {n: node_meta(kube, n) for n in names}
    aws_before, cilium_before = affinity_of(kube, "aws-node"), affinity_of(kube, "cilium")
    proxy_rv = kube.get(DaemonSet, "kube-proxy", namespace="kube-system").metadata.resourceVersion  # type: ignore[union-attr]

    with plane.client(cluster) as tether, plane.db.session() as s:
        report = set_hybrid(s, cluster, enable=True, client=tether, eks_labels=True)
    assert report.failed == []
    assert report.hybrid_nodes == sorted([edge_a, edge_b, by_provider])
    assert len(report.changes) == 5  # 3 nodes, 2 DaemonSets

    labels_a, annotations_a = node_meta(kube, edge_a)
    assert labels_a[COMPUTE_TYPE_LABEL] == labels_a[EKS_COMPUTE_TYPE_LABEL] == "hybrid"
    assert labels_a[SITE_LABEL] == f"{cluster}-dc1"
    assert labels_a[POOL_LABEL] == f"{cluster}-dc1"
    assert labels_a["team"] == "edge"
    assert LABELS_ANNOTATION in annotations_a
    labels_p, _ = node_meta(kube, by_provider)
    assert labels_p[COMPUTE_TYPE_LABEL] == "hybrid"
    assert SITE_LABEL not in labels_p  # no host: no site or pool to tell
    assert node_meta(kube, cloud) == before[cloud]
    assert node_meta(kube, spare) == before[spare]

    cilium = affinity_of(kube, "cilium")
    assert cilium == {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": COMPUTE_TYPE_LABEL, "operator": "In", "values": ["hybrid"]}
                        ]
                    }
                ]
            }
        }
    }
    aws = affinity_of(kube, "aws-node")
    expected_aws = copy.deepcopy(AWS_NODE_AFFINITY)
    expected_aws["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchExpressions"].append(
        {"key": COMPUTE_TYPE_LABEL, "operator": "NotIn", "values": ["hybrid"]}
    )
    assert aws == expected_aws
    aws_ds = kube.get(DaemonSet, "aws-node", namespace="kube-system")
    assert AFFINITY_ANNOTATION in (aws_ds.metadata.annotations or {})  # type: ignore[union-attr]

    # The site and pool labels are out of a kubelet's reach (NodeRestriction).
    as_node = KubeClient(kube_cluster.add_user(f"system:node:{edge_a}", ["system:nodes"]))
    with as_node, pytest.raises(Forbidden):
        as_node.patch(Node, edge_a, {"metadata": {"labels": {SITE_LABEL: "elsewhere"}}})

    events_before = plane.events("Cluster", cluster)
    with plane.client(cluster) as tether, plane.db.session() as s:
        second = set_hybrid(s, cluster, enable=True, client=tether, eks_labels=True)
    assert second.changes == [] and second.failed == []
    assert plane.events("Cluster", cluster) == events_before  # no change, no event

    with plane.client(cluster) as tether, plane.db.session() as s:
        off = set_hybrid(s, cluster, enable=False, client=tether)
    assert off.failed == []
    assert len(off.changes) == 5
    for name in names:
        assert node_meta(kube, name) == before[name], name
    assert affinity_of(kube, "aws-node") == aws_before
    assert affinity_of(kube, "cilium") == cilium_before is None
    assert (
        kube.get(DaemonSet, "kube-proxy", namespace="kube-system").metadata.resourceVersion
        == proxy_rv
    )  # type: ignore[union-attr]

    with plane.client(cluster) as tether, plane.db.session() as s:
        assert set_hybrid(s, cluster, enable=False, client=tether).changes == []
    reasons = [e.reason for e in plane.events("Cluster", cluster)]
    assert reasons.count("HybridEnabled") == 5 and reasons.count("HybridDisabled") == 5
    fleet.stop(delete=True)


def test_dry_run_changes_nothing(plane: Any, kube: KubeClient, unique_name: Namer) -> None:
    cluster = unique_name("dry")
    plane.import_cluster(cluster)
    host = unique_name("edge")
    plane.pool(cluster, f"{cluster}-p", [host])
    fleet = KubeletFleet(kube)
    fleet.register([SimulatedNode(host, cluster=cluster)])
    before = node_meta(kube, host)
    with plane.client(cluster) as tether, plane.db.session() as s:
        report = set_hybrid(s, cluster, enable=True, client=tether, dry_run=True)
    assert report.dry_run and len(report.changes) == 1
    assert node_meta(kube, host) == before
    assert [e.reason for e in plane.events("Cluster", cluster)] == ["Created", "Imported"]
    fleet.stop(delete=True)
