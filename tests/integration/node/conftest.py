"""Real nodes on this machine: the binaries and a signed mirror built from real files
(see :mod:`tether.sim.realnode`).

A real node needs root (network namespaces, mounts, cgroups), Debian's containerd, runc
and CNI plugins (``scripts/install-test-deps.sh``) and the Go-built binaries of
``scripts/build-kube.sh``. Without them the tests skip, saying why, except under
``CI=true``, where that is a failure.
"""

from __future__ import annotations

import os

import pytest

from tether.sim.envtest import NodeBinaries, find_node_binaries
from tether.sim.realnode import Mirror, build_mirror, missing_requirements

IN_CI = os.environ.get("CI", "").lower() == "true"


def require() -> NodeBinaries:
    missing = missing_requirements()
    if missing:
        reason = "a real node needs: " + "; ".join(missing)
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: run scripts/install-test-deps.sh and "
                        "scripts/build-kube.sh as root)", pytrace=False)  # fmt: skip
        pytest.skip(reason)
    return find_node_binaries()


@pytest.fixture(scope="session")
def node_binaries() -> NodeBinaries:
    return require()


@pytest.fixture(scope="session")
def real_mirror(node_binaries: NodeBinaries, tmp_path_factory: pytest.TempPathFactory) -> Mirror:
    return build_mirror(tmp_path_factory.mktemp("real-mirror"), node_binaries)
