"""One unit of the supervisor backend, run by a small process of its own:
``python -m tether.node.unitrun UNIT UNIT_FILE STATE_DIR LOG``.

It reads the ``[Service]`` section of a systemd unit file and does what systemd would do
with the parts that matter for the node's services (see
:mod:`tether.node.supervisor` for the whole backend): ``ExecStartPre=`` (a leading ``-``
ignores a failure, also a command that is not there), ``ExecStart=`` with
``Environment=``, ``Type=notify`` (started once ``READY=1`` arrives on
``$NOTIFY_SOCKET``), ``Restart=always``/``on-failure`` with ``RestartSec=``, and a stop on
SIGTERM: SIGTERM to the service, SIGKILL after ``TimeoutStopSec=``, to the main process
only with ``KillMode=process`` and to its whole process group otherwise (also what is
left of the group when the main process ends). ``<STATE_DIR>/<unit>.pid`` names this
process, ``<STATE_DIR>/<unit>.ready`` the service once started.

It imports only the standard library and :mod:`tether.files`: one runs per service for
as long as the service runs, so it stays small (about 12 MiB) and starts fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final

from tether.errors import Permanent
from tether.files import write_atomic

__all__ = ["MARKER", "UnitError", "UnitSpec", "parse_unit", "supervise"]

#: How this module's processes are recognised (in their command line).
MARKER: Final = "tether.node.unitrun"
#: systemd's exit status for a command that could not be executed (EXIT_EXEC).
_EXEC_FAILED: Final = 203


class UnitError(Permanent):
    """A unit file the supervisor cannot run."""


@dataclass(frozen=True)
class UnitSpec:
    """What the supervisor takes from a unit file (see the module doc)."""

    exec_start: list[str]
    exec_start_pre: list[tuple[list[str], bool]] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    restart: str = "no"
    restart_sec: float = 0.1
    notify: bool = False
    kill_mode: str = "control-group"
    stop_timeout: float = 30.0


def _logical_lines(text: str) -> list[str]:
    """Lines with ``\\`` continuations joined and comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    if pending:
        lines.append(pending)
    return lines


def _seconds(value: str, key: str) -> float:
    text = value.strip().removesuffix("s")
    try:
        return float(text)
    except ValueError:
        raise UnitError(f"{key}={value}: only plain seconds are supported") from None


def parse_unit(text: str) -> UnitSpec:
    """The ``[Service]`` section of a unit file; pure. Raises :class:`UnitError`."""
    section = ""
    exec_start: list[str] | None = None
    pre: list[tuple[list[str], bool]] = []
    env: dict[str, str] = {}
    values: dict[str, str] = {}
    for line in _logical_lines(text):
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        if section != "Service" or not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "ExecStart":
            exec_start = shlex.split(value)
        elif key == "ExecStartPre":
            ignore = value.startswith("-")
            pre.append((shlex.split(value.lstrip("-")), ignore))
        elif key == "Environment":
            for item in shlex.split(value):
                name, _, setting = item.partition("=")
                env[name] = setting
        else:
            values[key] = value
    if not exec_start:
        raise UnitError("the unit has no ExecStart= in its [Service] section")
    restart = values.get("Restart", "no")
    if restart not in ("no", "always", "on-failure"):
        raise UnitError(f"Restart={restart} is not supported (no, always, on-failure)")
    return UnitSpec(
        exec_start=exec_start,
        exec_start_pre=pre,
        environment=env,
        restart=restart,
        restart_sec=_seconds(values.get("RestartSec", "0.1"), "RestartSec"),
        notify=values.get("Type", "simple") == "notify",
        kill_mode=values.get("KillMode", "control-group"),
        stop_timeout=_seconds(values.get("TimeoutStopSec", "30"), "TimeoutStopSec"),
    )


# The supervisor process ---------------------------------------------------------------------


class _Supervisor:
    """One unit's supervisor: starts the service, restarts it per the unit, stops it on
    SIGTERM. Runs in its own process (``python -m tether.node.unitrun``)."""

    def __init__(self, unit: str, unit_file: Path, state: Path, log: Path) -> None:
        self.unit = unit
        self.spec = parse_unit(unit_file.read_text())
        self.state = state
        self.log = log
        self.stopping = False
        self.stop_deadline = 0.0
        self.main: subprocess.Popen[bytes] | None = None

    @property
    def ready_file(self) -> Path:
        return self.state / f"{self.unit}.ready"

    def _term(self, _sig: int, _frame: FrameType | None) -> None:
        if not self.stopping:
            self.stopping = True
            self.stop_deadline = time.monotonic() + self.spec.stop_timeout
        if self.main is not None and self.main.poll() is None:
            self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        main = self.main
        if main is None:
            return
        with contextlib.suppress(ProcessLookupError):
            if self.spec.kill_mode == "process":
                main.send_signal(sig)
            else:
                os.killpg(main.pid, sig)

    def _notify_socket(self) -> socket.socket | None:
        if not self.spec.notify:
            return None
        path = self.state / f"{self.unit}.notify"
        path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.settimeout(0.2)
        return sock

    def _wait_ready(self, sock: socket.socket | None) -> bool:
        """Until READY=1 (notify units) or at once; False if the service died first."""
        main = self.main
        assert main is not None
        while sock is not None and not self.stopping:
            if main.poll() is not None:
                return False
            try:
                message = sock.recv(4096).decode(errors="replace")
            except TimeoutError:
                continue
            if "READY=1" in message.splitlines():
                break
        if main.poll() is not None or self.stopping:
            return False
        write_atomic(self.ready_file, json.dumps({"pid": main.pid}), 0o644, dir_mode=0o755)
        return True

    def _start_once(self, out: int) -> int:
        env = {**os.environ, **self.spec.environment}
        env.pop("NOTIFY_SOCKET", None)
        for argv, ignore in self.spec.exec_start_pre:
            try:
                code = subprocess.run(argv, stdout=out, stderr=out, env=env, check=False).returncode
            except OSError as exc:  # as systemd: a command that cannot run has failed
                os.write(out, f"[supervisor] {argv[0]}: {exc}\n".encode())
                code = _EXEC_FAILED
            if code != 0 and not ignore:
                return code
        sock = self._notify_socket()
        if sock is not None:
            env["NOTIFY_SOCKET"] = sock.getsockname()
        try:
            try:
                self.main = subprocess.Popen(
                    self.spec.exec_start,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=out,
                    env=env,
                    process_group=0,
                )
            except OSError as exc:
                os.write(out, f"[supervisor] {self.spec.exec_start[0]}: {exc}\n".encode())
                return _EXEC_FAILED
            self._wait_ready(sock)
            while self.main.poll() is None:
                if self.stopping and time.monotonic() > self.stop_deadline:
                    self._signal(signal.SIGKILL)
                time.sleep(0.05)
            if self.spec.kill_mode != "process":  # as systemd: the rest of its group goes
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.main.pid, signal.SIGKILL)
            return self.main.returncode
        finally:
            if sock is not None:
                sock.close()
            self.ready_file.unlink(missing_ok=True)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._term)
        signal.signal(signal.SIGINT, self._term)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            while True:
                code = self._start_once(out)
                os.write(out, f"[supervisor] {self.unit} exited with {code}\n".encode())
                again = self.spec.restart == "always" or (
                    self.spec.restart == "on-failure" and code != 0
                )
                if self.stopping or not again:
                    return 0 if self.stopping else code
                deadline = time.monotonic() + self.spec.restart_sec
                while not self.stopping and time.monotonic() < deadline:
                    time.sleep(0.05)
                if self.stopping:
                    return 0
        finally:
            os.close(out)
            with contextlib.suppress(FileNotFoundError):
                pid_file = self.state / f"{self.unit}.pid"
                if json.loads(pid_file.read_text()).get("pid") == os.getpid():
                    pid_file.unlink()


def supervise(unit: str, unit_file: Path, state: Path, log: Path) -> int:
    """Run one unit until SIGTERM (the body of ``python -m tether.node.unitrun``)."""
    sup = _Supervisor(unit, unit_file, state, log)
    write_atomic(
        state / f"{unit}.pid",
        json.dumps({"pid": os.getpid(), "unitFile": str(unit_file)}),
        0o644,
        dir_mode=0o755,
    )
    return sup.run()


def _main(argv: list[str]) -> int:
    if len(argv) != 4:
        print("usage: python -m tether.node.unitrun UNIT UNIT_FILE STATE_DIR LOG", file=sys.stderr)
        return 2
    unit, unit_file, state, log = argv
    return supervise(unit, Path(unit_file), Path(state), Path(log))


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
