"""Image archives on the node: what they are called, and how they get into containerd.

An air-gapped site has no registry. The mirror carries images as archives (artifacts
``pause-image`` and ``image``: a docker-archive or an OCI image layout in a tar), ``tether
node install`` puts them on the host, and ``init`` imports them into containerd's
``k8s.io`` namespace (the one the kubelet's CRI uses) with containerd's own ``ctr``
once containerd runs and before the kubelet starts. containerd is pinned to the
``pause-image`` archive's name as its sandbox image, so no pod ever needs a pull.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any, Final

from tether.errors import Permanent

__all__ = ["NAMESPACE", "ImageArchiveError", "image_names", "import_argv"]

#: containerd's namespace for the kubelet's images and containers.
NAMESPACE: Final = "k8s.io"
_OCI_NAME: Final = ("io.containerd.image.name", "org.opencontainers.image.ref.name")


class ImageArchiveError(Permanent):
    """The file is not a docker-archive or an OCI layout tar with a named image."""


def _member_json(archive: tarfile.TarFile, name: str) -> Any:
    try:
        member = archive.extractfile(name)
    except KeyError:
        return None
    if member is None:
        return None
    with member:
        return json.loads(member.read())


def image_names(path: Path) -> list[str]:
    """The image references an archive holds (docker ``RepoTags``, or the OCI index's
    ``io.containerd.image.name`` / ``org.opencontainers.image.ref.name`` annotations)."""
    try:
        with tarfile.open(path) as archive:
            docker = _member_json(archive, "manifest.json")
            index = _member_json(archive, "index.json")
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise ImageArchiveError(f"{path} is not a readable image archive: {exc}") from exc
    names: list[str] = []
    if isinstance(docker, list):
        for entry in docker:
            tags = entry.get("RepoTags") if isinstance(entry, dict) else None
            names += [str(t) for t in tags or []]
    if isinstance(index, dict):
        for manifest in index.get("manifests") or []:
            notes = manifest.get("annotations") if isinstance(manifest, dict) else None
            for key in _OCI_NAME:
                if isinstance(notes, dict) and notes.get(key):
                    names.append(str(notes[key]))
                    break
    if not names:
        raise ImageArchiveError(f"{path} names no image (no RepoTags or ref.name annotation)")
    return names


def import_argv(ctr: str, address: str, archive: str) -> list[str]:
    """containerd's own import of one archive into the kubelet's namespace."""
    return [ctr, "--address", address, "--namespace", NAMESPACE, "images", "import", archive]
