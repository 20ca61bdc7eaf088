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
import stat
import tempfile
from pathlib import Path

__all__ = ["fsync_dir", "private_dir", "private_file", "write_atomic"]


def _tighten(path: Path, mode: int) -> None:
    """Take away what ``mode`` does not grant, if we own ``path`` (a no-op otherwise)."""
    info = path.stat()
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & ~mode:
        path.chmod(stat.S_IMODE(info.st_mode) & mode)


def private_dir(path: Path) -> Path:
    """Create ``path`` (parents too) 0700 whatever the umask, and take group and other
    access away from it if it exists: the plane's data directory holds its database,
    keys and tokens."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    _tighten(path, 0o700)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty 0600 whatever the umask, or make an existing one 0600 (a
    database file before the database opens it: SQLite gives its ``-wal`` and ``-shm``
    files the database file's mode).

    An existing file is never opened: closing any descriptor of a file drops every POSIX
    lock this process holds on it, SQLite's included."""
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600))
    _tighten(path, 0o600)
    return path


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
