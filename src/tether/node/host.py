"""The host's service manager and kernel settings, behind one narrow interface.

Node phases never run ``systemctl``, ``sysctl``, ``modprobe``, ``umount`` or a node tool
themselves: they call a :class:`HostOps`. Two production implementations:

- :class:`SystemdHost`: systemd is PID 1; units are started with ``systemctl``.
- :class:`~tether.node.supervisor.SupervisorHost`: the **supervisor backend**, for hosts
  without systemd as PID 1 (containers, minimal VMs, this project's CI machine). It runs
  the ``ExecStart`` of the very unit files ``init`` wrote, under a small supervisor
  process per unit (see :mod:`tether.node.supervisor`).

Both share :class:`LinuxHost`, the kernel side: sysctls, modules, mounts, cgroups, and
running the node's own tools (``ctr``, ``crictl``). With a root prefix other than ``/``
(a node whose every path is under a directory, as the tests run it), ``apply_sysctl``
loads only the sysctl files under that prefix.

Tests that cannot touch the host use :class:`RecordingHost`, which records every call
(in memory and, optionally, as JSON lines in a file so a killed process's calls survive
it) and keeps the unit states a real service manager would have; the testbed and demo
subclass it to start a simulated kubelet (see :mod:`tether.sim.kubelet_host`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Protocol

from tether.errors import Temporary
from tether.node.uninstall import mount_points

__all__ = [
    "HostOps",
    "HostOpsError",
    "LinuxHost",
    "RecordingHost",
    "SystemdHost",
    "cgroup_hierarchies",
    "module_present",
]

_TIMEOUT: Final = 120.0
CGROUP_ROOT: Final = Path("/sys/fs/cgroup")


class HostOpsError(Temporary):
    """A service-manager or kernel call failed."""


class HostOps(Protocol):
    def daemon_reload(self) -> None: ...
    def enable(self, unit: str) -> None: ...
    def disable(self, unit: str) -> None: ...
    def restart(self, unit: str) -> None: ...
    def stop(self, unit: str) -> None: ...
    def is_active(self, unit: str) -> bool: ...
    def apply_sysctl(self) -> None: ...
    def load_modules(self, modules: list[str]) -> None: ...
    def boot_id(self) -> str: ...
    def reboot(self) -> None: ...
    def read_sysctl(self, name: str) -> str | None: ...
    def write_sysctl(self, name: str, value: str) -> None: ...
    def run(self, argv: Sequence[str]) -> None:
        """Run one of the node's tools (``ctr``, ``crictl``); HostOpsError if it fails."""
        ...

    def unmount_tree(self, path: str) -> list[str]:
        """Unmount every mount at or below the real path ``path``, deepest first."""
        ...

    def remove_tree(self, path: str) -> bool:
        """Remove the real directory ``path`` and its content, never crossing a mount
        point (HostOpsError if one is left); False if it was absent."""
        ...

    def remove_cgroup(self, name: str) -> list[str]:
        """Remove the cgroup ``name`` (``/kubepods``) and its children in every
        hierarchy, deepest first; HostOpsError if processes are left in it."""
        ...

    def delete_chains(self, chains: Sequence[str]) -> list[str]:
        """Delete the named iptables and ip6tables chains in every table, with the rules
        that jump to them; returns ``tool table/chain`` of each one deleted."""
        ...


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys", *name.split("."))


def cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup hierarchies: each v1 controller directory, or the v2 root."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return [CGROUP_ROOT]
    try:
        entries = sorted(CGROUP_ROOT.iterdir())
    except OSError:
        return []
    return [p for p in entries if p.is_dir() and not p.is_symlink()]


#: What shows a module is in the kernel when it has no /sys/module entry (built in
#: without parameters).
_MODULE_EVIDENCE: Final = {
    "br_netfilter": Path("/proc/sys/net/bridge/bridge-nf-call-iptables"),
}


def module_present(name: str) -> bool:
    """Whether kernel module ``name`` is loaded or built in."""
    if Path("/sys/module", name).is_dir():
        return True
    evidence = _MODULE_EVIDENCE.get(name)
    if evidence is not None:
        return evidence.exists()
    with contextlib.suppress(OSError):  # a file system module: listed once usable
        return name in Path("/proc/filesystems").read_text().split()
    return False


class LinuxHost:
    """The kernel side of a real host (see the module doc); services are the subclass's."""

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root

    def _run(self, *argv: str, check: bool = True) -> int:
        try:
            done = subprocess.run(argv, capture_output=True, timeout=_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HostOpsError(f"{' '.join(argv)}: {exc}") from exc
        if check and done.returncode != 0:
            detail = (done.stderr or done.stdout).decode(errors="replace").strip()[-300:]
            raise HostOpsError(f"{' '.join(argv)} exited {done.returncode}: {detail}")
        return done.returncode

    def run(self, argv: Sequence[str]) -> None:
        self._run(*argv)

    def apply_sysctl(self) -> None:
        if self.root == Path("/"):
            self._run("sysctl", "--system")
            return
        for conf in sorted((self.root / "etc/sysctl.d").glob("*.conf")):
            self._run("sysctl", "-p", str(conf))

    def load_modules(self, modules: list[str]) -> None:
        for module in modules:
            # Loaded or built into the kernel: nothing to do (a kernel without /lib/modules
            # and a host without kmod have no modprobe to run).
            if not module_present(module):
                self._run("modprobe", module)

    def boot_id(self) -> str:
        try:
            return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError as exc:
            raise HostOpsError(f"cannot read the boot id: {exc}") from exc

    def read_sysctl(self, name: str) -> str | None:
        try:
            return _sysctl_path(name).read_text().strip()
        except OSError:
            return None

    def write_sysctl(self, name: str, value: str) -> None:
        try:
            _sysctl_path(name).write_text(value)
        except OSError as exc:
            raise HostOpsError(f"sysctl {name}={value}: {exc}") from exc

    def unmount_tree(self, path: str) -> list[str]:
        base = os.path.normpath(path)
        below = [m for m in mount_points() if m == base or m.startswith(base.rstrip("/") + "/")]
        done: list[str] = []
        for point in sorted(set(below), key=lambda p: (-p.count("/"), p)):
            # Detach (lazy): a mount busy because a process still has a file open in it
            # goes once that process is gone, and is out of the tree at once.
            if self._run("umount", "--lazy", point, check=False) == 0:
                done.append(point)
        return done

    def remove_tree(self, path: str) -> bool:
        target = Path(path)
        try:
            st = target.lstat()
        except FileNotFoundError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            target.unlink()
            return True
        mounts = [m for m in mount_points() if m == path or m.startswith(path.rstrip("/") + "/")]
        if mounts:
            raise HostOpsError(f"{path} still has mounts ({', '.join(sorted(mounts)[:3])})")
        shutil.rmtree(target)
        return True

    def remove_cgroup(self, name: str) -> list[str]:
        removed: list[str] = []
        for hierarchy in cgroup_hierarchies():
            top = hierarchy / name.strip("/")
            if not top.is_dir():
                continue
            tree = sorted(
                (p for p in [top, *top.rglob("*")] if p.is_dir()),
                key=lambda p: -len(p.parts),
            )
            for group in tree:
                with contextlib.suppress(FileNotFoundError):
                    procs = (group / "cgroup.procs").read_text().split()
                    if procs:
                        raise HostOpsError(f"cgroup {group} still has processes {procs[:5]}")
                    group.rmdir()
                    removed.append(str(group))
        return removed

    def delete_chains(self, chains: Sequence[str]) -> list[str]:
        wanted = set(chains)
        deleted: list[str] = []
        for tool in ("iptables", "ip6tables"):
            try:
                dump = subprocess.run(
                    [f"{tool}-save"], capture_output=True, text=True, timeout=_TIMEOUT, check=True
                ).stdout
            except (OSError, subprocess.SubprocessError):
                continue  # no such tool, or no such protocol here
            table = ""
            present: list[tuple[str, str]] = []
            jumps: list[tuple[str, list[str]]] = []
            for line in dump.splitlines():
                if line.startswith("*"):
                    table = line[1:]
                elif line.startswith(":") and line[1:].split()[0] in wanted:
                    present.append((table, line[1:].split()[0]))
                elif line.startswith("-A "):
                    rule = shlex.split(line)[1:]
                    target = rule[rule.index("-j") + 1] if "-j" in rule[:-1] else None
                    if target in wanted and rule[0] not in wanted:
                        jumps.append((table, rule))
            for table, rule in jumps:
                self._run(tool, "-t", table, "-D", *rule)
            for table, chain in present:
                self._run(tool, "-t", table, "-F", chain)
            for table, chain in present:
                self._run(tool, "-t", table, "-X", chain)
                deleted.append(f"{tool} {table}/{chain}")
        return deleted


class SystemdHost(LinuxHost):
    """systemctl on the real host."""

    def daemon_reload(self) -> None:
        self._run("systemctl", "daemon-reload")

    def enable(self, unit: str) -> None:
        self._run("systemctl", "enable", unit)

    def disable(self, unit: str) -> None:
        self._run("systemctl", "disable", unit)

    def restart(self, unit: str) -> None:
        self._run("systemctl", "restart", unit)

    def stop(self, unit: str) -> None:
        self._run("systemctl", "stop", unit)

    def is_active(self, unit: str) -> bool:
        return self._run("systemctl", "is-active", "--quiet", unit, check=False) == 0

    def reboot(self) -> None:
        self._run("systemctl", "reboot")


class RecordingHost:
    """A test double that records every call and tracks unit states like systemd.

    ``calls`` holds ``(operation, argument)`` pairs in order. With ``log``, each call is
    also appended to that file as a JSON line before it takes effect, and the unit states
    are rebuilt from it on construction, so a new instance after a killed run sees the
    services the killed run started. Sysctls read as ``sysctls`` holds them (``None``
    when absent) and writes are recorded and kept there; nothing else touches the host.
    """

    def __init__(self, log: Path | None = None) -> None:
        self.log = log
        self.calls: list[tuple[str, str]] = []
        self.enabled: set[str] = set()
        self.active: set[str] = set()
        self.boots = 0
        #: How often each unit was (re)started, over every run the log holds.
        self.restarts: dict[str, int] = {}
        self.sysctls: dict[str, str] = {}
        if log is not None and log.exists():
            for line in log.read_text().splitlines():
                op, arg = json.loads(line)
                self._effect(op, arg)

    def _effect(self, op: str, arg: str) -> None:
        if op == "enable":
            self.enabled.add(arg)
        elif op == "disable":
            self.enabled.discard(arg)
        elif op == "restart":
            self.active.add(arg)
            self.restarts[arg] = self.restarts.get(arg, 0) + 1
        elif op == "stop":
            self.active.discard(arg)
        elif op == "reboot":  # services that are enabled come back, the others do not
            self.boots += 1
            self.active = set(self.enabled)
        elif op == "write-sysctl":
            name, _, value = arg.partition("=")
            self.sysctls[name] = value

    def _record(self, op: str, arg: str = "") -> None:
        self.calls.append((op, arg))
        if self.log is not None:
            with self.log.open("a") as fh:
                fh.write(json.dumps([op, arg]) + "\n")
        self._effect(op, arg)

    def daemon_reload(self) -> None:
        self._record("daemon-reload")

    def enable(self, unit: str) -> None:
        self._record("enable", unit)

    def disable(self, unit: str) -> None:
        self._record("disable", unit)

    def restart(self, unit: str) -> None:
        self._record("restart", unit)

    def stop(self, unit: str) -> None:
        self._record("stop", unit)

    def is_active(self, unit: str) -> bool:
        return unit in self.active

    def apply_sysctl(self) -> None:
        self._record("sysctl")

    def load_modules(self, modules: list[str]) -> None:
        for module in modules:
            self._record("modprobe", module)

    def boot_id(self) -> str:
        """A recorded host boots anew at each recorded reboot."""
        return f"boot-{self.boots}"

    def reboot(self) -> None:
        self._record("reboot")

    def read_sysctl(self, name: str) -> str | None:
        return self.sysctls.get(name)

    def write_sysctl(self, name: str, value: str) -> None:
        self._record("write-sysctl", f"{name}={value}")

    def run(self, argv: Sequence[str]) -> None:
        self._record("run", " ".join(argv))

    def unmount_tree(self, path: str) -> list[str]:
        self._record("unmount-tree", path)
        return []

    def remove_tree(self, path: str) -> bool:
        self._record("remove-tree", path)
        return False

    def remove_cgroup(self, name: str) -> list[str]:
        self._record("remove-cgroup", name)
        return []

    def delete_chains(self, chains: Sequence[str]) -> list[str]:
        self._record("delete-chains", ",".join(chains))
        return []
