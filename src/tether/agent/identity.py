"""The host's identity on disk: node name, host id, private key and certificate.

::

    <stateDir>/            0700
      identity.json        {"name", "hostID"}          0600
      host.key             P-256 private key (PKCS#8)  0600, never leaves the host
      host.crt             certificate from the plane  0600
      ca.pem               CAs to trust for the plane  0600 (refreshed at renewal)

Files are written to a temporary file created 0600 and renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tether.domain.agent import Inventory, node_name_from_uuid
from tether.files import write_atomic

KEY, CERT, CA, IDENTITY = "host.key", "host.crt", "ca.pem", "identity.json"


def write_private(path: Path, data: bytes) -> None:
    """Key, certificate and identity files: 0600 in a 0700 directory, atomically."""
    write_atomic(path, data, 0o600)


@dataclass(frozen=True)
class Names:
    name: str
    host_id: str


def choose_names(state_dir: Path, configured: str | None, inventory: Inventory) -> Names:
    """Host id and node name: configured, else from the DMI UUID, else random (kept in
    identity.json so a restart keeps it). The machine-id and DMI UUID also go into the
    inventory."""
    path = state_dir / IDENTITY
    saved: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        saved = json.loads(path.read_text())
    random_part = saved.get("random") or secrets.token_hex(6)
    name = configured or node_name_from_uuid(inventory.product_uuid) or f"host-{random_part}"
    host_id = name
    record = {"name": name, "hostID": host_id, "random": random_part}
    if record != saved:
        write_private(path, json.dumps(record).encode())
    return Names(name, host_id)


@dataclass
class Identity:
    state_dir: Path

    @property
    def key_path(self) -> Path:
        return self.state_dir / KEY

    @property
    def cert_path(self) -> Path:
        return self.state_dir / CERT

    @property
    def ca_path(self) -> Path:
        return self.state_dir / CA

    def enrolled(self) -> bool:
        return self.key_path.is_file() and self.cert_path.is_file()

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_path.read_bytes())

    def node_name(self) -> str:
        cn = self.certificate().subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        return cn if isinstance(cn, str) else cn.decode()

    def new_csr(self, name: str) -> tuple[bytes, bytes]:
        """A fresh P-256 key and a CSR for ``CN=name`` (``DNS:name``); returns (key, csr)."""
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256())
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return key_pem, csr.public_bytes(serialization.Encoding.PEM)

    def save(self, key_pem: bytes, cert_pem: bytes, ca_pem: bytes) -> None:
        """Store a new key + certificate (+ CA bundle); the key first, the cert last."""
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.state_dir, 0o700)
        write_private(self.ca_path, ca_pem)
        write_private(self.key_path.with_suffix(".key.new"), key_pem)
        write_private(self.cert_path.with_suffix(".crt.new"), cert_pem)
        os.replace(self.key_path.with_suffix(".key.new"), self.key_path)
        os.replace(self.cert_path.with_suffix(".crt.new"), self.cert_path)

    def reset(self) -> list[Path]:
        """Forget the enrolment (``tether agent reset``); the plane must allow re-enrolment."""
        gone = []
        for name in (KEY, CERT, CA, IDENTITY):
            path = self.state_dir / name
            if path.exists():
                path.unlink()
                gone.append(path)
        return gone
