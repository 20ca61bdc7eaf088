"""API shapes of the Kubernetes integration: import, hybrid mode, bootstrap tokens, drain."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from tether.domain.base import Model
from tether.domain.resources import Cluster

#: Largest kubeconfig the plane accepts (a flattened one-context kubeconfig is a few KiB).
MAX_KUBECONFIG_BYTES = 256 * 1024


class ImportRequest(Model):
    """``POST /api/v1/clusters/{name}/import``: a kubeconfig for the cluster, sent as text.

    The kubeconfig must be self-contained (``*-data`` fields, a token or a client
    certificate): the plane never reads files or runs commands named in it. It is used
    once, to install Tether's objects and obtain Tether's own service-account token;
    the plane does not keep it.
    """

    kubeconfig: Annotated[str, StringConstraints(min_length=1, max_length=MAX_KUBECONFIG_BYTES)]
    context: Annotated[str, StringConstraints(min_length=1, max_length=253)] | None = Field(
        default=None, description="Context to use; default: the kubeconfig's current context."
    )
    spec: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Cluster spec fields to set (vpcCIDR, serviceCIDR, remoteNodeNetworks, ...). "
            "kubernetesVersion, apiEndpoint and caBundle come from the cluster; serviceCIDR "
            "defaults to the cluster's ServiceCIDR. Creating a cluster needs vpcCIDR."
        ),
    )
    token_ttl_seconds: int = Field(
        default=365 * 86400,
        ge=3600,
        le=10 * 365 * 86400,
        description="Requested lifetime of Tether's service-account token (the API server "
        "may shorten it). Re-import to renew.",
    )


class ImportResult(Model):
    cluster: Cluster
    created: bool = Field(description="False when an existing cluster was updated.")
    server_version: str
    installed: list[str] = Field(description="In-cluster objects Tether applied.")
    credentials_expire_at: datetime
    warnings: list[str] = Field(default_factory=list)


class HybridRequest(Model):
    eks_labels: bool = Field(
        default=False, description="Also label hybrid nodes eks.amazonaws.com/compute-type."
    )
    dry_run: bool = Field(default=False, description="Plan only; change nothing.")


class HybridReport(Model):
    cluster: str
    enabled: bool
    dry_run: bool
    hybrid_nodes: list[str] = Field(description="Nodes that are hybrid nodes after the change.")
    changes: list[str] = Field(description="One line per object changed (or to change).")
    failed: list[str] = Field(default_factory=list, description="Changes that failed.")


class BootstrapTokenRequest(Model):
    ttl_seconds: int = Field(
        default=3600, ge=60, le=86400, description="Lifetime; short because it is a join secret."
    )


class BootstrapTokenGrant(Model):
    host: str
    cluster: str
    token_id: str
    token: str = Field(description="<token-id>.<token-secret>; shown once.")
    expiration: datetime
    api_endpoint: str | None = None
    ca_bundle: str | None = None


class DrainRequest(Model):
    timeout_seconds: float = Field(default=300, gt=0, le=3600)
    delete_empty_dir_data: bool = False
    force: bool = Field(default=False, description="Evict pods no controller manages.")
    grace_period_seconds: int | None = Field(default=None, ge=0, le=86400)
    wait_for_delete: bool = True


class PodOutcome(Model):
    pod: str
    reason: str


class DrainReport(Model):
    node: str
    evicted: list[str]
    skipped: list[PodOutcome]
    eviction_retries: int
    seconds: float
