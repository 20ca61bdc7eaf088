"""The dashboard: one page over the REST API, served by the plane at ``/``.

It is static HTML and JavaScript with no build step; it authenticates with the same API
tokens as the CLI (kept in the browser's session storage) and reads the event stream
with ``fetch`` because ``EventSource`` cannot send an Authorization header.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

STATIC = Path(__file__).parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui/")


@router.get("/ui/")
def dashboard() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")
