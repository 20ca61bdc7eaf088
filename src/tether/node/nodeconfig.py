"""The NodeConfig document: everything ``tether node init`` needs to join a host.

::

    apiVersion: tether.io/v1alpha1
    kind: NodeConfig
    spec:
      cluster:
        name: prod                       # the Tether cluster name (part of providerID)
        apiServerEndpoint: https://10.0.0.10:443
        certificateAuthority: |          # PEM of the cluster CA (or base64 of the PEM)
          -----BEGIN CERTIFICATE-----
        serviceCIDR: 172.20.0.0/16       # clusterDNS is its 10th address
        clusterDomain: cluster.local     # default
      node:
        name: edge-01                    # DNS-1123 label; the Node name and certificate CN
        ip: 10.200.0.11                  # the kubelet's --node-ip
        nodeCIDR: 10.200.0.0/24          # the pool's node CIDR; ip must be inside it
        labels: {topology.kubernetes.io/zone: store-12}
        eksLabels: false                 # also label eks.amazonaws.com/compute-type=hybrid
      kubelet:
        config: {maxPods: 110}           # merged over Tether's KubeletConfiguration
        flags: ["--v=2"]                 # extra command-line flags
      os:                                # settings on top of Tether's own
        sysctls: {vm.max_map_count: "262144"}
        kernelModules: [ip_vs]
        files: [{path: /etc/motd, content: "edge node\n", mode: 0644}]
      containerd:
        config: |                        # a TOML drop-in, imported by config.toml
          [plugins."io.containerd.cri.v1.images".registry]
          config_path = "/etc/containerd/certs.d"
      credentials:                       # exactly one of:
        bootstrapToken: {tokenFile: /etc/tether/bootstrap-token}
        x509: {certificatePath: ..., privateKeyPath: ..., caPath: ..., planeEndpoint: https://...}
        activation: {id: act-..., codeFile: ..., planeEndpoint: https://..., caPath: ...}

:func:`load_node_config` reads it from ``file://PATH`` (or a plain path) and
:func:`check_node_config` applies every rule that needs no host access; each problem
names its field. Both are pure apart from reading the one file.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from tether.domain.agent import NodeName
from tether.domain.base import Model
from tether.errors import Permanent
from tether.files import parse_yaml_or_json

__all__ = [
    "EKS_HYBRID_LABEL",
    "HYBRID_LABEL",
    "NodeConfig",
    "NodeConfigError",
    "Problem",
    "check_node_config",
    "cluster_dns",
    "load_node_config",
    "parse_node_config",
    "provider_id",
]

HYBRID_LABEL: Final = "tether.io/compute-type"
EKS_HYBRID_LABEL: Final = "eks.amazonaws.com/compute-type"
#: KubeletConfiguration fields Tether owns: a NodeConfig may not override them.
RESERVED_KUBELET_FIELDS: Final = ("providerID", "serverTLSBootstrap", "apiVersion", "kind")
#: Flags Tether sets itself on the kubelet command line.
RESERVED_KUBELET_FLAGS: Final = (
    "--config",
    "--kubeconfig",
    "--bootstrap-kubeconfig",
    "--node-ip",
    "--hostname-override",
    "--node-labels",
    "--provider-id",
)


#: Kernel settings Kubernetes networking needs; a NodeConfig may not change them.
RESERVED_SYSCTLS: Final = (
    "net.bridge.bridge-nf-call-ip6tables",
    "net.bridge.bridge-nf-call-iptables",
    "net.ipv4.ip_forward",
)
SYSCTL_FILE: Final = "/etc/sysctl.d/99-tether-kubernetes.conf"
MODULES_FILE: Final = "/etc/modules-load.d/tether-kubernetes.conf"
#: Where Tether writes the node's configuration: a NodeConfig's files may not go there.
RESERVED_PATHS: Final = (
    "/etc/kubernetes",
    "/etc/containerd",
    "/var/lib/kubelet",
    "/var/lib/tether",
    "/etc/systemd/system/kubelet.service",
    "/etc/systemd/system/containerd.service",
    SYSCTL_FILE,
    MODULES_FILE,
)


class Problem(Model):
    """One rule a NodeConfig breaks: the field (dotted wire path) and what is wrong."""

    field: str
    message: str


class NodeConfigError(Permanent):
    """The NodeConfig cannot be used; ``problems`` lists every broken rule."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))
        self.problems = problems


class ClusterSpec(Model):
    name: NodeName
    api_server_endpoint: str
    certificate_authority: str = Field(min_length=1)
    service_cidr: ipaddress.IPv4Network
    cluster_domain: str = Field(
        default="cluster.local", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
    )

    @field_validator("api_server_endpoint")
    @classmethod
    def _endpoint(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("must be an https:// URL with a host name or IP")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("must be a bare https://host[:port] URL")
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError:
            raise ValueError("has an invalid port") from None
        return value.rstrip("/")

    @field_validator("certificate_authority")
    @classmethod
    def _ca(cls, value: str) -> str:
        if "-----BEGIN CERTIFICATE-----" in value:
            return value.strip() + "\n"
        try:
            decoded = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise ValueError("must be a PEM certificate or the base64 of one") from None
        if "-----BEGIN CERTIFICATE-----" not in decoded:
            raise ValueError("must be a PEM certificate or the base64 of one")
        return decoded.strip() + "\n"


_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_LABEL_KEY = re.compile(rf"^({_DNS_SUBDOMAIN}/)?{_LABEL_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_LABEL_NAME})?$")


class NodeSpec(Model):
    name: NodeName
    ip: ipaddress.IPv4Address
    node_cidr: ipaddress.IPv4Network
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    eks_labels: bool = False

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        """Kubernetes label syntax: they end up on the kubelet's command line."""
        for key, label in value.items():
            prefix = key.split("/", 1)[0] if "/" in key else ""
            if not _LABEL_KEY.match(key) or len(prefix) > 253:
                raise ValueError(
                    f"{key!r} is not a label key: [prefix/]name, the name at most 63 letters, "
                    "digits, '-', '_' or '.', the prefix a DNS subdomain"
                )
            if not _LABEL_VALUE.match(label):
                raise ValueError(
                    f"label {key}: {label!r} is not a label value: at most 63 letters, digits, "
                    "'-', '_' or '.', starting and ending with a letter or digit"
                )
        return value


class KubeletSpec(Model):
    config: dict[str, Any] = Field(default_factory=dict)
    flags: list[str] = Field(default_factory=list)

    @field_validator("config")
    @classmethod
    def _config(cls, value: dict[str, Any]) -> dict[str, Any]:
        owned = [key for key in RESERVED_KUBELET_FIELDS if key in value]
        if owned:
            raise ValueError(f"{', '.join(owned)} is set by Tether and may not be overridden")
        return value

    @field_validator("flags")
    @classmethod
    def _flags(cls, value: list[str]) -> list[str]:
        for flag in value:
            if not flag.startswith("--") or any(c.isspace() or c == "\0" for c in flag):
                raise ValueError(f"{flag!r} is not one --flag[=value] without spaces")
            if flag.split("=", 1)[0] in RESERVED_KUBELET_FLAGS:
                raise ValueError(f"{flag.split('=', 1)[0]} is set by Tether")
        return value


class ContainerdSpec(Model):
    config: str = ""

    @field_validator("config")
    @classmethod
    def _toml(cls, value: str) -> str:
        try:
            tomllib.loads(value)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"is not valid TOML: {exc}") from None
        return value


class OSFileSpec(Model):
    path: str = Field(pattern=r"^/[^\x00\s]{0,1023}$")
    content: Annotated[str, StringConstraints(max_length=65536, strip_whitespace=False)]
    mode: int = Field(default=0o644, ge=0, le=0o7777)


class OSSpec(Model):
    """OS settings on top of Tether's own: applied by the ``system-settings`` phase."""

    sysctls: dict[str, str] = Field(default_factory=dict, max_length=256)
    kernel_modules: list[str] = Field(default_factory=list, max_length=64)
    files: list[OSFileSpec] = Field(default_factory=list, max_length=64)

    @field_validator("sysctls")
    @classmethod
    def _sysctls(cls, value: dict[str, str]) -> dict[str, str]:
        for key, setting in value.items():
            if not _SYSCTL_KEY.match(key) or any(c in setting for c in "\n\r\x00"):
                raise ValueError(f"{key}={setting!r} is not one sysctl setting")
        return value

    @field_validator("kernel_modules")
    @classmethod
    def _modules(cls, value: list[str]) -> list[str]:
        bad = [m for m in value if not _MODULE.match(m)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: not kernel module names")
        return value


_SYSCTL_KEY = re.compile(r"^[a-z0-9_][a-z0-9_./-]{0,252}$")
_MODULE = re.compile(r"^[a-z0-9_-]{1,64}$")


class BootstrapTokenCredential(Model):
    """A bootstrap token minted by the plane (``tether host bootstrap-token``), in a file."""

    token_file: Path


class PlaneCredential(Model):
    plane_endpoint: str = Field(pattern=r"^https://[^\s/]+(:\d+)?/?$")
    ca_path: Path


class X509Credential(PlaneCredential):
    """The host's enrolled identity (the agent's certificate): the plane mints the token."""

    certificate_path: Path
    private_key_path: Path


class ActivationCredential(PlaneCredential):
    """An activation: the host enrols first (as the agent does), then uses its identity."""

    id: str = Field(pattern=r"^act-[a-z2-7]{12}$")
    code_file: Path
    state_dir: Path = Path("/var/lib/tether-agent")  # the agent's own default


class Credentials(Model):
    bootstrap_token: BootstrapTokenCredential | None = None
    x509: X509Credential | None = None
    activation: ActivationCredential | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Credentials:
        given = [n for n in ("bootstrap_token", "x509", "activation") if getattr(self, n)]
        if len(given) != 1:
            raise ValueError("give exactly one of bootstrapToken, x509 or activation")
        return self

    @property
    def kind(self) -> Literal["bootstrapToken", "x509", "activation"]:
        if self.bootstrap_token is not None:
            return "bootstrapToken"
        return "x509" if self.x509 is not None else "activation"


class NodeConfigSpec(Model):
    cluster: ClusterSpec
    node: NodeSpec
    kubelet: KubeletSpec = Field(default_factory=KubeletSpec)
    containerd: ContainerdSpec = Field(default_factory=ContainerdSpec)
    os: OSSpec = Field(default_factory=OSSpec)
    credentials: Credentials


class NodeConfig(Model):
    api_version: Literal["tether.io/v1alpha1"]
    kind: Literal["NodeConfig"]
    spec: NodeConfigSpec


def provider_id(config: NodeConfig) -> str:
    """``tether://<cluster>/<node>``: the Node's spec.providerID."""
    return f"tether://{config.spec.cluster.name}/{config.spec.node.name}"


def cluster_dns(config: NodeConfig) -> ipaddress.IPv4Address:
    """The cluster DNS service address: the 10th address of the service CIDR (the
    convention kubeadm and managed offerings follow)."""
    return config.spec.cluster.service_cidr.network_address + 10


def _wire_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(document)"


def parse_node_config(data: Any) -> NodeConfig:
    """Validate a parsed document; raise :class:`NodeConfigError` naming every field."""
    if not isinstance(data, dict):
        raise NodeConfigError([Problem(field="(document)", message="must be a mapping")])
    try:
        config = NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise NodeConfigError(
            [
                Problem(field=_wire_path(e["loc"]), message=e["msg"].removeprefix("Value error, "))
                for e in exc.errors()
            ]
        ) from None
    problems = check_node_config(config)
    if problems:
        raise NodeConfigError(problems)
    return config


def check_node_config(config: NodeConfig) -> list[Problem]:
    """The cross-field rules: the node IP in the node CIDR, no overlap with services."""
    spec = config.spec
    problems: list[Problem] = []
    cidr = spec.node.node_cidr
    if spec.node.ip not in cidr:
        problems.append(
            Problem(
                field="spec.node.ip",
                message=f"{spec.node.ip} is not inside the node CIDR {cidr}",
            )
        )
    elif cidr.prefixlen < 31 and spec.node.ip in (cidr.network_address, cidr.broadcast_address):
        problems.append(
            Problem(
                field="spec.node.ip",
                message=f"{spec.node.ip} is the network or broadcast address of {cidr}",
            )
        )
    if spec.node.node_cidr.overlaps(spec.cluster.service_cidr):
        problems.append(
            Problem(
                field="spec.node.nodeCIDR",
                message=f"{spec.node.node_cidr} overlaps the service CIDR "
                f"{spec.cluster.service_cidr}",
            )
        )
    if spec.cluster.service_cidr.num_addresses < 16:
        problems.append(
            Problem(field="spec.cluster.serviceCIDR", message="must hold at least 16 addresses")
        )
    for key in (HYBRID_LABEL, EKS_HYBRID_LABEL):
        if key in spec.node.labels:
            problems.append(Problem(field=f"spec.node.labels.{key}", message="is set by Tether"))
    for key in sorted(set(spec.os.sysctls) & set(RESERVED_SYSCTLS)):
        problems.append(Problem(field=f"spec.os.sysctls.{key}", message="is set by Tether"))
    for i, file in enumerate(spec.os.files):
        if any(file.path == p or file.path.startswith(p.rstrip("/") + "/") for p in RESERVED_PATHS):
            problems.append(
                Problem(
                    field=f"spec.os.files.{i}.path",
                    message=f"{file.path} is managed by Tether (under {', '.join(RESERVED_PATHS)})",
                )
            )
    return problems


def load_node_config(location: str) -> NodeConfig:
    """Read and validate ``file://PATH`` (or a plain path)."""
    path = location.removeprefix("file://") if location.startswith("file://") else location
    if "://" in path:
        raise NodeConfigError(
            [Problem(field="(location)", message=f"{location!r}: only file:// is supported")]
        )
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise NodeConfigError(
            [Problem(field="(location)", message=f"cannot read {path}: {exc}")]
        ) from None
    try:
        data = parse_yaml_or_json(text)
    except yaml.YAMLError as exc:
        raise NodeConfigError(
            [Problem(field="(document)", message=f"is not YAML: {exc}")]
        ) from None
    return parse_node_config(data)
