"""The CA on disk: first-start creation, permissions, atomic writes, crash recovery."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tether.pki import RevocationList, TrustAnchor
from tether.pki.errors import CAStoreError
from tether.pki.store import (
    has_bundle,
    load_bundle,
    load_revocations,
    save_bundle,
    save_revocations,
    write_atomic,
)

MakeCSR = Callable[..., bytes]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_then_loads_the_same_ca(tmp_path: Path, now: datetime) -> None:
    root = tmp_path / "state" / "ca"
    first = TrustAnchor.load_or_create(root, now)
    assert has_bundle(root)
    second = TrustAnchor.load_or_create(root, now + timedelta(days=1))
    assert second.active.fingerprint == first.active.fingerprint
    assert (root / "active" / "ca.crt").read_bytes() == first.active.cert_pem()


def test_private_keys_are_0600_and_dirs_0700(tmp_path: Path, now: datetime) -> None:
    old_umask = os.umask(0o022)
    try:
        root = tmp_path / "ca"
        TrustAnchor.create(now).save(root)
    finally:
        os.umask(old_umask)
    assert _mode(root / "active" / "ca.key") == 0o600
    assert _mode(root / "active" / "ca.crt") == 0o644
    assert _mode(root) == 0o700
    assert _mode(root / "active") == 0o700
    # No temporary files or swap directories are left behind.
    assert sorted(p.name for p in (root / "active").iterdir()) == ["ca.crt", "ca.key"]
    assert sorted(p.name for p in root.iterdir()) == [".lock", "active", "previous"]


def test_write_atomic_replaces_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "secret.key"
    target.write_bytes(b"old")
    target.chmod(0o644)
    write_atomic(target, b"new", 0o600)
    assert target.read_bytes() == b"new"
    assert _mode(target) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]


def test_write_atomic_failure_keeps_old_file(tmp_path: Path) -> None:
    target = tmp_path / "ca.key"
    target.write_bytes(b"old")

    with pytest.raises(TypeError):
        write_atomic(target, 12345, 0o600)  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ca.key"]


def test_load_round_trip_signs_and_verifies(
    tmp_path: Path, now: datetime, make_csr: MakeCSR
) -> None:
    anchor = TrustAnchor.create(now)
    anchor.save(tmp_path)
    loaded = TrustAnchor.load(tmp_path, host_cert_lifetime=timedelta(hours=2))
    pem = loaded.sign_host_csr(make_csr("edge-01"), "edge-01", now=now)
    assert anchor.verify_client_cert(pem, now=now).not_after == now + timedelta(hours=2)


def test_saving_again_is_a_no_op_for_the_active_ca(tmp_path: Path, now: datetime) -> None:
    anchor = TrustAnchor.create(now)
    anchor.save(tmp_path)
    before = (tmp_path / "active" / "ca.key").stat().st_ino
    anchor.save(tmp_path)
    assert (tmp_path / "active" / "ca.key").stat().st_ino == before


def test_recovers_from_crash_between_the_two_renames(tmp_path: Path, now: datetime) -> None:
    anchor = TrustAnchor.create(now)
    anchor.save(tmp_path)
    new = anchor.rotate(now, timedelta(days=1))
    anchor.save(tmp_path)
    # Simulate a crash after "active -> active.old" but before "active.new -> active".
    (tmp_path / "active").rename(tmp_path / "active.new")
    assert has_bundle(tmp_path)
    loaded = load_bundle(tmp_path)
    assert loaded.active.fingerprint == new.fingerprint
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "active", "previous"]


def test_crash_before_swap_keeps_old_active(tmp_path: Path, now: datetime) -> None:
    """previous/<old> written, active.new half written, active untouched: no rotation."""
    anchor = TrustAnchor.create(now)
    anchor.save(tmp_path)
    old = anchor.active
    anchor.rotate(now, timedelta(days=1))
    save_bundle(tmp_path, anchor.bundle)
    # Roll the directory back to "previous written, swap not done".
    (tmp_path / "active").rename(tmp_path / "active.new")
    (tmp_path / "active").mkdir()
    (tmp_path / "active" / "ca.crt").write_bytes(old.cert_pem())
    (tmp_path / "active" / "ca.key").write_bytes(old.key_pem())
    (tmp_path / "active" / "ca.key").chmod(0o600)
    (tmp_path / "active.new" / "ca.key").unlink()
    loaded = load_bundle(tmp_path)
    assert loaded.active.fingerprint == old.fingerprint
    assert loaded.previous == []  # its own previous entry is ignored
    assert not (tmp_path / "active.new").exists()


def test_loose_key_permissions_refused(tmp_path: Path, now: datetime) -> None:
    TrustAnchor.create(now).save(tmp_path)
    (tmp_path / "active" / "ca.key").chmod(0o640)
    with pytest.raises(CAStoreError, match="chmod 600") as err:
        TrustAnchor.load(tmp_path)
    assert err.value.rule == "pki.store"


def test_missing_or_corrupt_files(tmp_path: Path, now: datetime) -> None:
    with pytest.raises(CAStoreError, match="no trust anchor"):
        TrustAnchor.load(tmp_path)
    TrustAnchor.create(now).save(tmp_path)
    (tmp_path / "active" / "ca.crt").write_bytes(b"junk")
    with pytest.raises(CAStoreError, match="unusable"):
        TrustAnchor.load(tmp_path)


def test_mismatched_files_on_disk_refused(tmp_path: Path, now: datetime) -> None:
    TrustAnchor.create(now).save(tmp_path)
    other = TrustAnchor.create(now)
    (tmp_path / "active" / "ca.crt").write_bytes(other.active.cert_pem())
    with pytest.raises(CAStoreError, match="does not belong"):
        TrustAnchor.load(tmp_path)


def test_revocations_file_round_trip(tmp_path: Path, now: datetime) -> None:
    path = tmp_path / "ca" / "revocations.json"
    assert load_revocations(path).entries == []
    rl = RevocationList()
    rl.revoke(12345, "keyCompromise", now)
    save_revocations(path, rl)
    assert load_revocations(path) == rl
    path.write_text("{}")
    with pytest.raises(CAStoreError):
        load_revocations(path)


def test_a_reload_never_breaks_a_rotation_in_progress(tmp_path: Path, now: datetime) -> None:
    """A plane reloads the store while another process (tether pki rotate) writes it: the
    reader must not take the writer's half-written active.new for a crashed swap."""
    import threading

    anchor = TrustAnchor.create(now)
    anchor.save(tmp_path)
    bundles = []
    for day in range(20):
        anchor.rotate(now + timedelta(days=day), timedelta(days=1))
        bundles.append(anchor.bundle)
    failures: list[BaseException] = []
    done = threading.Event()

    def reload() -> None:
        while not done.is_set():
            try:
                load_bundle(tmp_path)
            except BaseException as exc:
                failures.append(exc)

    reader = threading.Thread(target=reload)
    reader.start()
    try:
        for bundle in bundles:
            save_bundle(tmp_path, bundle)
    finally:
        done.set()
        reader.join()
    assert failures == []
    assert load_bundle(tmp_path).active.fingerprint == bundles[-1].active.fingerprint
    assert _mode(tmp_path / ".lock") == 0o600
