"""Where a ``tether net plan`` of a big document spends its time, phase by phase.

    .venv/bin/python bench/netplan_phases.py [--pools 10000] [--runs 3] [--json PATH]

Each run is a new process of this script that runs the ``tether`` command in-process,
``tether net plan DOC --out DIR`` into a new DIR on tmpfs (``/dev/shm``, so the disk does
not blur the figures), with timers around its phases: the imports of the ``net``
commands and the CLI; reading the document; checking it (schema and rules); planning;
rendering and writing the files (in two processes, see ``tether.cli.net.write_plan``;
the parent's and the forked child's own rendering and writing are reported too, and
overlap); the summary table; and the whole run, from before those imports (after
Python's own start-up, which ``bench/netplan.py`` includes). Documents are those of
``bench/netplan.py``, as JSON and as YAML. Results go to a table on stdout (the
median of the runs) and to JSON (``bench/results/netplan-phases.json`` by default, every
run) with the machine facts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PHASES = ("imports", "read", "check", "plan", "write", "parent", "child", "table", "total")


def _phase_run(doc: Path, out: Path, report: Path) -> None:
    """One run (``--run``): the plan command with timers; the seconds to ``report``. The
    forked writer's own seconds come back through a file beside ``report``."""
    start = time.perf_counter()
    times: dict[str, float] = {}
    child_file = report.with_suffix(".child")

    def timed(owner: Any, name: str, phase: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                if os.getpid() == parent:
                    times[phase] = times.get(phase, 0.0) + time.perf_counter() - began
                else:  # the forked writer: its seconds go to the file, read after it exits
                    child_file.write_text(str(time.perf_counter() - began))

        setattr(owner, name, wrapper)

    parent = os.getpid()
    began = time.perf_counter()
    import tether.cli.net as net
    import tether.files as files
    from tether.cli.main import main

    times["imports"] = time.perf_counter() - began
    timed(net, "read_document", "read")
    timed(net, "_load_checked", "check")
    timed(net, "plan_checked", "plan")
    timed(net, "write_plan", "write")
    timed(files, "_write_files", "parent")
    timed(net, "_table", "table")

    sys.argv = ["tether", "net", "plan", str(doc), "--out", str(out)]
    try:
        main()
    except SystemExit as done:
        if done.code not in (0, None):
            raise
    times["total"] = time.perf_counter() - start
    times["check"] -= times["read"]  # _load_checked reads, then checks
    times["child"] = float(child_file.read_text()) if child_file.exists() else 0.0
    report.write_text(json.dumps(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pools", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    default_json = Path(__file__).resolve().parent / "results" / "netplan-phases.json"
    parser.add_argument("--json", type=Path, default=default_json)
    parser.add_argument("--run", nargs=3, metavar=("DOC", "OUT", "REPORT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run:
        _phase_run(*(Path(a) for a in args.run))
        return 0

    # Only here: a run (``--run``) imports nothing before the command's own imports.
    from machine import facts, write_result
    from netplan import FORMATS, write_document

    machine = facts()
    results: dict[str, list[dict[str, float]]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="tether-bench-phases-") as work,
        tempfile.TemporaryDirectory(prefix="tether-bench-phases-", dir="/dev/shm") as shm,
    ):
        for fmt in FORMATS:
            doc = write_document(args.pools, fmt, Path(work))
            results[fmt] = []
            for run in range(args.runs):
                report = Path(work) / f"{fmt}-{run}.json"
                out = Path(shm) / f"{fmt}-{run}"
                subprocess.run(
                    [sys.executable, __file__, "--run", str(doc), str(out), str(report)],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                results[fmt].append(json.loads(report.read_text()))
    print(f"{'phase':<8}" + "".join(f"{fmt:>10}" for fmt in results))
    for phase in PHASES:
        medians = [statistics.median(r.get(phase, 0.0) for r in runs) for runs in results.values()]
        print(f"{phase:<8}" + "".join(f"{m:>9.3f}s" for m in medians))
    write_result(
        args.json,
        {
            "benchmark": "netplan-phases",
            "command": "tether net plan DOC --out DIR (tmpfs), in-process, with timers",
            "pools": args.pools,
            "machine": machine,
            "runs": results,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
