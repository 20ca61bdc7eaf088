"""KubeClient and the error tree against a real kube-apiserver (tether.sim.envtest)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from lightkube.models.core_v1 import Container, PodSpec
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.models.policy_v1 import PodDisruptionBudgetSpec
from lightkube.resources.core_v1 import ConfigMap, Namespace, Node, Pod
from lightkube.resources.policy_v1 import PodDisruptionBudget

from tether.kube.client import KubeClient, Watch
from tether.kube.errors import (
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    NotFound,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from tether.sim.envtest import KUBE_VERSION, LocalControlPlane

pytestmark = pytest.mark.integration

Namer = Callable[[str], str]


def test_server_version_is_the_pinned_release(kube: KubeClient) -> None:
    version = kube.server_version()
    assert version.git_version == f"v{KUBE_VERSION}"
    assert version.semver == KUBE_VERSION
    assert (version.major, version.minor) == ("1", KUBE_VERSION.split(".")[1])
    assert version.platform == "linux/amd64"


def test_create_namespace_then_get_it(kube: KubeClient, unique_name: Namer) -> None:
    name = unique_name("ns")
    created = kube.create(Namespace(metadata=ObjectMeta(name=name, labels={"team": "tether"})))
    assert created.metadata is not None
    assert created.metadata.uid
    got = kube.get(Namespace, name)
    assert got.metadata is not None
    assert got.metadata.labels == {"team": "tether", "kubernetes.io/metadata.name": name}
    assert name in {ns.metadata.name for ns in kube.list(Namespace) if ns.metadata}
    kube.delete(Namespace, name)


def test_create_twice_is_conflict_already_exists(kube: KubeClient, namespace: str) -> None:
    with pytest.raises(Conflict) as info:
        kube.create(Namespace(metadata=ObjectMeta(name=namespace)))
    assert info.value.already_exists
    assert info.value.status_code == 409
    assert not info.value.retryable


def test_get_missing_is_not_found(kube: KubeClient, namespace: str) -> None:
    with pytest.raises(NotFound) as info:
        kube.get(ConfigMap, "missing", namespace=namespace)
    assert info.value.status_code == 404
    assert info.value.reason == "NotFound"
    assert not info.value.retryable
    kube.delete(ConfigMap, "missing", namespace=namespace, missing_ok=True)
    with pytest.raises(NotFound):
        kube.delete(ConfigMap, "missing", namespace=namespace)


def test_update_with_stale_resource_version_is_conflict(kube: KubeClient, namespace: str) -> None:
    kube.create(ConfigMap(metadata=ObjectMeta(name="cm"), data={"a": "1"}), namespace=namespace)
    stale = kube.get(ConfigMap, "cm", namespace=namespace)
    kube.patch(ConfigMap, "cm", {"data": {"a": "2"}}, namespace=namespace)
    stale.data = {"a": "3"}
    with pytest.raises(Conflict) as info:
        kube.replace(stale)
    assert not info.value.already_exists
    assert info.value.reason == "Conflict"
    assert not info.value.retryable
    # Re-read and retry: the usual answer to a Conflict.
    fresh = kube.get(ConfigMap, "cm", namespace=namespace)
    fresh.data = {"a": "3"}
    assert kube.replace(fresh).data == {"a": "3"}


def test_invalid_object_is_invalid_with_causes(kube: KubeClient) -> None:
    with pytest.raises(Invalid) as info:
        kube.create(Namespace(metadata=ObjectMeta(name="Not_A_Valid_Name")))
    err = info.value
    assert err.status_code == 422
    assert not err.retryable
    assert any(c.get("field") == "metadata.name" for c in err.causes)


def test_node_create_and_patch_labels_three_ways(kube: KubeClient, unique_name: Namer) -> None:
    name = unique_name("edge")
    mine = {"tether-test": name}  # the session's cluster holds other tests' hybrid nodes
    kube.create(Node(metadata=ObjectMeta(name=name, labels={"site": "factory-1", **mine})))
    try:
        merged = kube.patch(
            Node, name, {"metadata": {"labels": {"tether.io/compute-type": "hybrid"}}}
        )
        assert merged.metadata is not None
        assert merged.metadata.labels is not None
        assert merged.metadata.labels["tether.io/compute-type"] == "hybrid"
        assert merged.metadata.labels["site"] == "factory-1"

        strategic = kube.patch(
            Node,
            name,
            {"metadata": {"labels": {"site": None}}, "spec": {"unschedulable": True}},
            patch_type="strategic",
        )
        assert strategic.spec is not None
        assert strategic.spec.unschedulable
        assert strategic.metadata is not None
        assert strategic.metadata.labels is not None
        assert "site" not in strategic.metadata.labels

        jsonp = kube.patch(
            Node,
            name,
            [
                {
                    "op": "add",
                    "path": "/metadata/labels/eks.amazonaws.com~1compute-type",
                    "value": "hybrid",
                }
            ],
            patch_type="json",
        )
        assert jsonp.metadata is not None
        assert jsonp.metadata.labels is not None
        assert jsonp.metadata.labels["eks.amazonaws.com/compute-type"] == "hybrid"

        # A failed JSON patch `test` op is the optimistic-lock failure mode.
        with pytest.raises(KubeError) as info:
            kube.patch(
                Node,
                name,
                [{"op": "test", "path": "/metadata/labels/site", "value": "elsewhere"}],
                patch_type="json",
            )
        assert not info.value.retryable

        hybrid = kube.list(Node, labels={"tether.io/compute-type": "hybrid", **mine})
        assert [n.metadata.name for n in hybrid if n.metadata] == [name]
    finally:
        kube.delete(Node, name)


def test_applying_a_kind_the_cluster_does_not_serve_is_not_found(kube: KubeClient) -> None:
    """What the cluster network pass reads as "CRD not installed"."""
    widget = {"apiVersion": "example.tether.io/v1", "kind": "Widget", "metadata": {"name": "w"}}
    with pytest.raises(NotFound):
        kube.apply_object("widgets", widget, force=True)


def test_server_side_apply_owns_fields(kube: KubeClient, namespace: str) -> None:
    cm = ConfigMap(metadata=ObjectMeta(name="applied", namespace=namespace), data={"k": "1"})
    first = kube.apply(cm)
    assert first.data == {"k": "1"}
    cm.data = {"k": "2", "j": "3"}
    second = kube.apply(cm)
    assert second.data == {"k": "2", "j": "3"}
    assert second.metadata is not None
    assert second.metadata.managedFields is not None
    assert {m.manager for m in second.metadata.managedFields} == {"tether"}


def test_watch_from_list_version_sees_only_later_events(kube: KubeClient, namespace: str) -> None:
    kube.create(ConfigMap(metadata=ObjectMeta(name="before")), namespace=namespace)
    listed = kube.list(ConfigMap, namespace=namespace)
    assert {c.metadata.name for c in listed if c.metadata} >= {"before"}
    assert listed.resource_version

    seen: list[tuple[str, str]] = []
    with kube.watch(
        ConfigMap, namespace=namespace, resource_version=listed.resource_version, timeout_seconds=20
    ) as watch:
        kube.create(ConfigMap(metadata=ObjectMeta(name="after")), namespace=namespace)
        kube.patch(ConfigMap, "after", {"data": {"x": "y"}}, namespace=namespace)
        for event in watch:
            assert event.object.metadata is not None
            seen.append((event.type, str(event.object.metadata.name)))
            if len(seen) == 2:
                break
    assert seen == [("ADDED", "after"), ("MODIFIED", "after")]
    assert watch.resource_version is not None
    assert int(watch.resource_version) > int(listed.resource_version)


def test_watch_without_version_replays_then_ends_on_server_timeout(
    kube: KubeClient, namespace: str
) -> None:
    kube.create(ConfigMap(metadata=ObjectMeta(name="existing")), namespace=namespace)
    with kube.watch(ConfigMap, namespace=namespace, timeout_seconds=1) as watch:
        events = [(e.type, e.object.metadata.name if e.object.metadata else None) for e in watch]
    assert ("ADDED", "existing") in events


def test_watch_error_event_expired_is_gone() -> None:
    """A watch ERROR event (410 Expired) raises Gone.

    A fresh API server serves even ``resourceVersion=1`` from its watch cache, so the
    server is played by a mock transport here.
    """
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": "too old resource version: 1 (214)",
        "reason": "Expired",
        "code": 410,
    }
    body = json.dumps({"type": "ERROR", "object": status}).encode() + b"\n"
    seen: list[httpx2.Request] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200, content=body)

    http = httpx2.Client(transport=httpx2.MockTransport(handler), base_url="https://kube.test")
    watch = Watch(
        http,
        ConfigMap,
        "/api/v1/namespaces/x/configmaps",
        {"watch": "true"},
        httpx2.Timeout(1),
        resource_version="1",
    )
    with pytest.raises(Gone) as info, watch:
        list(watch)
    assert info.value.reason == "Expired"
    assert not info.value.retryable
    assert seen[0].url.params["resourceVersion"] == "1"


def test_evict_pending_pod(kube: KubeClient, namespace: str) -> None:
    pod = Pod(
        metadata=ObjectMeta(name="p"),
        spec=PodSpec(containers=[Container(name="c", image="registry.invalid/none:1")]),
    )
    kube.create(pod, namespace=namespace)
    kube.evict("p", namespace)
    with pytest.raises(NotFound):
        kube.get(Pod, "p", namespace=namespace)
    with pytest.raises(NotFound):
        kube.evict("p", namespace)


def test_evict_blocked_by_disruption_budget_is_too_many_requests(
    kube: KubeClient, namespace: str
) -> None:
    """No disruption controller runs here, so a budget never allows a disruption."""
    pod = Pod(
        metadata=ObjectMeta(name="guarded", labels={"app": "db"}),
        spec=PodSpec(containers=[Container(name="c", image="registry.invalid/none:1")]),
    )
    kube.create(pod, namespace=namespace)
    # Pending pods may always be evicted: play kubelet and mark it Running.
    kube.patch(Pod.Status, "guarded", {"status": {"phase": "Running"}}, namespace=namespace)
    kube.create(
        PodDisruptionBudget(
            metadata=ObjectMeta(name="db"),
            spec=PodDisruptionBudgetSpec(
                minAvailable=1, selector=LabelSelector(matchLabels={"app": "db"})
            ),
        ),
        namespace=namespace,
    )
    with pytest.raises(TooManyRequests) as info:
        kube.evict("guarded", namespace)
    assert info.value.retryable
    assert "disruption budget" in info.value.message


def test_bootstrap_token_authenticates_and_rbac_forbids(
    kube: KubeClient,
    kube_cluster: LocalControlPlane,
    tmp_path: Path,
    write_kubeconfig: Callable[..., Path],
) -> None:
    from lightkube.resources.core_v1 import Secret

    token_id, secret = "abc123", "0123456789abcdef"
    kube.create(
        Secret(
            metadata=ObjectMeta(name=f"bootstrap-token-{token_id}", namespace="kube-system"),
            type="bootstrap.kubernetes.io/token",
            stringData={
                "token-id": token_id,
                "token-secret": secret,
                "usage-bootstrap-authentication": "true",
            },
        )
    )
    good = write_kubeconfig(
        tmp_path / "good",
        kube_cluster.url,
        {"token": f"{token_id}.{secret}"},
        kube_cluster.ca_cert_pem,
    )
    bad = write_kubeconfig(
        tmp_path / "bad",
        kube_cluster.url,
        {"token": f"{token_id}.ffffffffffffffff"},
        kube_cluster.ca_cert_pem,
    )
    with KubeClient(good) as as_token, pytest.raises(Forbidden) as forbidden:
        as_token.list(Node)
    assert "system:bootstrap:abc123" in forbidden.value.message
    assert not forbidden.value.retryable
    with KubeClient(bad) as as_bad, pytest.raises(Unauthorized) as unauthorized:
        as_bad.list(Node)
    assert unauthorized.value.status_code == 401


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_closed_port_is_unavailable_and_retryable(
    tmp_path: Path, write_kubeconfig: Callable[..., Path]
) -> None:
    config = write_kubeconfig(
        tmp_path / "kc", f"https://127.0.0.1:{_closed_port()}", {"token": "x"}, None
    )
    with KubeClient(config, timeout=2) as client:
        with pytest.raises(Unavailable) as info:
            client.server_version()
        assert info.value.retryable
        assert info.value.status_code is None
        with pytest.raises(Unavailable):
            client.get(Namespace, "default")
        with pytest.raises(Unavailable):
            list(client.watch(Namespace, timeout_seconds=1))


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[Any] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def test_timeout_is_unavailable_and_retryable(
    tmp_path: Path, write_kubeconfig: Callable[..., Path], silent_server: int
) -> None:
    config = write_kubeconfig(
        tmp_path / "kc", f"https://127.0.0.1:{silent_server}", {"token": "x"}, None
    )
    with KubeClient(config, timeout=0.5) as client, pytest.raises(Unavailable) as info:
        client.get(Namespace, "default")
    assert info.value.retryable
    assert "timed out" in info.value.message
