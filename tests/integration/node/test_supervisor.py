"""The supervisor backend with real processes: it runs a unit's ExecStart detached from
the command that started it, waits for READY=1 from Type=notify services, restarts a
service that dies (Restart=always), and stops it (the main process only with
KillMode=process)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tether.node.host import HostOpsError
from tether.node.supervisor import SupervisorHost

pytestmark = pytest.mark.integration

#: A service that starts a child in its process group, writes both pids (whole, by a
#: rename, before it is ready: the test reads them once it is), and notifies
#: systemd-style.
SERVICE = """
import os, socket, subprocess, sys, time
out = sys.argv[1]
child = subprocess.Popen(["sleep", "600"])
time.sleep(float(sys.argv[2]))
with open(out + ".tmp", "w") as pids:
    pids.write(f"{os.getpid()} {child.pid}")
os.replace(out + ".tmp", out)
if os.environ.get("NOTIFY_SOCKET"):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(b"STATUS=up\\nREADY=1", os.environ["NOTIFY_SOCKET"])
time.sleep(600)
"""


def _unit(root: Path, name: str, *, delay: float, extra: str = "") -> Path:
    script = root / f"{name}.py"
    script.write_text(SERVICE)
    unit = root / "etc/systemd/system" / f"{name}.service"
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(
        "[Service]\n"
        f"ExecStart={sys.executable} {script} {root / name}.pids {delay}\n"
        "Restart=always\nRestartSec=0.2\nTimeoutStopSec=5\n" + extra
    )
    return unit


def _pids(root: Path, name: str) -> tuple[int, int]:
    main, child = (root / f"{name}.pids").read_text().split()
    return int(main), int(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _until(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_notify_restart_and_stop(tmp_path: Path) -> None:
    _unit(tmp_path, "svc", delay=1.0, extra="Type=notify\n")
    host = SupervisorHost(tmp_path)
    started = time.monotonic()
    host.restart("svc")
    # Type=notify: started means READY=1 was sent (after the service's 1 s of work).
    assert time.monotonic() - started >= 1.0
    assert host.is_active("svc")
    main, child = _pids(tmp_path, "svc")

    # Restart=always: killed, it comes back as a new process; what was left of its
    # process group went with it (KillMode=control-group, the default).
    os.kill(main, signal.SIGKILL)
    _until(lambda: _pids(tmp_path, "svc")[0] != main and host.is_active("svc"))
    _until(lambda: not _alive(child))
    new_main, new_child = _pids(tmp_path, "svc")

    host.stop("svc")
    assert not host.is_active("svc")
    _until(lambda: not _alive(new_main) and not _alive(new_child))
    assert not (tmp_path / "run/tether/supervisor/svc.pid").exists()


def test_kill_mode_process_leaves_the_services_children(tmp_path: Path) -> None:
    _unit(tmp_path, "ctr", delay=0, extra="KillMode=process\n")
    host = SupervisorHost(tmp_path)
    host.restart("ctr")
    _until(lambda: (tmp_path / "ctr.pids").exists())
    main, child = _pids(tmp_path, "ctr")
    host.stop("ctr")
    _until(lambda: not _alive(main))
    try:
        assert _alive(child)  # like containerd's shims, which outlive a restart
    finally:
        os.kill(child, signal.SIGKILL)


def test_a_service_that_cannot_start_is_reported_with_its_log(tmp_path: Path) -> None:
    unit = tmp_path / "etc/systemd/system/bad.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/nonexistent/binary\nType=notify\n")
    host = SupervisorHost(tmp_path, start_timeout=10)
    with pytest.raises(HostOpsError, match="No such file or directory"):
        host.restart("bad")
    assert not host.is_active("bad")
