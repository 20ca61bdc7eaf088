"""Remove what Tether installed on a host, and nothing else.

Only tracked, non-foreign entries are considered. For each one:

* every path component under ``root`` is walked with ``lstat`` and opened with
  ``O_NOFOLLOW`` relative to its parent's descriptor, so no symlink is ever followed
  (a symlinked parent directory or a symlinked file is refused, not resolved);
* a component on another device than ``root`` (``st_dev``) or listed as a mount point in
  ``/proc/self/mountinfo`` (which also catches bind mounts of the same file system) is
  refused: uninstall never crosses a mount point;
* a file's sha256 is checked before it is unlinked: a file changed since Tether installed
  it is kept and reported;
* directories Tether created are removed afterwards, deepest first, only if empty.

:func:`plan_removal` reports what :func:`remove` would do without changing anything.
Neither updates the tracker; drop ``report.removed`` and ``report.removed_dirs`` from it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from tether.node.tracker import TrackedEntry, Tracker

__all__ = ["RemovalPlan", "RemovalReport", "mount_points", "plan_removal", "remove"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
Refusal = Literal["symlink", "mount", "missing", "not-directory"]


@dataclass
class RemovalPlan:
    """What happens to each tracked path (host paths, e.g. ``/usr/local/bin/kubelet``).

    In a plan, ``removed``/``removed_dirs`` are what would be removed; in a report (see
    :class:`RemovalReport`) what was removed.
    """

    removed: list[str] = field(default_factory=list)
    removed_dirs: list[str] = field(default_factory=list)
    kept_changed: list[str] = field(default_factory=list)
    kept_foreign: list[str] = field(default_factory=list)
    kept_nonempty: list[str] = field(default_factory=list)
    refused_symlink: list[str] = field(default_factory=list)
    refused_mount: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


class RemovalReport(RemovalPlan):
    """The outcome of :func:`remove`."""


def _unescape(path: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal.
    out: list[str] = []
    i = 0
    while i < len(path):
        code = path[i + 1 : i + 4]
        if path[i] == "\\" and len(code) == 3 and all(c in "01234567" for c in code):
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def mount_points(mountinfo: Path = Path("/proc/self/mountinfo")) -> set[str]:
    """Every mount point of this process's mount namespace (empty if unreadable)."""
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return set()
    return {_unescape(line.split()[4]) for line in lines if len(line.split()) > 4}


@dataclass
class _Walk:
    root: str
    root_dev: int
    mounts: set[str]


class _Refused(Exception):
    def __init__(self, why: Refusal) -> None:
        super().__init__(why)
        self.why = why


def _check(walk: _Walk, parent_fd: int, name: str, full: str) -> os.stat_result:
    """lstat ``name`` in ``parent_fd``, refusing symlinks and other mounts."""
    try:
        st = os.lstat(name, dir_fd=parent_fd)
    except FileNotFoundError:
        raise _Refused("missing") from None
    if stat.S_ISLNK(st.st_mode):
        raise _Refused("symlink")
    if st.st_dev != walk.root_dev or full in walk.mounts:
        raise _Refused("mount")
    return st


def _open_parent(walk: _Walk, path: str) -> tuple[int, str, str]:
    """A descriptor of ``path``'s parent directory, reached without following symlinks
    or crossing mounts; with the final name and its full path under root."""
    parts = PurePosixPath(path).parts[1:]
    fd = os.open(walk.root, _DIR_FLAGS)
    full = walk.root
    try:
        for part in parts[:-1]:
            full = os.path.join(full, part)
            st = _check(walk, fd, part, full)
            if not stat.S_ISDIR(st.st_mode):
                raise _Refused("not-directory")
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                raise _Refused("symlink" if exc.errno == errno.ELOOP else "missing") from exc
            os.close(fd)
            fd = child
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                raise _Refused("symlink")  # replaced between lstat and open
    except BaseException:
        os.close(fd)
        raise
    return fd, parts[-1], os.path.join(full, parts[-1])


def _hash_fd(fd: int) -> str:
    digest = hashlib.sha256()
    while chunk := os.read(fd, 1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def _located(
    walk: _Walk, entry: TrackedEntry, plan: RemovalPlan
) -> Iterator[tuple[int, str, os.stat_result] | None]:
    """Open the entry's parent directory safely and check the entry itself.

    Yields ``(parent dir fd, name, lstat)``, or ``None`` after recording a refusal
    (symlink, mount point, missing) in ``plan``; the parent fd is closed afterwards.
    """
    try:
        parent, name, full = _open_parent(walk, entry.path)
    except _Refused as exc:
        _refuse(plan, entry.path, exc.why)
        yield None
        return
    try:
        try:
            st = _check(walk, parent, name, full)
        except _Refused as exc:
            _refuse(plan, entry.path, exc.why)
            yield None
            return
        yield parent, name, st
    finally:
        os.close(parent)


def _file(walk: _Walk, entry: TrackedEntry, plan: RemovalPlan, apply: bool) -> None:
    with _located(walk, entry, plan) as found:
        if found is None:
            return
        parent, name, st = found
        if not stat.S_ISREG(st.st_mode):
            plan.kept_changed.append(entry.path)
            return
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=parent)
        except OSError as exc:
            _refuse(plan, entry.path, "symlink" if exc.errno == errno.ELOOP else "missing")
            return
        try:
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
                plan.kept_changed.append(entry.path)
                return
            if entry.sha256 is None or _hash_fd(fd) != entry.sha256:
                plan.kept_changed.append(entry.path)
                return
        finally:
            os.close(fd)
        if apply:
            os.unlink(name, dir_fd=parent)
        plan.removed.append(entry.path)


def _directory(walk: _Walk, entry: TrackedEntry, plan: RemovalPlan, apply: bool) -> None:
    with _located(walk, entry, plan) as found:
        if found is None:
            return
        parent, name, st = found
        if not stat.S_ISDIR(st.st_mode):
            plan.kept_changed.append(entry.path)
            return
        if apply:
            try:
                os.rmdir(name, dir_fd=parent)
            except OSError as exc:
                if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                plan.kept_nonempty.append(entry.path)
                return
        else:
            removed = {*plan.removed, *plan.removed_dirs}
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            try:
                left = [n for n in os.listdir(fd) if f"{entry.path}/{n}" not in removed]
            finally:
                os.close(fd)
            if left:
                plan.kept_nonempty.append(entry.path)
                return
        plan.removed_dirs.append(entry.path)


def _refuse(plan: RemovalPlan, path: str, why: Refusal) -> None:
    if why == "symlink":
        plan.refused_symlink.append(path)
    elif why == "mount":
        plan.refused_mount.append(path)
    elif why == "missing":
        plan.missing.append(path)
    else:
        plan.kept_changed.append(path)


def _run(root: Path, tracker: Tracker, plan: RemovalPlan, *, apply: bool) -> None:
    real_root = os.path.realpath(root)
    root_st = os.stat(real_root)
    if not stat.S_ISDIR(root_st.st_mode):
        raise NotADirectoryError(real_root)
    walk = _Walk(root=real_root, root_dev=root_st.st_dev, mounts=mount_points())
    directories: list[TrackedEntry] = []
    for entry in tracker.entries:
        if entry.foreign:
            plan.kept_foreign.append(entry.path)
        elif entry.kind == "directory":
            directories.append(entry)
        else:
            _file(walk, entry, plan, apply)
    for entry in sorted(directories, key=lambda e: len(PurePosixPath(e.path).parts), reverse=True):
        _directory(walk, entry, plan, apply)


def plan_removal(root: Path, tracker: Tracker) -> RemovalPlan:
    """What :func:`remove` would do, changing nothing."""
    plan = RemovalPlan()
    _run(root, tracker, plan, apply=False)
    return plan


def remove(root: Path, tracker: Tracker) -> RemovalReport:
    """Remove the tracked, unchanged, non-foreign files and then the emptied directories
    Tether created; see the module docstring for what is refused."""
    report = RemovalReport()
    _run(root, tracker, report, apply=True)
    return report
