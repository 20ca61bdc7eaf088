"""How late the plane's event loop runs: a probe task and a histogram of its lag.

Every request on the loop waits while a callback runs or while worker threads hold the
GIL. A task that sleeps a fixed interval and records how much later than asked it woke
measures exactly that wait. The histogram (cumulative-friendly fixed buckets, count,
sum, maximum) is what a metrics endpoint exports and what ``bench/fleet.py`` prints.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from dataclasses import dataclass, field

#: Upper bounds of the histogram's buckets, in seconds (one more bucket holds the rest).
BUCKETS: tuple[float, ...] = (
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip


@dataclass(frozen=True)
class LagSnapshot:
    """The histogram at one moment; two snapshots give the lag over a window."""

    counts: tuple[int, ...]
    total: float
    max: float
    #: How late the probe is right now if it has not woken yet: a loop blocked for longer
    #: than a window completes no sample in it, and shows here instead.
    stalled: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def since(self, earlier: LagSnapshot) -> LagSnapshot:
        """The samples taken after ``earlier``: ``max`` is the highest bucket they hit, or
        the stall still going on if that is longer."""
        counts = tuple(a - b for a, b in zip(self.counts, earlier.counts, strict=True))
        top = max((i for i, n in enumerate(counts) if n), default=-1)
        highest = max(_bound(top) if top >= 0 else 0.0, self.stalled)
        return LagSnapshot(counts, self.total - earlier.total, highest, self.stalled)

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding the ``q`` quantile (0 without samples)."""
        need, seen = q * self.count, 0
        for i, n in enumerate(self.counts):
            seen += n
            if n and seen >= need:
                return _bound(i)
        return 0.0


def _bound(index: int) -> float:
    return BUCKETS[index] if index < len(BUCKETS) else float("inf")


@dataclass
class LoopLag:
    """Lag of the loop this probe runs on: run :meth:`run` as a task for its lifetime."""

    interval: float = 0.1
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    max: float = 0.0
    #: When the probe should wake next (``time.monotonic()``; None while not running).
    due: float | None = None

    def observe(self, lag: float) -> None:
        lag = max(0.0, lag)
        self.counts[bisect.bisect_left(BUCKETS, lag)] += 1
        self.total += lag
        self.max = max(self.max, lag)

    def snapshot(self) -> LagSnapshot:
        """The histogram now (safe to call from another thread)."""
        due = self.due
        stalled = max(0.0, time.monotonic() - due) if due is not None else 0.0
        return LagSnapshot(tuple(self.counts), self.total, self.max, stalled)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                self.due = time.monotonic() + self.interval
                await asyncio.sleep(self.interval)
                self.observe(time.monotonic() - self.due)
        finally:
            self.due = None
