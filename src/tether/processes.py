"""Child processes Tether starts: test harness daemons (etcd, kube-apiserver, charon, BIRD)
and the demo's agents."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import subprocess
import sys
from typing import Any

__all__ = ["die_with_parent", "stop_process"]

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for children that must not outlive us (test harness daemons, demo agents).

    Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: when the process that started them dies,
    even by SIGKILL, the kernel kills them too, so a crashed run leaves no etcd,
    kube-apiserver, charon or agent behind. SIGKILL, not SIGTERM: kube-apiserver's graceful
    shutdown hangs once etcd is gone. The signal follows the *thread* that started the
    child, so start them from a thread that lives as long as they should (the main thread).
    Elsewhere than Linux this does nothing.
    """
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def stop_process(proc: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM *proc*, SIGKILL it if it has not exited after *timeout* seconds, and reap it.

    Does nothing if it has already exited.
    """
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout)
