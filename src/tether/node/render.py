"""Every file ``tether node init`` writes, generated from a NodeConfig. Pure: no I/O.

Each function returns the exact bytes of one file; golden files in the tests pin them.
Paths are host paths (under the root prefix when written).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import yaml

from tether.node.nodeconfig import (
    EKS_HYBRID_LABEL,
    HYBRID_LABEL,
    MODULES_FILE,
    RESERVED_SYSCTLS,
    SYSCTL_FILE,
    NodeConfig,
    cluster_dns,
    provider_id,
)

__all__ = [
    "BOOTSTRAP_KUBECONFIG",
    "CA_FILE",
    "CONTAINERD_CONFIG",
    "CONTAINERD_DROPIN",
    "CONTAINERD_UNIT",
    "KUBELET_CLIENT_CERT",
    "KUBELET_CONFIG",
    "KUBELET_KUBECONFIG",
    "KUBELET_UNIT",
    "MODULES_FILE",
    "SYSCTL_FILE",
    "RenderedFile",
    "bootstrap_kubeconfig",
    "ca_file",
    "containerd_config",
    "containerd_dropin",
    "containerd_unit",
    "kubelet_config",
    "kubelet_unit",
    "modules",
    "modules_conf",
    "node_labels",
    "os_files",
    "sysctl_conf",
]

CONTAINERD_CONFIG: Final = "/etc/containerd/config.toml"
CONTAINERD_DROPIN: Final = "/etc/containerd/config.d/10-tether-nodeconfig.toml"
CONTAINERD_UNIT: Final = "/etc/systemd/system/containerd.service"
CA_FILE: Final = "/etc/kubernetes/pki/ca.crt"
KUBELET_CONFIG: Final = "/etc/kubernetes/kubelet/config.yaml"
BOOTSTRAP_KUBECONFIG: Final = "/etc/kubernetes/bootstrap-kubeconfig"
#: Written by the kubelet itself once its client certificate is issued (TLS bootstrap).
KUBELET_KUBECONFIG: Final = "/var/lib/kubelet/kubeconfig"
#: The kubelet's current client certificate (rotated by the kubelet).
KUBELET_CLIENT_CERT: Final = "/var/lib/kubelet/pki/kubelet-client-current.pem"
KUBELET_UNIT: Final = "/etc/systemd/system/kubelet.service"
CONTAINERD_SOCKET: Final = "unix:///run/containerd/containerd.sock"
#: The pause image containerd pins (must match what the kubelet version expects).
SANDBOX_IMAGE: Final = "registry.k8s.io/pause:3.10"
MODULES: Final = ["overlay", "br_netfilter"]
SYSCTLS: Final = dict.fromkeys(RESERVED_SYSCTLS, "1")
_HEADER: Final = "# Written by tether node init; changes are overwritten on the next run.\n"


@dataclass(frozen=True)
class RenderedFile:
    """One generated file: host path, content and mode."""

    path: str
    content: bytes
    mode: int = 0o644


def sysctl_conf(extra: Mapping[str, str] | None = None) -> RenderedFile:
    """Tether's sysctls, then the NodeConfig's (``spec.os.sysctls``)."""
    settings = {**(extra or {}), **SYSCTLS}
    body = "".join(f"{key} = {value}\n" for key, value in sorted(settings.items()))
    return RenderedFile(SYSCTL_FILE, (_HEADER + body).encode())


def modules(config: NodeConfig | None = None) -> list[str]:
    """The kernel modules a node loads: Tether's, then the NodeConfig's."""
    extra = config.spec.os.kernel_modules if config is not None else []
    return [*MODULES, *(m for m in extra if m not in MODULES)]


def modules_conf(config: NodeConfig | None = None) -> RenderedFile:
    body = "".join(f"{m}\n" for m in modules(config))
    return RenderedFile(MODULES_FILE, (_HEADER + body).encode())


def os_files(config: NodeConfig) -> list[RenderedFile]:
    """The NodeConfig's own files (``spec.os.files``), exactly as given."""
    return [RenderedFile(f.path, f.content.encode(), f.mode) for f in config.spec.os.files]


def containerd_config(containerd_major: int) -> RenderedFile:
    """containerd's main config: systemd cgroups, the pinned sandbox image, and an import of
    ``config.d/*.toml`` for the NodeConfig's drop-in. containerd 2 reads config version 3
    (CRI split into ``io.containerd.cri.v1.*`` plugins); containerd 1.x reads version 2."""
    if containerd_major >= 2:
        body = (
            "version = 3\n"
            'imports = ["/etc/containerd/config.d/*.toml"]\n'
            "\n"
            "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n"
            "  SystemdCgroup = true\n"
            "\n"
            "[plugins.'io.containerd.cri.v1.images'.pinned_images]\n"
            f"  sandbox = '{SANDBOX_IMAGE}'\n"
        )
    else:
        body = (
            "version = 2\n"
            'imports = ["/etc/containerd/config.d/*.toml"]\n'
            "\n"
            '[plugins."io.containerd.grpc.v1.cri"]\n'
            f'  sandbox_image = "{SANDBOX_IMAGE}"\n'
            "\n"
            '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
            "  SystemdCgroup = true\n"
        )
    return RenderedFile(CONTAINERD_CONFIG, (_HEADER + body).encode())


def containerd_dropin(config: NodeConfig) -> RenderedFile:
    body = config.spec.containerd.config
    if body and not body.endswith("\n"):
        body += "\n"
    return RenderedFile(CONTAINERD_DROPIN, (_HEADER + "# From the NodeConfig.\n" + body).encode())


def containerd_unit(binary: str) -> RenderedFile:
    body = (
        "[Unit]\n"
        "Description=containerd container runtime (installed by Tether)\n"
        "After=network.target local-fs.target\n"
        "\n"
        "[Service]\n"
        "ExecStartPre=-/sbin/modprobe overlay\n"
        f"ExecStart={binary}\n"
        "Type=notify\n"
        "Delegate=yes\n"
        "KillMode=process\n"
        "Restart=always\n"
        "RestartSec=5\n"
        "LimitNPROC=infinity\n"
        "LimitCORE=infinity\n"
        "TasksMax=infinity\n"
        "OOMScoreAdjust=-999\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )
    return RenderedFile(CONTAINERD_UNIT, (_HEADER + body).encode())


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` deep-merged over ``base`` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def kubelet_config(config: NodeConfig) -> RenderedFile:
    """The KubeletConfiguration: Tether's settings with the NodeConfig's merged over them
    (except the fields Tether owns: providerID and serverTLSBootstrap)."""
    base: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True, "cacheTTL": "2m0s"},
            "x509": {"clientCAFile": CA_FILE},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "systemd",
        "clusterDNS": [str(cluster_dns(config))],
        "clusterDomain": config.spec.cluster.cluster_domain,
        "containerRuntimeEndpoint": CONTAINERD_SOCKET,
        "failSwapOn": True,
        "readOnlyPort": 0,
        "rotateCertificates": True,
    }
    merged = _merge(base, config.spec.kubelet.config)
    merged["providerID"] = provider_id(config)
    merged["serverTLSBootstrap"] = True
    body = yaml.safe_dump(merged, sort_keys=True, default_flow_style=False)
    return RenderedFile(KUBELET_CONFIG, (_HEADER + body).encode())


def node_labels(config: NodeConfig) -> dict[str, str]:
    """The labels the kubelet registers its Node with: the hybrid label(s) and the
    NodeConfig's own."""
    labels = dict(config.spec.node.labels)
    labels[HYBRID_LABEL] = "hybrid"
    if config.spec.node.eks_labels:
        labels[EKS_HYBRID_LABEL] = "hybrid"
    return dict(sorted(labels.items()))


def kubelet_unit(config: NodeConfig, binary: str) -> RenderedFile:
    labels = ",".join(f"{k}={v}" for k, v in node_labels(config).items())
    args = [
        binary,
        f"--config={KUBELET_CONFIG}",
        f"--kubeconfig={KUBELET_KUBECONFIG}",
        f"--bootstrap-kubeconfig={BOOTSTRAP_KUBECONFIG}",
        f"--hostname-override={config.spec.node.name}",
        f"--node-ip={config.spec.node.ip}",
        f"--node-labels={labels}",
        *config.spec.kubelet.flags,
    ]
    exec_start = " \\\n    ".join(args)
    body = (
        "[Unit]\n"
        "Description=Kubernetes kubelet (installed by Tether)\n"
        "Wants=containerd.service\n"
        "After=containerd.service network-online.target\n"
        "\n"
        "[Service]\n"
        f"ExecStart={exec_start}\n"
        "Restart=always\n"
        "RestartSec=5\n"
        "\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )
    return RenderedFile(KUBELET_UNIT, (_HEADER + body).encode())


def bootstrap_kubeconfig(config: NodeConfig, token: str) -> RenderedFile:
    """The kubelet's bootstrap kubeconfig (mode 0600: it holds the token)."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": config.spec.cluster.name,
                "cluster": {
                    "server": config.spec.cluster.api_server_endpoint,
                    "certificate-authority": CA_FILE,
                },
            }
        ],
        "users": [{"name": "kubelet-bootstrap", "user": {"token": token}}],
        "contexts": [
            {
                "name": "bootstrap",
                "context": {"cluster": config.spec.cluster.name, "user": "kubelet-bootstrap"},
            }
        ],
        "current-context": "bootstrap",
    }
    # JSON is YAML; a token can never be misread as another YAML type this way.
    return RenderedFile(BOOTSTRAP_KUBECONFIG, (json.dumps(doc, indent=2) + "\n").encode(), 0o600)


def ca_file(config: NodeConfig) -> RenderedFile:
    return RenderedFile(CA_FILE, config.spec.cluster.certificate_authority.encode())
