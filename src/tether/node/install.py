"""Install the node artifacts of one Kubernetes version from a signed manifest.

``source`` is a local directory (a mirror, see :mod:`tether.node.mirror`) or an
``https://`` base URL. The envelope is ``<source>/manifest.json``; an artifact's relative
``url`` is taken relative to ``source``. An absolute ``https://`` url is fetched as is,
except that a mirror holding the file at ``<source>/sha256/<hex>`` serves it: a local one
when the file is there, an https one (such as the plane's, ``<agent URL>/agent/v1/
artifacts``) when it answers 200 with the right sha256; otherwise the url is fetched.

Downloads use an :class:`httpx.Client`: pass one made by :func:`https_client` to trust a
private CA and present a client certificate (mutual TLS, e.g. a host's certificate for
the plane's agent port). Without one, each download uses httpx's defaults (the system's
CAs). Only ``https://`` is fetched, redirects included.

Order of work, so that a failure leaves the host as it was:

1. fetch the envelope and :func:`~tether.node.artifacts.verify` it (nothing is written
   for an unsigned envelope, an unknown key or a bad signature);
2. resolve the version and architecture;
3. download every artifact into the staging directory ``<root>/var/lib/tether/staging``
   and check the sha256 of every one of them: one mismatch and nothing is installed;
4. install each file at ``root / installPath`` with its mode (atomically), record it in
   the tracker and save the tracker.

The staging directory is one fixed place: each run takes a lock on its parent (a second
install on the same root waits), empties it first (a killed run's downloads go there)
and removes it when done, so no download outlives the run that needs it.

A containerd already present at its install path that the tracker does not list as
Tether's is left untouched and recorded as foreign. A file already identical (content and
mode) is reported unchanged and not rewritten, so a rerun changes nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import shutil
import ssl
import stat
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

import httpx

from tether.errors import Permanent, Temporary
from tether.files import write_atomic
from tether.node.artifacts import (
    Artifact,
    Keyring,
    ManifestError,
    file_sha256,
    resolve,
    verify,
    verify_sha256,
)
from tether.node.tracker import TRACKER_PATH, TrackedEntry, Tracker, host_path, load, save

__all__ = [
    "ARCHES",
    "MANIFEST_NAME",
    "STAGING",
    "FetchError",
    "InstallReport",
    "InstalledItem",
    "clear_staging",
    "default_arch",
    "fetch_artifact",
    "fetch_envelope",
    "fetch_resolved",
    "https_client",
    "install",
]

MANIFEST_NAME: Final = "manifest.json"
#: ``platform.machine()`` → the manifest's architecture names.
ARCHES: Final = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
#: Where a local mirror keeps artifacts whose manifest url is an absolute https URL.
BY_SHA256: Final = "sha256"
#: Where downloads wait for their checksums, relative to the root prefix.
STAGING: Final = "/var/lib/tether/staging"
_TIMEOUT: Final = httpx.Timeout(30.0, read=300.0)
Status = Literal["installed", "unchanged", "foreign"]


class FetchError(Temporary):
    """The envelope or an artifact cannot be fetched from the source (the source may
    answer later: a mirror being filled, an outage)."""


@dataclass
class InstalledItem:
    name: str
    version: str
    path: str
    status: Status
    sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "path": self.path,
            "status": self.status,
            "sha256": self.sha256,
        }


@dataclass
class InstallReport:
    version: str
    arch: str
    items: list[InstalledItem] = field(default_factory=list)
    tracker: str = ""

    def paths(self, status: Status) -> list[str]:
        return [i.path for i in self.items if i.status == status]

    @property
    def installed(self) -> list[str]:
        return self.paths("installed")

    @property
    def unchanged(self) -> list[str]:
        return self.paths("unchanged")

    @property
    def foreign(self) -> list[str]:
        return self.paths("foreign")

    def summary(self) -> str:
        return (
            f"Kubernetes {self.version} ({self.arch}): {len(self.installed)} installed, "
            f"{len(self.unchanged)} unchanged, {len(self.foreign)} foreign (kept)"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "arch": self.arch,
            "tracker": self.tracker,
            "items": [i.as_dict() for i in self.items],
        }


def default_arch() -> str:
    """This machine's architecture in the manifest's terms (``amd64``, ``arm64``)."""
    machine = platform.machine().lower()
    return ARCHES.get(machine, machine)


def _is_url(source: str) -> bool:
    if source.startswith("https://"):
        return True
    if "://" in source:
        raise Permanent(f"source {source!r} must be a directory or an https:// URL")
    return False


def _join(base: str, rel: str) -> str:
    return base.rstrip("/") + "/" + rel


def https_client(
    *, ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> httpx.Client:
    """A client for https sources: it trusts only the CAs in ``ca`` (PEM) when given, else
    the system's, and presents the client certificate ``cert`` (with ``key``, unless the
    key is in ``cert``) when given. Raises :class:`OSError` (``ssl.SSLError`` included)
    for an unreadable or unusable file."""
    if key is not None and cert is None:
        raise Permanent("a client key needs its certificate (--cert)")
    verify: ssl.SSLContext | bool = True
    if ca is not None or cert is not None:
        ctx = ssl.create_default_context(cafile=str(ca)) if ca else httpx.create_ssl_context()
        if cert is not None:
            ctx.load_cert_chain(cert, key)
        verify = ctx
    return httpx.Client(verify=verify, follow_redirects=True, timeout=_TIMEOUT)


@contextmanager
def _stream(url: str, client: httpx.Client | None) -> Iterator[httpx.Response]:
    """GET ``url`` (redirects followed, https only): a 200 response, whose body may be
    read in the ``with`` block; any other answer or an HTTP error is a FetchError."""
    with nullcontext(client) if client is not None else https_client() as http:
        try:
            with http.stream("GET", url, follow_redirects=True) as resp:
                if resp.url.scheme != "https":
                    raise FetchError(f"{url} redirected to a non-https URL {resp.url}")
                if resp.status_code != 200:
                    raise FetchError(f"cannot fetch {url}: HTTP {resp.status_code}")
                yield resp
        except httpx.HTTPError as exc:
            raise FetchError(f"cannot fetch {url}: {exc}") from exc


def _download(url: str, dest: Path, client: httpx.Client | None = None) -> None:
    with _stream(url, client) as resp, dest.open("wb") as fh:
        for chunk in resp.iter_bytes():
            fh.write(chunk)


def fetch_envelope(source: str, client: httpx.Client | None = None) -> dict[str, Any]:
    """The envelope at ``<source>/manifest.json``, parsed but not yet verified."""
    try:
        if _is_url(source):
            url = _join(source, MANIFEST_NAME)
            with _stream(url, client) as resp:
                resp.read()
            data: Any = resp.json()
        else:
            path = Path(source) / MANIFEST_NAME
            try:
                data = json.loads(path.read_bytes())
            except OSError as exc:
                raise FetchError(f"cannot read {path}: {exc}") from exc
    except ValueError as exc:
        raise ManifestError(f"the manifest envelope in {source} is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"the manifest envelope in {source} is not a JSON object")
    return data


def _from_https_mirror(
    source: str, artifact: Artifact, dest: Path, client: httpx.Client | None
) -> bool:
    """Whether ``<source>/sha256/<hex>`` served ``artifact`` (right sha256) into ``dest``."""
    try:
        _download(_join(source, f"{BY_SHA256}/{artifact.sha256}"), dest, client)
    except FetchError:
        return False
    return file_sha256(dest) == artifact.sha256


def fetch_artifact(
    source: str, artifact: Artifact, dest: Path, client: httpx.Client | None = None
) -> None:
    """Copy or download ``artifact`` from ``source`` to ``dest`` (not verified here)."""
    if artifact.url.startswith("https://"):
        if not _is_url(source):
            local = Path(source) / BY_SHA256 / artifact.sha256
            if local.is_file():
                shutil.copyfile(local, dest)
                return
        elif _from_https_mirror(source, artifact, dest, client):
            return
        _download(artifact.url, dest, client)
    elif _is_url(source):
        _download(_join(source, artifact.url), dest, client)
    else:
        path = Path(source).joinpath(*PurePosixPath(artifact.url).parts)
        try:
            shutil.copyfile(path, dest)
        except OSError as exc:
            raise FetchError(f"cannot read {path}: {exc}") from exc


@dataclass(frozen=True)
class Resolved:
    """A verified manifest's artifacts for one version and architecture."""

    version: str  # the manifest version chosen (``1.34`` resolves to the newest 1.34.x)
    arch: str
    artifacts: list[Artifact]
    envelope: dict[str, Any]  # as fetched, signatures included (what a mirror stores)


def fetch_resolved(
    source: str,
    version: str,
    *,
    keyring: Keyring,
    arch: str | None = None,
    client: httpx.Client | None = None,
) -> Resolved:
    """Fetch the envelope at ``source``, verify it against ``keyring`` and resolve
    ``version`` for ``arch`` (default: this host). Raises :class:`ManifestError`
    (permanent) or :class:`FetchError` (temporary)."""
    envelope = fetch_envelope(source, client)
    manifest = verify(envelope, keyring)
    arch = arch or default_arch()
    artifacts = resolve(manifest, version, arch)
    chosen = next(v for v, arches in manifest.versions.items() if arches.get(arch) == artifacts)
    return Resolved(chosen, arch, artifacts, envelope)


def _is_identical(target: Path, artifact: Artifact) -> bool:
    try:
        st = target.lstat()
    except FileNotFoundError:
        return False
    return (
        stat.S_ISREG(st.st_mode)
        and stat.S_IMODE(st.st_mode) == artifact.mode
        and file_sha256(target) == artifact.sha256
    )


def _missing_dirs(root: Path, path: str) -> list[str]:
    """The parent directories of ``path`` not yet present under ``root``, top first."""
    missing: list[str] = []
    for parent in PurePosixPath(path).parents:
        if str(parent) == "/" or host_path(root, str(parent)).exists():
            break
        missing.append(str(parent))
    return list(reversed(missing))


def clear_staging(root: Path) -> None:
    """Remove the staging directory and whatever a killed run left in it."""
    staging = host_path(root, STAGING)
    if staging.is_dir() and not staging.is_symlink():
        shutil.rmtree(staging)
    else:
        staging.unlink(missing_ok=True)


@contextmanager
def _staging(root: Path) -> Iterator[Path]:
    """The staging directory, empty, for this run alone (see the module docstring)."""
    staging = host_path(root, STAGING)
    staging.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    lock = os.open(staging.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        clear_staging(root)
        staging.mkdir(mode=0o700)
        try:
            yield staging
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        os.close(lock)  # releases the lock


def _entries(tracker: Tracker) -> list[str]:
    """The tracker's entries in a stable order (re-recording moves an entry to the end)."""
    return sorted(e.model_dump_json() for e in tracker.entries)


def install(
    version: str,
    *,
    root: Path,
    source: str,
    keyring: Keyring,
    arch: str | None = None,
    client: httpx.Client | None = None,
) -> InstallReport:
    """Install the artifacts of ``version`` for ``arch`` under ``root``; see the module
    docstring. ``client`` (see :func:`https_client`) makes the https downloads; the caller
    closes it. Raises a :class:`~tether.errors.HostError` and installs nothing when the
    manifest is not trusted, the version or arch is unknown or a checksum does not match
    (:class:`ManifestError`, permanent), or a fetch fails (:class:`FetchError`,
    temporary)."""
    resolved = fetch_resolved(source, version, keyring=keyring, arch=arch, client=client)
    artifacts = resolved.artifacts
    report = InstallReport(version=resolved.version, arch=resolved.arch)
    tracker = load(root)
    before = _entries(tracker)
    version_before = tracker.kubernetes_version

    foreign: set[str] = set()
    for artifact in artifacts:
        entry = tracker.get(artifact.install_path)
        target = host_path(root, artifact.install_path)
        present = target.exists() or target.is_symlink()
        was_foreign = entry is not None and entry.foreign
        if was_foreign or (artifact.name == "containerd" and present and entry is None):
            foreign.add(artifact.install_path)

    identical = {
        a.install_path
        for a in artifacts
        if a.install_path not in foreign and _is_identical(host_path(root, a.install_path), a)
    }
    with _staging(root) as staging:
        staged: dict[str, Path] = {}
        for index, artifact in enumerate(artifacts):
            if artifact.install_path in foreign | identical:
                continue
            dest = staging / f"{index}-{artifact.name}"
            fetch_artifact(source, artifact, dest, client)
            staged[artifact.install_path] = dest
        for artifact in artifacts:
            if artifact.install_path in staged:
                verify_sha256(staged[artifact.install_path], artifact.sha256)

        for artifact in artifacts:
            item = InstalledItem(
                name=artifact.name,
                version=artifact.version,
                path=artifact.install_path,
                status="foreign",
            )
            report.items.append(item)
            if artifact.install_path in foreign:
                tracker.record_foreign(artifact.install_path, name=artifact.name)
                continue
            item.sha256 = artifact.sha256
            item.status = "unchanged" if artifact.install_path in identical else "installed"
            # Intent first: the entry is saved before the file is written, so a kill in
            # between leaves a tracked path the rerun rewrites, never an untracked file
            # that would pass for someone else's (a foreign containerd).
            for directory in _missing_dirs(root, artifact.install_path):
                if tracker.get(directory) is None:
                    tracker.put(TrackedEntry(path=directory, kind="directory", mode=0o755))
            tracker.put(
                TrackedEntry(
                    path=artifact.install_path,
                    sha256=artifact.sha256,
                    mode=artifact.mode,
                    name=artifact.name,
                    version=artifact.version,
                )
            )
            if item.status == "installed":
                save(root, tracker)
                target = host_path(root, artifact.install_path)
                data = staged[artifact.install_path].read_bytes()
                write_atomic(target, data, artifact.mode, dir_mode=0o755)
    tracker.kubernetes_version = report.version

    if _entries(tracker) != before or tracker.kubernetes_version != version_before:
        save(root, tracker)
    report.tracker = str(host_path(root, TRACKER_PATH))
    return report
