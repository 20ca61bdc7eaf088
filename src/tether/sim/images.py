"""Container images built on this machine, without a registry or Docker: for tests, the
benchmark and the demo's real node.

No registry is reachable here and no Docker engine runs, so the pause image and test
workloads are static binaries (built from ``scripts/images/*`` by
``scripts/build-kube.sh``) packed by :func:`image_archive` as a **docker-archive** tar
(``manifest.json``, an image config, one layer), which ``ctr images import`` reads. The
archive is deterministic: the same binary gives the same bytes, so its sha256 in a
signed manifest stays put.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from tether.files import write_atomic

__all__ = ["ECHO_IMAGE", "PAUSE_IMAGE", "image_archive"]

#: Names the locally built images carry (``localhost/``: never pulled from anywhere).
PAUSE_IMAGE: Final = "localhost/tether/pause:3.10"
ECHO_IMAGE: Final = "localhost/tether/echo:1.0"


def _tar(entries: Mapping[str, tuple[bytes, int]]) -> bytes:
    """A deterministic tar of ``{path: (content, mode)}`` (owner root, mtime 0)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (content, mode) in sorted(entries.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = mode
            info.mtime = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


def image_archive(
    out: Path,
    ref: str,
    files: Mapping[str, tuple[bytes, int]],
    entrypoint: Sequence[str],
    *,
    env: Sequence[str] = ("PATH=/",),
    arch: str = "amd64",
) -> Path:
    """Write a docker-archive of one image named ``ref`` with ``files`` (``{path in the
    image: (content, mode)}``) in one layer, started as ``entrypoint``."""
    layer = _tar({path.lstrip("/"): item for path, item in files.items()})
    layer_digest = hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Entrypoint": list(entrypoint), "Env": list(env)},
            "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
            "history": [{"created_by": "tether.sim.images"}],
        },
        sort_keys=True,
    ).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    manifest = json.dumps(
        [{"Config": config_name, "RepoTags": [ref], "Layers": [f"{layer_digest}/layer.tar"]}]
    ).encode()
    archive = _tar(
        {
            "manifest.json": (manifest, 0o644),
            config_name: (config, 0o644),
            f"{layer_digest}/layer.tar": (layer, 0o644),
        }
    )
    write_atomic(out, archive, 0o644, dir_mode=0o755)
    return out
