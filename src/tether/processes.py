"""Processes: the children Tether starts (test harness daemons such as etcd,
kube-apiserver, charon and BIRD, and the demo's agents), and the signals that stop Tether's
own long-running commands."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from typing import Any

__all__ = ["die_with_parent", "stop_on_signals", "stop_process"]

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


def stop_on_signals(
    stop: threading.Event, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)
) -> None:
    """Set *stop* when this process receives one of *signals*. Call from the main thread.

    Not from a Python signal handler. CPython runs those in the main thread only, between
    bytecodes; the kernel may hand a process's signal to any of its threads, and when it
    hands it to another one while the main thread is blocked in ``Event.wait()``, nothing
    wakes the main thread and the handler never runs (``tether controllers run`` ignored
    SIGTERM 2 times in 30). A handler that did run there and called ``Event.set()`` could
    also block on the event's lock, which the interrupted ``wait`` may hold. Here the
    interpreter's C-level handler writes the signal's number to a pipe
    (:func:`signal.set_wakeup_fd`), on whichever thread it lands, and a daemon thread that
    reads the pipe sets *stop* as ordinary code.
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    wanted = {int(sig) for sig in signals}
    for sig in signals:
        signal.signal(sig, lambda *_: None)  # the pipe does the work; no default death

    def relay() -> None:
        while chunk := os.read(read_end, 64):
            if wanted & set(chunk):
                stop.set()

    threading.Thread(target=relay, name="signals", daemon=True).start()
