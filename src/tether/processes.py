"""Child processes the test harnesses start (etcd, kube-apiserver, charon, BIRD)."""

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
    """``preexec_fn`` for harness children: SIGKILL them when the process that started
    them dies, so a crashed or killed test run leaves no etcd, kube-apiserver or charon
    behind (Linux ``prctl(PR_SET_PDEATHSIG)``; elsewhere a no-op).

    SIGKILL, not SIGTERM: kube-apiserver's graceful shutdown hangs once etcd is gone,
    and these are throw-away test processes. The signal follows the *thread* that started the child, so start harness children
    from a thread that lives as long as they should (the main thread, in practice).
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
