"""The containerd configuration init writes, read back by the real containerd of each
major version (Debian's 1.6 and containerd 2 built from the Go module proxy) with its own
``containerd config dump``: Tether's settings and the NodeConfig's drop-in both hold."""

from __future__ import annotations

import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tether.node import render
from tether.node.nodeconfig import parse_node_config
from tether.sim.envtest import NodeBinaries
from tether.sim.images import PAUSE_IMAGE
from tether.sim.realnode import DEBIAN

pytestmark = pytest.mark.integration


def _profile(root: Path) -> render.HostProfile:
    """Like this machine, except systemd=True: ``SystemdCgroup = true`` differs from
    containerd's default, so its loss would show."""
    return render.HostProfile(
        root=str(root), systemd=True, cgroup_v2=False, lower_oom_score=False,
        cni_bin_dir="/usr/lib/cni",
    )  # fmt: skip


V2_DROPIN = '[plugins."io.containerd.grpc.v1.cri".registry]\nconfig_path = "/srv/certs.d"\n'
V3_DROPIN = "[plugins.'io.containerd.cri.v1.images'.registry]\nconfig_path = '/srv/certs.d'\n"


def _binary(major: int, binaries: NodeBinaries) -> Path:
    return DEBIAN["containerd"] if major == 1 else binaries.containerd2


def _dump(binary: Path, config: Path) -> dict[str, Any]:
    done = subprocess.run(
        [str(binary), "--config", str(config), "config", "dump"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return tomllib.loads(done.stdout)


def _effective(dump: dict[str, Any], major: int) -> dict[str, Any]:
    """The settings that matter, wherever each major keeps them."""
    plugins = dump["plugins"]
    if major == 1:
        cri = plugins["io.containerd.grpc.v1.cri"]
        runtime, images = cri, cri
        sandbox = cri["sandbox_image"]
    else:
        runtime = plugins["io.containerd.cri.v1.runtime"]
        images = plugins["io.containerd.cri.v1.images"]
        sandbox = images["pinned_images"]["sandbox"]
    options = runtime["containerd"]["runtimes"]["runc"]["options"]
    return {
        "sandbox": sandbox,
        "SystemdCgroup": options["SystemdCgroup"],
        "BinaryName": options["BinaryName"],
        "restrict_oom_score_adj": runtime["restrict_oom_score_adj"],
        "registry": images["registry"]["config_path"],
    }


Doc = Callable[..., dict[str, Any]]


def _write(root: Path, major: int, dropin: str, node_config_doc: Doc, *, fixed: bool) -> Path:
    profile = _profile(root)
    doc = node_config_doc()
    doc["spec"]["containerd"]["config"] = dropin
    config = parse_node_config(doc)
    main = render.containerd_config_doc(major, profile, sandbox_image=PAUSE_IMAGE, runc="/srv/runc")
    files = [
        render.containerd_config(major, profile, sandbox_image=PAUSE_IMAGE, runc="/srv/runc"),
        render.containerd_dropin(config, major, main)
        if fixed
        else render.RenderedFile(render.CONTAINERD_DROPIN, dropin.encode()),
    ]
    for file in files:
        target = Path(profile.at(file.path))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.content)
    return Path(profile.at(render.CONTAINERD_CONFIG))


WANTED = {
    "sandbox": PAUSE_IMAGE,
    "SystemdCgroup": True,
    "BinaryName": "/srv/runc",
    "restrict_oom_score_adj": True,
    "registry": "/srv/certs.d",
}


@pytest.mark.parametrize(
    ("major", "dropin"),
    [(1, V2_DROPIN), (2, V2_DROPIN), (2, V3_DROPIN)],
    ids=["containerd1-v2names", "containerd2-v2names", "containerd2-v3names"],
)
def test_tethers_settings_and_the_dropin_both_hold(
    major: int, dropin: str, node_binaries: NodeBinaries, tmp_path: Path, node_config_doc: Doc
) -> None:
    config = _write(tmp_path, major, dropin, node_config_doc, fixed=True)
    assert _effective(_dump(_binary(major, node_binaries), config), major) == WANTED


def test_containerd1_replaces_whole_plugin_tables_with_an_import(
    node_binaries: NodeBinaries, tmp_path: Path, node_config_doc: Doc
) -> None:
    """Why the drop-in is merged: taken as written, containerd 1.6 loses every CRI
    setting of config.toml (the sandbox image, SystemdCgroup, ...)."""
    config = _write(tmp_path, 1, V2_DROPIN, node_config_doc, fixed=False)
    effective = _effective(_dump(DEBIAN["containerd"], config), 1)
    assert effective["registry"] == "/srv/certs.d"
    assert effective["sandbox"] != PAUSE_IMAGE
    assert effective["SystemdCgroup"] is False
    assert effective["restrict_oom_score_adj"] is False
