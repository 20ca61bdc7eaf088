"""The install tracker: what Tether put on the host, so uninstall removes exactly that.

A JSON record at ``<root>/var/lib/tether/tracker.json`` lists every file, systemd unit and
directory Tether installed (files and units with their sha256 and mode), and every path
found already present that Tether did not install (``foreign``, e.g. a containerd the
operator installed), which uninstall never touches. Paths are absolute as seen on the host
(``/usr/local/bin/kubelet``) and are resolved under ``root`` when acted on.
"""

from __future__ import annotations

import stat
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import Field, field_validator

from tether.domain.base import Model
from tether.files import write_atomic
from tether.node.artifacts import file_sha256

__all__ = ["TRACKER_PATH", "EntryKind", "TrackedEntry", "Tracker", "host_path", "load", "save"]

#: Where the tracker lives, relative to the root prefix.
TRACKER_PATH = "/var/lib/tether/tracker.json"
EntryKind = Literal["file", "unit", "directory"]


def host_path(root: Path, path: str) -> Path:
    """``path`` (absolute, as on the host) under the root prefix."""
    return root.joinpath(*PurePosixPath(path).parts[1:])


class TrackedEntry(Model):
    """One path Tether installed, or found present and left alone (``foreign``)."""

    path: str
    kind: EntryKind = "file"
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    mode: int | None = Field(default=None, ge=0, le=0o7777)
    name: str | None = Field(default=None, description="The artifact's name, if any.")
    version: str | None = Field(default=None, description="The artifact's version, if any.")
    foreign: bool = False

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        pure = PurePosixPath(value)
        if not pure.is_absolute() or str(pure) == "/":
            raise ValueError("path must be absolute and not '/'")
        if ".." in pure.parts or str(pure) != value:
            raise ValueError("path must be normalised (no '..', '.', '//' or '/' end)")
        return value


class Tracker(Model):
    """Every entry by path; at most one entry per path (the last record wins)."""

    api_version: Literal["tether.io/v1alpha1"] = "tether.io/v1alpha1"
    kind: Literal["InstallTracker"] = "InstallTracker"
    kubernetes_version: str | None = Field(
        default=None, description="The Kubernetes version whose artifacts were installed last."
    )
    entries: list[TrackedEntry] = Field(default_factory=list)

    def get(self, path: str) -> TrackedEntry | None:
        return next((e for e in self.entries if e.path == path), None)

    def put(self, entry: TrackedEntry) -> TrackedEntry:
        self.entries = [e for e in self.entries if e.path != entry.path] + [entry]
        return entry

    def forget(self, paths: set[str] | list[str]) -> None:
        drop = set(paths)
        self.entries = [e for e in self.entries if e.path not in drop]

    def record_installed(self, root: Path, path: str, kind: EntryKind = "file") -> TrackedEntry:
        """Record a file, unit or directory Tether just installed at ``path`` under ``root``."""
        target = host_path(root, path)
        st = target.lstat()
        if kind == "directory":
            if not stat.S_ISDIR(st.st_mode):
                raise ValueError(f"{target} is not a directory")
            return self.put(TrackedEntry(path=path, kind=kind, mode=stat.S_IMODE(st.st_mode)))
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"{target} is not a regular file")
        return self.put(
            TrackedEntry(
                path=path,
                kind=kind,
                sha256=file_sha256(target),
                mode=stat.S_IMODE(st.st_mode),
            )
        )

    def record_foreign(
        self, path: str, kind: EntryKind = "file", *, name: str | None = None
    ) -> TrackedEntry:
        """Record a path found present that Tether did not install; it is never removed."""
        return self.put(TrackedEntry(path=path, kind=kind, name=name, foreign=True))

    def artifact(self, name: str) -> TrackedEntry | None:
        """The entry of the artifact called ``name`` (``kubelet``), Tether's or foreign."""
        return next((e for e in self.entries if e.name == name), None)

    @property
    def installed(self) -> list[TrackedEntry]:
        return [e for e in self.entries if not e.foreign]

    @property
    def foreign_entries(self) -> list[TrackedEntry]:
        return [e for e in self.entries if e.foreign]


def load(root: Path) -> Tracker:
    """The tracker under ``root``, or an empty one if none was saved yet."""
    target = host_path(root, TRACKER_PATH)
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        return Tracker()
    return Tracker.model_validate_json(data)


def save(root: Path, tracker: Tracker) -> Path:
    """Write the tracker atomically (mode 0600) under ``root``, entries sorted by path;
    returns its path."""
    target = host_path(root, TRACKER_PATH)
    tracker.entries.sort(key=lambda e: e.path)  # the same content whatever the order of work
    write_atomic(
        target,
        tracker.model_dump_json(by_alias=True, indent=2) + "\n",
        0o600,
        dir_mode=0o755,
    )
    return target
