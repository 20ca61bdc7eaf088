"""Timers of the agent, pure so tests drive them in virtual time.

* Heartbeats are jittered (±10 % by default) so a fleet restarted together spreads out.
* Failures back off exponentially with "full jitter" (a random wait between 0 and the
  capped exponential), the scheme that spreads retries best when many clients fail at
  once, as after a plane outage.
* A certificate is renewed at two thirds of its lifetime, measured from when it was
  received (not from ``notBefore``, which the plane back-dates for clock skew).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


def jittered(interval: float, rng: random.Random, spread: float = 0.1) -> float:
    """``interval`` ± ``spread`` (a fraction), never below a tenth of it."""
    return max(interval * 0.1, interval * (1 + rng.uniform(-spread, spread)))


@dataclass
class Backoff:
    """Exponential backoff with full jitter: ``uniform(0, min(cap, base * 2**n))``."""

    base: float = 1.0
    cap: float = 300.0
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.failures, 30)))
        self.failures += 1
        return max(self.base / 10, self.rng.uniform(0, ceiling))

    def reset(self) -> None:
        self.failures = 0


def renewal_time(received_at: float, not_after: float, fraction: float = 2 / 3) -> float:
    """When to renew a certificate received at ``received_at`` that ends at ``not_after``."""
    return received_at + max(0.0, not_after - received_at) * fraction
