"""The host's service manager and kernel settings, behind one narrow interface.

Node phases never run ``systemctl``, ``sysctl`` or ``modprobe`` themselves: they call a
:class:`HostOps`. :class:`SystemdHost` is the production implementation. A kubelet and
systemd cannot run on the machines the tests run on, so tests use
:class:`RecordingHost`, which records every call (in memory and, optionally, as JSON
lines in a file so a killed process's calls survive it) and keeps the unit states a real
systemd would have; the testbed and demo subclass it to start a simulated kubelet (see
:mod:`tether.sim.kubelet_host`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Final, Protocol

from tether.errors import Temporary

__all__ = ["HostOps", "HostOpsError", "RecordingHost", "SystemdHost"]

_TIMEOUT: Final = 120.0


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


class SystemdHost:
    """systemctl, ``sysctl --system`` and modprobe on the real host."""

    def _run(self, *argv: str, check: bool = True) -> int:
        try:
            done = subprocess.run(argv, capture_output=True, timeout=_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise HostOpsError(f"{' '.join(argv)}: {exc}") from exc
        if check and done.returncode != 0:
            detail = (done.stderr or done.stdout).decode(errors="replace").strip()[-300:]
            raise HostOpsError(f"{' '.join(argv)} exited {done.returncode}: {detail}")
        return done.returncode

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

    def apply_sysctl(self) -> None:
        self._run("sysctl", "--system")

    def load_modules(self, modules: list[str]) -> None:
        for module in modules:
            self._run("modprobe", module)

    def boot_id(self) -> str:
        try:
            return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError as exc:
            raise HostOpsError(f"cannot read the boot id: {exc}") from exc

    def reboot(self) -> None:
        self._run("systemctl", "reboot")


class RecordingHost:
    """A test double that records every call and tracks unit states like systemd.

    ``calls`` holds ``(operation, argument)`` pairs in order. With ``log``, each call is
    also appended to that file as a JSON line before it takes effect, and the unit states
    are rebuilt from it on construction, so a new instance after a killed run sees the
    services the killed run started.
    """

    def __init__(self, log: Path | None = None) -> None:
        self.log = log
        self.calls: list[tuple[str, str]] = []
        self.enabled: set[str] = set()
        self.active: set[str] = set()
        self.boots = 0
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
        elif op == "stop":
            self.active.discard(arg)
        elif op == "reboot":  # services that are enabled come back, the others do not
            self.boots += 1
            self.active = set(self.enabled)

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
