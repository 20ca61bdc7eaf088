"""``tether demo`` with a local control plane: its pool hosts receive join plans and turn
into Ready Nodes (SIMULATED kubelets and artifacts, real agents, plane and API server)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from .conftest import demo_env, wait_until_up


def test_demo_pool_hosts_join_the_local_cluster(
    kube_binaries: None, demo_process: tuple[str, str]
) -> None:
    url, token = demo_process
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    pool_hosts: list[str] = []
    deadline = time.monotonic() + 120
    results: dict[str, dict[str, object]] = {}
    while time.monotonic() < deadline:
        hosts = api.get("/api/v1/hosts").json()["items"]
        pool_hosts = sorted(h["name"] for h in hosts if h["spec"].get("pool"))
        for name in pool_hosts:
            status = api.get(f"/api/v1/hosts/{name}/desired")
            if status.status_code == 200 and status.json().get("inSync"):
                results[name] = status.json()["appliedResult"]
        if len(pool_hosts) == 4 and len(results) == 4 and all(r["ok"] for r in results.values()):
            break
        time.sleep(1)
    assert len(pool_hosts) == 4, pool_hosts
    assert sorted(results) == pool_hosts, results
    assert all(r["ok"] and r["message"] == "join done" for r in results.values()), results
    events = api.get("/api/v1/events", params={"kind": "Host", "name": pool_hosts[0]}).json()
    reasons = [e["reason"] for e in events["items"]]
    assert "NodeInstallInstallCompleted" in reasons
    assert "NodeInitWaitReadyCompleted" in reasons
    spare = api.get("/api/v1/hosts", params={"limit": 100}).json()["items"]
    assert any(h["spec"].get("pool") is None for h in spare)  # one spare host per site


def test_ctrl_c_stops_the_demo_cleanly(kube_binaries: None, tmp_path: Path) -> None:
    """Ctrl-C at a terminal signals the whole process group (plane, agents): everything
    stops, with no traceback, even with a dashboard's event stream open."""
    env = demo_env(tmp_path)
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "tether.cli", "demo"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as at a terminal
        )
    try:
        url = wait_until_up(demo, env, log)
        token = (tmp_path / "data" / "demo-admin-token").read_text().strip()
        api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        deadline = time.monotonic() + 120
        while len(api.get("/api/v1/hosts").json()["items"]) < 6:  # agents long-poll now
            assert time.monotonic() < deadline, "the demo agents did not enrol"
            time.sleep(1)
        opened = threading.Event()

        def dashboard_stream() -> None:
            with (
                contextlib.suppress(httpx.HTTPError),
                api.stream("GET", "/api/v1/events/stream", timeout=120) as stream,
            ):
                for _ in stream.iter_lines():
                    opened.set()

        threading.Thread(target=dashboard_stream, daemon=True).start()
        assert opened.wait(30)
        os.killpg(demo.pid, signal.SIGINT)
        code = demo.wait(60)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    printed = log.read_text()
    assert code == 0, printed
    assert printed.rstrip().endswith("Tether demo stopped; its data stays for the next run.")
    assert "Traceback" not in printed
    assert '"level": "error"' not in printed, printed
    leftover = subprocess.run(["pgrep", "-s", str(demo.pid)], capture_output=True, text=True)
    assert leftover.stdout == ""  # no agent, etcd or kube-apiserver left behind
