"""Installing node artifacts from a signed manifest, mirroring them, and the CLI."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from tether.cli import node as node_cli
from tether.node.artifacts import ChecksumMismatch, Keyring, SignatureError, generate_signing_key
from tether.node.install import STAGING, install
from tether.node.mirror import sync
from tether.node.tracker import TRACKER_PATH, host_path, load
from tether.node.uninstall import remove

VERSION = "1.34.2"
# mounted as in tether.cli.main: `tether node install`, `tether artifacts sync`
cli = typer.Typer()
node_cli.register(cli)
FILES = {
    "kubelet": (b"#!/bin/sh\necho kubelet\n", "/usr/local/bin/kubelet", 0o755),
    "kubectl": (b"#!/bin/sh\necho kubectl\n", "/usr/local/bin/kubectl", 0o755),
    "containerd": (b"containerd tarball", "/usr/local/bin/containerd", 0o755),
    "credential-helper": (b"helper config", "/etc/tether/credential-helper.yaml", 0o640),
}


def _artifacts() -> dict[str, list[dict[str, Any]]]:
    return {
        VERSION: [
            {"name": name, "content": content, "installPath": path, "mode": mode}
            for name, (content, path, mode) in FILES.items()
        ]
    }


@pytest.fixture
def keys() -> tuple[str, bytes, bytes]:
    return generate_signing_key()


@pytest.fixture
def keyring(keys: tuple[str, bytes, bytes]) -> Keyring:
    return Keyring.from_pems({keys[0]: keys[2]})


@pytest.fixture
def source(tmp_path: Path, keys: tuple[str, bytes, bytes], write_source: Any) -> Path:
    src = tmp_path / "source"
    write_source(src, _artifacts(), (keys[0], keys[1]))
    return src


def _install(root: Path, source: Path, keyring: Keyring) -> Any:
    return install(VERSION, root=root, source=str(source), keyring=keyring, arch="amd64")


def _nothing_installed(root: Path) -> None:
    for _, install_path, _ in FILES.values():
        assert not host_path(root, install_path).exists()
    assert not host_path(root, TRACKER_PATH).exists()
    assert not host_path(root, STAGING).exists()


def test_install_places_files_with_modes_and_tracks_them(
    tmp_path: Path, source: Path, keyring: Keyring
) -> None:
    root = tmp_path / "root"
    report = _install(root, source, keyring)
    assert sorted(report.installed) == sorted(p for _, p, _ in FILES.values())
    tracker = load(root)
    for content, install_path, mode in FILES.values():
        target = host_path(root, install_path)
        assert target.read_bytes() == content
        assert stat.S_IMODE(target.stat().st_mode) == mode
        entry = tracker.get(install_path)
        assert entry is not None and not entry.foreign
        assert entry.sha256 == hashlib.sha256(content).hexdigest()
        assert entry.mode == mode
    assert not host_path(root, STAGING).exists()


def test_rerun_changes_nothing(tmp_path: Path, source: Path, keyring: Keyring) -> None:
    root = tmp_path / "root"
    _install(root, source, keyring)
    tracker_file = host_path(root, TRACKER_PATH)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    report = _install(root, source, keyring)
    assert report.installed == [] and report.foreign == []
    assert len(report.unchanged) == len(FILES)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before
    assert tracker_file.exists()


def test_preexisting_containerd_is_kept_and_survives_uninstall(
    tmp_path: Path, source: Path, keyring: Keyring
) -> None:
    root = tmp_path / "root"
    theirs = host_path(root, "/usr/local/bin/containerd")
    theirs.parent.mkdir(parents=True)
    theirs.write_bytes(b"operator's containerd")
    report = _install(root, source, keyring)
    assert report.foreign == ["/usr/local/bin/containerd"]
    assert theirs.read_bytes() == b"operator's containerd"
    tracker = load(root)
    entry = tracker.get("/usr/local/bin/containerd")
    assert entry is not None and entry.foreign
    assert _install(root, source, keyring).foreign == ["/usr/local/bin/containerd"]

    removal = remove(root, tracker)
    assert "/usr/local/bin/containerd" in removal.kept_foreign
    assert theirs.read_bytes() == b"operator's containerd"
    assert not host_path(root, "/usr/local/bin/kubelet").exists()
    assert not host_path(root, "/etc/tether").exists()  # a directory Tether created


def test_tampered_artifact_installs_nothing(tmp_path: Path, source: Path, keyring: Keyring) -> None:
    (source / f"kubernetes/v{VERSION}/amd64/kubectl").write_bytes(b"evil")
    root = tmp_path / "root"
    with pytest.raises(ChecksumMismatch):
        _install(root, source, keyring)
    _nothing_installed(root)


@pytest.mark.parametrize("case", ["unsigned", "unknown-key"])
def test_untrusted_manifest_is_refused(
    tmp_path: Path, keyring: Keyring, case: str, write_source: Any
) -> None:
    src = tmp_path / "src"
    if case == "unsigned":
        write_source(src, _artifacts(), None)
    else:
        other_id, other_private, _ = generate_signing_key()
        write_source(src, _artifacts(), (other_id, other_private))
    root = tmp_path / "root"
    with pytest.raises(SignatureError) as info:
        _install(root, src, keyring)
    assert info.value.reason == case
    assert not root.exists()


def test_sync_then_install_from_mirror(tmp_path: Path, source: Path, keyring: Keyring) -> None:
    mirror = tmp_path / "mirror"
    report = sync(VERSION, source=str(source), to=mirror, keyring=keyring, arch="amd64")
    assert {f.status for f in report.files} == {"fetched"}
    again = sync(
        VERSION, source=str(mirror), to=tmp_path / "mirror2", keyring=keyring, arch="amd64"
    )
    assert len(again.files) == len(FILES)
    resync = sync(VERSION, source=str(source), to=mirror, keyring=keyring, arch="amd64")
    assert {f.status for f in resync.files} == {"unchanged"}
    root = tmp_path / "root"
    assert len(_install(root, mirror, keyring).installed) == len(FILES)


def test_sync_refuses_tampered_artifact(tmp_path: Path, source: Path, keyring: Keyring) -> None:
    (source / f"kubernetes/v{VERSION}/amd64/kubelet").write_bytes(b"evil")
    mirror = tmp_path / "mirror"
    with pytest.raises(ChecksumMismatch):
        sync(VERSION, source=str(source), to=mirror, keyring=keyring, arch="amd64")
    assert not (mirror / "manifest.json").exists()


def _keyring_file(tmp_path: Path, keys: tuple[str, bytes, bytes]) -> Path:
    path = tmp_path / "keyring.yaml"
    path.write_text(yaml.safe_dump({keys[0]: keys[2].decode()}))
    return path


def test_cli_install_and_sync(tmp_path: Path, source: Path, keys: tuple[str, bytes, bytes]) -> None:
    runner = CliRunner()
    ring = str(_keyring_file(tmp_path, keys))
    mirror = tmp_path / "mirror"
    result = runner.invoke(
        cli,
        ["artifacts", "sync", "--version", VERSION, "--from", str(source),
         "--to", str(mirror), "--keyring", ring, "--arch", "amd64"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # A bar of the artifacts mirrored, on stderr; stdout keeps the table.
    assert f"mirroring Kubernetes {VERSION}" in result.stderr and "4/4" in result.stderr
    assert "fetched" in result.stdout and "mirroring" not in result.stdout
    root = tmp_path / "root"
    args = ["node", "install", VERSION, "--root", str(root), "--source", str(mirror),
            "--keyring", ring, "--arch", "amd64"]  # fmt: skip
    result = runner.invoke(cli, [*args, "-o", "json"])
    assert result.exit_code == 0, result.output
    assert {i["status"] for i in json.loads(result.stdout)["items"]} == {"installed"}
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "4 unchanged" in result.stdout


def test_cli_exit_codes(tmp_path: Path, source: Path, keys: tuple[str, bytes, bytes]) -> None:
    runner = CliRunner()
    ring = str(_keyring_file(tmp_path, keys))
    root = tmp_path / "root"
    base = ["node", "install", "--root", str(root), "--source", str(source), "--arch", "amd64"]
    assert runner.invoke(cli, [*base, "9.9.9", "--keyring", ring]).exit_code == 1
    (source / f"kubernetes/v{VERSION}/amd64/kubelet").write_bytes(b"evil")
    assert runner.invoke(cli, [*base, VERSION, "--keyring", ring]).exit_code == 1
    _nothing_installed(root)
    missing = str(tmp_path / "missing.yaml")
    assert runner.invoke(cli, [*base, VERSION, "--keyring", missing]).exit_code == 2
    assert runner.invoke(cli, ["node", "install", VERSION]).exit_code == 2
    result = runner.invoke(
        cli,
        ["artifacts", "sync", "--version", "9.9.9", "--from", str(source),
         "--to", str(tmp_path / "m"), "--keyring", ring, "--arch", "amd64"],
    )  # fmt: skip
    assert result.exit_code == 1
