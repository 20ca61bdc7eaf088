"""What the node tool reads from Kubernetes, through :mod:`tether.kube.client`.

Three questions, each one small read:

- the control plane's version (``GET /version``, allowed anonymously by default), for
  the skew rule before joining;
- this node's state: registered, Ready, cordoned, its kubelet version;
- the pods still bound to this node, to decide whether it is drained.

:class:`KubeNodeView` asks a real API server: the version with the NodeConfig's CA and
no credentials, the rest with a kubeconfig (by default the kubelet's own, whose node
identity may read its Node and its pods). Tests of node phases that do not need an API
server use any object with the same three methods.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tether.domain.drain import PodFacts
from tether.errors import Temporary
from tether.kube.client import ALL_NAMESPACES, KubeClient
from tether.kube.errors import KubeError, NotFound
from tether.kube.facts import node_snapshot, pod_facts
from tether.kube.resources import Node, Pod

__all__ = ["KubeNodeView", "NodeState", "NodeView", "NodeViewError"]


class NodeViewError(Temporary):
    """The API server could not answer (unreachable, refused, bad credentials)."""


@dataclass(frozen=True)
class NodeState:
    ready: bool | None
    unschedulable: bool
    kubelet_version: str | None


class NodeView(Protocol):
    def control_plane_version(self) -> str: ...
    def node(self, name: str) -> NodeState | None: ...
    def pods_on(self, name: str) -> list[PodFacts]: ...


class KubeNodeView:
    """The three reads against a real API server (see the module docstring)."""

    def __init__(self, endpoint: str, ca_pem: str, kubeconfig: Path | None) -> None:
        self.endpoint = endpoint
        self.ca_pem = ca_pem
        self.kubeconfig = kubeconfig

    def _anonymous(self) -> KubeClient:
        config = {
            "clusters": [
                {
                    "name": "c",
                    "cluster": {
                        "server": self.endpoint,
                        "certificate-authority-data": base64.b64encode(
                            self.ca_pem.encode()
                        ).decode(),
                    },
                }
            ],
            "users": [{"name": "anonymous", "user": {}}],
            "contexts": [{"name": "c", "context": {"cluster": "c", "user": "anonymous"}}],
            "current-context": "c",
        }
        return KubeClient(config)

    def _client(self) -> KubeClient:
        if self.kubeconfig is None or not self.kubeconfig.is_file():
            raise NodeViewError(
                f"no kubeconfig at {self.kubeconfig}: the kubelet has not joined yet, or pass "
                "--kubeconfig"
            )
        try:
            return KubeClient(self.kubeconfig)
        # A ConfigError for a bad kubeconfig; an OSError for a certificate it names that is
        # not there (yet: the kubelet writes its kubeconfig and certificate in turn).
        except (KubeError, OSError) as exc:
            raise NodeViewError(f"cannot use the kubeconfig {self.kubeconfig}: {exc}") from exc

    def control_plane_version(self) -> str:
        try:
            with self._anonymous() as client:
                return client.server_version().git_version
        except KubeError as exc:
            raise NodeViewError(f"cannot read the API server version: {exc}") from exc

    def node(self, name: str) -> NodeState | None:
        try:
            with self._client() as client:
                node = client.get(Node, name)
        except NotFound:
            return None
        except KubeError as exc:
            raise NodeViewError(f"cannot read node {name}: {exc}") from exc
        snapshot = node_snapshot(node)
        info = node.status.nodeInfo if node.status is not None else None
        return NodeState(
            ready=None if snapshot is None else snapshot.ready,
            unschedulable=bool(node.spec is not None and node.spec.unschedulable),
            kubelet_version=info.kubeletVersion if info is not None else None,
        )

    def pods_on(self, name: str) -> list[PodFacts]:
        try:
            with self._client() as client:
                pods = client.list(Pod, namespace=ALL_NAMESPACES, fields={"spec.nodeName": name})
                return [pod_facts(p) for p in pods]
        except KubeError as exc:
            raise NodeViewError(f"cannot list the pods on node {name}: {exc}") from exc
