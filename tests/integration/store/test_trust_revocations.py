"""The agent server's in-memory revocation list (:class:`tether.services.trust.PlaneTrust`)
against the store, on each backend."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from tether.agent.identity import Identity
from tether.pki.errors import CertificateRevoked
from tether.services.trust import PlaneTrust
from tether.settings import Settings
from tether.store.db import Database

pytestmark = pytest.mark.integration


def test_a_revocation_made_while_a_reload_reads_the_store_stays_in_force(
    settings: Settings, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A host deleted while the periodic reload is reading the store: the reload's rows
    predate the revocation's commit, and swapping them in must not make the revoked
    certificate good again (a heartbeat on it was answered 204 in CI)."""
    trust = PlaneTrust(settings)
    _, csr = Identity(tmp_path / "agent").new_csr("edge-gone")
    _, cert = trust.sign(csr.decode(), "edge-gone")
    der = cert.public_bytes(Encoding.DER)
    identity = trust.verify(der)  # cached, as for a host that has been heartbeating

    real = db.session

    @contextlib.contextmanager
    def racing() -> Iterator[object]:
        with real() as session:
            yield session  # the reload reads the store ...
        # ... and before it swaps in what it read, the host is deleted: its certificate
        # is revoked in this process (the store's row commits after the read).
        trust.note_revoked(identity.serial, identity.issuer_fingerprint)

    monkeypatch.setattr(db, "session", racing)
    trust.load_revocations(db)
    monkeypatch.undo()
    with pytest.raises(CertificateRevoked):
        trust.verify(der)
    assert any(e.serial == identity.serial for e in trust.anchor.revocations.entries)
    trust.load_revocations(db)  # the store still does not show it: still in force
    with pytest.raises(CertificateRevoked):
        trust.verify(der)
