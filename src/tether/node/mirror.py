"""Mirror a signed manifest and one version's artifacts into a directory.

For air-gapped sites: the mirror holds ``manifest.json`` (the envelope exactly as signed,
so it still verifies) and each resolved artifact at its relative ``url``; an artifact
whose url is an absolute ``https://`` URL is kept at ``sha256/<hex>``, where
:func:`tether.node.install.fetch_artifact` looks for it. The mirror directory is itself a
valid ``source`` for :func:`tether.node.install.install` and for another :func:`sync`.

Every artifact's sha256 is checked before it is put in place, and the manifest is written
last, so an interrupted or failed sync never leaves a manifest naming missing files.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import httpx

from tether.files import write_atomic
from tether.node.artifacts import (
    API_VERSION,
    Artifact,
    ArtifactName,
    Keyring,
    file_sha256,
    sign,
    verify_sha256,
)
from tether.node.install import (
    BY_SHA256,
    MANIFEST_NAME,
    fetch_artifact,
    fetch_resolved,
)

__all__ = ["SourceFile", "SyncReport", "SyncedFile", "mirror_path", "publish", "sync"]


@dataclass
class SyncedFile:
    name: str
    version: str
    path: str
    status: Literal["fetched", "unchanged"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "path": self.path,
            "status": self.status,
        }


@dataclass
class SyncReport:
    version: str
    arch: str
    to: str
    files: list[SyncedFile] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "arch": self.arch,
            "to": self.to,
            "files": [f.as_dict() for f in self.files],
        }


def mirror_path(artifact: Artifact) -> str:
    """Where ``artifact`` lives in a mirror, relative to it (POSIX form)."""
    if artifact.url.startswith("https://"):
        return f"{BY_SHA256}/{artifact.sha256}"
    return artifact.url


def sync(
    version: str,
    *,
    source: str,
    to: Path,
    keyring: Keyring,
    arch: str | None = None,
    client: httpx.Client | None = None,
    on_file: Callable[[SyncedFile, int], None] | None = None,
) -> SyncReport:
    """Mirror the manifest and the artifacts of ``version``/``arch`` from ``source`` to
    ``to``; ``client`` (see :func:`tether.node.install.https_client`) makes the https
    downloads; ``on_file(file, total)`` hears of each artifact once it is done. Raises
    :class:`~tether.node.artifacts.ManifestError` (nothing written for an
    untrusted manifest; no manifest written when an artifact fails)."""
    resolved = fetch_resolved(source, version, keyring=keyring, arch=arch, client=client)
    artifacts = resolved.artifacts
    report = SyncReport(version=resolved.version, arch=resolved.arch, to=str(to))
    to.mkdir(parents=True, exist_ok=True)
    for artifact in artifacts:
        rel = mirror_path(artifact)
        target = to.joinpath(*PurePosixPath(rel).parts)
        item = SyncedFile(artifact.name, artifact.version, rel, "unchanged")
        report.files.append(item)
        if not (
            target.is_file() and not target.is_symlink() and file_sha256(target) == artifact.sha256
        ):
            _fetch_into(source, artifact, target, client)
            item.status = "fetched"
        if on_file is not None:
            on_file(item, len(artifacts))
    write_atomic(
        to / MANIFEST_NAME,
        json.dumps(resolved.envelope, indent=2, sort_keys=True) + "\n",
        0o644,
        dir_mode=0o755,
    )
    return report


def _fetch_into(source: str, artifact: Artifact, target: Path, client: httpx.Client | None) -> None:
    """Fetch and verify ``artifact`` next to ``target``, then move it into place."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fetch_artifact(source, artifact, Path(tmp), client)
        verify_sha256(Path(tmp), artifact.sha256)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class SourceFile:
    """One artifact to publish: its bytes, where it installs, and optionally its url
    (default ``kubernetes/v<kubernetes version>/<arch>/<name>``)."""

    name: ArtifactName
    version: str
    content: bytes
    install_path: str
    mode: int
    url: str | None = None


def publish(
    directory: Path,
    versions: Mapping[str, Sequence[SourceFile]],
    signing_key: tuple[str, bytes] | None,
    *,
    arch: str = "amd64",
) -> None:
    """Write an artifact source: every file where a mirror keeps it (:func:`mirror_path`)
    and ``manifest.json`` signed with ``signing_key`` (key id, private PEM), or unsigned
    when None. For publishing your own builds, the demo's artifacts, and tests."""
    listing: dict[str, Any] = {}
    for kube, files in versions.items():
        artifacts = []
        for f in files:
            artifact = Artifact(
                name=f.name,
                version=f.version,
                url=f.url or f"kubernetes/v{kube}/{arch}/{f.name}",
                sha256=hashlib.sha256(f.content).hexdigest(),
                install_path=f.install_path,
                mode=f.mode,
            )
            write_atomic(directory / mirror_path(artifact), f.content, 0o644, dir_mode=0o755)
            artifacts.append(artifact.model_dump(mode="json", by_alias=True))
        listing[kube] = {arch: artifacts}
    manifest = {"apiVersion": API_VERSION, "kind": "ArtifactManifest", "versions": listing}
    envelope = (
        sign(manifest, signing_key[1], signing_key[0])
        if signing_key
        else {"manifest": manifest, "signatures": []}
    )
    write_atomic(directory / MANIFEST_NAME, json.dumps(envelope), 0o644, dir_mode=0o755)
