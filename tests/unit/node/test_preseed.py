"""Node artifacts pre-seeded into an image (``tether image build --artifacts``): the
mirror step of the build, and how the agent tells that a pre-seeded mirror holds a version."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tether.node.artifacts import Keyring, generate_signing_key
from tether.node.install import install
from tether.node.mirror import holds, sync
from tether.services import imagebuild

Source = Callable[..., tuple[Path, Keyring]]


def test_preseed_mirrors_one_version_verified_with_the_keyring(
    tmp_path: Path, make_source: Source
) -> None:
    source, keyring = make_source()
    lines: list[str] = []
    into = tmp_path / "staged"
    done = imagebuild.preseed(
        "1.34.2",
        source=str(source),
        keyring_file=tmp_path / "keyring.yaml",
        arch="amd64",
        into=into,
        progress=lines.append,
    )
    mirror = into / "mirror"
    assert done.kubernetes_version == "1.34.2" and done.arch == "amd64"
    # what the manifest records is what is on disk, file by file
    on_disk = {p.relative_to(mirror).as_posix() for p in mirror.rglob("*") if p.is_file()}
    assert set(done.files) == on_disk and "manifest.json" in on_disk
    assert all(imagebuild.sha256_file(mirror / f) == s for f, s in done.files.items())
    assert (into / "keyring.yaml").read_bytes() == (tmp_path / "keyring.yaml").read_bytes()
    assert done.keyring_sha256 == imagebuild.sha256_file(tmp_path / "keyring.yaml")
    # one version only: its five artifacts, announced as they come
    assert sum("artifacts: " in line for line in lines) == 5
    assert holds(mirror, "1.34.2", keyring=keyring, arch="amd64")
    assert not holds(mirror, "1.35.1", keyring=keyring, arch="amd64")
    # the staged mirror installs with nothing else reachable
    root = tmp_path / "root"
    report = install("1.34.2", root=root, source=str(mirror), keyring=keyring, arch="amd64")
    assert len(report.installed) == 5


@pytest.mark.parametrize("case", ["tampered", "untrusted", "unknown-version"])
def test_preseed_refuses_what_it_cannot_verify_and_leaves_no_mirror(
    tmp_path: Path, make_source: Source, case: str
) -> None:
    source, _ = make_source()
    ring = tmp_path / "keyring.yaml"
    version = "1.34.2"
    if case == "tampered":
        (source / "kubernetes/v1.34.2/amd64/kubelet").write_bytes(b"evil")
    elif case == "untrusted":
        key_id, _, public = generate_signing_key()
        ring = tmp_path / "other.yaml"
        ring.write_text(f"{key_id}: |\n  " + public.decode().replace("\n", "\n  "))
    else:
        version = "1.99.0"
    with pytest.raises(imagebuild.BuildError, match=r"^artifacts: "):
        imagebuild.preseed(
            version,
            source=str(source),
            keyring_file=ring,
            arch="amd64",
            into=tmp_path / "staged",
            progress=lambda _: None,
        )
    assert not (tmp_path / "staged/mirror").exists()


def test_holds_only_an_intact_trusted_mirror_of_that_version(
    tmp_path: Path, make_source: Source
) -> None:
    source, keyring = make_source()
    mirror = tmp_path / "mirror"
    assert not holds(mirror, "1.34.2", keyring=keyring, arch="amd64")  # no mirror at all
    sync("1.34.2", source=str(source), to=mirror, keyring=keyring, arch="amd64")
    assert holds(mirror, "1.34.2", keyring=keyring, arch="amd64")
    # the manifest lists 1.35.1 too, but its files were not mirrored
    assert not holds(mirror, "1.35.1", keyring=keyring, arch="amd64")
    key_id, _, public = generate_signing_key()
    assert not holds(mirror, "1.34.2", keyring=Keyring.from_pems({key_id: public}), arch="amd64")
    broken = tmp_path / "broken"
    shutil.copytree(mirror, broken)
    (broken / "kubernetes/v1.34.2/amd64/kubectl").write_bytes(b"changed")
    assert not holds(broken, "1.34.2", keyring=keyring, arch="amd64")
    (mirror / "kubernetes/v1.34.2/amd64/kubectl").unlink()
    assert not holds(mirror, "1.34.2", keyring=keyring, arch="amd64")
