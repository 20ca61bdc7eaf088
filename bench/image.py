"""Image build benchmark: ``tether image build`` as a user runs it, process start included.

    sudo .venv/bin/python bench/image.py            # the debootstrap base from the cache
    sudo .venv/bin/python bench/image.py --cold     # a fresh cache: debootstrap too

Runs the command on ``examples/profile.yaml`` into a temporary directory and times it
whole and per phase, from the timed progress lines it prints (wheels, base, customise,
disk, sha256). ``--cold`` points ``TETHER_IMAGE_CACHE`` at an empty directory, so the
debootstrap base is built (minutes, and Debian's mirror is used). Results go to a table
and to ``bench/results/image.json`` with the machine facts and the load average before
and after: the machine may be shared. Root only, like the command.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import ROOT, facts, load_average

PHASES = ("wheels", "base", "customise", "disk: mkfs", "disk: sha256", "done")
_LINE = re.compile(r"^\[\s*([0-9.]+)s\] (\S.*)$")


def phase_starts(output: str) -> dict[str, float]:
    """When each phase began, in seconds after the command's start (first line of each)."""
    starts: dict[str, float] = {}
    for line in output.splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        seconds, text = float(match.group(1)), match.group(2)
        for phase in PHASES:
            if text.startswith(phase) and phase not in starts:
                starts[phase] = seconds
    return starts


def measure(cold: bool) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="tether-bench-image-") as tmp:
        env = dict(os.environ)
        if cold:
            env["TETHER_IMAGE_CACHE"] = str(Path(tmp) / "cache")
        argv = [str(Path(sys.executable).with_name("tether")), "image", "build"]
        argv += ["-f", str(ROOT / "examples/profile.yaml"), "--out", str(Path(tmp) / "out")]
        load_before = load_average()
        start = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        total = time.monotonic() - start
        if done.returncode != 0:
            raise SystemExit(f"tether image build failed:\n{done.stdout[-3000:]}{done.stderr}")
        manifest = json.loads((Path(tmp) / "out" / "manifest.json").read_text())
        disk_mib = (Path(tmp) / "out" / "disk.img").stat().st_blocks * 512 / 2**20
    starts = phase_starts(done.stdout)
    bounds = [starts[p] for p in PHASES if p in starts]
    names = [p for p in PHASES if p in starts]
    durations = {n: round(b - a, 1) for n, a, b in zip(names, bounds, bounds[1:], strict=False)}
    return {
        "cold": cold,
        "totalSeconds": round(total, 1),
        "phaseSeconds": durations,
        "diskAllocatedMiB": round(disk_mib),
        "image": manifest["image"],
        "loadAverageBefore": load_before,
        "loadAverageAfter": load_average(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cold", action="store_true", help="build the debootstrap base too")
    default_json = Path(__file__).resolve().parent / "results" / "image.json"
    parser.add_argument("--json", type=Path, default=default_json, help="where to write JSON")
    args = parser.parse_args(argv)
    machine = facts()
    row = measure(args.cold)
    phases: dict[str, float] = row["phaseSeconds"]  # type: ignore[assignment]
    print(f"{'phase':<14} {'seconds':>8}")
    for name, seconds in phases.items():
        print(f"{name:<14} {seconds:>8.1f}")
    print(f"{'total':<14} {row['totalSeconds']:>8.1f}  ({'cold' if args.cold else 'warm'} base)")
    print(f"disk allocated: {row['diskAllocatedMiB']} MiB; load before/after: "
          f"{row['loadAverageBefore']} / {row['loadAverageAfter']}")  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "image", "machine": machine, "results": [row]}
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
