"""Disk layout of the trust anchor, written crash-safely.

::

    <root>/                       0700 (e.g. /var/lib/tether/ca)
      active/ca.crt               0644
      active/ca.key               0600
      previous/<fingerprint>/     one per CA retired by a rotation, until pruned
        ca.crt  ca.key  meta.json {"fingerprint", "retiredAt", "overlapUntil"}
      revocations.json            optional: RevocationList records (see save_revocations)

Every file is written to a temporary file in the same directory, fsynced, then renamed
over the target, so a reader never sees half a key. The active CA's two files must change
together, so a new active CA is written to ``active.new/`` and swapped in with two
renames (``active`` -> ``active.old``, ``active.new`` -> ``active``); :func:`load_bundle`
finishes or rolls back a swap interrupted by a crash. Writers and readers take an
exclusive ``flock`` on ``<root>/.lock``, so a plane's periodic reload in one process never
mistakes another process's rotation in progress for a crashed one. A rotation writes
the retired CA's ``previous/`` entry (``meta.json`` last) before swapping the active CA,
so every committed rotation has a complete previous entry.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from tether.files import fsync_dir, write_atomic
from tether.pki.authority import (
    CertificateAuthority,
    PreviousCA,
    TrustBundle,
    aware_utc,
)
from tether.pki.errors import CAStoreError, InvalidCA
from tether.pki.revocation import RevocationList

CERT_FILE = "ca.crt"
KEY_FILE = "ca.key"
META_FILE = "meta.json"
REVOCATIONS_FILE = "revocations.json"
KEY_MODE = 0o600
CERT_MODE = 0o644
DIR_MODE = 0o700


def _mkdir(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)


def _write_ca(directory: Path, ca: CertificateAuthority) -> None:
    _mkdir(directory)
    write_atomic(directory / KEY_FILE, ca.key_pem(), KEY_MODE)
    write_atomic(directory / CERT_FILE, ca.cert_pem(), CERT_MODE)


def _read_ca(directory: Path) -> CertificateAuthority:
    key_path = directory / KEY_FILE
    cert_path = directory / CERT_FILE
    try:
        mode = stat.S_IMODE(key_path.stat().st_mode)
        if mode & 0o077:
            raise CAStoreError(
                f"{key_path} is accessible by group/others (mode {mode:04o}); "
                f"run: chmod 600 {key_path}",
                path=str(key_path),
            )
        cert_pem = cert_path.read_bytes()
        key_pem = key_path.read_bytes()
    except FileNotFoundError as exc:
        raise CAStoreError(f"CA file missing: {exc.filename}", path=str(exc.filename)) from exc
    try:
        return CertificateAuthority.from_pem(cert_pem, key_pem, now=None)
    except InvalidCA as exc:
        raise CAStoreError(f"CA in {directory} is unusable: {exc}", path=str(directory)) from exc


def _complete(directory: Path) -> bool:
    return (directory / CERT_FILE).is_file() and (directory / KEY_FILE).is_file()


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold the store's lock: one process at a time writes, swaps or recovers."""
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _recover_active(root: Path) -> None:
    """Finish or roll back an interrupted swap of the active CA."""
    active, new, old = root / "active", root / "active.new", root / "active.old"
    if not active.exists():
        if new.is_dir() and _complete(new):
            new.rename(active)
        elif old.is_dir() and _complete(old):
            old.rename(active)
    for leftover in (new, old):
        if leftover.exists():
            shutil.rmtree(leftover)


def has_bundle(root: Path) -> bool:
    """True if ``root`` holds a trust anchor (possibly mid-swap)."""
    return any(_complete(root / d) for d in ("active", "active.new", "active.old"))


def _meta(prev: PreviousCA) -> bytes:
    return (
        json.dumps(
            {
                "fingerprint": prev.authority.fingerprint,
                "retiredAt": prev.retired_at.isoformat(),
                "overlapUntil": prev.overlap_until.isoformat(),
            },
            indent=2,
            sort_keys=True,
        ).encode()
        + b"\n"
    )


def save_bundle(root: Path, bundle: TrustBundle) -> None:
    """Persist ``bundle`` under ``root``; previous CAs no longer in it are deleted (keys too)."""
    _mkdir(root)
    os.chmod(root, DIR_MODE)
    with _locked(root):
        _save_bundle(root, bundle)


def _save_bundle(root: Path, bundle: TrustBundle) -> None:
    prev_root = root / "previous"
    _mkdir(prev_root)
    for prev in bundle.previous:
        directory = prev_root / prev.authority.fingerprint
        meta = _meta(prev)
        meta_path = directory / META_FILE
        if _complete(directory) and meta_path.is_file() and meta_path.read_bytes() == meta:
            continue
        _write_ca(directory, prev.authority)
        write_atomic(directory / META_FILE, meta, CERT_MODE)

    active = root / "active"
    current: str | None = None
    if _complete(active):
        try:
            current = _read_ca(active).fingerprint
        except CAStoreError:
            current = None
    if current != bundle.active.fingerprint:
        new = root / "active.new"
        if new.exists():
            shutil.rmtree(new)
        _write_ca(new, bundle.active)
        fsync_dir(root)
        old = root / "active.old"
        if active.exists():
            if old.exists():
                shutil.rmtree(old)
            active.rename(old)
        new.rename(active)
        fsync_dir(root)
        if old.exists():
            shutil.rmtree(old)

    keep = {p.authority.fingerprint for p in bundle.previous}
    for child in prev_root.iterdir():
        if child.name in keep:
            continue
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()
    fsync_dir(prev_root)


def load_bundle(root: Path) -> TrustBundle:
    """Load the bundle saved by :func:`save_bundle` (recovering an interrupted swap)."""
    if not has_bundle(root):
        raise CAStoreError(f"no trust anchor under {root}", path=str(root))
    with _locked(root):
        return _load_bundle(root)


def _load_bundle(root: Path) -> TrustBundle:
    _recover_active(root)
    active = _read_ca(root / "active")
    previous: list[PreviousCA] = []
    prev_root = root / "previous"
    if prev_root.is_dir():
        for directory in sorted(prev_root.iterdir()):
            meta_path = directory / META_FILE
            if not directory.is_dir() or not meta_path.is_file():
                continue  # incomplete entry of a rotation that never committed
            ca = _read_ca(directory)
            if ca.fingerprint == active.fingerprint:
                continue  # rotation crashed before the active swap
            try:
                meta = json.loads(meta_path.read_text())
                retired_at = aware_utc(datetime.fromisoformat(meta["retiredAt"]))
                overlap_until = aware_utc(datetime.fromisoformat(meta["overlapUntil"]))
                recorded = meta["fingerprint"]
            except (ValueError, KeyError, TypeError) as exc:
                raise CAStoreError(f"{meta_path} is corrupt: {exc}", path=str(meta_path)) from exc
            if recorded != ca.fingerprint or directory.name != ca.fingerprint:
                raise CAStoreError(
                    f"{directory} holds CA {ca.fingerprint[:16]}, not the one its name and "
                    "meta.json record",
                    path=str(directory),
                )
            previous.append(
                PreviousCA(authority=ca, retired_at=retired_at, overlap_until=overlap_until)
            )
    previous.sort(key=lambda p: p.retired_at)
    return TrustBundle(active=active, previous=previous)


def save_revocations(path: Path, revocations: RevocationList) -> None:
    _mkdir(path.parent)
    data = json.dumps(revocations.to_records(), indent=2).encode() + b"\n"
    write_atomic(path, data, CERT_MODE)


def load_revocations(path: Path) -> RevocationList:
    """Load a revocation list; a missing file is an empty list."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return RevocationList()
    except ValueError as exc:
        raise CAStoreError(f"{path} is not valid JSON: {exc}", path=str(path)) from exc
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise CAStoreError(f"{path} must hold a JSON list of records", path=str(path))
    return RevocationList.from_records(raw)
