"""Serving the plane's artifact mirror: read-only files under ``TETHER_ARTIFACTS_DIR``.

The directory is laid out as ``tether artifacts sync --to`` writes it (``manifest.json``,
artifacts at their relative url, ``sha256/<hex>``), so its URL is a valid ``--source``
for ``tether node install``. Two routes serve it, both through :func:`artifact_response`:
``GET /agent/v1/artifacts/{path}`` on the agent port (a host's client certificate, see
:mod:`tether.api.agent`) and ``GET /api/v1/artifacts/{path}`` here (a viewer token).

:func:`resolve_artifact` is the one place that turns a request path into a file: a path
that is absolute, has a ``..`` or NUL, or resolves (through symlinks) outside the
directory, or is not a regular file, is answered 404 in the usual error shape, and the
answer does not say whether something exists outside the directory.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Final

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from tether.api.deps import Config, Viewer
from tether.errors import PlaneError

__all__ = [
    "ArtifactNotFound",
    "ArtifactPath",
    "artifact_response",
    "resolve_artifact",
    "router",
]

MANIFEST: Final = "manifest.json"
#: OpenAPI description shared by both routes.
RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "description": "The file, streamed.",
        "content": {"application/json": {}, "application/octet-stream": {}},
    },
    404: {"description": "No such file in the artifact directory (or outside it)."},
}
ArtifactPath = Annotated[
    str,
    PathParam(
        max_length=1024,
        description="A path inside the artifact directory: manifest.json, a relative "
        "artifact url, or sha256/<hex>.",
    ),
]


class ArtifactNotFound(PlaneError):
    """404: no regular file at that path inside the artifact directory."""

    status = 404
    code = "not_found"

    def __init__(self, path: str, rule: str = "artifacts.not_found") -> None:
        shown = path if len(path) <= 200 else path[:200] + "..."
        super().__init__(
            f"no artifact {shown!r} in the plane's artifact directory (TETHER_ARTIFACTS_DIR)",
            field="path",
            rule=rule,
        )


def resolve_artifact(directory: Path, path: str) -> tuple[Path, os.stat_result]:
    """The real path and stat of the regular file ``path`` names under ``directory``.

    Raises :class:`ArtifactNotFound` for anything else (see the module docstring).
    """
    rel = PurePosixPath(path)
    if "\x00" in path or rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ArtifactNotFound(path, "artifacts.path")
    try:
        root = directory.resolve(strict=True)
        real = root.joinpath(*rel.parts).resolve(strict=True)
        st = real.stat()
    except (OSError, RuntimeError, ValueError):  # missing, a loop, too long, unreadable
        raise ArtifactNotFound(path) from None
    if not real.is_relative_to(root) or not stat.S_ISREG(st.st_mode):
        raise ArtifactNotFound(path)
    return real, st


async def artifact_response(directory: Path, path: str) -> FileResponse:
    """The file ``path`` under ``directory``, streamed, or an :class:`ArtifactNotFound`."""
    real, st = await run_in_threadpool(resolve_artifact, directory, path)
    json_file = real.suffix == ".json"
    return FileResponse(
        real,
        stat_result=st,
        media_type="application/json" if json_file else "application/octet-stream",
        headers={"X-Content-Type-Options": "nosniff"},
    )


router = APIRouter(prefix="/api/v1", tags=["artifacts"])


@router.get("/artifacts/{path:path}", response_class=FileResponse, responses=RESPONSES)
async def get_artifact(path: ArtifactPath, settings: Config, _: Viewer) -> FileResponse:
    """A file of the plane's artifact mirror (``manifest.json``, an artifact) for a viewer
    token; hosts use ``/agent/v1/artifacts/{path}`` with their certificate."""
    return await artifact_response(settings.artifacts_dir, path)
