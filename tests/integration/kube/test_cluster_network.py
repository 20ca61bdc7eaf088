"""The pools' network in the cluster, judged by a real kube-apiserver with the upstream
Cilium and Calico CRDs installed (``scripts/fetch-crds.sh``): the BGP resources of
``bgp`` pools, and every pool Node's pod CIDR."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube.models.core_v1 import NodeSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Node
from sqlalchemy import delete, select

from tether import netplan
from tether.controllers.nodes import NodeHealthController
from tether.controllers.pools import PoolController
from tether.domain import resources as r
from tether.domain.models import ObjectKind
from tether.kube.client import KubeClient
from tether.kube.errors import Invalid
from tether.netplan.incluster import KINDS, kind_of
from tether.netplan.render.kube import CALICO_API, CALICO_CRD_API
from tether.services import resources as svc
from tether.services.clusternet import reconcile_network
from tether.store.schema import HostRow, NodeStatusRow, PoolMemberRow, PoolRow, utcnow

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).parents[3] / "examples" / "hybrid-network.yaml"
Namer = Callable[[str], str]


def example_plan() -> netplan.Plan:
    doc, findings = netplan.load_document(yaml.safe_load(EXAMPLE.read_text()))
    assert doc is not None, findings
    return netplan.plan(doc, lambda _: "k" * 64)


def cluster_manifests(plan: netplan.Plan) -> list[dict[str, Any]]:
    """Every Kubernetes object of the plan's files, as the cluster would store it (the
    calicoctl form turned into the CRD Calico stores it in)."""
    objects = []
    for path, text in plan.files(include_secrets=False).items():
        if path.endswith(("cilium-bgp.yaml", "calico-bgp.yaml")):
            for obj in yaml.safe_load_all(text):
                if obj["apiVersion"] == CALICO_API:
                    obj["apiVersion"] = CALICO_CRD_API
                objects.append(obj)
    return objects


def kept(sent: Any, stored: Any) -> bool:
    """Whether ``stored`` holds every field of ``sent`` with the same value."""
    if isinstance(sent, dict):
        return isinstance(stored, dict) and all(
            k in stored and kept(v, stored[k]) for k, v in sent.items()
        )
    if isinstance(sent, list):
        return (
            isinstance(stored, list)
            and len(sent) == len(stored)
            and all(kept(a, b) for a, b in zip(sent, stored, strict=True))
        )
    return bool(sent == stored)


@pytest.fixture
def applied(kube: KubeClient) -> Iterator[list[dict[str, Any]]]:
    """Objects a test applies by hand, deleted afterwards."""
    done: list[dict[str, Any]] = []
    yield done
    for obj in done:
        kind = kind_of(obj)
        kube.delete_object(kind.api_version, kind.plural, obj["metadata"]["name"])


def test_every_rendered_bgp_resource_passes_the_upstream_crd_schemas(
    kube: KubeClient, network_crds: list[str], applied: list[dict[str, Any]]
) -> None:
    objects = cluster_manifests(example_plan())
    assert sorted(o["kind"] for o in objects) == [
        "BGPPeer",
        "CiliumBGPAdvertisement",
        "CiliumBGPClusterConfig",
        "CiliumBGPPeerConfig",
        "IPPool",
    ]
    for obj in objects:
        stored = kube.apply_object(kind_of(obj).plural, obj)
        applied.append(obj)
        # Nothing was dropped or changed on the way in (the schema may add defaults).
        assert kept(obj["spec"], stored["spec"]), (obj["kind"], stored["spec"])


@pytest.mark.parametrize(
    ("kind", "break_it", "complaint"),
    [
        # The Calico peer Tether used to render: BGPPeer has no localASNumber field.
        ("BGPPeer", lambda o: o["spec"].update(localASNumber=64512), "localASNumber"),
        (
            "CiliumBGPClusterConfig",
            lambda o: o["spec"]["bgpInstances"][0].update(localASN="sixty-four"),
            "localASN",
        ),
        (
            "CiliumBGPAdvertisement",
            lambda o: o["spec"]["advertisements"][0].update(advertisementType="PodCIDRs"),
            "advertisementType",
        ),
    ],
)
def test_the_api_server_refuses_a_wrong_bgp_resource(
    kube: KubeClient,
    network_crds: list[str],
    kind: str,
    break_it: Callable[[dict[str, Any]], None],
    complaint: str,
) -> None:
    good = next(o for o in cluster_manifests(example_plan()) if o["kind"] == kind)
    wrong = copy.deepcopy(good)
    wrong["metadata"]["name"] += "-wrong"
    break_it(wrong)
    with pytest.raises(Invalid) as refused:
        kube.apply_object(kind_of(wrong).plural, wrong)
    assert complaint in str(refused.value)
    plural = kind_of(wrong).plural
    names = [o["metadata"]["name"] for o in kube.list_objects(kind_of(wrong).api_version, plural)]
    assert wrong["metadata"]["name"] not in names


def register_nodes(kube: KubeClient, names: list[str], pod_cidr: str | None = None) -> None:
    """Nodes as their kubelets would register them (a bare API server has none)."""
    for name in names:
        spec = NodeSpec(podCIDR=pod_cidr, podCIDRs=[pod_cidr]) if pod_cidr else None
        kube.create(Node(metadata=ObjectMeta(name=name), spec=spec))


@pytest.fixture
def nodes(kube: KubeClient) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for name in made:
        kube.delete(Node, name, missing_ok=True)


def inventory(ip: str) -> dict[str, object]:
    return {"addresses": [ip]}


def new_cluster(plane: Any, unique_name: Namer) -> tuple[str, str]:
    """A freshly imported cluster and the name its pool gets."""
    cluster = unique_name("net")
    plane.import_cluster(cluster, serviceCIDR="172.20.0.0/16")
    return cluster, f"{cluster}-p"


def _cordoned_in_store(plane: Any, host: str) -> bool:
    with plane.db.session() as s:
        return bool(
            s.scalars(
                select(NodeStatusRow.unschedulable).where(NodeStatusRow.host_name == host)
            ).first()
        )


def condition(plane: Any, pool: str) -> dict[str, str]:
    with plane.db.session() as s:
        status = s.scalars(select(PoolRow.status).where(PoolRow.name == pool)).one()
    return next(c for c in status["conditions"] if c["type"] == "NetworkApplied")


def tether_objects(kube: KubeClient, cluster: str) -> dict[str, dict[str, Any]]:
    found = {}
    for kind in KINDS:
        for obj in kube.list_objects(
            kind.api_version, kind.plural, labels={"tether.io/cluster": cluster}
        ):
            found[f"{obj['kind']}/{obj['metadata']['name']}"] = obj
    return found


def test_bgp_pool_resources_are_applied_by_tether_and_removed_with_the_pool(
    plane: Any,
    kube: KubeClient,
    network_crds: list[str],
    unique_name: Namer,
    nodes: list[str],
) -> None:
    cluster, pool = new_cluster(plane, unique_name)
    hosts = {unique_name("n"): inventory("10.80.1.11"), unique_name("n"): inventory("10.80.1.12")}
    plane.pool(
        cluster,
        pool,
        hosts,
        spec={
            "routing": "bgp",
            "vpnServer": {"publicIP": "203.0.113.5", "insideIP": "10.80.1.1", "asn": 64513},
        },
    )
    nodes += list(hosts)
    register_nodes(kube, list(hosts))

    with plane.client(cluster) as client:  # Tether's own least-privilege credentials
        first = reconcile_network(plane.db, cluster, client)
        again = reconcile_network(plane.db, cluster, client)

    name = f"tether-{pool}"
    objects = tether_objects(kube, cluster)
    assert sorted(objects) == [
        f"CiliumBGPAdvertisement/{name}-pod-cidr",
        f"CiliumBGPClusterConfig/{name}",
        f"CiliumBGPPeerConfig/{name}",
    ]
    cluster_config = objects[f"CiliumBGPClusterConfig/{name}"]
    assert {m["manager"] for m in cluster_config["metadata"]["managedFields"]} == {"tether"}
    peer = cluster_config["spec"]["bgpInstances"][0]
    assert (peer["localASN"], peer["peers"][0]["peerASN"]) == (64512, 64513)
    assert peer["peers"][0]["peerAddress"] == "10.80.1.1"
    assert sorted(
        cluster_config["spec"]["nodeSelector"]["matchExpressions"][0]["values"]
    ) == sorted(hosts)
    blocks = {h: kube.get(Node, h).spec.podCIDR for h in hosts}
    assert all(
        b is not None and b.startswith("10.85.") and b.endswith("/24") for b in blocks.values()
    )
    assert len(set(blocks.values())) == 2
    assert first.applied == 3 and len(first.plan.node_patches) == 2
    assert again.plan.node_patches == {} and again.plan.delete == []
    assert condition(plane, pool) == {
        "type": "NetworkApplied",
        "status": "True",
        "reason": "Applied",
        "message": "podCIDR set on 2 node(s); 3 cilium BGP resource(s) applied",
    }
    reasons = [e.reason for e in plane.events(ObjectKind.POOL.value, pool)]
    assert reasons.count("PodCIDRSet") == 2 and "NetworkApplied" in reasons

    # The pool goes (its hosts left first, as the pool reconciler does): so do its objects.
    with plane.db.session() as s:
        for row in s.scalars(select(HostRow).where(HostRow.pool == pool)):
            row.pool = None
        s.execute(delete(PoolMemberRow).where(PoolMemberRow.pool == pool))
        s.flush()
        assert svc.delete_pool(s, pool, None) is None
    with plane.client(cluster) as client:
        gone = reconcile_network(plane.db, cluster, client)
    assert len(gone.plan.delete) == 3
    assert tether_objects(kube, cluster) == {}
    # A Node's pod CIDR stays: the API server lets it be set once only.
    assert {h: kube.get(Node, h).spec.podCIDR for h in hosts} == blocks


def test_static_pool_nodes_get_their_planned_block_once(
    plane: Any,
    kube: KubeClient,
    unique_name: Namer,
    nodes: list[str],
) -> None:
    cluster, pool = new_cluster(plane, unique_name)
    fresh, kept = unique_name("n"), unique_name("n")
    hosts = {fresh: inventory("10.80.1.11"), kept: inventory("10.80.1.12")}
    plane.pool(cluster, pool, hosts, spec={"podCIDRMaskPerNode": 26})
    nodes += [fresh, kept]
    register_nodes(kube, [fresh])
    register_nodes(kube, [kept], pod_cidr="10.85.3.64/26")  # set before: the plan keeps it

    with plane.client(cluster) as client:
        reconcile_network(plane.db, cluster, client)
    block = kube.get(Node, fresh).spec
    assert block.podCIDR is not None and block.podCIDRs == [block.podCIDR]
    assert block.podCIDR.startswith("10.85.") and block.podCIDR.endswith("/26")
    assert block.podCIDR != "10.85.3.64/26"
    assert kube.get(Node, kept).spec.podCIDR == "10.85.3.64/26"
    assert condition(plane, pool)["reason"] == "Applied"
    with pytest.raises(Invalid):  # why "once": the API server refuses any change
        kube.patch(Node, fresh, {"spec": {"podCIDR": "10.85.9.0/26", "podCIDRs": ["10.85.9.0/26"]}})

    # The Node comes back with a block from elsewhere (another IPAM): reported, not touched.
    kube.delete(Node, kept)
    register_nodes(kube, [kept], pod_cidr="10.244.0.0/24")
    with plane.client(cluster) as client:
        reconcile_network(plane.db, cluster, client)
    got = condition(plane, pool)
    assert (got["status"], got["reason"]) == ("False", "PodCIDRConflict")
    assert f"{kept} has 10.244.0.0/24" in got["message"]
    assert kube.get(Node, kept).spec.podCIDR == "10.244.0.0/24"


def test_nodes_controller_gives_a_node_its_block_when_it_registers_and_pools_keep_the_condition(
    plane: Any,
    kube: KubeClient,
    unique_name: Namer,
    nodes: list[str],
    wait_for: Callable[..., None],
) -> None:
    cluster, pool = new_cluster(plane, unique_name)
    host = unique_name("n")
    plane.pool(cluster, pool, {host: inventory("10.80.1.11")})
    nodes.append(host)
    with plane.client(cluster) as tether:
        # No resync in the test's time: the new Node's own event gives it its block.
        controller = NodeHealthController(
            plane.db, cluster, tether, resync_seconds=3600, network_client=tether
        )
        controller.start()
        try:
            register_nodes(kube, [host])  # as the kubelet does, before its CNI runs ...
            not_ready = {
                "type": "Ready",
                "status": "False",
                "reason": "KubeletNotReady",
                "message": "container runtime network not ready",
                "lastHeartbeatTime": utcnow().isoformat(),
                "lastTransitionTime": utcnow().isoformat(),
            }
            kube.patch(Node.Status, host, {"status": {"conditions": [not_ready]}})  # ... and so
            wait_for(lambda: kube.get(Node, host).spec.podCIDR is not None)
            wait_for(lambda: condition(plane, pool)["reason"] == "Applied")
            passes, lists, watches = (
                controller.network_passes,
                controller.loop.lists,
                controller.loop.watches,
            )
            # A change to a known Node (a cordon here; readiness alike) moves its health
            # in the store, and leaves the cluster's network objects to the resync. A
            # list or a watch that ended (a resync of its own, which a loaded machine may
            # bring about) runs a pass; the cordon's event does not (CI once saw one more
            # pass than the events explain).
            kube.patch(Node, host, {"spec": {"unschedulable": True}})
            wait_for(lambda: _cordoned_in_store(plane, host))
            relisted = controller.loop.lists - lists + controller.loop.watches - watches
            assert controller.network_passes - passes <= relisted
        finally:
            controller.stop()
    assert kube.get(Node, host).spec.podCIDR.startswith("10.85.")
    # The pool reconciler writes its own conditions and keeps this one.
    PoolController(plane.db, lambda _: None).reconcile(pool)
    with plane.db.session() as s:
        status = s.scalars(select(PoolRow.status).where(PoolRow.name == pool)).one()
    types = [c["type"] for c in status["conditions"]]
    assert "Ready" in types and types.count("NetworkApplied") == 1


def test_a_calico_profile_gets_calico_crds_and_the_node_as_annotation(
    plane: Any,
    kube: KubeClient,
    network_crds: list[str],
    unique_name: Namer,
    nodes: list[str],
) -> None:
    cluster, pool = new_cluster(plane, unique_name)
    profile = unique_name("calico")
    layers = {
        "os": {"image": "img"},
        "kubernetes": {"version": "1.37"},
        "network": {"cni": "calico"},
    }
    with plane.db.session() as s:
        svc.create_profile(
            s,
            r.ProfileCreate.model_validate(
                {"name": profile, "spec": {"version": "1.0.0", "layers": layers}}
            ),
        )
    host = unique_name("n")
    vpn = {"publicIP": "203.0.113.5", "insideIP": "10.80.1.1", "asn": 64513}
    spec = {
        "routing": "bgp",
        "nodeASN": 64600,
        "vpnServer": vpn,
        "profile": {"name": profile, "version": "1.0.0"},
    }
    plane.pool(cluster, pool, {host: inventory("10.80.1.11")}, spec=spec)
    nodes.append(host)
    register_nodes(kube, [host])
    with plane.client(cluster) as client:
        reconcile_network(plane.db, cluster, client)

    objects = tether_objects(kube, cluster)
    assert sorted(objects) == [f"BGPPeer/tether-{pool}-vpn-server", f"IPPool/tether-{pool}"]
    peer = objects[f"BGPPeer/tether-{pool}-vpn-server"]["spec"]
    assert (peer["peerIP"], peer["asNumber"]) == ("10.80.1.1", 64513)
    node = kube.get(Node, host)
    assert node.metadata.annotations["projectcalico.org/ASNumber"] == "64600"
    assert node.spec.podCIDR is not None
    assert condition(plane, pool)["message"].endswith("2 calico BGP resource(s) applied")
    for name in objects:  # leave nothing behind for other tests' clusters
        kind_name, obj_name = name.split("/")
        kind = next(k for k in KINDS if k.kind == kind_name)
        kube.delete_object(kind.api_version, kind.plural, obj_name)
