"""``stop_on_signals`` in a real child process: the signal is delivered to a thread other
than the main one (``pthread_kill``), which is what the kernel sometimes chose for
``tether controllers run``'s SIGTERM. A Python handler that sets the event never runs
then, since the main thread stays blocked in ``Event.wait()``; the process must stop."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHILD = """
import signal, threading, time
from tether.processes import stop_on_signals

done = threading.Event()
stop_on_signals(done)

def worker():
    time.sleep(0.2)
    signal.pthread_kill(threading.get_ident(), signal.{sig})
    time.sleep(60)

threading.Thread(target=worker, daemon=True).start()
done.wait()
print("stopped", flush=True)
"""


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_a_signal_taken_by_another_thread_still_stops_the_main_one(sig: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD.replace("{sig}", sig)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "stopped\n", "")


def test_other_signals_keep_their_handling() -> None:
    """SIGUSR1 is not asked for: it still ends the process by default, and sets nothing."""
    child = CHILD.replace("{sig}", "SIGUSR1")
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=30)
    assert done.returncode == -10 and done.stdout == b""
