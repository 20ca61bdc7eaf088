"""The supervisor backend: the node's services on a host without systemd as PID 1.

``tether node init`` writes systemd units (``kubelet.service``, ``containerd.service``).
On a host where systemd is not PID 1 (a container, a minimal VM, this project's CI
machine) nothing could start them, so :class:`SupervisorHost` runs **the very unit files
init wrote**: for each unit a small supervisor process (``python -m
tether.node.unitrun``, :mod:`tether.node.unitrun`) reads the unit and does what systemd
would do with the parts that matter for these two services:

- ``ExecStartPre=`` (a leading ``-`` ignores a failure), then ``ExecStart=``, with
  ``Environment=``; the command line is split like systemd's (quotes, ``\\``
  continuations);
- ``Type=notify``: the service counts as started once it sends ``READY=1`` on
  ``$NOTIFY_SOCKET``, as containerd does; otherwise once it runs;
- ``Restart=always`` / ``on-failure`` with ``RestartSec=``;
- stopping: SIGTERM, SIGKILL after ``TimeoutStopSec=`` (default 30 s), to the main
  process only with ``KillMode=process`` (containerd: the shims and containers outlive a
  restart, as under systemd) or to its whole process group otherwise;
- ``enable``/``disable`` are recorded; no init system starts them at boot, so run
  ``tether node init`` again after a reboot (it starts what is not running).

Every other directive (``OOMScoreAdjust=``, ``Delegate=``, ``LimitNPROC=``, ``After=``,
...) is ignored. State lives in ``<root>/run/tether/supervisor`` (``<unit>.pid``: the
supervisor; ``<unit>.ready``: the main process once started), each service's output in
``<root>/var/log/tether/<unit>.log``. The supervisors are detached from the command
that started them: the services keep running after ``tether node init`` exits, as they
would under systemd.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from tether.files import write_atomic
from tether.node.host import HostOps, HostOpsError, LinuxHost, SystemdHost
from tether.node.tracker import host_path
from tether.node.unitrun import MARKER, UnitError, parse_unit

__all__ = ["BACKENDS", "LOG_DIR", "STATE_DIR", "SupervisorHost", "service_manager"]

STATE_DIR: Final = "/run/tether/supervisor"
LOG_DIR: Final = "/var/log/tether"
UNIT_DIR: Final = "/etc/systemd/system"
_START_TIMEOUT: Final = 60.0


def _alive(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie has exited; a recycled pid runs something else.
    return MARKER.encode() in cmdline and status.rsplit(")", 1)[-1].split()[0] != "Z"


def _main_alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return status.rsplit(")", 1)[-1].split()[0] != "Z"


class SupervisorHost(LinuxHost):
    """:class:`~tether.node.host.HostOps` for hosts without systemd as PID 1 (module doc).

    ``start_timeout`` bounds how long ``restart`` waits for a service to be started
    (``READY=1`` for notify units)."""

    def __init__(self, root: Path = Path("/"), *, start_timeout: float = _START_TIMEOUT) -> None:
        super().__init__(root)
        self.start_timeout = start_timeout
        self.state = host_path(root, STATE_DIR)

    def _read(self, unit: str, kind: str) -> int | None:
        try:
            pid = json.loads((self.state / f"{unit}.{kind}").read_text())["pid"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return pid if isinstance(pid, int) else None

    def _supervisor_pid(self, unit: str) -> int | None:
        pid = self._read(unit, "pid")
        return pid if pid is not None and _alive(pid) else None

    def unit_file(self, unit: str) -> Path:
        return host_path(self.root, f"{UNIT_DIR}/{unit}.service")

    def log_file(self, unit: str) -> Path:
        return host_path(self.root, f"{LOG_DIR}/{unit}.log")

    def daemon_reload(self) -> None:
        """Each start reads its unit file again; here only check that they parse."""
        for unit_file in sorted(host_path(self.root, UNIT_DIR).glob("*.service")):
            try:
                parse_unit(unit_file.read_text())
            except (OSError, UnitError) as exc:
                raise HostOpsError(f"{unit_file}: {exc}") from exc

    def _enabled(self) -> set[str]:
        try:
            return set(json.loads((self.state / "enabled.json").read_text()))
        except (OSError, ValueError, TypeError):
            return set()

    def _set_enabled(self, units: set[str]) -> None:
        write_atomic(self.state / "enabled.json", json.dumps(sorted(units)), 0o644, dir_mode=0o755)

    def enable(self, unit: str) -> None:
        self._set_enabled(self._enabled() | {unit})

    def disable(self, unit: str) -> None:
        self._set_enabled(self._enabled() - {unit})

    def is_active(self, unit: str) -> bool:
        if self._supervisor_pid(unit) is None:
            return False
        main = self._read(unit, "ready")
        return main is not None and _main_alive(main)

    def restart(self, unit: str) -> None:
        self.stop(unit)
        unit_file = self.unit_file(unit)
        try:
            parse_unit(unit_file.read_text())
        except (OSError, UnitError) as exc:
            raise HostOpsError(f"cannot start {unit}: {unit_file}: {exc}") from exc
        self.state.mkdir(parents=True, exist_ok=True, mode=0o755)
        log = self.log_file(unit)
        log.parent.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", MARKER, unit, str(unit_file), str(self.state), str(log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log.open("ab"),
            start_new_session=True,  # outlives this command, as a systemd service would
        )
        self._wait(
            lambda: self.is_active(unit),
            lambda: proc.poll() is not None,
            f"{unit} did not start within {self.start_timeout:g}s",
            log,
        )

    def _wait(
        self, done: Callable[[], bool], failed: Callable[[], bool], message: str, log: Path
    ) -> None:
        deadline = time.monotonic() + self.start_timeout
        while not done():
            if failed() or time.monotonic() > deadline:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                raise HostOpsError(f"{message}; last lines of {log}:\n{tail}")
            time.sleep(0.05)

    def reboot(self) -> None:
        """Reboot the machine. Nothing starts the units at boot without an init system:
        the plan that asked for the reboot runs init again, which starts them."""
        self._run("reboot")

    def stop(self, unit: str) -> None:
        pid = self._supervisor_pid(unit)
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        # The supervisor waits for the service's own stop timeout, then kills it.
        deadline = time.monotonic() + 120
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            raise HostOpsError(f"{unit}'s supervisor (pid {pid}) did not stop; killed it")


#: ``--service-manager`` choices; ``auto`` is systemd when it runs as PID 1.
BACKENDS: Final = ("auto", "systemd", "supervisor")


def service_manager(root: Path = Path("/"), backend: str = "auto") -> HostOps:
    """The host's service manager: systemd when it runs as PID 1 (``auto``), else the
    supervisor backend."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown service manager {backend!r}: one of {', '.join(BACKENDS)}")
    if backend == "auto":
        backend = "systemd" if Path("/run/systemd/system").is_dir() else "supervisor"
    return SystemdHost(root) if backend == "systemd" else SupervisorHost(root)
