"""Building a signed mirror from real files: ``tether artifacts keygen | add | publish``,
then installing from it; what each verb refuses, and that nothing half-built is served."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import typer
from typer.testing import CliRunner

from tether.cli import node as node_cli
from tether.node.artifacts import Keyring
from tether.node.install import install
from tether.node.mirror import DRAFT_NAME
from tether.node.tracker import host_path, load

cli = typer.Typer()
node_cli.register(cli)
runner = CliRunner()


def _add(mirror: Path, kube: str, name: str, file: Path, path: str, *extra: str) -> object:
    return runner.invoke(
        cli,
        ["artifacts", "add", "--mirror", str(mirror), "--kubernetes", kube, "--name", name,
         "--version", kube, "--file", str(file), "--install-path", path, "--arch", "amd64",
         *extra],
    )  # fmt: skip


def test_keygen_add_publish_then_install(tmp_path: Path) -> None:
    keys, mirror = tmp_path / "keys", tmp_path / "mirror"
    assert runner.invoke(cli, ["artifacts", "keygen", "--out", str(keys)]).exit_code == 0
    assert stat.S_IMODE((keys / "signing-key.pem").stat().st_mode) == 0o600
    kubelet = tmp_path / "kubelet"
    kubelet.write_bytes(b"\x7fELF real kubelet")
    bridge = tmp_path / "bridge"
    bridge.write_bytes(b"\x7fELF bridge plugin")
    loopback = tmp_path / "loopback"
    loopback.write_bytes(b"\x7fELF loopback plugin")
    for kube in ("1.36.3", "1.37.2"):
        assert _add(mirror, kube, "kubelet", kubelet, "/usr/local/bin/kubelet").exit_code == 0
        # One component, several files: each is an artifact of the same name.
        for plugin in (bridge, loopback):
            done = _add(mirror, kube, "cni-plugins", plugin, f"/opt/cni/bin/{plugin.name}")
            assert done.exit_code == 0
    # The same file for two versions is stored once, by content.
    assert len(list((mirror / "blobs/sha256").iterdir())) == 3
    assert not (mirror / "manifest.json").exists()  # hosts see nothing until publish
    done = runner.invoke(
        cli,
        ["artifacts", "publish", "--mirror", str(mirror), "--key", str(keys / "signing-key.pem")],
    )
    assert done.exit_code == 0, done.output

    root = tmp_path / "root"
    ring = Keyring.from_file(keys / "keyring.yaml")
    report = install("1.37", root=root, source=str(mirror), keyring=ring, arch="amd64")
    assert report.version == "1.37.2"
    assert host_path(root, "/usr/local/bin/kubelet").read_bytes() == b"\x7fELF real kubelet"
    assert host_path(root, "/opt/cni/bin/loopback").read_bytes() == b"\x7fELF loopback plugin"
    assert sorted(e.path for e in load(root).installed if e.name == "cni-plugins") == [
        "/opt/cni/bin/bridge",
        "/opt/cni/bin/loopback",
    ]


def test_adding_to_the_same_path_replaces_and_the_draft_stays_until_published(
    tmp_path: Path,
) -> None:
    mirror = tmp_path / "mirror"
    first, second = tmp_path / "one", tmp_path / "two"
    first.write_bytes(b"one")
    second.write_bytes(b"two")
    assert _add(mirror, "1.37.2", "kubelet", first, "/usr/local/bin/kubelet").exit_code == 0
    assert _add(mirror, "1.37.2", "kubelet", second, "/usr/local/bin/kubelet").exit_code == 0
    draft = json.loads((mirror / DRAFT_NAME).read_text())
    [listed] = draft["versions"]["1.37.2"]["amd64"]
    assert listed["url"].endswith(listed["sha256"]) and listed["mode"] == 0o755


def test_what_add_and_publish_refuse(tmp_path: Path) -> None:
    mirror, keys = tmp_path / "mirror", tmp_path / "keys"
    file = tmp_path / "f"
    file.write_bytes(b"x")
    # Usage errors (exit 2) name the field and write nothing.
    bad_name = _add(mirror, "1.37.2", "kublet", file, "/usr/local/bin/kubelet")
    assert bad_name.exit_code == 2 and "name" in bad_name.output
    relative = _add(mirror, "1.37.2", "kubelet", file, "usr/local/bin/kubelet")
    assert relative.exit_code == 2 and "installPath" in relative.output
    bad_version = _add(mirror, "1.37", "kubelet", file, "/usr/local/bin/kubelet")
    assert bad_version.exit_code == 2 and "major.minor.patch" in bad_version.output
    assert _add(mirror, "1.37.2", "kubelet", file, "/x", "--mode", "rwx").exit_code == 2
    assert not (mirror / DRAFT_NAME).exists()

    assert runner.invoke(cli, ["artifacts", "keygen", "--out", str(keys)]).exit_code == 0
    again = runner.invoke(cli, ["artifacts", "keygen", "--out", str(keys)])
    assert again.exit_code == 2 and "refusing to replace" in again.output
    publish = ["artifacts", "publish", "--mirror", str(mirror), "--key"]
    empty = runner.invoke(cli, [*publish, str(keys / "signing-key.pem")])
    assert empty.exit_code == 1 and "no draft" in empty.output
    assert _add(mirror, "1.37.2", "kubelet", file, "/usr/local/bin/kubelet").exit_code == 0
    not_a_key = runner.invoke(cli, [*publish, str(keys / "keyring.yaml")])
    assert not_a_key.exit_code == 1 and "not an unencrypted PEM private key" in not_a_key.output
    for blob in (mirror / "blobs/sha256").iterdir():
        blob.write_bytes(b"tampered")
    tampered = runner.invoke(cli, [*publish, str(keys / "signing-key.pem")])
    assert tampered.exit_code == 1 and "sha256 mismatch" in tampered.output
    assert not (mirror / "manifest.json").exists()
