"""Fixtures for the end-to-end tests: real ``tether`` processes on loopback ports."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx
import pytest

from tether.processes import stop_process

from ..conftest import free_port

ServerStarter = Callable[[Sequence[str], Mapping[str, str]], str]


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[ServerStarter]:
    """``start_server(argv, env)``: run a plane process and wait until it answers.

    It listens on ``env["TETHER_API_PORT"]``; returns its URL once ``/healthz`` says 200
    (within 90 s, or the test fails with the process's output, kept in
    ``<tmp_path>/<argv[-1]>.log``). Every process started is terminated at teardown.
    """
    started: list[tuple[subprocess.Popen[bytes], IO[str]]] = []

    def start(argv: Sequence[str], env: Mapping[str, str]) -> str:
        log_path = tmp_path / f"{argv[-1]}.log"
        log = log_path.open("w")
        proc = subprocess.Popen(list(argv), env=env, stdout=log, stderr=subprocess.STDOUT)
        started.append((proc, log))
        return wait_until_up(proc, env, log_path)

    yield start
    for proc, log in started:
        stop_process(proc, timeout=15)
        log.close()


def wait_until_up(proc: subprocess.Popen[bytes], env: Mapping[str, str], log: Path) -> str:
    """The URL of the plane ``proc`` runs, once ``/healthz`` says 200 (within 180 s, or the
    test fails with the process's output, from ``log``)."""
    url = f"http://127.0.0.1:{env['TETHER_API_PORT']}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return url
        except httpx.TransportError:
            pass
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"{' '.join(map(str, proc.args))} did not start"
        time.sleep(0.2)


def demo_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a ``tether demo`` of its own in ``<tmp_path>/data``."""
    return {
        **os.environ,
        "TETHER_DATA_DIR": str(tmp_path / "data"),
        "TETHER_CONFIG": str(tmp_path / "cli.yaml"),
        "TETHER_API_PORT": str(free_port()),
        "TETHER_AGENT_PORT": str(free_port()),
    }


@pytest.fixture
def demo_process(tmp_path: Path, start_server: ServerStarter) -> tuple[str, str]:
    """A real ``tether demo`` process in ``<tmp_path>/data``: (API URL, admin token); its
    output is in ``<tmp_path>/demo.log``."""
    env = demo_env(tmp_path)
    url = start_server([sys.executable, "-m", "tether.cli", "demo"], env)
    token = (tmp_path / "data" / "demo-admin-token").read_text().strip()
    return url, token
