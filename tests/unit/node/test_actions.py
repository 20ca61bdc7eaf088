"""tether node init / upgrade / uninstall as phases, on a root prefix, with a recording
service manager and a fake Kubernetes view (the real view is tested against a real API
server in tests/integration/kube/test_node_lifecycle.py)."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import signal
import stat
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from tether.domain.drain import PodFacts
from tether.errors import Invalid
from tether.node import actions, render
from tether.node import install as install_module
from tether.node.actions import Force, NodeEnv, init, installed_node, uninstall, upgrade
from tether.node.artifacts import Keyring
from tether.node.host import RecordingHost
from tether.node.install import STAGING, install
from tether.node.kubeview import NodeState
from tether.node.nodeconfig import NodeConfig, parse_node_config
from tether.node.phases import PhaseEvent, UnknownPhase, load_journal
from tether.node.tracker import host_path, load

TOKEN = "abcdef.0123456789abcdef"
#: The directories every host has.
TYPICAL_HOST = frozenset({"/etc", "/opt", "/run", "/tmp", "/usr", "/usr/libexec", "/var",
                          "/var/lib", "/var/log"})  # fmt: skip


@dataclass
class FakeFacts:
    """FAKE host facts: no swap, the node IP present, ports free, systemd, cgroup v2,
    CAP_SYS_RESOURCE, none of ``existing`` paths or pod cgroups there, unless told
    otherwise."""

    swaps: list[str] = field(default_factory=list)
    addresses: set[str] = field(default_factory=lambda: {"10.80.1.11"})
    busy: set[int] = field(default_factory=set)
    systemd: bool = True
    cgroup2: bool = True
    cap: bool = True
    existing: set[str] = field(default_factory=set)
    cgroups: set[str] = field(default_factory=set)

    def systemd_running(self) -> bool:
        return self.systemd

    def cgroup_v2(self) -> bool:
        return self.cgroup2

    def cap_sys_resource(self) -> bool:
        return self.cap

    def exists(self, path: str) -> bool:
        """Under pytest's temporary root: as on disk; elsewhere a typical host's top
        directories and ``existing``."""
        if path.startswith(tempfile.gettempdir() + "/"):
            return os.path.lexists(path)
        return path in TYPICAL_HOST or path in self.existing

    def cgroup_exists(self, name: str) -> bool:
        return name in self.cgroups

    def active_swaps(self) -> list[str]:
        return list(self.swaps)

    def has_address(self, ip: ipaddress.IPv4Address) -> bool:
        return str(ip) in self.addresses

    def port_in_use(self, port: int) -> bool:
        return port in self.busy


@dataclass
class FakeView:
    """FAKE Kubernetes view: the node is Ready while the recorded kubelet is active, with
    the version of the kubelet installed under ``root`` when it was last (re)started."""

    host: RecordingHost
    root: Path
    version: str = "v1.35.0"
    cordoned: bool = False
    pods: list[PodFacts] = field(default_factory=list)
    kubelet: str = "v0.0.0"
    restarts: int = 0
    #: The Node keeps the status of the kubelet that ran before (not posted again yet).
    stale: bool = False

    def control_plane_version(self) -> str:
        return self.version

    def node(self, name: str) -> NodeState | None:
        if not self.host.is_active("kubelet"):
            return None
        restarts = self.host.restarts.get("kubelet", 0)
        if restarts != self.restarts and not self.stale:
            self.restarts = restarts
            entry = load(self.root).artifact("kubelet")
            self.kubelet = f"v{entry.version}" if entry else "v0.0.0"
        return NodeState(ready=True, unschedulable=self.cordoned, kubelet_version=self.kubelet)

    def pods_on(self, name: str) -> list[PodFacts]:
        return list(self.pods)


@dataclass
class Node:
    root: Path
    host: RecordingHost
    view: FakeView
    facts: FakeFacts
    config: NodeConfig
    source: Path
    keyring: Keyring
    events: list[PhaseEvent] = field(default_factory=list)

    def env(self) -> NodeEnv:
        return NodeEnv(
            root=self.root,
            host=self.host,
            view=self.view,
            facts=self.facts,
            clock=lambda: 0.0,
            sleep=lambda _: None,
            ready_timeout=0.0,
        )

    def init(self, **kwargs: Any) -> Any:
        return init(
            self.config, self.env(), token=lambda: TOKEN, on_event=self.events.append, **kwargs
        )

    def upgrade(self, version: str, **kwargs: Any) -> Any:
        return upgrade(
            "edge-01",
            version,
            self.env(),
            source=str(self.source),
            keyring=self.keyring,
            arch="amd64",
            on_event=self.events.append,
            **kwargs,
        )

    def uninstall(self, **kwargs: Any) -> Any:
        return uninstall("edge-01", self.env(), on_event=self.events.append, **kwargs)


@pytest.fixture
def node(
    tmp_path: Path,
    make_source: Callable[..., tuple[Path, Keyring]],
    node_config_doc: Callable[..., dict[str, Any]],
) -> Node:
    source, keyring = make_source()
    root = tmp_path / "root"
    install("1.34.2", root=root, source=str(source), keyring=keyring, arch="amd64")
    host = RecordingHost(tmp_path / "host.jsonl")
    return Node(
        root=root,
        host=host,
        view=FakeView(host, root),
        facts=FakeFacts(),
        config=parse_node_config(node_config_doc()),
        source=source,
        keyring=keyring,
    )


def _tree(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path under root with its mode and content (journals and logs excluded); the
    root prefix inside contents reads ``<root>``, so trees under two roots compare."""
    out: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted(root.rglob("*")):
        rel = "/" + str(path.relative_to(root))
        if rel.startswith("/var/lib/tether/node"):
            continue
        st = path.lstat()
        content = (
            path.read_bytes().replace(str(root).encode(), b"<root>") if path.is_file() else None
        )
        if rel == "/var/lib/tether/tracker.json" and content:
            # The digests of files naming the root differ by root; the files compare.
            doc = json.loads(content)
            for entry in doc["entries"]:
                entry.pop("sha256", None)
            content = json.dumps(doc, sort_keys=True).encode()
        out[rel] = (stat.S_IMODE(st.st_mode), content)
    return out


def _statuses(report: Any) -> dict[str, str]:
    return {p["phase"]: p["status"] for p in report.phases}


# init ----------------------------------------------------------------------------------------


def test_init_runs_every_phase_and_makes_exactly_these_calls(node: Node) -> None:
    report = node.init()
    assert report.ok, report.as_dict()
    assert list(_statuses(report)) == list(actions.INIT_PHASES)
    assert node.host.calls == [
        ("modprobe", "overlay"),
        ("modprobe", "br_netfilter"),
        ("sysctl", ""),
        ("daemon-reload", ""),
        ("enable", "containerd"),
        ("enable", "kubelet"),
        ("restart", "containerd"),
        ("restart", "kubelet"),
    ]
    kubeconfig = host_path(node.root, render.BOOTSTRAP_KUBECONFIG)
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    assert json.loads(kubeconfig.read_text())["users"][0]["user"]["token"] == TOKEN
    tracker = load(node.root)
    for path in (render.KUBELET_CONFIG, render.KUBELET_UNIT, render.BOOTSTRAP_KUBECONFIG):
        entry = tracker.get(path)
        assert entry is not None and not entry.foreign and entry.sha256
    reasons = [e.reason for e in node.events]
    assert reasons[:2] == ["NodeInitValidationStarted", "NodeInitValidationCompleted"]
    assert reasons[-1] == "NodeInitWaitReadyCompleted"
    assert all(TOKEN not in e.message for e in node.events)


def test_init_again_changes_nothing(node: Node) -> None:
    node.init()
    before = _tree(node.root)
    calls = len(node.host.calls)
    report = node.init()
    assert report.ok
    assert node.host.calls[calls:] == []
    assert _tree(node.root) == before
    assert all(p["changed"] == [] for p in report.phases)


def test_a_stopped_kubelet_is_started_again(node: Node) -> None:
    node.init()
    node.host.stop("kubelet")
    node.init()
    assert node.host.calls[-1] == ("restart", "kubelet")


def test_a_changed_nodeconfig_restarts_only_what_it_touches(
    node: Node, node_config_doc: Callable[..., dict[str, Any]]
) -> None:
    node.init()
    doc = node_config_doc()
    doc["spec"]["kubelet"]["config"]["maxPods"] = 30
    node.config = parse_node_config(doc)
    calls = len(node.host.calls)
    node.init()
    assert node.host.calls[calls:] == [("restart", "kubelet")]


def test_skip_and_unknown_phase(node: Node) -> None:
    report = node.init(skip=["wait-ready", "validation"])
    assert _statuses(report)["wait-ready"] == "Skipped"
    fresh = node.root.parent / "fresh"
    node.root = fresh
    with pytest.raises(UnknownPhase, match="unknown phase nope"):
        node.init(skip=["nope"])
    assert not fresh.exists()  # a usage error writes nothing, not even node.json


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": "v1.38.0"}, "4 minor versions behind"),
        ({"version": "v1.33.4"}, "newer than the control plane"),
        ({"swaps": ["/swapfile"]}, "swap is on (/swapfile)"),
        ({"addresses": set()}, "10.80.1.11 is not assigned"),
        ({"busy": {10250}}, "port(s) 10250"),
    ],
)
def test_validation_refuses_and_writes_nothing(
    node: Node, change: dict[str, Any], message: str
) -> None:
    for key, value in change.items():
        setattr(node.view if key == "version" else node.facts, key, value)
    before = _tree(node.root)
    report = node.init()
    assert not report.ok
    assert report.phases[-1]["phase"] == "validation"
    assert message in report.phases[-1]["message"]
    assert _tree(node.root) == before and node.host.calls == []


def test_a_file_tether_did_not_write_is_never_overwritten(node: Node) -> None:
    theirs = host_path(node.root, render.KUBELET_CONFIG)
    theirs.parent.mkdir(parents=True)
    theirs.write_text("operator's kubelet config\n")
    report = node.init()
    assert not report.ok and report.phases[-1]["phase"] == "kubelet-config"
    assert "was not written by Tether" in report.phases[-1]["message"]
    assert theirs.read_text() == "operator's kubelet config\n"


def test_foreign_containerd_gets_the_drop_in_only(
    tmp_path: Path, node: Node, make_source: Callable[..., tuple[Path, Keyring]]
) -> None:
    root = tmp_path / "other"
    binary = host_path(root, "/usr/local/bin/containerd")
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"operator's containerd")
    config = host_path(root, render.CONTAINERD_CONFIG)
    config.parent.mkdir(parents=True)
    config.write_text("version = 2\n")
    install("1.34.2", root=root, source=str(node.source), keyring=node.keyring, arch="amd64")
    node.root = root
    report = node.init()
    assert not report.ok and "does not import config.d" in report.phases[-1]["message"]
    imports = host_path(root, "/etc/containerd/config.d/*.toml")
    config.write_text(f'version = 2\nimports = ["{imports}"]\n')
    report = node.init()
    assert report.ok
    assert config.read_text().startswith("version = 2\nimports")
    assert host_path(root, render.CONTAINERD_DROPIN).is_file()
    assert not host_path(root, render.CONTAINERD_UNIT).exists()
    assert ("enable", "kubelet") in node.host.calls
    uninstall_report = node.uninstall(force=Force("lab host, no workloads"))
    assert uninstall_report.ok
    assert binary.read_bytes() == b"operator's containerd"
    assert config.exists() and not host_path(root, render.CONTAINERD_DROPIN).exists()


# upgrade and uninstall: the drain check -------------------------------------------------------


def _pod(name: str, kind: str | None = "ReplicaSet", **facts: Any) -> PodFacts:
    return PodFacts("default", name, controller_kind=kind, controller_name="x", **facts)


@pytest.mark.parametrize("action", ["upgrade", "uninstall"])
def test_refused_unless_cordoned_and_drained(node: Node, action: str) -> None:
    node.init()
    run = (lambda **kw: node.upgrade("1.35.1", **kw)) if action == "upgrade" else node.uninstall
    before = _tree(node.root)

    report = run()
    assert not report.ok and "is not cordoned" in report.phases[0]["message"]
    node.view.cordoned = True
    node.view.pods = [
        _pod("web-1"),
        _pod("agent-x", kind="DaemonSet"),
        _pod("job", phase="Succeeded"),
    ]
    report = run()
    assert not report.ok and "1 pod(s) still run (default/web-1)" in report.phases[0]["message"]
    assert _tree(node.root) == before

    node.view.pods = node.view.pods[1:]
    assert run().ok


def test_force_needs_a_reason_and_is_logged(node: Node, caplog: pytest.LogCaptureFixture) -> None:
    node.init()
    with pytest.raises(Invalid, match="--reason"):
        Force("")
    with caplog.at_level(logging.WARNING, logger="tether.node"):
        report = node.uninstall(force=Force("disk died, node is gone"))
    assert report.ok
    assert "forced past the drain check: disk died, node is gone" in report.phases[0]["message"]
    assert "disk died, node is gone" in caplog.text
    journal = load_journal(node.root, "uninstall")
    assert "disk died, node is gone" in journal["messages"]["preflight"]


def test_upgrade_replaces_the_kubelet_and_restarts_only_it(node: Node) -> None:
    node.init()
    node.view.cordoned = True
    calls = len(node.host.calls)
    report = node.upgrade("1.35.1")
    assert report.ok, report.as_dict()
    assert load(node.root).kubernetes_version == "1.35.1"
    assert b"kubelet 1.35.1" in host_path(node.root, "/usr/local/bin/kubelet").read_bytes()
    # containerd 1.7.28 -> 1.7.29 is a new binary too: both restart, nothing else happens
    assert node.host.calls[calls:] == [("restart", "containerd"), ("restart", "kubelet")]


def test_upgrade_waits_until_the_node_reports_the_new_kubelet(node: Node) -> None:
    """Right after the restart the Node still says Ready, for the old kubelet: that is
    not the upgraded node (a real node showed it: Ready at once, still v1.36.3)."""
    node.init()
    node.view.cordoned = True
    node.view.stale = True
    report = node.upgrade("1.35.1")
    assert not report.ok
    assert report.phases[-1]["phase"] == "wait-ready"
    assert "Ready, but with kubelet v1.34.2, not v1.35.1 yet" in report.phases[-1]["message"]
    node.view.stale = False
    report = node.upgrade("1.35.1")
    assert report.ok and "(kubelet v1.35.1)" in report.phases[-1]["message"]


def test_upgrade_keeps_containerd_major_unless_asked(node: Node) -> None:
    node.init()
    node.view.version = "v1.36.0"
    node.view.cordoned = True
    report = node.upgrade("1.36.0")
    assert not report.ok
    assert "from 1.7.28 to 2.1.4" in report.phases[-1]["message"]
    assert load(node.root).kubernetes_version == "1.34.2"
    report = node.upgrade("1.36.0", allow_containerd_major=True)
    assert report.ok
    assert "version = 3" in host_path(node.root, render.CONTAINERD_CONFIG).read_text()


def test_upgrade_refuses_a_version_ahead_of_the_control_plane(node: Node) -> None:
    node.init()
    node.view.cordoned = True
    report = node.upgrade("1.36.0", allow_containerd_major=True)
    assert not report.ok and "newer than the control plane" in report.phases[-1]["message"]


def test_uninstall_removes_everything_tether_put_there(node: Node, tmp_path: Path) -> None:
    pristine = tmp_path / "pristine"
    pristine.mkdir()
    node.init()
    node.view.cordoned = True
    left = host_path(node.root, STAGING) / "0-kubelet"  # what a killed install left
    left.parent.mkdir()
    left.write_bytes(b"half a download")
    report = node.uninstall()
    assert report.ok, report.as_dict()
    assert _tree(node.root) == {
        "/var": (0o755, None),
        "/var/lib": (0o755, None),
        "/var/lib/tether": (0o755, None),
        "/var/lib/tether/tracker.json": _tree(node.root)["/var/lib/tether/tracker.json"],
    }
    assert load(node.root).entries == []
    assert not node.host.active and not node.host.enabled
    stopped = node.host.calls.index(("stop", "containerd"))
    assert node.host.calls[stopped : stopped + 3] == [
        ("stop", "containerd"),
        ("disable", "kubelet"),
        ("disable", "containerd"),
    ]
    assert node.host.calls[-1] == ("daemon-reload", "")
    # What the services create, absent before init: unmounted, then removed; pod cgroups.
    restored = node.host.calls[stopped + 3 : -1]
    removed = {arg for op, arg in restored if op == "remove-tree"}
    at = str(node.root)
    assert {
        f"{at}/var/lib/kubelet",
        "/var/lib/kubelet",
        "/var/log/containers",
        f"{at}/var/lib/containerd",
        f"{at}/run",  # containerd's state; nothing made <root>/run before
        f"{at}/usr/libexec",  # the kubelet's volume plugin dir, with its parents
        "/run/containerd",
        f"{at}/var/lib/cni",
        "/var/lib/cni",
    } <= removed
    assert {arg for op, arg in restored if op == "unmount-tree"} == removed
    assert [c for c in restored if c[0] == "remove-cgroup"] == [
        ("remove-cgroup", "kubepods"),
        ("remove-cgroup", "kubepods.slice"),
    ]
    assert not host_path(node.root, actions.HOST_BEFORE).exists()


def test_uninstall_keeps_what_was_there_and_restores_sysctls(node: Node) -> None:
    """State paths and cgroups present before init stay; every sysctl Tether or the
    kubelet changed gets its old value back."""
    node.facts.existing = {"/var/lib/kubelet", "/run/containerd", "/var/lib/cni"}
    node.facts.cgroups = {"kubepods"}
    node.host.sysctls.update({"vm.overcommit_memory": "0", "net.ipv4.ip_forward": "0"})
    assert node.init().ok
    # What sysctl --system and the kubelet would do.
    node.host.sysctls.update({"vm.overcommit_memory": "1", "net.ipv4.ip_forward": "1"})
    node.view.cordoned = True
    assert node.uninstall().ok
    removed = {arg for op, arg in node.host.calls if op == "remove-tree"}
    assert removed and not removed & node.facts.existing
    assert ("remove-cgroup", "kubepods") not in node.host.calls
    assert ("remove-cgroup", "kubepods.slice") in node.host.calls
    assert node.host.sysctls == {"vm.overcommit_memory": "0", "net.ipv4.ip_forward": "0"}
    writes = [arg for op, arg in node.host.calls if op == "write-sysctl"]
    assert writes == ["net.ipv4.ip_forward=0", "vm.overcommit_memory=0"]


# a kill at every step, then a rerun -----------------------------------------------------------


class _Killer:
    """In a forked child: SIGKILL this process at the ``at``-th side effect, as a power
    cut or OOM kill would. The effects: each service-manager call; each fsync and each
    rename, so that every atomic write is cut with its temporary file written but not
    durable, durable but not renamed, and renamed but the rename not yet durable (the
    state after the directory's fsync is the one before the next effect); each directory
    made, each file or directory removed, and each download staged."""

    def __init__(self, at: int, monkeypatch: pytest.MonkeyPatch) -> None:
        self.at = at
        self.count = 0

        def before(real: Callable[..., Any]) -> Callable[..., Any]:
            def effect(*args: Any, **kwargs: Any) -> Any:
                self.tick()
                return real(*args, **kwargs)

            return effect

        def making(path: Any, *args: Any, **kwargs: Any) -> None:
            if not os.path.lexists(path):  # Path.mkdir(exist_ok=True) of a present dir
                self.tick()
            real_mkdir(path, *args, **kwargs)

        real_mkdir = os.mkdir
        monkeypatch.setattr(os, "mkdir", making)
        for name in ("fsync", "replace", "unlink", "rmdir"):
            monkeypatch.setattr(os, name, before(getattr(os, name)))
        monkeypatch.setattr(RecordingHost, "_record", before(RecordingHost._record))
        fetch = install_module.fetch_artifact
        monkeypatch.setattr(install_module, "fetch_artifact", before(fetch))

    def tick(self) -> None:
        self.count += 1
        if self.count == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


def _killed_at(at: int, run: Callable[[], Any], monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run ``run`` in a child killed at effect ``at``; True if it was killed."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            _Killer(at, monkeypatch)
            run()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status)


def _host_state(node: Node) -> tuple[Any, ...]:
    fresh = RecordingHost(node.host.log)
    return _tree(node.root), sorted(fresh.active), sorted(fresh.enabled)


@pytest.fixture
def fresh_node(tmp_path: Path, node: Node) -> Callable[..., Node]:
    """``fresh_node(label, like=node)``: a copy of ``like`` (default: the installed, not
    yet initialised node) under a new root, with a copy of its service manager's log."""

    def make(label: str, like: Node = node) -> Node:
        root = tmp_path / f"run-{label}"
        shutil.copytree(like.root, root, symlinks=True)
        log = tmp_path / f"run-{label}.jsonl"
        if like.host.log is not None and like.host.log.exists():
            shutil.copyfile(like.host.log, log)
        host = RecordingHost(log)
        return Node(
            root=root,
            host=host,
            view=FakeView(host, root, cordoned=True),
            facts=FakeFacts(),
            config=node.config,
            source=node.source,
            keyring=node.keyring,
        )

    return make


@pytest.mark.parametrize("action", ["install", "init", "upgrade", "uninstall"])
def test_killed_at_every_step_a_rerun_reaches_the_same_end(
    action: str, fresh_node: Callable[..., Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A SIGKILL loses nothing the kernel already holds, so what fsync makes durable is not
    # under test here, only where it happens (the killer stops the child around it).
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    start = fresh_node("start")
    if action == "install":
        shutil.rmtree(start.root)
        start.root.mkdir()
    elif action != "init":
        assert start.init().ok

    def act(n: Node) -> Any:
        n.host = RecordingHost(n.host.log)  # a new process sees what the old one did
        n.view.host = n.host
        if action == "install":
            install("1.34.2", root=n.root, source=str(n.source), keyring=n.keyring, arch="amd64")
            return SimpleNamespace(ok=True)
        if action == "init":
            return n.init()
        if action == "upgrade":
            return n.upgrade("1.35.1")
        # as tether node uninstall does: the node's name from what init left
        return uninstall(installed_node(n.root).name, n.env(), on_event=n.events.append)

    reference = fresh_node("reference", start)
    assert act(reference).ok
    expected = _host_state(reference)

    at = 1
    while True:
        n = fresh_node(str(at), start)
        if not _killed_at(at, lambda n=n: act(n), monkeypatch):
            break  # the run finished before the at-th effect: every step was covered
        report = act(n)
        assert report.ok, (at, report.as_dict())
        got = _host_state(n)
        differ = sorted(k for k in {*got[0], *expected[0]} if got[0].get(k) != expected[0].get(k))
        assert got == expected, f"killed at effect {at}: {differ} {got[1:]} {expected[1:]}"
        stale = [str(p.relative_to(n.root)) for p in n.root.rglob("*.tmp")]
        assert stale == [], f"killed at effect {at}: temporary files left behind"
        at += 1
    assert at > 5, "the action had hardly any side effects to interrupt"
    print(f"{action}: killed and rerun at each of {at - 1} effects")


def test_an_unused_bootstrap_token_is_renewed_before_it_expires(node: Node) -> None:
    """Killed after the kubeconfig phase and run again an hour later: the kubelet never
    used the token (no kubelet kubeconfig), which has expired, so init mints a new one."""
    assert node.init(skip=["start", "wait-ready"]).ok
    minted: list[str] = []

    def token() -> str:
        minted.append("x")
        return "fedcba.0123456789abcdef"

    env = node.env()
    env.wall_clock = lambda: time.time() + 3600
    assert init(node.config, env, token=token, skip=["start", "wait-ready"]).ok
    assert minted == ["x"]
    host_path(node.root, render.KUBELET_KUBECONFIG).parent.mkdir(parents=True)
    host_path(node.root, render.KUBELET_KUBECONFIG).write_text("joined")
    env.wall_clock = lambda: time.time() + 7200
    assert init(node.config, env, token=token).ok
    assert minted == ["x"]  # joined: the bootstrap token is not needed any more


def test_a_new_api_endpoint_gets_a_new_bootstrap_kubeconfig(
    node: Node, node_config_doc: Callable[..., dict[str, Any]]
) -> None:
    node.init()
    doc = node_config_doc()
    doc["spec"]["cluster"]["apiServerEndpoint"] = "https://10.226.0.20:6443"
    node.config = parse_node_config(doc)
    minted: list[str] = []

    def token() -> str:
        minted.append("x")
        return "fedcba.0123456789abcdef"

    report = init(node.config, node.env(), token=token)
    assert report.ok and minted == ["x"]
    kubeconfig = json.loads(host_path(node.root, render.BOOTSTRAP_KUBECONFIG).read_text())
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://10.226.0.20:6443"
    assert node.host.calls[-1] == ("restart", "kubelet")


# what the host needs ---------------------------------------------------------------------------


def test_validation_says_what_this_host_needs_and_the_files_follow(node: Node) -> None:
    """A host like this project's CI machine: no systemd, cgroup v1, no CAP_SYS_RESOURCE."""
    node.facts.systemd, node.facts.cgroup2, node.facts.cap = False, False, False
    report = node.init()
    assert report.ok, report.as_dict()
    said = report.phases[0]["message"]
    for need in (
        "no systemd as PID 1: cgroupfs driver",
        "cgroup v1: failCgroupV1: false",
        "no CAP_SYS_RESOURCE: restrict_oom_score_adj",
    ):
        assert need in said
    kubelet = yaml.safe_load(host_path(node.root, render.KUBELET_CONFIG).read_text())
    assert (kubelet["cgroupDriver"], kubelet["failCgroupV1"]) == ("cgroupfs", False)
    containerd = tomllib.loads(host_path(node.root, render.CONTAINERD_CONFIG).read_text())
    cri = containerd["plugins"]["io.containerd.grpc.v1.cri"]  # containerd 1.7 here
    assert cri["restrict_oom_score_adj"] is True
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False


def test_a_systemd_host_gets_neither_override(node: Node) -> None:
    assert node.init().ok
    kubelet = yaml.safe_load(host_path(node.root, render.KUBELET_CONFIG).read_text())
    assert kubelet["cgroupDriver"] == "systemd" and "failCgroupV1" not in kubelet
    cri = tomllib.loads(host_path(node.root, render.CONTAINERD_CONFIG).read_text())["plugins"][
        "io.containerd.grpc.v1.cri"
    ]
    assert "restrict_oom_score_adj" not in cri


def test_debians_cni_directory_is_found_when_tether_installed_no_plugins(
    tmp_path: Path, node: Node
) -> None:
    root = tmp_path / "bare"
    env = NodeEnv(root=root, host=RecordingHost(), view=node.view, facts=FakeFacts())
    assert actions.host_profile(env).cni_bin_dir == f"{root}/opt/cni/bin"  # not there yet
    env.facts = FakeFacts(existing={"/usr/lib/cni/loopback"})
    assert actions.host_profile(env).cni_bin_dir == "/usr/lib/cni"
    # Tether's own plugins win.
    assert actions.host_profile(node.env()).cni_bin_dir == f"{node.root}/opt/cni/bin"
