"""Importing a cluster: check its version, install Tether's objects, keep Tether's credentials.

``import_cluster`` runs in this order, so a refusal changes nothing and a re-run repairs a
half-done import:

1. check the kubeconfig (:func:`tether.services.kubeconn.parse_kubeconfig`);
2. read ``/version`` and refuse unsupported versions
   (:func:`tether.domain.kubeversion.check_control_plane`);
3. build and validate the Cluster spec (the endpoint, CA and version from the cluster,
   ``serviceCIDR`` from the cluster's ``ServiceCIDR`` unless given);
4. server-side apply Tether's in-cluster objects (:func:`manifests`), as field manager
   ``tether``: re-applying is a no-op;
5. ask the TokenRequest API for a token of ``tether-system/tether`` and store a
   kubeconfig with it (``<data dir>/clusters/<name>/kubeconfig``, 0600), then check
   that the token works;
6. create or update the Cluster and record events, in the caller's transaction.

Least privilege: Tether's service account can do exactly what Tether does (see
:func:`manifests` and docs/kubernetes.md): read and label Nodes, cordon them, list Pods
and evict them, read and patch the CNI and VPC-CNI DaemonSets by name, read CSRs and
approve kubelet CSRs for the two kubelet signers, create and delete Secrets in
``kube-system`` (bootstrap tokens; it cannot read any Secret).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.domain import models as m
from tether.domain import resources as r
from tether.domain.hybrid import CLOUD_ONLY_DAEMONSETS, CNI_DAEMONSETS
from tether.domain.kubeapi import ImportRequest, ImportResult
from tether.domain.kubeversion import (
    KubeMinor,
    check_control_plane,
    node_skew_problem,
    parse_version,
)
from tether.domain.models import EventType, ObjectKind
from tether.domain.nodeidentity import (
    BOOTSTRAP_GROUP,
    KUBELET_CLIENT_SIGNER,
    KUBELET_SERVING_SIGNER,
)
from tether.errors import Invalid
from tether.kube.client import KubeClient
from tether.kube.errors import Forbidden, KubeError, NotFound
from tether.kube.resources import (
    ClusterRole,
    ClusterRoleBinding,
    Namespace,
    Node,
    ObjectMeta,
    PolicyRule,
    Role,
    RoleBinding,
    RoleRef,
    ServiceAccount,
    ServiceCIDR,
    Subject,
)
from tether.services import events
from tether.services import resources as svc
from tether.services.kubeconn import (
    check_name,
    from_kube_error,
    kubeconfig_path,
    parse_kubeconfig,
    write_private,
)
from tether.store.schema import ClusterRow

__all__ = [
    "BOOTSTRAPPER_BINDING",
    "CLUSTER_ROLE",
    "NAMESPACE",
    "SERVICE_ACCOUNT",
    "import_cluster",
    "manifests",
]

NAMESPACE = "tether-system"
SERVICE_ACCOUNT = "tether"
CLUSTER_ROLE = "tether:controller"
TOKENS_ROLE = "tether:bootstrap-tokens"
BOOTSTRAPPER_BINDING = "tether:kubelet-bootstrap"
_MANAGED = {"app.kubernetes.io/managed-by": "tether"}


def _meta(name: str, namespace: str | None = None) -> ObjectMeta:
    return ObjectMeta(name=name, namespace=namespace, labels=dict(_MANAGED))


def manifests() -> list[Any]:
    """Tether's in-cluster objects, least privilege for what Tether does."""
    daemonsets = sorted({name for _, name in (*CNI_DAEMONSETS, *CLOUD_ONLY_DAEMONSETS)})
    sa = Subject(kind="ServiceAccount", name=SERVICE_ACCOUNT, namespace=NAMESPACE)
    return [
        Namespace(metadata=_meta(NAMESPACE)),
        ServiceAccount(metadata=_meta(SERVICE_ACCOUNT, NAMESPACE)),
        ClusterRole(
            metadata=_meta(CLUSTER_ROLE),
            rules=[
                # Node health (watch); labels, cordons, taints (patch); a node leaving its
                # pool is deleted.
                PolicyRule(
                    apiGroups=[""],
                    resources=["nodes"],
                    verbs=["get", "list", "watch", "patch", "delete"],
                ),
                # Drain: find the pods on a node, evict them, wait for them to go.
                PolicyRule(apiGroups=[""], resources=["pods"], verbs=["get", "list", "watch"]),
                PolicyRule(apiGroups=[""], resources=["pods/eviction"], verbs=["create"]),
                # Hybrid mode: node affinity on the CNI and VPC CNI DaemonSets, by name only.
                PolicyRule(
                    apiGroups=["apps"],
                    resources=["daemonsets"],
                    resourceNames=daemonsets,
                    verbs=["get", "patch"],
                ),
                # The pools' network: BGP resources of bgp pools (Cilium or Calico), server-
                # side applied and removed with their pool (Node pod CIDRs: nodes/patch).
                PolicyRule(
                    apiGroups=["cilium.io"],
                    resources=[
                        "ciliumbgpclusterconfigs",
                        "ciliumbgppeerconfigs",
                        "ciliumbgpadvertisements",
                    ],
                    verbs=["get", "list", "create", "patch", "delete"],
                ),
                PolicyRule(
                    apiGroups=["crd.projectcalico.org"],
                    resources=["ippools", "bgppeers"],
                    verbs=["get", "list", "create", "patch", "delete"],
                ),
                # Node identity: approve or deny kubelet CSRs, for the kubelet signers only.
                PolicyRule(
                    apiGroups=["certificates.k8s.io"],
                    resources=["certificatesigningrequests"],
                    verbs=["get", "list", "watch"],
                ),
                PolicyRule(
                    apiGroups=["certificates.k8s.io"],
                    resources=["certificatesigningrequests/approval"],
                    verbs=["update"],
                ),
                PolicyRule(
                    apiGroups=["certificates.k8s.io"],
                    resources=["signers"],
                    resourceNames=[KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER],
                    verbs=["approve"],
                ),
            ],
        ),
        ClusterRoleBinding(
            metadata=_meta(CLUSTER_ROLE),
            roleRef=RoleRef(
                apiGroup="rbac.authorization.k8s.io", kind="ClusterRole", name=CLUSTER_ROLE
            ),
            subjects=[sa],
        ),
        # Bootstrap tokens are Secrets in kube-system: create and delete, never read.
        Role(
            metadata=_meta(TOKENS_ROLE, "kube-system"),
            rules=[PolicyRule(apiGroups=[""], resources=["secrets"], verbs=["create", "delete"])],
        ),
        RoleBinding(
            metadata=_meta(TOKENS_ROLE, "kube-system"),
            roleRef=RoleRef(apiGroup="rbac.authorization.k8s.io", kind="Role", name=TOKENS_ROLE),
            subjects=[sa],
        ),
        # As kubeadm's kubeadm:kubelet-bootstrap: bootstrap tokens may create CSRs. There is
        # deliberately no binding to ...:nodeclient (kubeadm:node-autoapprove-bootstrap): a
        # controller-manager would auto-approve those CSRs without Tether's host checks.
        ClusterRoleBinding(
            metadata=_meta(BOOTSTRAPPER_BINDING),
            roleRef=RoleRef(
                apiGroup="rbac.authorization.k8s.io",
                kind="ClusterRole",
                name="system:node-bootstrapper",
            ),
            subjects=[
                Subject(kind="Group", name=BOOTSTRAP_GROUP, apiGroup="rbac.authorization.k8s.io")
            ],
        ),
    ]


def _describe(obj: Any) -> str:
    meta = obj.metadata
    where = f"{meta.namespace}/" if meta.namespace else ""
    return f"{type(obj).__name__}/{where}{meta.name}"


def _service_cidr(client: KubeClient) -> str | None:
    """The cluster's Service CIDR from its ``ServiceCIDR`` named ``kubernetes`` (1.33+)."""
    try:
        obj = client.get(ServiceCIDR, "kubernetes")
    except (NotFound, Forbidden):
        return None
    cidrs = obj.spec.cidrs if obj.spec is not None else None
    ipv4 = [c for c in cidrs or [] if ":" not in c]
    return ipv4[0] if ipv4 else None


def _spec_for(
    session: Session,
    name: str,
    overrides: dict[str, Any],
    discovered: dict[str, Any],
) -> tuple[m.ClusterSpec, r.Cluster | None]:
    row = session.scalars(select(ClusterRow).where(ClusterRow.name == name)).one_or_none()
    existing = svc.to_cluster(row) if row is not None else None
    base: dict[str, Any] = (
        existing.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
        if existing is not None
        else {k: v for k, v in discovered.items() if k == "serviceCIDR"}
    )
    merged = {**base, **overrides}
    for key in ("kubernetesVersion", "apiEndpoint", "caBundle"):
        if discovered.get(key) is not None:
            merged[key] = discovered[key]
    if existing is None and "vpcCIDR" not in merged:
        raise Invalid(
            "importing a new cluster needs its VPC CIDR: pass spec.vpcCIDR (--vpc-cidr)",
            field="spec.vpcCIDR",
            rule="required",
        )
    try:
        return m.ClusterSpec.model_validate(merged), existing
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "spec." + ".".join(str(p) for p in first.get("loc", ()))
        raise Invalid(f"{field}: {first['msg']}", field=field, rule=first.get("type")) from None


def _stored_kubeconfig(name: str, server: str, ca_pem: str | None, token: str) -> str:
    cluster: dict[str, Any] = {"server": server}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem.encode()).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": f"{NAMESPACE}/{SERVICE_ACCOUNT}", "user": {"token": token}}],
        "contexts": [
            {
                "name": name,
                "context": {
                    "cluster": name,
                    "user": f"{NAMESPACE}/{SERVICE_ACCOUNT}",
                    "namespace": NAMESPACE,
                },
            }
        ],
        "current-context": name,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def import_cluster(
    session: Session, name: str, body: ImportRequest, *, data_dir: Path
) -> ImportResult:
    """Import (or re-import) cluster *name* (steps: module doc)."""
    check_name(name)
    resolved = parse_kubeconfig(body.kubeconfig, body.context)
    with resolved.client() as admin:
        try:
            version = admin.server_version()
        except KubeError as exc:
            raise from_kube_error(exc, "reading the server version") from exc
        minor = check_control_plane(parse_version(version.git_version))
        try:
            discovered = {
                "kubernetesVersion": str(minor),
                "apiEndpoint": resolved.server.rstrip("/"),
                "caBundle": resolved.ca_pem,
                "serviceCIDR": _service_cidr(admin),
            }
        except KubeError as exc:
            raise from_kube_error(exc, "reading the Service CIDR") from exc
        spec, existing = _spec_for(session, name, dict(body.spec), discovered)
        installed = []
        try:
            for obj in manifests():
                admin.apply(obj, force=True)
                installed.append(_describe(obj))
            grant = admin.request_token(
                SERVICE_ACCOUNT, NAMESPACE, expiration_seconds=body.token_ttl_seconds
            )
            nodes = admin.list(Node)
        except KubeError as exc:
            raise from_kube_error(exc, "installing Tether's objects") from exc
    path = kubeconfig_path(data_dir, name)
    write_private(path, _stored_kubeconfig(name, resolved.server, resolved.ca_pem, grant.token))
    with KubeClient(path) as as_tether:
        try:
            as_tether.list(Node)
        except KubeError as exc:
            raise from_kube_error(exc, "checking Tether's own credentials") from exc

    warnings = _skew_warnings(minor, nodes)
    if existing is None:
        cluster = svc.create_cluster(session, r.ClusterCreate(name=name, spec=spec))
    elif existing.spec != spec:
        cluster = svc.update_cluster(
            session, name, r.ClusterUpdate(resource_version=existing.resource_version, spec=spec)
        )
    else:
        cluster = existing
    events.record(
        session,
        ObjectKind.CLUSTER,
        name,
        "Imported",
        f"API server {resolved.server} ({version.git_version}); Tether's objects applied "
        f"in {NAMESPACE}; its credentials expire {grant.expiration:%Y-%m-%d %H:%M} UTC",
    )
    for warning in warnings:
        events.record(
            session, ObjectKind.CLUSTER, name, "NodeVersionSkew", warning, EventType.WARNING
        )
    return ImportResult(
        cluster=cluster,
        created=existing is None,
        server_version=version.git_version,
        installed=installed,
        credentials_expire_at=grant.expiration,
        warnings=warnings,
    )


def _skew_warnings(control_plane: KubeMinor, nodes: Iterable[Node]) -> list[str]:
    warnings = []
    for node in nodes:
        info = node.status.nodeInfo if node.status is not None else None
        if info is None or not info.kubeletVersion or node.metadata is None:
            continue
        try:
            kubelet = parse_version(info.kubeletVersion)
        except Invalid:
            continue
        problem = node_skew_problem(control_plane, kubelet)
        if problem is not None:
            warnings.append(f"node {node.metadata.name}: {problem}")
    return warnings
