"""Shared fixtures: a fresh database on each backend, an app, tokens; signed node
artifact sources and a sample NodeConfig for the node tool.

PostgreSQL comes from ``TETHER_TEST_POSTGRES_URL`` (``make test`` starts a throw-away
server and sets it). Without it the PostgreSQL cases skip with the reason printed,
except under ``CI=true`` where a missing PostgreSQL is a failure.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tether.kube.client import KubeClient
from tether.node.artifacts import Keyring, generate_signing_key
from tether.node.mirror import SourceFile, publish
from tether.settings import Settings
from tether.sim.envtest import BinariesNotFoundError, LocalControlPlane, find_binaries
from tether.store.db import Database, migrate

# Property tests are judged on what they find, not on how fast this machine is: a stall
# of a loaded two-core CI machine made no example wrong (hypothesis's default deadline is
# 200 ms an example, and its too_slow health check counts generation time).
hypothesis.settings.register_profile(
    "tether", deadline=None, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.load_profile("tether")

#: Ports :func:`free_port` has handed out in this process: never twice, so the two ports
#: a plane is given in a row cannot be the same one (1 pair in 22,768 was).
_GIVEN: set[int] = set()


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range, so no outgoing connection
    of the process under test can take it before that process binds it (CI saw a demo
    fail to bind a port picked with ``bind(0)``, which hands out ephemeral ports)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    pick = random.SystemRandom()
    for _ in range(200):
        port = pick.randrange(10_000, low)
        if port in _GIVEN:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _GIVEN.add(port)
            return port
    raise RuntimeError("no free loopback port below the ephemeral range")


IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_URL = os.environ.get("TETHER_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def wait_until(
    check: Callable[[], object], timeout: float = 30.0, message: str = "", interval: float = 0.1
) -> None:
    """Poll ``check`` until it returns something true. A check that raises counts as "not
    yet"; if time runs out, the last error is raised again (noting the timeout), so the
    failure says why the condition never held, not only that it did not."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
            last: Exception | None = None
        except Exception as exc:
            last = exc
        if time.monotonic() >= deadline:
            note = f"timed out after {timeout:g}s waiting{': ' + message if message else ''}"
            if last is None:
                raise AssertionError(note)
            last.add_note(note)
            raise last
        time.sleep(interval)


def require_postgres() -> str:
    if POSTGRES_URL:
        return POSTGRES_URL
    reason = "PostgreSQL: TETHER_TEST_POSTGRES_URL is not set (make test starts one as root)"
    if IN_CI:
        pytest.fail(f"{reason}; under CI=true this is a failure, not a skip")
    pytest.skip(reason)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to a new, empty database on each backend (one per test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tether.db'}"
        return
    base = make_url(require_postgres())
    name = f"tether_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database.connect(database_url)
    migrate(database.engine)
    yield database
    database.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    settings = Settings()
    settings.paths.data_dir = tmp_path / "data"
    settings.database.url = database_url
    return settings


# Node tool: signed artifact sources and a sample NodeConfig ------------------------------

#: name -> (install path, mode); content is derived from name and version.
LAYOUT = {
    "kubelet": ("/usr/local/bin/kubelet", 0o755),
    "kubectl": ("/usr/local/bin/kubectl", 0o755),
    "containerd": ("/usr/local/bin/containerd", 0o755),
    "cni-plugins": ("/opt/cni/bin/bridge", 0o755),
    "credential-helper": ("/etc/tether/credential-helper.yaml", 0o640),
}
#: Kubernetes version -> containerd version shipped with it.
CONTAINERD = {"1.34.2": "1.7.28", "1.35.1": "1.7.29", "1.36.0": "2.1.4"}

SourceFactory = Callable[..., tuple[Path, Keyring]]
#: ``write_source(src, {kube version: [artifact dicts]}, key=(key_id, private_pem) | None)``
SourceWriter = Callable[..., None]


def artifact_content(name: str, version: str) -> bytes:
    return f"#!/bin/sh\necho {name} {version}\n".encode()


def _write_source(
    src: Path, versions: dict[str, list[dict[str, Any]]], key: tuple[str, bytes] | None
) -> None:
    """A source directory written by :func:`tether.node.mirror.publish` from plain dicts
    (``name``, ``content``, ``installPath``, ``mode``, optional ``version`` and ``url``)."""
    publish(
        src,
        {
            kube: [
                SourceFile(
                    name=item["name"],
                    version=item.get("version", kube),
                    content=item["content"],
                    install_path=item["installPath"],
                    mode=item["mode"],
                    url=item.get("url"),
                )
                for item in files
            ]
            for kube, files in versions.items()
        },
        key,
    )


@pytest.fixture
def write_source() -> SourceWriter:
    """Write a (signed) artifact source directory; see ``_write_source``."""
    return _write_source


def signed_source(
    where: Path,
    versions: tuple[str, ...] = tuple(CONTAINERD),
    key: tuple[str, bytes, bytes] | None = None,
) -> tuple[Path, Keyring]:
    """A signed mirror directory ``where``/source of small artifacts of ``versions``, and
    the keyring trusting it (also written as ``where``/keyring.yaml for the CLI)."""
    key_id, private_pem, public_pem = key or generate_signing_key()
    src = where / "source"
    listing = {
        kube: [
            {
                "name": name,
                "version": version,
                "content": artifact_content(name, version),
                "installPath": path,
                "mode": mode,
            }
            for name, (path, mode) in LAYOUT.items()
            for version in [CONTAINERD[kube] if name == "containerd" else kube]
        ]
        for kube in versions
    }
    _write_source(src, listing, (key_id, private_pem))
    (where / "keyring.yaml").write_text(
        f"{key_id}: |\n  " + public_pem.decode().replace("\n", "\n  ")
    )
    return src, Keyring.from_pems({key_id: public_pem})


@pytest.fixture(scope="session")
def signed_sources() -> Callable[..., tuple[Path, Keyring]]:
    """:func:`signed_source`, for fixtures wider than a test."""
    return signed_source


@pytest.fixture
def make_source(tmp_path: Path) -> SourceFactory:
    """``make_source(versions=...)``: :func:`signed_source` in the test's directory, with
    one key for the test."""
    key = generate_signing_key()

    def make(versions: tuple[str, ...] = tuple(CONTAINERD)) -> tuple[Path, Keyring]:
        return signed_source(tmp_path, versions, key)

    return make


CA_PEM = (
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBdzCCAR2gAwIBAgIUTetherTestCAOnlyForGoldenFiles0wCgYIKoZIzj0EAwIw\n"
    "-----END CERTIFICATE-----\n"
)


def _node_config_doc(**node: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tether.io/v1alpha1",
        "kind": "NodeConfig",
        "spec": {
            "cluster": {
                "name": "prod",
                "apiServerEndpoint": "https://10.226.0.10:443",
                "certificateAuthority": CA_PEM,
                "serviceCIDR": "172.20.0.0/16",
            },
            "node": {
                "name": "edge-01",
                "ip": "10.80.1.11",
                "nodeCIDR": "10.80.1.0/24",
                "labels": {"topology.kubernetes.io/zone": "store-12"},
                **node,
            },
            "kubelet": {"config": {"maxPods": 58}, "flags": ["--v=2"]},
            "containerd": {
                "config": '[plugins."io.containerd.grpc.v1.cri".registry]\n'
                'config_path = "/etc/containerd/certs.d"\n'
            },
            "credentials": {"bootstrapToken": {"tokenFile": "/etc/tether/bootstrap-token"}},
        },
    }


@pytest.fixture
def node_config_doc() -> Callable[..., dict[str, Any]]:
    """``node_config_doc(**node_fields)``: a valid NodeConfig document (a fresh dict)."""
    return _node_config_doc


# Kubernetes: one real etcd + kube-apiserver per test session ---------------------------------


@pytest.fixture(scope="session")
def kube_binaries() -> None:
    """The control plane binaries are built; else skip (with the reason), or fail under CI."""
    try:
        find_binaries()
    except BinariesNotFoundError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no control plane binaries: {exc}", pytrace=False)
        print(f"\nskipping Kubernetes tests: {exc}", file=sys.stderr)
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def kube_cluster(kube_binaries: None) -> Iterator[LocalControlPlane]:
    """A bare control plane (etcd and kube-apiserver only, so nothing reconciles: tests
    make Pods with synthetic owners, budgets without a disruption controller, Pods no
    scheduler binds); stopped (and its temp dir removed) at session end."""
    with LocalControlPlane(components=()) as cp:
        print(
            f"\nkube-apiserver ready at {cp.url} in {cp.ready_seconds:.1f}s",
            file=sys.stderr,
        )
        yield cp


@pytest.fixture(scope="session")
def kube_full_cluster(kube_binaries: None) -> Iterator[LocalControlPlane]:
    """A full control plane: kube-controller-manager (every default controller: CSR
    signing, node lifecycle, garbage collection, ...) and kube-scheduler too. Started on
    first use, stopped at session end."""
    with LocalControlPlane() as cp:
        print(
            f"\nfull control plane ready at {cp.url} in {cp.ready_seconds:.1f}s",
            file=sys.stderr,
        )
        yield cp


@pytest.fixture
def kube(kube_cluster: LocalControlPlane) -> Iterator[KubeClient]:
    """An admin (system:masters) client for the session's control plane."""
    with KubeClient(kube_cluster.kubeconfig) as client:
        yield client


@pytest.fixture
def run_tether() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real ``tether`` command (``python -m tether.cli``) and capture its output."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tether.cli", *args], capture_output=True, text=True, timeout=180
        )

    return run


@pytest.fixture
def cli_installed(
    tmp_path: Path,
    make_source: SourceFactory,
    run_tether: Callable[..., subprocess.CompletedProcess[str]],
) -> Path:
    """``<tmp_path>/root`` after the real ``tether node install 1.34.2`` from ``make_source``."""
    source, _ = make_source()
    root = tmp_path / "root"
    done = run_tether(
        "node", "install", "1.34.2", "--source", str(source), "--keyring",
        str(tmp_path / "keyring.yaml"), "--root", str(root), "--arch", "amd64",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return root
