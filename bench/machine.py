"""Facts about the machine a benchmark ran on, for every result under ``bench/results/``.

Numbers are only comparable with the machine, the software and the load they were
measured under, so each bench stores :func:`facts` next to its results: CPU model and
count, memory, kernel, Python, SQLite and (given a URL) PostgreSQL versions, the load
average when it started, and the git commit it ran from. It also reads what a bench
measures about processes (CPU time and resident memory from ``/proc``).
"""

from __future__ import annotations

import json
import os
import platform
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git(*args: str) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip()


def postgres_version(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar_one())
    finally:
        engine.dispose()


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, as ``uptime`` shows them."""
    return [round(x, 2) for x in os.getloadavg()]


def facts(*, postgres_url: str | None = None) -> dict[str, Any]:
    return {
        "cpuModel": _cpu_model(),
        "cpus": os.cpu_count(),
        "memoryGiB": _memory_gib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgres": postgres_version(postgres_url) if postgres_url else None,
        "loadAverageAtStart": load_average(),
        "gitCommit": _git("rev-parse", "HEAD"),
        "gitDirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
    }


def write_result(path: Path, result: dict[str, Any]) -> None:
    """Write a bench's ``result`` to ``path`` as indented JSON, and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (not its children), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
