"""The loop-lag histogram: windows, quantiles, and a stall that completes no sample."""

from __future__ import annotations

import time

from tether.services.looplag import LoopLag


def test_a_window_has_its_own_quantiles_and_maximum() -> None:
    lag = LoopLag()
    for seconds in (0.0005, 0.003, 0.3):  # before the window
        lag.observe(seconds)
    start = lag.snapshot()
    for _ in range(98):
        lag.observe(0.0015)
    lag.observe(0.03)
    lag.observe(0.04)
    window = lag.snapshot().since(start)
    assert window.count == 100
    assert window.quantile(0.5) == 0.002
    assert window.quantile(0.99) == 0.05
    assert window.max == 0.05  # the 0.3 s before the window is not in it
    assert lag.max == 0.3


def test_a_loop_stalled_for_the_whole_window_shows_its_stall() -> None:
    """A blocked loop wakes no probe: no sample lands, but the overdue probe is the lag."""
    lag = LoopLag()
    start = lag.snapshot()
    lag.due = time.monotonic() - 12.0  # the probe should have woken 12 s ago
    window = lag.snapshot().since(start)
    assert window.count == 0
    assert window.max >= 12.0
