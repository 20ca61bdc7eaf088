"""The plane's CPU per heartbeat, on its event-loop thread, at a steady rate.

    .venv/bin/python bench/heartbeat_cpu.py                  # 300 agents, 400 beats/s, 15 s

A plane (people's API + agent server, as ``tether serve`` runs them) in this process;
one load process opens ``--agents`` mutual-TLS keep-alive connections (certificates from
the plane's CA) and sends heartbeats, exactly the bytes the real agent sends, at
``--rate`` a second in total. Over ``--seconds`` it reads the CPU time of the plane's
event-loop thread and of the whole process from ``/proc`` and divides by the heartbeats
answered. This is the number that bounds the fleet one plane serves (at 18,000 hosts
and a 30 s interval, 600 heartbeats a second), without the connection ramp and the
latency tails :mod:`fleet` measures around it. Compare two versions of the code on the
same machine back to back: the machine may be shared, and the load average is recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fleet import _certs, plane_settings, request_bytes, seed_hosts
from machine import facts, load_average
from tether.server import ServerThread

RESULTS = Path(__file__).parent / "results" / "heartbeat-cpu.json"
WARMUP_SECONDS = 5.0


def load_process(
    ca_dir: str, names: list[str], port: int, rate: float, seconds: float, marks: Any
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="hbcpu-"))
    contexts = _certs(ca_dir, names, workdir)
    period = len(names) / rate  # each agent's interval

    async def agent(name: str, ctx: Any, stop_at: float, count: list[int]) -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
        )
        loop = asyncio.get_running_loop()
        await asyncio.sleep(random.uniform(0, period))
        request = request_bytes(name)
        while loop.time() < stop_at:
            sent = loop.time()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if head.split(b" ", 2)[1] != b"204":
                raise RuntimeError(head.decode(errors="replace"))
            count[0] += 1
            await asyncio.sleep(max(0.0, period - (loop.time() - sent)))
        writer.close()

    async def main() -> None:
        count = [0]
        stop_at = asyncio.get_running_loop().time() + WARMUP_SECONDS + seconds
        tasks = [
            asyncio.create_task(agent(n, c, stop_at, count))
            for n, c in zip(names, contexts, strict=True)
        ]
        await asyncio.sleep(WARMUP_SECONDS)
        marks.put(count[0])
        await asyncio.sleep(seconds)
        marks.put(count[0])
        await asyncio.gather(*tasks)

    asyncio.run(main())
    shutil.rmtree(workdir, ignore_errors=True)


def _thread_cpu(tid: int) -> float:
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _process_cpu() -> float:
    times = os.times()
    return times.user + times.system


def run(args: argparse.Namespace) -> dict[str, Any]:
    machine = facts()
    load_before = load_average()
    tmp = Path(tempfile.mkdtemp(prefix="hbcpu-plane-"))
    names = [f"h{i:06d}" for i in range(args.agents)]
    url = f"sqlite:///{tmp / 'tether.db'}"
    seed_hosts(url, names)
    settings = plane_settings(tmp, url, args.agents / args.rate)
    server = ServerThread(settings, log_level="error").start()
    loop_thread = server._thread.native_id
    assert loop_thread is not None
    marks: Any = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(
        target=load_process,
        args=(str(settings.pki_dir / "ca"), names, settings.agent.port, args.rate,
              args.seconds, marks),
    )  # fmt: skip
    proc.start()
    try:
        first = marks.get(timeout=600)
        loop0, cpu0, t0 = _thread_cpu(loop_thread), _process_cpu(), time.monotonic()
        last = marks.get(timeout=600)
        loop1, cpu1, t1 = _thread_cpu(loop_thread), _process_cpu(), time.monotonic()
        proc.join(60)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    beats = last - first
    return {
        "agents": args.agents,
        "rate": round(beats / (t1 - t0), 1),
        "heartbeats": beats,
        "loopCPUPerBeatUs": round((loop1 - loop0) / beats * 1e6),
        "processCPUPerBeatUs": round((cpu1 - cpu0) / beats * 1e6),
        "loadAverageBefore": load_before,
        "loadAverageAfter": load_average(),
        "machine": machine,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=300)
    parser.add_argument("--rate", type=float, default=400.0)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    row = run(args)
    print(json.dumps(row), file=sys.stderr)
    header = f"{'agents':>6} {'beats/s':>8} {'loop µs/beat':>13} {'process µs/beat':>16}"
    print(f"{header}  load before / after")
    print(
        f"{row['agents']:>6} {row['rate']:>8} {row['loopCPUPerBeatUs']:>13} "
        f"{row['processCPUPerBeatUs']:>16}  "
        f"{row['loadAverageBefore'][0]} / {row['loadAverageAfter'][0]}"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": [row]}, indent=2) + "\n")


if __name__ == "__main__":
    main()
