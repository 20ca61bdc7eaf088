"""The `tether` command against a real server process, as a user runs it."""

from __future__ import annotations

import json
import os
import queue
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from .conftest import free_port

TETHER = [sys.executable, "-m", "tether.cli"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TETHER_DATA_DIR": str(tmp_path / "data"),
        "TETHER_CONFIG": str(tmp_path / "cli" / "config.yaml"),
        "TETHER_API_PORT": str(free_port()),
        "TETHER_AGENT_PORT": str(free_port()),
        "NO_COLOR": "1",
    }


@pytest.fixture
def server(env: dict[str, str], start_server: Callable[..., str]) -> str:
    return start_server([*TETHER, "serve"], env)


def tether(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TETHER, *args], env=env, capture_output=True, text=True, timeout=60)


def test_bootstrap_login_and_resource_verbs(
    server: str, env: dict[str, str], tmp_path: Path
) -> None:
    boot = tether(env, "admin", "bootstrap")
    assert boot.returncode == 0, boot.stderr
    token = boot.stdout.strip().splitlines()[-1]
    assert token.startswith("tth_")
    again = tether(env, "admin", "bootstrap")
    assert again.returncode == 4 and "already exists" in again.stderr

    login = tether(env, "login", "--server", server, "--token", token)
    assert login.returncode == 0, login.stderr
    config = Path(env["TETHER_CONFIG"])
    assert stat.S_IMODE(config.stat().st_mode) == 0o600

    spec = tmp_path / "cluster.yaml"
    spec.write_text(
        "kubernetesVersion: '1.34'\nvpcCIDR: 10.226.0.0/16\nserviceCIDR: 172.20.0.0/16\n"
    )
    created = tether(env, "cluster", "create", "prod", "-f", str(spec), "-o", "json")
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["spec"]["vpcCIDR"] == "10.226.0.0/16"

    assert tether(env, "site", "create", "dc1", "--set", "location=Berlin").returncode == 0
    listed = tether(env, "site", "list", "-o", "yaml")
    assert "name: dc1" in listed.stdout and "location: Berlin" in listed.stdout
    table = tether(env, "cluster", "list")
    assert "prod" in table.stdout and "10.226.0.0/16" in table.stdout

    updated = tether(
        env, "cluster", "update", "prod", "--set", "kubernetesVersion='1.35'", "-o", "json"
    )
    assert json.loads(updated.stdout)["resourceVersion"] == 2

    missing = tether(env, "cluster", "get", "nope")
    assert missing.returncode == 3 and "not found" in missing.stderr
    assert "did you mean" not in missing.stderr  # nothing is close to "nope"
    typo = tether(env, "cluster", "get", "prdo")
    assert typo.returncode == 3
    assert typo.stderr.strip().endswith("cluster 'prdo' not found; did you mean prod?")
    command = tether(env, "clustr", "list")
    assert command.returncode == 2 and "Did you mean 'cluster'" in command.stderr
    bad = tether(env, "cluster", "create", "x", "--set", "vpcCIDR=10.0.0.1/8")
    assert bad.returncode == 7 and "spec.vpcCIDR" in bad.stderr
    assert "Traceback" not in bad.stderr

    events = tether(env, "event", "list", "--kind", "Cluster", "-o", "json")
    assert [e["reason"] for e in json.loads(events.stdout)] == ["Created", "Updated"]
    # Piped, a table is printed whole (never cut to 80 columns): one line per event.
    table = tether(env, "event", "list", "--kind", "Cluster", "-o", "wide")
    header, *rows = table.stdout.splitlines()
    assert header.split()[-3:] == ["FIRST", "SEEN", "POOL"]  # -o wide's extra columns
    for row, event in zip(rows, json.loads(events.stdout), strict=True):
        assert row.split()[:6] == [event["lastTime"], "Normal", "Cluster/prod", event["reason"],
                                   "1", "cluster"]  # fmt: skip
        assert event["message"] in row and len(row) > 100
    assert tether(env, "cluster", "delete", "prod").returncode == 0
    audit = tether(env, "audit", "list", "-o", "json")
    assert {(a["action"], a["result"]) for a in json.loads(audit.stdout)} >= {("DELETE", "success")}


def test_unreachable_server_is_a_clear_error(env: dict[str, str]) -> None:
    env = {**env, "TETHER_SERVER": f"http://127.0.0.1:{free_port()}", "TETHER_TOKEN": "x"}
    result = tether(env, "pool", "list")
    assert result.returncode == 6 and "cannot reach" in result.stderr


EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_examples_create_and_get_output_goes_back_in(
    server: str, env: dict[str, str], tmp_path: Path
) -> None:
    """The shipped examples create a cluster, site, profile and pool; what ``get -o yaml``
    prints is accepted back by ``create -f`` and ``update -f``; a sensitive value is never
    printed and survives the round trip."""
    token = tether(env, "admin", "bootstrap").stdout.strip().splitlines()[-1]
    assert tether(env, "login", "--server", server, "--token", token).returncode == 0
    steps = [
        ("cluster", "create", "prod", "-f", str(EXAMPLES / "cluster.yaml")),
        ("site", "create", "dc1"),
        ("profile", "create", "standard", "-f", str(EXAMPLES / "profile.yaml")),
        ("pool", "create", "dc1", "-f", str(EXAMPLES / "pool.yaml")),
    ]
    for step in steps:
        done = tether(env, *step)
        assert done.returncode == 0, f"{step}: {done.stderr}"
    printed = tether(env, "pool", "get", "dc1", "-o", "yaml")
    assert printed.returncode == 0
    assert "change-me" not in printed.stdout and "registry_password: '******'" in printed.stdout
    saved = tmp_path / "pool.yaml"
    saved.write_text(printed.stdout.replace("max_pods: 64", "max_pods: 32"))
    updated = tether(env, "pool", "update", "dc1", "-f", str(saved), "-o", "json")
    assert updated.returncode == 0, updated.stderr
    assert json.loads(updated.stdout)["spec"]["variables"]["max_pods"] == 32
    with closing(sqlite3.connect(tmp_path / "data" / "tether.db")) as db:
        stored = db.execute("select spec from pools").fetchone()[0]
    assert '"registry_password": "change-me"' in stored  # kept, not overwritten by ******
    for kind, name, new in (("cluster", "prod", "prod2"), ("site", "dc1", "dc2")):
        out = tmp_path / f"{kind}.yaml"
        out.write_text(tether(env, kind, "get", name, "-o", "yaml").stdout)
        again = tether(env, kind, "create", new, "-f", str(out))
        assert again.returncode == 0, f"{kind}: {again.stderr}"
    profile = tmp_path / "profile.yaml"
    profile.write_text(tether(env, "profile", "get", "standard", "1.0.0", "-o", "yaml").stdout)
    copied = tether(env, "profile", "create", "standard2", "-f", str(profile))
    assert copied.returncode == 0, copied.stderr


def test_plane_processes_log_json_lines_off_a_terminal(env: dict[str, str], tmp_path: Path) -> None:
    """``tether controllers run`` (like ``serve`` and ``demo``) logs JSON when stderr is a
    pipe, one object per line, and stops on SIGTERM."""
    proc = subprocess.Popen(
        [*TETHER, "controllers", "run", "--data-dir", str(tmp_path / "data")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    assert "controllers running" in proc.stdout.readline()
    proc.terminate()
    assert proc.wait(30) == 0
    lines = [json.loads(line) for line in proc.stderr.read().splitlines()]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line["logger"].startswith("tether.") for line in lines)


def test_serve_exits_when_a_port_is_taken(env: dict[str, str]) -> None:
    """One server that cannot bind stops the plane: it exits with the error instead of
    running half (the other port kept serving, and the process never ended)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(env["TETHER_AGENT_PORT"])))
        taken.listen()
        done = subprocess.run(
            [*TETHER, "serve"], env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode != 0
    assert "address already in use" in done.stderr + done.stdout


def test_host_role_set_refused_round_tripped_and_cleared_through_the_cli(
    server: str, env: dict[str, str], tmp_path: Path
) -> None:
    token = tether(env, "admin", "bootstrap").stdout.strip().splitlines()[-1]
    assert tether(env, "login", "--server", server, "--token", token).returncode == 0
    assert tether(env, "site", "create", "dc1").returncode == 0
    for name in ("vpn1", "vpn2"):
        assert tether(env, "host", "create", name, "--set", "site=dc1").returncode == 0

    made = tether(env, "host", "update", "vpn1", "--set", "role=vpn-server", "-o", "json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["spec"]["role"] == "vpn-server"
    second = tether(env, "host", "update", "vpn2", "--set", "role=vpn-server")
    assert second.returncode == 7 and "spec.role" in second.stderr and "vpn1" in second.stderr
    wide = tether(env, "host", "list", "-o", "wide").stdout.splitlines()
    rows = {row.split()[0]: row.split() for row in wide}
    assert rows["NAME"][-3:] == ["ROLE", "FAILING", "CHECKS"]
    assert rows["vpn1"][-2:] == ["vpn-server", "-"] and rows["vpn2"][-2:] == ["-", "-"]

    # get -o yaml goes back into update -f with the role (a tag changed on the way).
    printed = tether(env, "host", "get", "vpn1", "-o", "yaml").stdout
    assert "role: vpn-server" in printed
    saved = tmp_path / "host.yaml"
    saved.write_text(printed.replace("tags: {}", "tags: {rack: r1}"))
    again = tether(env, "host", "update", "vpn1", "-f", str(saved), "-o", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["spec"]["role"] == "vpn-server"
    assert json.loads(again.stdout)["spec"]["tags"] == {"rack": "r1"}

    cleared = tether(env, "host", "update", "vpn1", "--set", "role=null", "-o", "json")
    assert json.loads(cleared.stdout)["spec"].get("role") is None
    assert tether(env, "host", "update", "vpn2", "--set", "role=vpn-server").returncode == 0


def test_event_watch_streams_events_and_the_crl_is_printed(
    server: str, env: dict[str, str]
) -> None:
    """The two commands that read more than one JSON answer: ``event watch`` (server-sent
    events as they come, over a connection without a time-out) and ``pki crl`` (PEM)."""
    token = tether(env, "admin", "bootstrap").stdout.strip().splitlines()[-1]
    refused = tether({**env, "TETHER_SERVER": server, "TETHER_TOKEN": "tth_bad"}, "event", "watch")
    assert refused.returncode == 5 and "401" in refused.stderr
    assert tether(env, "login", "--server", server, "--token", token).returncode == 0

    watch = subprocess.Popen(
        [*TETHER, "event", "watch", "--kind", "Site", "--timeout", "60"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in watch.stdout or ()]).start()
    try:
        # The watch subscribes some time after it starts: sites are made until one shows.
        for n in range(60):
            assert tether(env, "site", "create", f"s{n}").returncode == 0
            try:
                first = json.loads(lines.get(timeout=1))
                break
            except queue.Empty:
                continue
        else:
            pytest.fail("event watch showed no event of 60 sites made")
    finally:
        watch.terminate()
        watch.wait(30)
    assert first["objectKind"] == "Site" and first["objectName"].startswith("s")

    crl = tether(env, "pki", "crl")
    assert crl.returncode == 0, crl.stderr
    assert crl.stdout.startswith("-----BEGIN X509 CRL-----")
