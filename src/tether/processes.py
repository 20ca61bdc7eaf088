"""Child processes the test harnesses start (etcd, kube-apiserver, charon, BIRD)."""

from __future__ import annotations

import contextlib
import subprocess
from typing import Any

__all__ = ["stop_process"]


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
