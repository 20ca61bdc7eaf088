"""From a pool, its cluster, a host and a profile version to the node that host should be.

Pure: no I/O. :func:`node_target` computes a member's *target*: one document with
everything that decides the node (the cluster it joins, the node's IP, labels and taints,
the profile's OS and Kubernetes layers with the pool's variable values in them) and its
hash. Two targets are compared with :func:`tether.domain.profiles.diff`, whose rules use
the same paths (``os.image``, ``kubernetes.version``, ``node.labels``, ...).

:func:`node_config` turns a target into the ``NodeConfig`` document ``tether node init``
reads, and :func:`plan_document` into the desired-state document the host's agent runs
(``{"node": {"action": ..., ...}}``, see :mod:`tether.node.plan`). Credentials are left
out: the agent uses its own certificate, so a plan never carries a secret of the plane.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final, Literal

from tether.domain.models import ClusterSpec, HostSpec, PoolSpec, ProfileSpec
from tether.domain.profiles import Problem, UnknownVariable, render, resolve_values
from tether.domain.routes import Route, routes_document

__all__ = [
    "POOL_LABEL",
    "SITE_LABEL",
    "NodeTarget",
    "PlanAction",
    "TargetError",
    "node_config",
    "node_ip",
    "node_target",
    "plan_document",
    "reimages",
]

POOL_LABEL: Final = "tether.io/pool"
SITE_LABEL: Final = "tether.io/site"

PlanAction = Literal["join", "upgrade", "uninstall", "reboot", "reimage"]


class TargetError(ValueError):
    """The target cannot be computed; ``problems`` names every field at fault."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class NodeTarget:
    """Everything that decides a member's node, with its hash (see the module doc)."""

    host: str
    profile_version: str
    spec: Mapping[str, Any]

    @cached_property
    def hash(self) -> str:
        text = json.dumps(self.spec, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def kubernetes_version(self) -> str:
        return str(self.spec["kubernetes"]["version"])


def node_ip(
    pool: PoolSpec, host: HostSpec, inventory: Mapping[str, Any]
) -> ipaddress.IPv4Address | None:
    """The node IP: the host's override, else its first inventory address in the node CIDR."""
    if host.node_ip is not None:
        return host.node_ip
    for nic in inventory.get("nics") or []:
        for text in nic.get("addresses") or [] if isinstance(nic, Mapping) else []:
            try:
                address = ipaddress.ip_interface(str(text)).ip
            except ValueError:
                continue
            if isinstance(address, ipaddress.IPv4Address) and address in pool.node_cidr:
                return address
    return None


def _taint_flag(taints: Sequence[Mapping[str, str]]) -> list[str]:
    """Taints go on the kubelet's command line: it registers its Node with them."""
    if not taints:
        return []
    text = ",".join(f"{t['key']}={t['value']}:{t['effect']}" for t in taints)
    return [f"--register-with-taints={text}"]


def node_target(
    *,
    cluster_name: str,
    cluster: ClusterSpec,
    pool_name: str,
    pool: PoolSpec,
    host_name: str,
    host: HostSpec,
    inventory: Mapping[str, Any],
    profile: ProfileSpec,
) -> NodeTarget:
    """The node ``host_name`` should be in ``pool_name``; :class:`TargetError` says why not."""
    problems: list[Problem] = []
    if cluster.api_endpoint is None:
        problems.append(Problem("cluster.spec.apiEndpoint", "is not set: import the cluster"))
    if cluster.ca_bundle is None:
        problems.append(Problem("cluster.spec.caBundle", "is not set: import the cluster"))
    ip = node_ip(pool, host, inventory)
    if ip is None:
        problems.append(
            Problem(
                f"host.{host_name}.spec.nodeIP",
                f"the host reports no address inside the node CIDR {pool.node_cidr}; "
                "set spec.nodeIP on the host",
            )
        )
    values, found = resolve_values(profile.variables, pool.variables)
    problems.extend(found)
    layers = profile.layers.model_dump(mode="json", by_alias=True, exclude={"network", "addons"})
    try:
        rendered = render(layers, values, "spec.layers")
    except UnknownVariable as exc:
        problems.append(exc.problem)
        rendered = layers
    if problems:
        raise TargetError(problems)
    labels = {**pool.node_labels, POOL_LABEL: pool_name, SITE_LABEL: pool.site}
    node: dict[str, Any] = {
        "ip": str(ip),
        "nodeCIDR": str(pool.node_cidr),
        "labels": dict(sorted(labels.items())),
        "taints": [t.model_dump(mode="json") for t in pool.node_taints],
    }
    if host.vpn_server_ip is not None:
        # The host's own VPN server: the VPC is reached through it (docs/network.md).
        node["routes"] = routes_document([Route(cluster.vpc_cidr, host.vpn_server_ip)])
    spec = {
        "cluster": {
            "name": cluster_name,
            "apiServerEndpoint": cluster.api_endpoint,
            "certificateAuthority": cluster.ca_bundle,
            "serviceCIDR": str(cluster.service_cidr),
            "eksLabels": cluster.eks_compute_type_label,
        },
        "node": node,
        "os": rendered["os"],
        "kubernetes": rendered["kubernetes"],
    }
    return NodeTarget(host=host_name, profile_version=profile.version, spec=spec)


def node_config(target: NodeTarget) -> dict[str, Any]:
    """The NodeConfig (``tether.io/v1alpha1``) for ``target``, without credentials."""
    spec = target.spec
    kube = spec["kubernetes"]
    os_layer = spec["os"]
    flags = [f"--{k.removeprefix('--')}={v}" for k, v in sorted(kube["kubeletExtraArgs"].items())]
    return {
        "apiVersion": "tether.io/v1alpha1",
        "kind": "NodeConfig",
        "spec": {
            "cluster": {
                key: spec["cluster"][key]
                for key in ("name", "apiServerEndpoint", "certificateAuthority", "serviceCIDR")
            },
            "node": {
                "name": target.host,
                "ip": spec["node"]["ip"],
                "nodeCIDR": spec["node"]["nodeCIDR"],
                "labels": spec["node"]["labels"],
                "eksLabels": spec["cluster"]["eksLabels"],
            },
            "kubelet": {
                "config": kube["kubeletConfig"],
                "flags": flags + _taint_flag(spec["node"]["taints"]),
            },
            "containerd": {"config": kube["containerdConfig"]},
            "os": {
                "sysctls": os_layer["sysctls"],
                "kernelModules": os_layer["kernelModules"],
                "files": os_layer["files"],
            },
        },
    }


def reimages(document: Any) -> bool:
    """Whether a desired-state document is a re-image plan: its host reboots into its
    installer once it reports the plan applied, and enrols again from the new image."""
    node = document.get("node") if isinstance(document, dict) else None
    return isinstance(node, dict) and node.get("action") == "reimage"


def plan_document(action: PlanAction, target: NodeTarget, *, step: str = "") -> dict[str, Any]:
    """The desired-state document that has the host's agent take ``action``.

    ``step`` names the rollout step (the pool's rollout and the node's attempt): a
    document differs from the last one even when the action repeats (a second reboot),
    so the agent runs it again. The target's static routes go along with every action
    but ``uninstall``: a document without them has the agent remove them."""
    node: dict[str, Any] = {"action": action}
    if action in ("join", "upgrade"):
        # An upgrade carries the node's config too: the target's other changes (kubelet
        # config, labels) land with the new version, in one plan and one report.
        node["version"] = target.kubernetes_version
        node["nodeConfig"] = node_config(target)
    elif action == "reimage":
        node["image"] = str(target.spec["os"]["image"])
    if step:
        node["step"] = step
    routes = target.spec["node"].get("routes")
    if routes and action != "uninstall":
        return {"node": node, "routes": routes}
    return {"node": node}
