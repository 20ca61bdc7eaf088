"""What observing a request costs: the middleware every heartbeat goes through.

    .venv/bin/python bench/observe.py --requests 200000

Calls an ASGI app that answers 204 at once (a heartbeat's floor: no routing, no
validation, no store) ``--requests`` times in one event loop, three ways:

* **bare**: the app alone;
* **Observe**: wrapped in :class:`tether.api.observe.Observe` as the agent server wraps
  it (request id, latency recorded lock-free into :data:`tether.metrics.REQUESTS`);
* **prometheus-client**: the app plus what a plain ``Histogram.labels(...).observe()``
  per request would cost instead (a label lookup and locks), for comparison.

Prints microseconds per request and the extra over bare, best of ``--rounds``; writes
``bench/results/observe.json``. Compare the extra with a whole heartbeat's server cost
(``bench/fleet.py``: CPU ms per heartbeat).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.api.observe import Observe
from tether.metrics import LATENCY_BUCKETS

RESULTS = Path(__file__).parent / "results" / "observe.json"
ROUTE = "/agent/v1/hosts/{name}/heartbeat"


class _Route:
    path = ROUTE


async def heartbeat(scope: Scope, receive: Receive, send: Send) -> None:
    scope["route"] = _Route  # what FastAPI's router leaves in the scope
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def with_prometheus_client(app: ASGIApp) -> ASGIApp:
    histogram = Histogram(
        "bench_seconds",
        "bench",
        ["server", "route", "method", "status"],
        buckets=LATENCY_BUCKETS,
        registry=CollectorRegistry(),
    )

    async def observed(scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        await app(scope, receive, send)
        labels = histogram.labels("agent", scope["route"].path, scope["method"], "204")
        labels.observe(time.perf_counter() - started)

    return observed


async def _run(app: ASGIApp, requests: int) -> float:
    scope_base: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/agent/v1/hosts/edge-1/heartbeat",
        "headers": [(b"host", b"localhost"), (b"content-length", b"7")],
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b'{"n":1}'}

    async def send(_: Message) -> None:
        return None

    started = time.perf_counter()
    for _ in range(requests):
        await app(dict(scope_base), receive, send)
    return (time.perf_counter() - started) / requests * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    apps: dict[str, ASGIApp] = {
        "bare": heartbeat,
        "Observe": Observe(heartbeat, server="agent"),
        "prometheus-client": with_prometheus_client(heartbeat),
    }
    best = {
        name: min(asyncio.run(_run(app, args.requests)) for _ in range(args.rounds))
        for name, app in apps.items()
    }
    print(f"{'way':<18} {'us/request':>10} {'extra us':>9}")
    for name, us in best.items():
        print(f"{name:<18} {us:>10.2f} {us - best['bare']:>9.2f}")
    results = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(),
        },
        "requests": args.requests,
        "rounds": args.rounds,
        "us_per_request": best,
        "extra_us": {k: v - best["bare"] for k, v in best.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
