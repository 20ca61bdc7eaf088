"""The node actions as phases: init, upgrade and uninstall.

Everything the actions touch comes in a :class:`NodeEnv`: the root prefix, the service
manager (:class:`~tether.node.host.HostOps`), the Kubernetes view
(:class:`~tether.node.kubeview.NodeView`), facts about the host (:class:`HostFacts`) and
the clock. Each phase is idempotent (see :mod:`tether.node.phases`).

Side effects that must follow a file change (``sysctl --system``, ``daemon-reload``, a
service restart) are driven by *stamps*: ``<root>/var/lib/tether/node/applied.json``
maps each effect to the digest of the files it was last applied for. A phase writes its
files, compares their digest with the stamp, performs the effect if they differ (or the
service is not running), and only then saves the stamp. A kill between the write and the
effect leaves a stale stamp, so the rerun performs the effect it missed.

``upgrade`` and ``uninstall`` start with a ``preflight`` phase that refuses unless the
node is cordoned and drained, read from the Kubernetes API; ``force`` (with a reason,
which is logged and kept in the journal) overrides it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import re
import socket
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, Final, Protocol

import httpx

from tether.domain.drain import remaining_workloads
from tether.domain.kubeversion import node_skew_problem, parse_version
from tether.errors import HostError, Invalid, Permanent, PlaneError, describe, is_permanent
from tether.files import write_atomic
from tether.node import render
from tether.node.artifacts import Keyring
from tether.node.debug import SystemProbes
from tether.node.host import HostOps, cgroup_hierarchies
from tether.node.images import image_names, import_argv
from tether.node.install import clear_staging, default_arch, fetch_resolved, install
from tether.node.kubeview import NodeView, NodeViewError
from tether.node.managed import ForeignFile, write_managed
from tether.node.nodeconfig import NodeConfig
from tether.node.phases import (
    JOURNAL_DIR,
    ActionReport,
    Phase,
    PhaseError,
    PhaseEvent,
    PhaseRefused,
    PhaseResult,
    check_skip,
    run_phases,
)
from tether.node.supervisor import LOG_DIR
from tether.node.supervisor import STATE_DIR as SUPERVISOR_DIR
from tether.node.tracker import Tracker, host_path, load, save
from tether.node.uninstall import remove

__all__ = [
    "INIT_PHASES",
    "UNINSTALL_PHASES",
    "UPGRADE_PHASES",
    "Force",
    "HostFacts",
    "InstalledNode",
    "NodeEnv",
    "NotInitialised",
    "SystemFacts",
    "init",
    "installed_node",
    "uninstall",
    "upgrade",
]

log = logging.getLogger("tether.node")

STAMPS: Final = f"{JOURNAL_DIR}/applied.json"
#: Which node ``init`` set up (name, API endpoint, CA); read by upgrade and uninstall.
NODE_STATE: Final = f"{JOURNAL_DIR}/node.json"
#: The host as ``init`` found it before its services first ran (sysctl values, state
#: directories and cgroups that did not exist): what uninstall puts back.
HOST_BEFORE: Final = f"{JOURNAL_DIR}/host-before.json"
#: Where CNI plugins are looked for when Tether did not install them (Debian's package
#: puts them in /usr/lib/cni).
CNI_DIRS: Final = ("/opt/cni/bin", "/usr/lib/cni", "/usr/libexec/cni")
#: The cgroups the kubelet creates for pods (cgroupfs and systemd drivers).
POD_CGROUPS: Final = ("kubepods", "kubepods.slice")
#: The iptables chains the kubelet itself makes (kube-proxy's and the CNI's are theirs).
KUBELET_CHAINS: Final = ("KUBE-FIREWALL", "KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY")
#: Ports the kubelet listens on: the API (10250) and its health endpoint (10248).
KUBELET_PORTS: Final = (10250, 10248)
INIT_PHASES: Final = (
    "validation",
    "system-settings",
    "containerd-config",
    "kubelet-config",
    "kubeconfig",
    "systemd-units",
    "start",
    "wait-ready",
)
UPGRADE_PHASES: Final = (
    "preflight",
    "validation",
    "install",
    "containerd-config",
    "start",
    "wait-ready",
)
UNINSTALL_PHASES: Final = ("preflight", "stop", "remove")
_TOKEN: Final = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
#: A bootstrap kubeconfig the kubelet has not used yet is renewed after this long: the
#: plane's tokens live an hour, so a rerun much later must not keep an expired one.
BOOTSTRAP_TOKEN_REUSE_SECONDS: Final = 45 * 60


class HostFacts(Protocol):
    """Read-only facts about the host that validation and the generated files need."""

    def active_swaps(self) -> list[str]: ...
    def has_address(self, ip: ipaddress.IPv4Address) -> bool: ...
    def port_in_use(self, port: int) -> bool: ...
    def systemd_running(self) -> bool: ...
    def cgroup_v2(self) -> bool: ...
    def cap_sys_resource(self) -> bool: ...
    def exists(self, path: str) -> bool:
        """Whether the real path ``path`` exists (not under the root prefix)."""
        ...

    def cgroup_exists(self, name: str) -> bool: ...


#: CAP_SYS_RESOURCE's bit in /proc/self/status CapEff.
_CAP_SYS_RESOURCE: Final = 24


class SystemFacts:
    """The real host, read through the same probes ``tether node debug`` uses, plus a bind
    attempt per port."""

    def __init__(self, probes: SystemProbes | None = None) -> None:
        self.probes = probes or SystemProbes()

    def active_swaps(self) -> list[str]:
        return self.probes.swap_entries() or []

    def has_address(self, ip: ipaddress.IPv4Address) -> bool:
        return any(a.address == ip for a in self.probes.local_addresses() or [])

    def port_in_use(self, port: int) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("0.0.0.0", port))  # noqa: S104 - probing, not serving
            except OSError:
                return True
        return False

    def systemd_running(self) -> bool:
        # sd_booted(): systemd creates this directory when it runs as PID 1.
        return Path("/run/systemd/system").is_dir()

    def cgroup_v2(self) -> bool:
        return Path("/sys/fs/cgroup/cgroup.controllers").is_file()

    def cap_sys_resource(self) -> bool:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> _CAP_SYS_RESOURCE & 1)
        return False

    def exists(self, path: str) -> bool:
        return os.path.lexists(path)

    def cgroup_exists(self, name: str) -> bool:
        return any((h / name).is_dir() for h in cgroup_hierarchies())


@dataclass
class NodeEnv:
    root: Path
    host: HostOps
    view: NodeView
    facts: HostFacts = field(default_factory=SystemFacts)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    wall_clock: Callable[[], float] = time.time
    ready_timeout: float = 300.0
    poll_seconds: float = 2.0


@dataclass(frozen=True)
class Force:
    """Override the cordoned-and-drained preflight; the reason is logged and journalled."""

    reason: str

    def __post_init__(self) -> None:
        if len(self.reason.strip()) < 3:
            raise Invalid("--force needs a --reason", field="reason", rule="required")


# Stamps ------------------------------------------------------------------------------------


def _stamps(root: Path) -> dict[str, str]:
    try:
        data: Any = json.loads(host_path(root, STAMPS).read_bytes())
    except (FileNotFoundError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _set_stamp(root: Path, key: str, digest: str | None) -> None:
    stamps = _stamps(root)
    if digest is None:
        stamps.pop(key, None)
    else:
        stamps[key] = digest
    write_atomic(host_path(root, STAMPS), json.dumps(stamps, indent=2, sort_keys=True), 0o600)


def _digest(root: Path, paths: Sequence[str]) -> str:
    """A digest of the named files' contents (a missing file counts as absent)."""
    digest = hashlib.sha256()
    for path in paths:
        target = host_path(root, path)
        digest.update(path.encode() + b"\0")
        digest.update(hashlib.sha256(target.read_bytes()).digest() if target.is_file() else b"-")
    return digest.hexdigest()


def _apply_once(root: Path, key: str, paths: Sequence[str], effect: Callable[[], None]) -> bool:
    """Run ``effect`` unless it already ran for the current content of ``paths``."""
    digest = _digest(root, paths)
    if _stamps(root).get(key) == digest:
        return False
    effect()
    _set_stamp(root, key, digest)
    return True


# The host: what the generated files adapt to, and what init found -----------------------


def _cni_dir(env: NodeEnv, tracker: Tracker) -> str:
    """Where the CNI plugins are: Tether's, else the first of :data:`CNI_DIRS` holding
    ``loopback`` under the root prefix, else on the host; else where the cluster's CNI
    will install them (``/opt/cni/bin``)."""
    ours = [e for e in tracker.installed if e.name == "cni-plugins"]
    if ours:
        return str(host_path(env.root, str(PurePosixPath(ours[0].path).parent)))
    for directory in CNI_DIRS:
        prefixed = str(host_path(env.root, directory))
        if env.facts.exists(f"{prefixed}/loopback"):
            return prefixed
    for directory in CNI_DIRS:
        if env.facts.exists(f"{directory}/loopback"):
            return directory
    return str(host_path(env.root, render.DEFAULT_CNI_BIN_DIR))


def host_profile(env: NodeEnv, tracker: Tracker | None = None) -> render.HostProfile:
    """What the generated files adapt to on this host (see :class:`render.HostProfile`)."""
    return render.HostProfile(
        root=str(env.root),
        systemd=env.facts.systemd_running(),
        cgroup_v2=env.facts.cgroup_v2(),
        lower_oom_score=env.facts.cap_sys_resource(),
        cni_bin_dir=_cni_dir(env, tracker or load(env.root)),
    )


def _service_paths(profile: render.HostProfile, containerd_ours: bool) -> list[str]:
    """Real paths the node's services create when they run. Some are fixed whatever the
    root prefix: the kubelet's device-plugin socket dir and ``/var/log/containers``,
    containerd's shim sockets, libcni's cache."""
    at = profile.at
    paths = [
        at(render.KUBELET_ROOT_DIR),
        render.KUBELET_ROOT_DIR,
        at("/var/log/pods"),
        "/var/log/containers",
        at("/usr/libexec/kubernetes"),
        at("/var/lib/cni"),
        "/var/lib/cni",
        at(SUPERVISOR_DIR.rsplit("/", 1)[0]),
        at(LOG_DIR),
    ]
    if containerd_ours:
        paths += [
            at("/var/lib/containerd"),
            at("/run/containerd"),
            "/run/containerd",
            at("/opt/containerd"),
        ]
    return sorted(set(paths))


def _host_before(root: Path) -> dict[str, Any] | None:
    try:
        data: Any = json.loads(host_path(root, HOST_BEFORE).read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _record_host(env: NodeEnv, profile: render.HostProfile, sysctls: Iterable[str] = ()) -> None:
    """Record, once, the host as it is before Tether's services first run: the sysctls
    Tether (its own and the NodeConfig's ``sysctls``) and the kubelet set, and which
    state paths and pod cgroups do not exist yet."""
    if _host_before(env.root) is not None:
        return
    names = sorted({*render.SYSCTLS, *render.KUBELET_TUNABLES, *sysctls})

    def first_absent(path: str) -> str | None:
        """The topmost directory on the way to ``path`` that does not exist yet: the
        service creates it with its parents (``/usr/libexec`` for the kubelet's
        ``/usr/libexec/kubernetes``), so that is what must go again."""
        parts = PurePosixPath(path).parts
        for depth in range(2, len(parts) + 1):
            candidate = str(PurePosixPath(*parts[:depth]))
            if not env.facts.exists(candidate):
                return candidate
        return None

    paths = _service_paths(profile, _containerd_ours(load(env.root)))
    before = {
        "sysctls": {name: env.host.read_sysctl(name) for name in names},
        "absent": sorted({a for a in map(first_absent, paths) if a is not None}),
        "cgroups": [c for c in POD_CGROUPS if not env.facts.cgroup_exists(c)],
    }
    write_atomic(host_path(env.root, HOST_BEFORE), json.dumps(before, indent=2) + "\n", 0o600)


def _restore_host(env: NodeEnv) -> list[str]:
    """Put back what :func:`_record_host` saw: remove the state paths and pod cgroups the
    node's services created (after unmounting what is mounted in them), reset the
    sysctls. Then forget the record."""
    before = _host_before(env.root)
    if before is None:
        return []
    changed: list[str] = []
    absent = sorted((str(p) for p in before.get("absent", [])), key=len, reverse=True)
    for path in absent:
        changed += [f"unmounted {m}" for m in env.host.unmount_tree(path)]
    for path in absent:
        if env.host.remove_tree(path):
            changed.append(f"removed {path}")
    for cgroup in before.get("cgroups", []):
        if env.host.remove_cgroup(str(cgroup)):
            changed.append(f"removed cgroup {cgroup}")
    for name, value in sorted((before.get("sysctls") or {}).items()):
        if value is not None and env.host.read_sysctl(name) != str(value):
            env.host.write_sysctl(name, str(value))
            changed.append(f"sysctl {name}={value}")
    host_path(env.root, HOST_BEFORE).unlink(missing_ok=True)
    return changed


# Shared phases -----------------------------------------------------------------------------


def _guarded(run: Callable[[], PhaseResult]) -> Callable[[], PhaseResult]:
    """Turn every failure of a phase into a :class:`~tether.errors.HostError`, so it is
    reported as that phase's failure (event, journal, exit code, permanent or not) rather
    than escaping the action."""

    def guarded() -> PhaseResult:
        try:
            return run()
        except HostError:
            raise
        except Exception as exc:
            if isinstance(exc, OSError | PlaneError):
                message = describe(exc)
            else:  # a bug or an unforeseen failure: still this phase's
                log.exception("unexpected failure")
                message = f"unexpected {type(exc).__name__}: {exc}"
            raise (PhaseRefused if is_permanent(exc) else PhaseError)(message) from exc

    return guarded


def _phase(name: str, description: str, run: Callable[[], PhaseResult]) -> Phase:
    return Phase(name, description, _guarded(run))


def _binary(tracker: Tracker, name: str) -> str:
    entry = tracker.artifact(name)
    if entry is None:
        raise PhaseRefused(f"{name} is not installed: run tether node install <version> first")
    return entry.path


def _containerd_ours(tracker: Tracker) -> bool:
    entry = tracker.artifact("containerd")
    if entry is None:
        raise PhaseRefused("containerd is not installed: run tether node install <version> first")
    return not entry.foreign


def _services(tracker: Tracker) -> dict[str, list[str]]:
    """Each unit Tether starts, with the files whose change needs it restarted."""
    containerd = [render.CONTAINERD_DROPIN]
    if _containerd_ours(tracker):
        containerd += [
            render.CONTAINERD_CONFIG,
            render.CONTAINERD_UNIT,
            _binary(tracker, "containerd"),
        ]
    kubelet = [
        render.KUBELET_UNIT,
        render.KUBELET_CONFIG,
        render.CA_FILE,
        render.BOOTSTRAP_KUBECONFIG,
        _binary(tracker, "kubelet"),
    ]
    return {"containerd": containerd, "kubelet": kubelet}


def _images(tracker: Tracker) -> list[str]:
    """The image archives Tether installed (host paths), the sandbox image first."""
    entries = [e for e in tracker.installed if e.name in ("pause-image", "image")]
    return [e.path for e in sorted(entries, key=lambda e: (e.name != "pause-image", e.path))]


def _import_images(env: NodeEnv, tracker: Tracker) -> list[str]:
    """Import the installed image archives into containerd (it must be running)."""
    archives = _images(tracker)
    if not archives:
        return []
    ctr = tracker.artifact("ctr")
    ctr_path = str(host_path(env.root, ctr.path)) if ctr and not ctr.foreign else "ctr"
    socket_path = str(host_path(env.root, render.CONTAINERD_SOCKET))

    def run() -> None:
        for archive in archives:
            env.host.run(import_argv(ctr_path, socket_path, str(host_path(env.root, archive))))

    if _apply_once(env.root, "images", archives, run):
        return [f"imported {len(archives)} image archive(s) into containerd"]
    return []


def _start(env: NodeEnv) -> PhaseResult:
    tracker = load(env.root)
    changed: list[str] = []
    for unit, inputs in _services(tracker).items():
        key = f"service:{unit}"
        if not env.host.is_active(unit):
            _set_stamp(env.root, key, None)
        if _apply_once(env.root, key, inputs, partial(env.host.restart, unit)):
            changed.append(f"restarted {unit}")
            if unit == "containerd":  # a new containerd (or its state) may lack them
                _set_stamp(env.root, "images", None)
        if unit == "containerd":
            changed += _import_images(env, tracker)
    return PhaseResult(changed)


def _wait_ready(env: NodeEnv, name: str) -> PhaseResult:
    """Until the Node is Ready *and* reports the installed kubelet's version: right after
    an upgrade restarts the kubelet, the Node still says Ready for the old one."""
    entry = load(env.root).artifact("kubelet")
    wanted = entry.version.removeprefix("v") if entry is not None and entry.version else None
    deadline = env.clock() + env.ready_timeout
    last = "not registered yet"
    while True:
        try:
            state = env.view.node(name)
        except NodeViewError as exc:
            state, last = None, str(exc)
        running = (state.kubelet_version or "").removeprefix("v") if state else ""
        if state is not None and state.ready and wanted in (None, running):
            return PhaseResult(message=f"node {name} is Ready (kubelet v{running})")
        if state is not None and state.ready:
            last = f"Ready, but with kubelet v{running}, not v{wanted} yet"
        elif state is not None:
            last = "registered, not Ready" if state.ready is False else "registered, no status"
        if env.clock() >= deadline:
            raise PhaseError(
                f"node {name} is not Ready after {env.ready_timeout:g}s ({last}); "
                "run tether node debug"
            )
        env.sleep(env.poll_seconds)


def _preflight(env: NodeEnv, name: str, force: Force | None, action: str) -> PhaseResult:
    if force is not None:
        log.warning("%s of node %s forced past the drain check: %s", action, name, force.reason)
        return PhaseResult(message=f"forced past the drain check: {force.reason}")
    state = env.view.node(name)
    if state is None:
        return PhaseResult(message=f"node {name} is not registered: nothing to drain")
    if not state.unschedulable:
        raise PhaseError(
            f"node {name} is not cordoned: cordon and drain it first (tether host drain), "
            "or pass --force with a --reason"
        )
    left = remaining_workloads(env.view.pods_on(name))
    if left:
        names = ", ".join(p.key for p in left[:5]) + (" ..." if len(left) > 5 else "")
        raise PhaseError(
            f"node {name} is cordoned but not drained: {len(left)} pod(s) still run ({names}); "
            "drain it first, or pass --force with a --reason"
        )
    return PhaseResult(message=f"node {name} is cordoned and drained")


def _check_skew(env: NodeEnv, kubelet_version: str) -> str:
    control_plane = env.view.control_plane_version()
    problem = node_skew_problem(parse_version(control_plane), parse_version(kubelet_version))
    if problem is not None:
        raise PhaseRefused(problem)
    return control_plane


@dataclass(frozen=True)
class InstalledNode:
    """What ``init`` left on a host: the node name, the API endpoint and the cluster CA."""

    name: str
    endpoint: str
    ca_pem: str


class NotInitialised(Permanent):
    """The host has no node set up by ``tether node init`` under the root prefix."""


def installed_node(root: Path) -> InstalledNode:
    """The node ``init`` set up under ``root``: from ``/var/lib/tether/node/node.json``,
    which ``init`` writes first and uninstall keeps, so an interrupted uninstall can run
    again after the files it read are gone."""
    path = host_path(root, NODE_STATE)
    try:
        data = json.loads(path.read_text())
        return InstalledNode(str(data["name"]), str(data["endpoint"]), str(data["caPEM"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise NotInitialised(f"this host was not set up by tether node init: {exc}") from exc


def _record_node(root: Path, config: NodeConfig) -> None:
    node = {
        "name": config.spec.node.name,
        "endpoint": config.spec.cluster.api_server_endpoint,
        "caPEM": config.spec.cluster.certificate_authority,
    }
    path = host_path(root, NODE_STATE)
    try:
        if json.loads(path.read_text()) == node:
            return
    except (OSError, ValueError):
        pass
    write_atomic(path, json.dumps(node, indent=2) + "\n", 0o600)


# init --------------------------------------------------------------------------------------


def _validate(config: NodeConfig, env: NodeEnv) -> PhaseResult:
    tracker = load(env.root)
    if tracker.kubernetes_version is None:
        raise PhaseRefused("no Kubernetes artifacts installed: run tether node install first")
    problems: list[str] = []  # a person must act on these
    busy: list[int] = []  # these may clear by themselves (a kubelet still stopping)
    ip = config.spec.node.ip
    if not env.facts.has_address(ip):
        problems.append(f"node IP {ip} is not assigned to any interface of this host")
    swaps = env.facts.active_swaps()
    if swaps:
        problems.append(f"swap is on ({', '.join(swaps)}): run swapoff -a and remove it from fstab")
    if not env.host.is_active("kubelet"):
        busy = [p for p in KUBELET_PORTS if env.facts.port_in_use(p)]
    try:
        control_plane = _check_skew(env, tracker.kubernetes_version)
    except PhaseRefused as exc:
        problems.append(str(exc))
        control_plane = "?"
    ports = f"port(s) {', '.join(map(str, busy))} needed by the kubelet are in use"
    if problems:
        raise PhaseRefused("; ".join([*problems, *([ports] if busy else [])]))
    if busy:
        raise PhaseError(ports)
    notes = host_profile(env, tracker).notes()
    return PhaseResult(
        message=f"kubelet {tracker.kubernetes_version} may join control plane {control_plane}; "
        f"node IP {ip} in {config.spec.node.node_cidr}; swap off; ports free"
        + (f"; this host: {', '.join(notes)}" if notes else "")
    )


def _write(env: NodeEnv, files: Sequence[render.RenderedFile]) -> list[str]:
    tracker = load(env.root)
    return [f.path for f in files if write_managed(env.root, tracker, f)]


def _system_settings(config: NodeConfig, env: NodeEnv) -> PhaseResult:
    _record_host(env, host_profile(env), config.spec.os.sysctls)
    files = [
        render.sysctl_conf(config.spec.os.sysctls),
        render.modules_conf(config),
        *render.os_files(config),
    ]
    changed = _write(env, files)

    def apply() -> None:
        env.host.load_modules(render.modules(config))
        env.host.apply_sysctl()

    if _apply_once(env.root, "sysctl", [f.path for f in files], apply):
        changed.append("applied sysctl settings")
    return PhaseResult(changed)


def _sandbox_image(env: NodeEnv, tracker: Tracker) -> str:
    """The name of the installed pause-image archive's image, else the default."""
    pause = tracker.artifact("pause-image")
    if pause is None or pause.foreign:
        return render.SANDBOX_IMAGE
    return image_names(host_path(env.root, pause.path))[0]


def _containerd_main(env: NodeEnv) -> tuple[list[render.RenderedFile], dict[str, Any], int]:
    """containerd's config.toml for the installed containerd's major version if Tether
    installed containerd (with the document and the major); otherwise no file, the
    operator's config.toml (which must import the drop-in) and its major."""
    tracker = load(env.root)
    profile = host_profile(env, tracker)
    if _containerd_ours(tracker):
        entry = tracker.artifact("containerd")
        major = _containerd_major(entry.version if entry else None)
        major = 2 if major is None else major
        runc = tracker.artifact("runc")
        sandbox = _sandbox_image(env, tracker)
        runc_path = profile.at(runc.path) if runc and not runc.foreign else None
        doc = render.containerd_config_doc(major, profile, sandbox_image=sandbox, runc=runc_path)
        file = render.containerd_config(major, profile, sandbox_image=sandbox, runc=runc_path)
        return [file], doc, major
    main = host_path(env.root, render.CONTAINERD_CONFIG)
    try:
        doc = tomllib.loads(main.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PhaseRefused(
            f"containerd was not installed by Tether and its {render.CONTAINERD_CONFIG} cannot "
            f"be read ({exc}): give it an imports line for /etc/containerd/config.d/*.toml"
        ) from exc
    imports = doc.get("imports", [])
    wanted = profile.at(str(PurePosixPath(render.CONTAINERD_DROPIN).parent / "*.toml"))
    if not isinstance(imports, list) or wanted not in imports:
        raise PhaseRefused(
            f"containerd was not installed by Tether and {render.CONTAINERD_CONFIG} does not "
            f'import config.d: add imports = ["{wanted}"] to it'
        )
    # An operator's config.toml says version 3 only for containerd 2.
    return [], doc, 2 if doc.get("version") == 3 else 1


def _containerd_config(config: NodeConfig, env: NodeEnv) -> PhaseResult:
    files, main, major = _containerd_main(env)
    return PhaseResult(_write(env, [render.containerd_dropin(config, major, main), *files]))


def _kubelet_config(config: NodeConfig, env: NodeEnv) -> PhaseResult:
    kubelet = render.kubelet_config(config, host_profile(env))
    return PhaseResult(_write(env, [render.ca_file(config), kubelet]))


def _bootstrap_server(root: Path) -> str | None:
    """The API server named by the bootstrap kubeconfig Tether wrote, if any."""
    path = host_path(root, render.BOOTSTRAP_KUBECONFIG)
    entry = load(root).get(render.BOOTSTRAP_KUBECONFIG)
    if entry is None or entry.foreign or not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text())["clusters"][0]["cluster"]["server"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def _kubeconfig(config: NodeConfig, env: NodeEnv, token: Callable[[], str]) -> PhaseResult:
    path = host_path(env.root, render.BOOTSTRAP_KUBECONFIG)
    entry = load(env.root).get(render.BOOTSTRAP_KUBECONFIG)
    if path.exists() and (entry is None or entry.foreign):
        raise ForeignFile(render.BOOTSTRAP_KUBECONFIG)  # before a token is minted for it
    if _bootstrap_server(env.root) == config.spec.cluster.api_server_endpoint:
        joined = host_path(env.root, render.KUBELET_KUBECONFIG).is_file()
        age = env.wall_clock() - path.stat().st_mtime
        if joined or age < BOOTSTRAP_TOKEN_REUSE_SECONDS:
            return PhaseResult(message="bootstrap kubeconfig present (token not minted again)")
    secret = token()
    if not _TOKEN.match(secret):
        raise PhaseRefused("the bootstrap token is malformed (want 6 + 16 lowercase characters)")
    profile = host_profile(env)
    return PhaseResult(_write(env, [render.bootstrap_kubeconfig(config, secret, profile)]))


def _units(config: NodeConfig, env: NodeEnv) -> PhaseResult:
    tracker = load(env.root)
    profile = host_profile(env, tracker)
    files = [render.kubelet_unit(config, profile.at(_binary(tracker, "kubelet")), profile)]
    if _containerd_ours(tracker):
        files.append(render.containerd_unit(profile.at(_binary(tracker, "containerd")), profile))
    changed = _write(env, files)
    if _apply_once(env.root, "daemon-reload", [f.path for f in files], env.host.daemon_reload):
        changed.append("daemon-reload")

    units = list(_services(tracker))

    def enable() -> None:
        for unit in units:
            env.host.enable(unit)

    if _apply_once(env.root, "enabled", [f.path for f in files], enable):
        changed.append("enabled " + ", ".join(units))
    return PhaseResult(changed)


def _fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def init(
    config: NodeConfig,
    env: NodeEnv,
    *,
    token: Callable[[], str],
    skip: Sequence[str] = (),
    on_event: Callable[[PhaseEvent], None] = lambda _: None,
) -> ActionReport:
    """Join this host to the cluster as ``config.spec.node.name``; see the module doc.

    ``token`` returns a bootstrap token; it is called only when no bootstrap kubeconfig
    was written yet."""
    phases = [
        _phase(
            "validation",
            "check node IP, version skew, swap and ports",
            lambda: _validate(config, env),
        ),
        _phase(
            "system-settings",
            "kernel modules, sysctl and the NodeConfig's files",
            lambda: _system_settings(config, env),
        ),
        _phase(
            "containerd-config",
            "containerd config and NodeConfig drop-in",
            lambda: _containerd_config(config, env),
        ),
        _phase(
            "kubelet-config",
            "KubeletConfiguration and cluster CA",
            lambda: _kubelet_config(config, env),
        ),
        _phase("kubeconfig", "bootstrap kubeconfig", lambda: _kubeconfig(config, env, token)),
        _phase("systemd-units", "kubelet and containerd units", lambda: _units(config, env)),
        _phase("start", "start containerd and the kubelet", lambda: _start(env)),
        _phase(
            "wait-ready",
            "wait for the Node to be Ready",
            lambda: _wait_ready(env, config.spec.node.name),
        ),
    ]
    fingerprint = _fingerprint(config.model_dump(mode="json"))
    check_skip("init", phases, skip)  # a usage error changes nothing on the host
    _record_node(env.root, config)
    return run_phases(
        "init", phases, root=env.root, fingerprint=fingerprint, skip=skip, on_event=on_event
    )


# upgrade -----------------------------------------------------------------------------------


def _containerd_major(version: str | None) -> int | None:
    if not version:
        return None
    head = version.lstrip("v").split(".")[0]
    return int(head) if head.isdigit() else None


def _validate_upgrade(
    env: NodeEnv,
    version: str,
    source: str,
    keyring: Keyring,
    arch: str,
    allow_major: bool,
    client: httpx.Client | None,
) -> PhaseResult:
    artifacts = fetch_resolved(source, version, keyring=keyring, arch=arch, client=client).artifacts
    kubelet = next((a for a in artifacts if a.name == "kubelet"), None)
    control_plane = _check_skew(env, kubelet.version if kubelet else version)
    tracker = load(env.root)
    current = tracker.artifact("containerd")
    new = next((a for a in artifacts if a.name == "containerd"), None)
    if current is not None and not current.foreign and new is not None:
        before, after = _containerd_major(current.version), _containerd_major(new.version)
        if before is not None and after is not None and before != after and not allow_major:
            raise PhaseRefused(
                f"this upgrade would move containerd from {current.version} to {new.version} "
                f"(major {before} to {after}); pass --allow-containerd-major to allow it"
            )
    return PhaseResult(message=f"Kubernetes {version} may run under control plane {control_plane}")


def upgrade(
    name: str,
    version: str,
    env: NodeEnv,
    *,
    source: str,
    keyring: Keyring,
    arch: str | None = None,
    client: httpx.Client | None = None,
    allow_containerd_major: bool = False,
    force: Force | None = None,
    skip: Sequence[str] = (),
    on_event: Callable[[PhaseEvent], None] = lambda _: None,
) -> ActionReport:
    """Install ``version``'s artifacts on a cordoned, drained node and restart it."""
    arch = arch or default_arch()

    def do_install() -> PhaseResult:
        report = install(
            version, root=env.root, source=source, keyring=keyring, arch=arch, client=client
        )
        return PhaseResult(report.installed, report.summary())

    phases = [
        _phase(
            "preflight",
            "the node is cordoned and drained",
            lambda: _preflight(env, name, force, "upgrade"),
        ),
        _phase(
            "validation",
            "version skew and containerd major version",
            lambda: _validate_upgrade(
                env, version, source, keyring, arch, allow_containerd_major, client
            ),
        ),
        _phase("install", f"install Kubernetes {version} artifacts", do_install),
        _phase(
            "containerd-config",
            "containerd config for its major version",
            lambda: PhaseResult(_write(env, _containerd_main(env)[0])),
        ),
        _phase("start", "restart what changed", lambda: _start(env)),
        _phase("wait-ready", "wait for the Node to be Ready", lambda: _wait_ready(env, name)),
    ]
    fingerprint = _fingerprint(name, version, source, arch, allow_containerd_major)
    return run_phases(
        "upgrade", phases, root=env.root, fingerprint=fingerprint, skip=skip, on_event=on_event
    )


# uninstall ---------------------------------------------------------------------------------


def _remove_pods(env: NodeEnv, tracker: Tracker) -> list[str]:
    """Stop and remove every pod through the CRI (the kubelet is stopped): containers
    end, their network is torn down by the CNI plugins, their mounts go."""
    crictl = tracker.artifact("crictl")
    if crictl is None or crictl.foreign or not env.host.is_active("containerd"):
        return []
    endpoint = f"unix://{host_path(env.root, render.CONTAINERD_SOCKET)}"
    crictl_path = str(host_path(env.root, crictl.path))
    env.host.run([crictl_path, "--runtime-endpoint", endpoint, "rmp", "--all", "--force"])
    return ["removed every pod"]


def _stop(env: NodeEnv) -> PhaseResult:
    tracker = load(env.root)
    containerd = tracker.artifact("containerd")
    units = ["kubelet"] + (["containerd"] if containerd and not containerd.foreign else [])
    changed: list[str] = []
    for unit in units:
        if unit == "containerd":
            changed += _remove_pods(env, tracker)
        if env.host.is_active(unit):
            env.host.stop(unit)
            changed.append(f"stopped {unit}")
        _set_stamp(env.root, f"service:{unit}", None)
        if unit == "kubelet":
            changed += [f"deleted {c}" for c in env.host.delete_chains(KUBELET_CHAINS)]
    # Disable while Tether's unit files are there (init may have been killed between
    # enabling the units and saving its stamp).
    if "enabled" in _stamps(env.root) or tracker.get(render.KUBELET_UNIT) is not None:
        for unit in units:
            env.host.disable(unit)
        changed.append("disabled " + ", ".join(units))
        _set_stamp(env.root, "enabled", None)
    return PhaseResult(changed)


def _remove(env: NodeEnv) -> PhaseResult:
    # What the services created first: it may sit in directories Tether made.
    restored = _restore_host(env)
    tracker = load(env.root)
    clear_staging(env.root)  # what a killed install left
    report = remove(env.root, tracker)
    tracker.forget([*report.removed, *report.removed_dirs, *report.missing])
    save(env.root, tracker)
    changed = [*restored, *report.removed, *report.removed_dirs]
    stamps = _stamps(env.root)
    if "daemon-reload" in stamps:  # units were loaded: make systemd forget them
        env.host.daemon_reload()
        changed.append("daemon-reload")
    for key in ("daemon-reload", "sysctl", "images"):
        _set_stamp(env.root, key, None)
    kept = [
        *(f"{p} (changed since installed)" for p in report.kept_changed),
        *(f"{p} (not Tether's)" for p in report.kept_foreign),
        *(f"{p} (symlink)" for p in report.refused_symlink),
        *(f"{p} (mount point)" for p in report.refused_mount),
    ]
    message = f"removed {len(report.removed)} file(s) and {len(report.removed_dirs)} dir(s)"
    if kept:
        message += "; kept " + ", ".join(kept)
    return PhaseResult(changed, message)


def uninstall(
    name: str,
    env: NodeEnv,
    *,
    force: Force | None = None,
    skip: Sequence[str] = (),
    on_event: Callable[[PhaseEvent], None] = lambda _: None,
) -> ActionReport:
    """Stop the node's services and remove exactly what Tether installed."""
    phases = [
        _phase(
            "preflight",
            "the node is cordoned and drained",
            lambda: _preflight(env, name, force, "uninstall"),
        ),
        _phase("stop", "stop and disable the kubelet and containerd", lambda: _stop(env)),
        _phase("remove", "remove what the tracker says Tether installed", lambda: _remove(env)),
    ]
    return run_phases(
        "uninstall",
        phases,
        root=env.root,
        fingerprint=_fingerprint(name),
        skip=skip,
        on_event=on_event,
    )


# reboot ------------------------------------------------------------------------------------

#: Which reboot request was started on which boot (see :func:`reboot`).
REBOOT_MARKER = "/var/lib/tether/node/reboot-request.json"


def _reboot(env: NodeEnv, request: str) -> PhaseResult:
    marker = host_path(env.root, REBOOT_MARKER)
    current = env.host.boot_id()
    try:
        seen = json.loads(marker.read_text())
    except (OSError, ValueError):
        seen = {}
    if seen.get("request") == request and seen.get("boot") != current:
        return PhaseResult(message=f"rebooted for {request}")
    if seen.get("request") != request:
        write_atomic(marker, json.dumps({"request": request, "boot": current}) + "\n", 0o600)
    env.host.reboot()
    if env.host.boot_id() != current:
        return PhaseResult(changed=["rebooted"], message=f"rebooted for {request}")
    raise PhaseError("reboot in progress: the host goes down now and the plan completes after it")


def reboot(
    request: str, env: NodeEnv, *, on_event: Callable[[PhaseEvent], None] = lambda _: None
) -> ActionReport:
    """Reboot the host once for ``request`` (a plan's step id).

    Run again after the host came back (the agent reruns its plan), it finds the marker
    written before the reboot and a new boot id, and reports done; it never reboots twice
    for one request."""
    phases = [_phase("reboot", "reboot the host once", lambda: _reboot(env, request))]
    return run_phases(
        "reboot", phases, root=env.root, fingerprint=_fingerprint(request), on_event=on_event
    )
