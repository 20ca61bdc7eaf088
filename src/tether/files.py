"""Writing files that may hold secrets: one way, used everywhere.

Keys, tokens, kubeconfigs, activation codes and generated configs are written with
:func:`write_atomic`: a temporary file created 0600 in the target directory (so the
content is never readable by others, not even for an instant), given its final mode,
fsynced, renamed over the target, and the directory fsynced. A crash leaves either the
old file or the new one, never half of either.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["fsync_dir", "write_atomic"]


def fsync_dir(directory: Path) -> None:
    """Make a rename inside ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path, data: bytes | str, mode: int = 0o600, *, dir_mode: int | None = 0o700
) -> None:
    """Write ``data`` to ``path`` with ``mode``, atomically (see the module docstring).

    A missing parent directory is created with ``dir_mode`` (``None``: the default umask).
    """
    if dir_mode is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        path.parent.mkdir(parents=True, exist_ok=True, mode=dir_mode)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    fsync_dir(path.parent)
