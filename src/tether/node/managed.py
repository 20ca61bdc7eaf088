"""Writing a generated file that Tether owns, crash-safely and never over someone else's.

The rule: a path Tether's tracker lists as installed by Tether may be rewritten; a path
that exists but is not Tether's is never overwritten (:class:`ForeignFile`), unless it
already holds exactly the wanted content, which is then left as it is.

The tracker is updated *before* the file is written (intent first): the entry with the
new content's hash, and every parent directory about to be created, are saved, then the
file is written atomically. A crash between the two leaves a tracked path whose file is
missing or still old, which the rerun rewrites; it can never leave an untracked file
that Tether wrote, which a rerun would take for somebody else's.
"""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path, PurePosixPath

from tether.errors import Permanent
from tether.files import write_atomic
from tether.node.render import RenderedFile
from tether.node.tracker import TrackedEntry, Tracker, host_path, save

__all__ = ["ForeignFile", "write_managed"]


class ForeignFile(Permanent):
    """A file Tether would write exists and was not written by Tether."""

    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path} exists and was not written by Tether: move it away (or merge it into the "
            "NodeConfig) and run again"
        )
        self.path = path


def _current(target: Path) -> tuple[bytes, int] | None:
    try:
        st = target.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return b"", -1
    return target.read_bytes(), stat.S_IMODE(st.st_mode)


def write_managed(root: Path, tracker: Tracker, file: RenderedFile) -> bool:
    """Make ``file`` present under ``root``; True if anything was written."""
    target = host_path(root, file.path)
    entry = tracker.get(file.path)
    ours = entry is not None and not entry.foreign
    current = _current(target)
    if current == (file.content, file.mode):
        return False
    if current is not None and not ours:
        raise ForeignFile(file.path)
    digest = hashlib.sha256(file.content).hexdigest()
    missing: list[str] = []
    for parent in PurePosixPath(file.path).parents:
        if str(parent) == "/" or host_path(root, str(parent)).exists():
            break
        missing.append(str(parent))
    for directory in missing:
        if tracker.get(directory) is None:
            tracker.put(TrackedEntry(path=directory, kind="directory", mode=0o755))
    kind = "unit" if file.path.startswith("/etc/systemd/") else "file"
    tracker.put(TrackedEntry(path=file.path, kind=kind, sha256=digest, mode=file.mode))
    save(root, tracker)
    write_atomic(target, file.content, file.mode, dir_mode=0o755)
    return True
