"""Fixtures: one real etcd + kube-apiserver for the whole test session.

The binaries come from ``scripts/build-kube.sh`` (cached outside the repo). Without
them the tests skip, saying why, except under CI (``CI=true``), where a missing
control plane is a failure: CI must build it first.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tether.kube.client import KubeClient
from tether.kube.envtest import BinariesNotFoundError, LocalControlPlane, find_binaries


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[LocalControlPlane]:
    """A running control plane; stopped (and its temp dir removed) at session end."""
    try:
        find_binaries()
    except BinariesNotFoundError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no control plane binaries: {exc}", pytrace=False)
        print(f"\nskipping Kubernetes integration tests: {exc}", file=sys.stderr)
        pytest.skip(str(exc))
    with LocalControlPlane() as cp:
        print(
            f"\nkube-apiserver ready at {cp.url} in {cp.ready_seconds:.1f}s",
            file=sys.stderr,
        )
        yield cp


@pytest.fixture
def kube(kube_cluster: LocalControlPlane) -> Iterator[KubeClient]:
    """An admin (system:masters) client for the session's control plane."""
    with KubeClient(kube_cluster.kubeconfig) as client:
        yield client


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """``unique_name("ns")`` -> ``"ns-1a2b3c4d"``: tests share one API server."""

    def make(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    return make


KubeconfigWriter = Callable[[Path, str, dict[str, str], "bytes | None"], Path]


def _write_kubeconfig(path: Path, server: str, user: dict[str, str], ca_pem: bytes | None) -> Path:
    cluster: dict[str, object] = {"server": server}
    if ca_pem is None:
        cluster["insecure-skip-tls-verify"] = True
    else:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def write_kubeconfig() -> KubeconfigWriter:
    """``write_kubeconfig(path, server, user, ca_pem)``: a one-context kubeconfig.

    *user* is the kubeconfig ``user`` mapping (e.g. ``{"token": ...}``); *ca_pem*
    ``None`` means ``insecure-skip-tls-verify``. Test modules cannot import from a
    conftest under ``--import-mode=importlib``, hence a fixture.
    """
    return _write_kubeconfig
