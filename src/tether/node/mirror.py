"""Mirror a signed manifest and one version's artifacts into a directory.

For air-gapped sites: the mirror holds ``manifest.json`` (the envelope exactly as signed,
so it still verifies) and each resolved artifact at its relative ``url``; an artifact
whose url is an absolute ``https://`` URL is kept at ``sha256/<hex>``, where
:func:`tether.node.install.fetch_artifact` looks for it. The mirror directory is itself a
valid ``source`` for :func:`tether.node.install.install` and for another :func:`sync`.

Every artifact's sha256 is checked before it is put in place, and the manifest is written
last, so an interrupted or failed sync never leaves a manifest naming missing files.

Building a mirror from real files (``tether artifacts add`` and ``publish``): :func:`add`
copies a file into ``blobs/sha256/<hex>`` (content-addressed, so a file shared by several
Kubernetes versions is stored once) and lists it in the unsigned ``draft.json``;
:func:`publish_draft` signs the draft and writes ``manifest.json``. Until then hosts see
the previous manifest, if any.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import httpx
from pydantic import ValidationError

from tether.errors import HostError
from tether.files import staged_file, write_atomic
from tether.node.artifacts import (
    API_VERSION,
    Artifact,
    ArtifactManifest,
    ArtifactName,
    Keyring,
    ManifestError,
    file_sha256,
    private_key_id,
    sign,
    verify_sha256,
)
from tether.node.install import (
    BY_SHA256,
    MANIFEST_NAME,
    fetch_artifact,
    fetch_resolved,
)

__all__ = [
    "BLOBS",
    "DRAFT_NAME",
    "SourceFile",
    "SyncReport",
    "SyncedFile",
    "add",
    "holds",
    "mirror_path",
    "publish",
    "publish_draft",
    "sync",
]

#: The unsigned listing ``tether artifacts add`` builds up and ``publish`` signs.
DRAFT_NAME = "draft.json"
#: Where ``add`` keeps files, by content.
BLOBS = "blobs/sha256"


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


def holds(mirror: Path, version: str, *, keyring: Keyring, arch: str | None = None) -> bool:
    """Whether ``mirror`` (a directory, such as an image's pre-seeded one) holds every
    artifact of ``version``/``arch`` intact under a manifest ``keyring`` trusts: the agent
    installs from it then, and from the plane's mirror otherwise."""
    if not (mirror / MANIFEST_NAME).is_file():
        return False
    try:
        resolved = fetch_resolved(str(mirror), version, keyring=keyring, arch=arch)
    except HostError:
        return False
    for artifact in resolved.artifacts:
        path = mirror.joinpath(*PurePosixPath(mirror_path(artifact)).parts)
        if not path.is_file() or file_sha256(path) != artifact.sha256:
            return False
    return True


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
    downloads; ``on_file(file, total)`` hears of each artifact once it is done. Raises a
    :class:`~tether.errors.HostError` (nothing written for an
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
            with staged_file(target, 0o644, dir_mode=0o755) as tmp:
                fetch_artifact(source, artifact, tmp, client)
                verify_sha256(tmp, artifact.sha256)
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


def _sign_and_write(
    directory: Path, manifest: dict[str, Any], signing_key: tuple[str, bytes] | None
) -> dict[str, Any]:
    """Write ``manifest.json`` (last: hosts never see a manifest naming missing files)."""
    envelope = (
        sign(manifest, signing_key[1], signing_key[0])
        if signing_key
        else {"manifest": manifest, "signatures": []}
    )
    write_atomic(directory / MANIFEST_NAME, json.dumps(envelope), 0o644, dir_mode=0o755)
    return envelope


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
    _sign_and_write(directory, manifest, signing_key)


def _draft(mirror: Path) -> dict[str, Any]:
    path = mirror / DRAFT_NAME
    try:
        data: Any = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {"apiVersion": API_VERSION, "kind": "ArtifactManifest", "versions": {}}
    except (OSError, ValueError) as exc:
        raise ManifestError(f"cannot read the draft {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("versions"), dict):
        raise ManifestError(f"the draft {path} is not an artifact manifest")
    return data


def add(
    mirror: Path,
    *,
    kubernetes: str,
    name: ArtifactName,
    version: str,
    file: Path,
    install_path: str,
    mode: int,
    arch: str = "amd64",
) -> Artifact:
    """Copy ``file`` into the mirror and list it for Kubernetes ``kubernetes`` on ``arch``
    in the draft, replacing the artifact that installs to the same path. Raises
    :class:`~tether.node.artifacts.ManifestError` (nothing changed) for an invalid entry."""
    digest = file_sha256(file)
    try:
        artifact = Artifact(
            name=name,
            version=version,
            url=f"{BLOBS}/{digest}",
            sha256=digest,
            install_path=install_path,
            mode=mode,
        )
        ArtifactManifest.model_validate({"versions": {kubernetes: {arch: []}}})
    except ValidationError as exc:
        raise ManifestError(f"invalid artifact: {exc}") from exc
    draft = _draft(mirror)
    blob = mirror.joinpath(*PurePosixPath(artifact.url).parts)
    if not (blob.is_file() and file_sha256(blob) == digest):
        write_atomic(blob, file.read_bytes(), 0o644, dir_mode=0o755)
    listed = draft["versions"].setdefault(kubernetes, {}).setdefault(arch, [])
    listed[:] = [a for a in listed if a.get("installPath") != install_path]
    listed.append(artifact.model_dump(mode="json", by_alias=True))
    listed.sort(key=lambda a: str(a.get("installPath")))
    write_atomic(mirror / DRAFT_NAME, json.dumps(draft, indent=2, sort_keys=True) + "\n", 0o644)
    return artifact


def publish_draft(mirror: Path, private_pem: bytes) -> tuple[str, ArtifactManifest]:
    """Sign the mirror's draft with the ed25519 key ``private_pem`` and write it as
    ``manifest.json``; returns the key id and the manifest. Raises
    :class:`~tether.node.artifacts.ManifestError` for a missing or invalid draft, a
    listed file missing from the mirror, or an unusable key."""
    if not (mirror / DRAFT_NAME).is_file():
        raise ManifestError(f"no draft in {mirror}: add artifacts first (tether artifacts add)")
    draft = _draft(mirror)
    try:
        manifest = ArtifactManifest.model_validate(draft)
    except ValidationError as exc:
        raise ManifestError(f"the draft is not a valid manifest: {exc}") from exc
    for arches in manifest.versions.values():
        for artifacts in arches.values():
            for artifact in artifacts:
                blob = mirror.joinpath(*PurePosixPath(mirror_path(artifact)).parts)
                try:
                    verify_sha256(blob, artifact.sha256)
                except OSError as exc:
                    raise ManifestError(f"{artifact.name}: {blob} is listed but missing") from exc
    key_id = private_key_id(private_pem)
    _sign_and_write(mirror, manifest.model_dump(mode="json", by_alias=True), (key_id, private_pem))
    return key_id, manifest
