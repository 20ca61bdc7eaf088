"""Tether's resources as pure models: what a user declares (specs) and what Tether observes.

Field-level rules (types, formats, bounds) live here, next to the fields. Rules that
relate several objects (CIDR overlaps between a cluster and its pools, for instance)
live in :mod:`tether.netplan`, which works on the same values.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, StringConstraints, field_validator, model_validator

from tether.domain.base import Model
from tether.domain.states import HostState, PoolState

#: A DNS-1123 label: what Kubernetes accepts as a node or object name.
Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
]
#: A Kubernetes version as ``1.MINOR`` or ``1.MINOR.PATCH``.
KubeVersion = Annotated[str, StringConstraints(pattern=r"^1\.\d{1,3}(\.\d{1,3})?$")]
#: Semantic version of a profile (``MAJOR.MINOR.PATCH``, optional pre-release).
SemVer = Annotated[
    str, StringConstraints(pattern=r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$")
]
LabelKey = Annotated[str, StringConstraints(min_length=1, max_length=253)]
LabelValue = Annotated[str, StringConstraints(max_length=256)]
Description = Annotated[str, StringConstraints(max_length=1024)]


def _address_text(value: object) -> object:
    """Accept addresses only as text: pydantic would otherwise read ``true`` or ``5`` as one."""
    if isinstance(value, str | IPv4Network | IPv4Address):
        return value
    raise ValueError("must be written as a string, like 10.0.0.0/16 or 10.0.0.1")


#: An IPv4 CIDR without host bits, written as text.
CIDR = Annotated[IPv4Network, BeforeValidator(_address_text)]
#: An IPv4 address, written as text.
IP = Annotated[IPv4Address, BeforeValidator(_address_text)]


class HostAuthMode(StrEnum):
    ACTIVATION = "activation"  # hosts enrol with a short-lived activation id + code
    X509 = "x509"  # hosts present certificates from the user's own PKI


class HostRole(StrEnum):
    """What a host is for besides being a node (none: it may join a pool)."""

    VPN_SERVER = "vpn-server"  # runs its site's VPN server (tunnels, BGP); never a node


class RoutingMode(StrEnum):
    BGP = "bgp"  # the CNI on each node advertises its pod CIDR to the VPN server/router
    STATIC = "static"  # the VPN server carries a static route per node pod CIDR


class VPNEndpoint(Model):
    """The cloud side of every site VPN (the VPC's VPN gateway)."""

    public_ip: IP = Field(description="Outside address of tunnel 1 on the cloud side.")
    secondary_public_ip: IP | None = Field(
        default=None, description="Outside address of tunnel 2; defaults to publicIP."
    )


class ClusterSpec(Model):
    """A Kubernetes cluster whose control plane runs in the cloud.

    The network rules between these fields and the cluster's pools (no overlaps, RFC 1918
    only, pools inside the remote networks, ...) are :mod:`tether.netplan`'s; the plane
    applies them on every create and update.
    """

    kubernetes_version: KubeVersion = Field(description="Control plane version, e.g. 1.34.")
    api_endpoint: str | None = Field(
        default=None, max_length=2048, description="https URL of the API server."
    )
    ca_bundle: str | None = Field(
        default=None, max_length=65536, description="PEM CA bundle of the API server."
    )
    vpc_cidr: CIDR = Field(description="The cloud VPC's IPv4 CIDR.")
    service_cidr: CIDR = Field(description="The cluster's Service IPv4 CIDR.")
    remote_node_networks: list[CIDR] = Field(default_factory=list, max_length=15)
    remote_pod_networks: list[CIDR] = Field(default_factory=list, max_length=15)
    allow_cgnat: bool = Field(
        default=False,
        alias="allowCGNAT",
        description="Also allow remote networks inside 100.64.0.0/10 (CGNAT).",
    )
    vpn_endpoint: VPNEndpoint | None = Field(
        default=None, description="The cloud VPN gateway; needed to plan site VPNs."
    )
    hybrid_enabled: bool = Field(
        default=False,
        description=(
            "Hybrid mode: set by `tether cluster hybrid enable`; while on, the node "
            "controller labels every hybrid node that joins."
        ),
    )
    eks_compute_type_label: bool = Field(
        default=False,
        description="Hybrid nodes also get eks.amazonaws.com/compute-type=hybrid.",
    )
    host_auth_mode: HostAuthMode = HostAuthMode.ACTIVATION

    @field_validator("api_endpoint")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https://[^\s/]+(:\d+)?(/\S*)?$", value):
            raise ValueError("must be an https:// URL")
        return value

    @model_validator(mode="after")
    def _hybrid_needs_networks(self) -> ClusterSpec:
        if self.hybrid_enabled and not (self.remote_node_networks and self.remote_pod_networks):
            raise ValueError(
                "hybridEnabled needs at least one remote node network and one remote pod network"
            )
        return self


class SiteSpec(Model):
    """A private network with its own VPN server or direct link to the cloud."""

    description: Description = ""
    location: Annotated[str, StringConstraints(max_length=256)] = ""
    labels: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=64)


class NetworkHealth(Model):
    """A site's tunnels or BGP sessions, as its hosts' agents' checks report them.

    ``Failing``: some host's check of that kind fails (``hosts`` says which and why);
    ``NoFailuresReported``: hosts of the site are heard from and none reports one;
    ``Unknown``: no host of the site is heard from."""

    status: Literal["Failing", "NoFailuresReported", "Unknown"]
    hosts: dict[str, str] = Field(default_factory=dict)


class SiteStatus(Model):
    hosts: dict[str, int] = Field(default_factory=dict, description="Hosts by state.")
    pools: list[str] = Field(default_factory=list)
    tunnel: NetworkHealth | None = None
    bgp: NetworkHealth | None = None


class VPNServer(Model):
    public_ip: IP
    inside_ip: IP
    is_main_router: bool = True
    asn: int | None = Field(default=None, ge=1, le=4294967294)


class UpdateStrategyType(StrEnum):
    EXPAND_FIRST = "ExpandFirst"  # a spare host joins before an old node leaves (surge 1)
    CONTRACT_FIRST = "ContractFirst"  # an old node is repaved in place first (unavailable 1)
    ROLLING = "Rolling"  # bounded by maxSurge / maxUnavailable


#: A count of nodes (``2``) or a share of the pool (``"25%"``), as Kubernetes writes it.
IntOrPercent = int | Annotated[str, StringConstraints(pattern=r"^(100|[1-9]?[0-9])%$")]


def _is_zero(value: IntOrPercent | None) -> bool:
    return value in (0, "0%")


class UpdateStrategy(Model):
    """How a rollout moves through a pool's nodes (see docs/pools.md).

    ``ExpandFirst`` is ``Rolling`` with maxSurge 1 and maxUnavailable 0 (a spare Ready
    host of the site joins with the new version before an old node leaves);
    ``ContractFirst`` is maxSurge 0 and maxUnavailable 1 (each node is drained and
    updated in place). ``Rolling`` takes both bounds as counts or percentages of the pool.
    """

    type: UpdateStrategyType = UpdateStrategyType.EXPAND_FIRST
    max_surge: IntOrPercent | None = Field(
        default=None,
        description="Extra nodes a rollout may add (Rolling; ExpandFirst: 1). Count or '25%'.",
    )
    max_unavailable: IntOrPercent | None = Field(
        default=None,
        description="Nodes that may be unavailable at once (Rolling; ContractFirst: 1).",
    )
    min_ready_seconds: int = Field(
        default=60,
        ge=0,
        le=86400,
        description="How long an updated node must stay Ready before the rollout moves on.",
    )
    max_failed_nodes: int = Field(
        default=1,
        ge=1,
        le=10000,
        description="The rollout stops, and the pool is Degraded, after this many node failures.",
    )
    drain_timeout_seconds: int = Field(default=600, ge=1, le=86400)
    node_timeout_seconds: int = Field(
        default=900,
        ge=1,
        le=86400,
        description="Longest a node may take to apply its plan and turn Ready.",
    )

    @field_validator("max_surge", "max_unavailable", mode="before")
    @classmethod
    def _count_or_percent(cls, value: object) -> object:
        # Booleans are refused for every numeric field by the Model base.
        if isinstance(value, int) and not 0 <= value <= 10000:
            raise ValueError("must be between 0 and 10000")
        return value

    @model_validator(mode="after")
    def _progress_possible(self) -> UpdateStrategy:
        kind = self.type
        if kind is UpdateStrategyType.EXPAND_FIRST and not _is_zero(self.max_unavailable or 0):
            raise ValueError("ExpandFirst takes no node down before its replacement: use Rolling")
        if kind is UpdateStrategyType.CONTRACT_FIRST and not _is_zero(self.max_surge or 0):
            raise ValueError("ContractFirst adds no nodes: use Rolling for maxSurge")
        if kind is UpdateStrategyType.ROLLING and (
            _is_zero(self.max_surge or 0) and _is_zero(self.max_unavailable or 0)
        ):
            raise ValueError("maxSurge and maxUnavailable cannot both be 0: nothing could move")
        return self


class ProfileRef(Model):
    name: Name
    version: SemVer


class TaintEffect(StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


class Taint(Model):
    key: LabelKey
    value: LabelValue = ""
    effect: TaintEffect = TaintEffect.NO_SCHEDULE


#: A value a pool gives a profile variable (checked against the variable's type).
VariableValue = str | int | float | bool


class PoolSpec(Model):
    """The hosts of one site that serve one cluster."""

    cluster: Name
    site: Name
    node_cidr: CIDR
    pod_cidr: CIDR
    pod_cidr_mask_per_node: int = Field(
        default=24, ge=8, le=32, description="Prefix length of each node's pod CIDR block."
    )
    vpn_server: VPNServer
    routing: RoutingMode = RoutingMode.STATIC
    node_asn: int = Field(
        default=64512, ge=1, le=4294967294, description="AS number the nodes' CNI speaks BGP with."
    )
    main_router_ip: IP | None = Field(
        default=None, description="The site's main router when the VPN server is not it."
    )
    profile: ProfileRef | None = None
    update_strategy: UpdateStrategy = Field(default_factory=UpdateStrategy)
    variables: dict[
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")],
        VariableValue,
    ] = Field(
        default_factory=dict,
        max_length=100,
        description="Values of the profile's variables for this pool's nodes.",
    )
    node_labels: dict[LabelKey, LabelValue] = Field(
        default_factory=dict, max_length=64, description="Labels every node of the pool carries."
    )
    node_taints: list[Taint] = Field(
        default_factory=list, max_length=32, description="Taints every node of the pool carries."
    )
    host_selector: dict[LabelKey, LabelValue] | None = Field(
        default=None,
        description=(
            "Pick Ready hosts of the site whose tags (or inventory fields, as "
            "'inventory.arch') match all of these; with size, the pool fills itself."
        ),
    )
    size: int | None = Field(
        default=None, ge=0, le=10000, description="How many hosts the selector keeps in the pool."
    )

    @model_validator(mode="after")
    def _selector_with_size(self) -> PoolSpec:
        if (self.host_selector is None) != (self.size is None):
            raise ValueError("hostSelector and size go together")
        return self


class Condition(Model):
    """One aspect of an object's health, Kubernetes style: a type, True/False and why."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""


class Change(Model):
    """One changed field between two versions, and the action it needs on a node."""

    field: str
    old: Any = None
    new: Any = None
    action: str
    why: str = ""


class UpdateInfo(Model):
    """A newer profile version than the pool's, and what rolling it out would do."""

    version: str
    action: str
    changes: list[Change] = Field(default_factory=list)


class PoolStatus(Model):
    state: PoolState = PoolState.PENDING
    update_available: str | None = Field(
        default=None, description="The newest profile version, when newer than the pool's."
    )
    update: UpdateInfo | None = None
    conditions: list[Condition] = Field(default_factory=list)
    counts: dict[str, int] = Field(default_factory=dict)
    rollout: str | None = Field(default=None, description="The pool's newest rollout.")
    observed_at: datetime | None = Field(
        default=None, description="When the pool reconciler last looked at the pool."
    )


class HostSpec(Model):
    """What a person may set on an edge host."""

    site: Name
    pool: Name | None = None
    tags: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=64)
    node_ip: IP | None = Field(
        default=None,
        description="The node's IP; default: the host's first address inside the pool's node CIDR.",
    )
    vpn_server_ip: IP | None = Field(
        default=None, description="This host's own VPN server address, when not the pool's."
    )
    role: HostRole | None = Field(
        default=None,
        description=(
            "vpn-server: the host runs its site's VPN server; the plane pushes it the "
            "site's tunnels, BGP and routes. At most one per site, never in a pool."
        ),
    )


class MemberStatus(Model):
    """The host's place in its pool, as the pool reconciler keeps it."""

    pool: str
    phase: str
    version: str | None = Field(default=None, description="The profile version it runs.")
    operation: str | None = Field(default=None, description="join, leave or update.")
    step: str | None = None
    failed: str | None = None
    leaving: bool = False


class PlanStatus(Model):
    """The host's last desired-state document and what its agent made of it."""

    state: Literal["Pending", "Applied", "Failed"]
    hash: str
    message: str = ""
    applied_at: datetime | None = None


class NodeStatus(Model):
    """The host's Kubernetes Node as the nodes controller last saw it."""

    ready: bool | None = Field(description="Ready condition; null when Unknown.")
    reason: str = ""
    ready_since: datetime | None = None
    unschedulable: bool = False
    kubelet_version: str = ""
    observed_at: datetime


class HostStatus(Model):
    state: HostState = HostState.REGISTERED
    health: Literal["Unknown", "Healthy", "Unhealthy"] = "Unknown"
    last_heartbeat: datetime | None = None
    inventory: dict[str, Any] = Field(default_factory=dict)
    member: MemberStatus | None = None
    plan: PlanStatus | None = None
    node: NodeStatus | None = Field(default=None, description="Its Node, once it has one.")
    failing_checks: dict[str, str] = Field(
        default_factory=dict, description="The agent's failing checks and their messages."
    )


class VariableType(StrEnum):
    STRING = "string"
    NUMBER = "number"
    BOOLEAN = "boolean"
    IPV4 = "ipv4"
    IPV4CIDR = "ipv4cidr"
    VERSION = "version"


class ProfileVariable(Model):
    """A value a profile leaves to each pool; written ``{{ name }}`` in the profile's layers.

    A ``sensitive`` variable's value is never shown: the API, the CLI, events and logs
    print ``******`` in its place (the host's agent receives the real value).
    """

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]
    type: VariableType = VariableType.STRING
    required: bool = False
    default: str | int | float | bool | None = None
    regex: Annotated[str, StringConstraints(max_length=512)] | None = Field(
        default=None, description="The value (as text) must match this regular expression."
    )
    sensitive: bool = False
    description: Description = ""

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"is not a regular expression: {exc}") from None
        return value


class OSFile(Model):
    path: Annotated[str, StringConstraints(pattern=r"^/[^\x00\s]{0,1023}$")]
    content: Annotated[str, StringConstraints(max_length=65536, strip_whitespace=False)]
    mode: int = Field(default=0o644, ge=0, le=0o7777)


class OSLayer(Model):
    """The OS of the pool's nodes: the image hosts are built from, and settings on top.

    Changing ``image`` or ``cloudInit`` repaves a node (they take effect on a fresh
    install); ``kernelModules`` need a reboot; ``sysctls`` and ``files`` apply in place.
    """

    image: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    cloud_init: dict[str, Any] = Field(default_factory=dict)
    sysctls: dict[
        Annotated[str, StringConstraints(pattern=r"^[a-z0-9_][a-z0-9_./-]{0,252}$")],
        Annotated[str, StringConstraints(max_length=256)],
    ] = Field(default_factory=dict, max_length=256)
    kernel_modules: list[Annotated[str, StringConstraints(pattern=r"^[a-z0-9_-]{1,64}$")]] = Field(
        default_factory=list, max_length=64
    )
    files: list[OSFile] = Field(default_factory=list, max_length=64)


class KubernetesLayer(Model):
    version: KubeVersion
    kubelet_config: dict[str, Any] = Field(default_factory=dict)
    kubelet_extra_args: dict[str, str] = Field(default_factory=dict)
    containerd_config: Annotated[
        str, StringConstraints(max_length=65536, strip_whitespace=False)
    ] = Field(default="", description="A containerd TOML drop-in for the nodes.")


class NetworkLayer(Model):
    """Placeholder layer: the CNI running in the cluster does the networking."""

    cni: Literal["cilium", "calico"] = "cilium"


class AddOn(Model):
    name: Name
    version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    values: dict[str, Any] = Field(default_factory=dict)


class ProfileLayers(Model):
    os: OSLayer
    kubernetes: KubernetesLayer
    network: NetworkLayer = Field(default_factory=NetworkLayer)
    addons: list[AddOn] = Field(default_factory=list, max_length=100)


class ProfileSpec(Model):
    """One version of a cluster profile: immutable once published."""

    version: SemVer
    description: Description = ""
    layers: ProfileLayers
    variables: list[ProfileVariable] = Field(default_factory=list, max_length=100)

    @model_validator(mode="after")
    def _unique_variables(self) -> ProfileSpec:
        names = [v.name for v in self.variables]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"variable names must be unique; repeated: {', '.join(duplicates)}")
        return self


class EventType(StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


class ObjectKind(StrEnum):
    CLUSTER = "Cluster"
    SITE = "Site"
    POOL = "Pool"
    HOST = "Host"
    PROFILE = "Profile"
    ROLLOUT = "Rollout"


#: An event's reason: one CamelCase word, as Kubernetes events have.
EVENT_REASON_PATTERN = r"^[A-Z][A-Za-z0-9]{0,127}$"
#: The longest object name and message an event takes.
EVENT_NAME_MAX, EVENT_MESSAGE_MAX = 253, 4096


class EventSpec(Model):
    """Something that happened to an object, as Kubernetes events: repeats are counted."""

    object_kind: ObjectKind
    object_name: Annotated[str, StringConstraints(min_length=1, max_length=EVENT_NAME_MAX)]
    type: EventType = EventType.NORMAL
    reason: Annotated[str, StringConstraints(pattern=EVENT_REASON_PATTERN)]
    message: Annotated[str, StringConstraints(max_length=EVENT_MESSAGE_MAX)] = ""


def semver_key(version: str) -> tuple[int, int, int, int, str]:
    """Sort key for semantic versions: a release sorts after its pre-releases."""
    core, _, pre = version.partition("-")
    major, minor, patch = (int(part) for part in core.split("."))
    return (major, minor, patch, 0 if pre else 1, pre)
