"""Every file ``tether node init`` writes, generated from a NodeConfig. Pure: no I/O.

Each function returns the exact bytes of one file; golden files in the tests pin them.
A file's own path is a host path (written under the root prefix). The paths *inside*
the files (the kubelet's config, socket and root dir; containerd's root, state and
socket) come from a :class:`HostProfile`: the host path itself on a host at ``/``, and
under the root prefix otherwise, so a node under a prefix runs with every path the
kubelet and containerd let us choose inside it (a test node on a shared machine).

The profile also carries what validation detected about the host: systemd or not (the
cgroup driver), cgroup v1 or v2, whether processes may lower their OOM score, and where
the CNI plugins are.
"""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Final

import tomli_w
import yaml

from tether.errors import Permanent
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
    "CONTAINERD_SOCKET",
    "CONTAINERD_UNIT",
    "DEFAULT_CNI_BIN_DIR",
    "DEFAULT_PROFILE",
    "KUBELET_CLIENT_CERT",
    "KUBELET_CONFIG",
    "KUBELET_KUBECONFIG",
    "KUBELET_ROOT_DIR",
    "KUBELET_TUNABLES",
    "KUBELET_UNIT",
    "MODULES_FILE",
    "SANDBOX_IMAGE",
    "SYSCTL_FILE",
    "DropInError",
    "HostProfile",
    "RenderedFile",
    "bootstrap_kubeconfig",
    "ca_file",
    "containerd_config",
    "containerd_config_doc",
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
#: The kubelet's state (its ``--root-dir``).
KUBELET_ROOT_DIR: Final = "/var/lib/kubelet"
#: Written by the kubelet itself once its client certificate is issued (TLS bootstrap).
KUBELET_KUBECONFIG: Final = "/var/lib/kubelet/kubeconfig"
#: The kubelet's current client certificate (rotated by the kubelet).
KUBELET_CLIENT_CERT: Final = "/var/lib/kubelet/pki/kubelet-client-current.pem"
KUBELET_UNIT: Final = "/etc/systemd/system/kubelet.service"
CONTAINERD_SOCKET: Final = "/run/containerd/containerd.sock"
#: The pause image containerd pins, unless the installed artifacts bring their own.
SANDBOX_IMAGE: Final = "registry.k8s.io/pause:3.10"
DEFAULT_CNI_BIN_DIR: Final = "/opt/cni/bin"
MODULES: Final = ["overlay", "br_netfilter"]
SYSCTLS: Final = dict.fromkeys(RESERVED_SYSCTLS, "1")
#: Kernel settings the kubelet sets when it starts (its ``setupKernelTunables``): init
#: records their values first and uninstall puts them back.
KUBELET_TUNABLES: Final = (
    "kernel.keys.root_maxbytes",
    "kernel.keys.root_maxkeys",
    "kernel.panic",
    "kernel.panic_on_oops",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
)
_HEADER: Final = "# Written by tether node init; changes are overwritten on the next run.\n"


@dataclass(frozen=True)
class HostProfile:
    """What the generated files adapt to: the root prefix and what validation detected.

    The defaults describe a host at ``/`` with systemd, cgroup v2, CAP_SYS_RESOURCE and
    the CNI plugins in ``/opt/cni/bin``."""

    root: str = "/"
    #: systemd is PID 1 and owns the cgroup tree: the kubelet and runc use its driver.
    systemd: bool = True
    #: The unified cgroup hierarchy; on cgroup v1 kubelet >= 1.35 needs failCgroupV1: false.
    cgroup_v2: bool = True
    #: Processes may lower their OOM score (CAP_SYS_RESOURCE). Without it runc cannot give
    #: a container a negative ``oom_score_adj``, so containerd must not ask for one.
    lower_oom_score: bool = True
    cni_bin_dir: str = DEFAULT_CNI_BIN_DIR

    def at(self, path: str) -> str:
        """``path`` (absolute, as on a host at ``/``) under the root prefix."""
        if self.root in ("", "/"):
            return path
        return str(PurePosixPath(self.root).joinpath(*PurePosixPath(path).parts[1:]))

    @property
    def prefixed(self) -> bool:
        return self.root not in ("", "/")

    def notes(self) -> list[str]:
        """What the generated configuration does differently on this host, and why."""
        notes = []
        if not self.systemd:
            notes.append("no systemd as PID 1: cgroupfs driver")
        if not self.cgroup_v2:
            notes.append("cgroup v1: failCgroupV1: false")
        if not self.lower_oom_score:
            notes.append("no CAP_SYS_RESOURCE: restrict_oom_score_adj")
        if self.cni_bin_dir != DEFAULT_CNI_BIN_DIR:
            notes.append(f"CNI plugins in {self.cni_bin_dir}")
        if self.prefixed:
            notes.append(f"every service path under {self.root}")
        return notes


DEFAULT_PROFILE: Final = HostProfile()


class DropInError(Permanent):
    """The NodeConfig's containerd drop-in cannot be used with this containerd."""


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


def containerd_config_doc(
    containerd_major: int,
    profile: HostProfile = DEFAULT_PROFILE,
    *,
    sandbox_image: str = SANDBOX_IMAGE,
    runc: str | None = None,
) -> dict[str, Any]:
    """containerd's main config as a document (see :func:`containerd_config`)."""
    at = profile.at
    runc_options: dict[str, Any] = {"SystemdCgroup": profile.systemd}
    if runc is not None:
        runc_options["BinaryName"] = runc
    if profile.prefixed:
        runc_options["Root"] = at("/run/containerd/runc")
    runtime: dict[str, Any] = {}
    if not profile.lower_oom_score:
        runtime["restrict_oom_score_adj"] = True
    cni: dict[str, Any] = {}
    if profile.cni_bin_dir != DEFAULT_CNI_BIN_DIR:
        if containerd_major >= 2:
            cni["bin_dirs"] = [profile.cni_bin_dir]
        else:
            cni["bin_dir"] = profile.cni_bin_dir
    if profile.prefixed:
        cni["conf_dir"] = at("/etc/cni/net.d")
        # Pod network namespaces under containerd's state, not in the host's /run/netns.
        runtime["netns_mounts_under_state_dir"] = True
    if cni:
        runtime["cni"] = cni
    runtime["containerd"] = {
        "runtimes": {"runc": {"runtime_type": "io.containerd.runc.v2", "options": runc_options}}
    }
    plugins: dict[str, Any]
    if containerd_major >= 2:
        # Version 3: the CRI plugin is split into io.containerd.cri.v1.{images,runtime}.
        plugins = {
            "io.containerd.cri.v1.images": {"pinned_images": {"sandbox": sandbox_image}},
            "io.containerd.cri.v1.runtime": runtime,
        }
    else:
        plugins = {"io.containerd.grpc.v1.cri": {"sandbox_image": sandbox_image, **runtime}}
    if profile.prefixed:
        plugins["io.containerd.internal.v1.opt"] = {"path": at("/opt/containerd")}
    doc: dict[str, Any] = {
        "version": 3 if containerd_major >= 2 else 2,
        "imports": [at(str(PurePosixPath(CONTAINERD_DROPIN).parent / "*.toml"))],
    }
    if profile.prefixed:
        doc["root"] = at("/var/lib/containerd")
        doc["state"] = at("/run/containerd")
        doc["grpc"] = {"address": at(CONTAINERD_SOCKET)}
    doc["plugins"] = plugins
    return doc


def containerd_config(
    containerd_major: int,
    profile: HostProfile = DEFAULT_PROFILE,
    *,
    sandbox_image: str = SANDBOX_IMAGE,
    runc: str | None = None,
) -> RenderedFile:
    """containerd's main config: the host's cgroup driver, the pinned sandbox image,
    Tether's runc, and an import of ``config.d/*.toml`` for the NodeConfig's drop-in.
    containerd 2 reads config version 3 (CRI split into ``io.containerd.cri.v1.*``
    plugins); containerd 1.x reads version 2."""
    doc = containerd_config_doc(containerd_major, profile, sandbox_image=sandbox_image, runc=runc)
    return RenderedFile(CONTAINERD_CONFIG, (_HEADER + tomli_w.dumps(doc)).encode())


def _dropin_version(doc: dict[str, Any]) -> int | None:
    """The config version a drop-in is written for: its own ``version`` line, else the
    one its plugin names belong to (None: it names no version-specific plugin)."""
    version = doc.get("version")
    if isinstance(version, int):
        return version
    plugins = doc.get("plugins")
    names = [str(name) for name in plugins] if isinstance(plugins, dict) else []
    if any(name.startswith("io.containerd.cri.v1.") for name in names):
        return 3
    if "io.containerd.grpc.v1.cri" in names:
        return 2
    return None


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` deep-merged over ``base`` (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def containerd_dropin(
    config: NodeConfig, containerd_major: int, main: dict[str, Any] | None = None
) -> RenderedFile:
    """The NodeConfig's containerd drop-in, written so that containerd reads it as meant.

    containerd 1.x merges an imported file by *replacing* each plugin table it names
    (checked with Debian's containerd 1.6 ``config dump``): a drop-in that sets
    ``[plugins."io.containerd.grpc.v1.cri".registry]`` would drop the sandbox image,
    ``SystemdCgroup`` and everything else ``config.toml`` says of the CRI plugin. So for
    1.x each plugin table of the drop-in is written merged over the same table of
    ``main`` (the config.toml Tether wrote, or the operator's), with ``version = 2``.
    A drop-in written for version 3 (``io.containerd.cri.v1.*``) cannot be read by 1.x:
    :class:`DropInError`.

    containerd 2.x merges plugin tables key by key and migrates an imported file that
    is older than the main config, but 2.0 to 2.2 migrate only files of version 0 or 1:
    one that says ``version = 2`` keeps its ``io.containerd.grpc.v1.cri`` tables, which
    no containerd 2 plugin reads. So for 2.x a drop-in with version 2 names is written
    without a version line (every 2.x migrates it, as the ``config dump`` of 2.4 shows),
    and one with version 3 names says ``version = 3``.
    """
    doc = tomllib.loads(config.spec.containerd.config)
    version = _dropin_version(doc)
    body = {k: v for k, v in doc.items() if k != "version"}
    if containerd_major < 2:
        if version is not None and version > 2:
            raise DropInError(
                "the NodeConfig's containerd drop-in is written for containerd 2 (config "
                f"version {version}, io.containerd.cri.v1.* plugins) but this host runs "
                f'containerd {containerd_major}.x: use the version 2 names (plugins."io.'
                'containerd.grpc.v1.cri")'
            )
        plugins = body.get("plugins")
        if isinstance(plugins, dict):
            base = (main or {}).get("plugins")
            base = base if isinstance(base, dict) else {}
            body["plugins"] = {
                name: _merge(base.get(name) or {}, table) if isinstance(table, dict) else table
                for name, table in plugins.items()
            }
        out: dict[str, Any] = {"version": 2, **body}
    elif version is not None and version >= 3:
        out = {"version": version, **body}
    else:
        out = body
    text = tomli_w.dumps(out)
    return RenderedFile(CONTAINERD_DROPIN, (_HEADER + "# From the NodeConfig.\n" + text).encode())


def containerd_unit(binary: str, profile: HostProfile = DEFAULT_PROFILE) -> RenderedFile:
    """containerd's unit; under a root prefix it reads that prefix's config.toml and finds
    Tether's shim first on its PATH."""
    exec_start = binary
    environment = ""
    if profile.prefixed:
        exec_start += f" --config {profile.at(CONTAINERD_CONFIG)}"
        dirs = [profile.at(d) for d in ("/usr/local/sbin", "/usr/local/bin")]
        dirs += ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        environment = f"Environment=PATH={':'.join(dirs)}\n"
    body = (
        "[Unit]\n"
        "Description=containerd container runtime (installed by Tether)\n"
        "After=network.target local-fs.target\n"
        "\n"
        "[Service]\n"
        "ExecStartPre=-/sbin/modprobe overlay\n"
        f"ExecStart={exec_start}\n"
        f"{environment}"
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


def kubelet_config(config: NodeConfig, profile: HostProfile = DEFAULT_PROFILE) -> RenderedFile:
    """The KubeletConfiguration: Tether's settings with the NodeConfig's merged over them
    (except the fields Tether owns: providerID and serverTLSBootstrap)."""
    at = profile.at
    base: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True, "cacheTTL": "2m0s"},
            "x509": {"clientCAFile": at(CA_FILE)},
        },
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "systemd" if profile.systemd else "cgroupfs",
        "clusterDNS": [str(cluster_dns(config))],
        "clusterDomain": config.spec.cluster.cluster_domain,
        "containerRuntimeEndpoint": f"unix://{at(CONTAINERD_SOCKET)}",
        "failSwapOn": True,
        "readOnlyPort": 0,
        "rotateCertificates": True,
    }
    if not profile.cgroup_v2:
        base["failCgroupV1"] = False
    if profile.prefixed:
        base["podLogsDir"] = at("/var/log/pods")
        base["volumePluginDir"] = at("/usr/libexec/kubernetes/kubelet-plugins/volume/exec")
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


def kubelet_unit(
    config: NodeConfig, binary: str, profile: HostProfile = DEFAULT_PROFILE
) -> RenderedFile:
    at = profile.at
    labels = ",".join(f"{k}={v}" for k, v in node_labels(config).items())
    args = [
        binary,
        f"--config={at(KUBELET_CONFIG)}",
        f"--kubeconfig={at(KUBELET_KUBECONFIG)}",
        f"--bootstrap-kubeconfig={at(BOOTSTRAP_KUBECONFIG)}",
        *([f"--root-dir={at(KUBELET_ROOT_DIR)}"] if profile.prefixed else []),
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


def bootstrap_kubeconfig(
    config: NodeConfig, token: str, profile: HostProfile = DEFAULT_PROFILE
) -> RenderedFile:
    """The kubelet's bootstrap kubeconfig (mode 0600: it holds the token)."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": config.spec.cluster.name,
                "cluster": {
                    "server": config.spec.cluster.api_server_endpoint,
                    "certificate-authority": profile.at(CA_FILE),
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
