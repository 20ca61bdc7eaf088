"""A signed manifest of the node artifacts for each Kubernetes version and architecture.

The manifest lists, per ``versions[<k8s version>][<arch>]``, every artifact to install:
its name, version, where to fetch it (a path relative to the artifact source, or an
``https://`` URL), its sha256, where it goes on the host and with which mode.

It travels in an envelope carrying detached ed25519 signatures over the manifest's
canonical JSON bytes (sorted keys, no whitespace)::

    {"manifest": {...}, "signatures": [{"keyID": "ed25519:...", "signature": "<base64>"}]}

A :class:`Keyring` holds the trusted public keys by key id. Keys rotate by signing with the
new and the old key for a while and trusting both; :func:`verify` accepts an envelope with
at least one valid signature from a trusted key. No key expiry is built in: a key stops
being trusted when it is removed from the keyring.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final, Literal

import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import Field, ValidationError, field_validator

from tether.domain.base import Model
from tether.errors import Permanent

__all__ = [
    "API_VERSION",
    "Artifact",
    "ArtifactManifest",
    "ChecksumMismatch",
    "Keyring",
    "ManifestError",
    "SignatureError",
    "canonical_bytes",
    "file_sha256",
    "generate_signing_key",
    "key_id_for",
    "private_key_id",
    "resolve",
    "sign",
    "verify",
    "verify_sha256",
]

API_VERSION: Final = "tether.io/v1alpha1"
#: What an artifact is. Several artifacts may share a name when one component is several
#: files (``cni-plugins``: one per plugin; ``image``: one archive per image).
#: ``pause-image`` is the archive of the pod sandbox image containerd is pinned to;
#: ``image`` archives are imported into containerd too (air-gapped sites have no registry).
ArtifactName = Literal[
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "runc",
    "crictl",
    "kubelet",
    "kubectl",
    "cni-plugins",
    "credential-helper",
    "pause-image",
    "image",
]
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_MINOR = re.compile(r"^\d+\.\d+$")


class ManifestError(Permanent):
    """The manifest cannot be used: malformed, no such version or arch, bad checksum."""


class SignatureError(ManifestError):
    """The envelope is not trusted. ``reason`` is ``unsigned``, ``unknown-key`` or
    ``bad-signature``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ChecksumMismatch(ManifestError):
    """A file's sha256 is not the one the manifest names."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        super().__init__(f"sha256 mismatch for {path}: expected {expected}, got {actual}")
        self.path = path
        self.expected = expected
        self.actual = actual


class Artifact(Model):
    """One file to install on the host."""

    name: ArtifactName
    version: str = Field(min_length=1)
    url: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    install_path: str
    mode: int = Field(ge=0, le=0o7777)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value.startswith("https://"):
            return value
        if "://" in value:
            raise ValueError("url must be a relative path or an https:// URL")
        path = PurePosixPath(value)
        if path.is_absolute() or ".." in path.parts:
            raise ValueError("a relative url must not be absolute or contain '..'")
        return value

    @field_validator("install_path")
    @classmethod
    def _install_path(cls, value: str) -> str:
        path = PurePosixPath(value)
        if not path.is_absolute() or str(path) == "/":
            raise ValueError("installPath must be an absolute file path")
        if ".." in path.parts or str(path) != value:
            raise ValueError("installPath must be normalised (no '..', '.', '//' or '/' end)")
        return value


class ArtifactManifest(Model):
    """``versions[<major.minor.patch>][<arch>]`` → the artifacts to install."""

    api_version: Literal["tether.io/v1alpha1"] = API_VERSION
    kind: Literal["ArtifactManifest"] = "ArtifactManifest"
    versions: dict[str, dict[str, list[Artifact]]]

    @field_validator("versions")
    @classmethod
    def _versions(
        cls, value: dict[str, dict[str, list[Artifact]]]
    ) -> dict[str, dict[str, list[Artifact]]]:
        for version in value:
            if not _VERSION.match(version):
                raise ValueError(f"version {version!r} is not major.minor.patch")
        return value


@dataclass
class Keyring:
    """Trusted ed25519 public keys by key id; several at once so keys can rotate."""

    keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)

    @classmethod
    def from_pems(cls, pems: Mapping[str, bytes | str]) -> Keyring:
        ring = cls()
        for key_id, pem in pems.items():
            ring.add(key_id, pem)
        return ring

    @classmethod
    def from_file(cls, path: Path) -> Keyring:
        """The keyring in a YAML or JSON file mapping key IDs to public PEM keys; raises
        :class:`ManifestError` saying what is wrong with it."""
        try:
            data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"cannot read the keyring {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ManifestError(f"the keyring {path} is neither YAML nor JSON: {exc}") from exc
        if not isinstance(data, dict) or not data:
            raise ManifestError(f"the keyring {path} must map key IDs to public PEM keys")
        try:
            return cls.from_pems({str(k): str(v) for k, v in data.items()})
        except (ManifestError, ValueError) as exc:
            raise ManifestError(f"the keyring {path} has an unusable key: {exc}") from exc

    def add(self, key_id: str, public_pem: bytes | str) -> None:
        data = public_pem.encode() if isinstance(public_pem, str) else public_pem
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise ManifestError(f"key {key_id!r} is not an ed25519 public key")
        self.keys[key_id] = key

    def remove(self, key_id: str) -> None:
        self.keys.pop(key_id, None)

    def __contains__(self, key_id: object) -> bool:
        return key_id in self.keys

    def key_ids(self) -> list[str]:
        return sorted(self.keys)


def key_id_for(public_key: Ed25519PublicKey) -> str:
    """A stable id for a public key: ``ed25519:`` and 16 hex digits of its sha256."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def generate_signing_key() -> tuple[str, bytes, bytes]:
    """A new ed25519 key pair: ``(key_id, private_pem, public_pem)``."""
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key_id_for(public), private_pem, public_pem


def _private_key(private_pem: bytes | str) -> Ed25519PrivateKey:
    data = private_pem.encode() if isinstance(private_pem, str) else private_pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ManifestError(
            f"the signing key is not an unencrypted PEM private key: {exc}"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ManifestError("the signing key is not an ed25519 private key")
    return key


def private_key_id(private_pem: bytes | str) -> str:
    """The key id (:func:`key_id_for`) of an ed25519 private key; raises
    :class:`ManifestError` for anything else."""
    return key_id_for(_private_key(private_pem).public_key())


def canonical_bytes(manifest: ArtifactManifest | Mapping[str, Any]) -> bytes:
    """The bytes that are signed: JSON with sorted keys and no whitespace."""
    data = (
        manifest.model_dump(mode="json", by_alias=True)
        if isinstance(manifest, ArtifactManifest)
        else manifest
    )
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sign(
    manifest: ArtifactManifest | Mapping[str, Any],
    private_pem: bytes | str,
    key_id: str,
) -> dict[str, Any]:
    """Sign ``manifest`` (or add a signature to an existing envelope) with one key.

    Pass an envelope returned by an earlier :func:`sign` to sign with several keys, e.g.
    the new and the old key during a rotation.
    """
    if isinstance(manifest, ArtifactManifest):
        envelope: dict[str, Any] = {
            "manifest": manifest.model_dump(mode="json", by_alias=True),
            "signatures": [],
        }
    elif "manifest" in manifest:
        envelope = {
            "manifest": manifest["manifest"],
            "signatures": list(manifest.get("signatures", [])),
        }
    else:
        model = ArtifactManifest.model_validate(manifest)
        envelope = {"manifest": model.model_dump(mode="json", by_alias=True), "signatures": []}
    signature = _private_key(private_pem).sign(canonical_bytes(envelope["manifest"]))
    envelope["signatures"] = [
        s for s in envelope["signatures"] if not (isinstance(s, dict) and s.get("keyID") == key_id)
    ]
    envelope["signatures"].append(
        {"keyID": key_id, "signature": base64.b64encode(signature).decode()}
    )
    return envelope


def verify(envelope: Mapping[str, Any], keyring: Keyring) -> ArtifactManifest:
    """The manifest in ``envelope`` if at least one signature is valid for a trusted key.

    The signature is checked over the manifest exactly as received, before it is parsed.
    Raises :class:`SignatureError` naming why it is refused (``unsigned``, ``unknown-key``,
    ``bad-signature``) and :class:`ManifestError` if the envelope or manifest is malformed.
    """
    manifest = envelope.get("manifest")
    if not isinstance(manifest, Mapping):
        raise ManifestError("the envelope has no manifest object")
    signatures = envelope.get("signatures") or []
    if not isinstance(signatures, list) or not signatures:
        raise SignatureError("unsigned", "the manifest is unsigned: no signatures")
    payload = canonical_bytes(manifest)
    unknown: list[str] = []
    bad: list[str] = []
    for entry in signatures:
        if not isinstance(entry, Mapping):
            continue
        key_id = str(entry.get("keyID", ""))
        key = keyring.keys.get(key_id)
        if key is None:
            unknown.append(key_id)
            continue
        try:
            key.verify(base64.b64decode(str(entry.get("signature", "")), validate=True), payload)
        except (InvalidSignature, binascii.Error, ValueError):
            bad.append(key_id)
            continue
        try:
            return ArtifactManifest.model_validate(manifest)
        except ValidationError as exc:
            raise ManifestError(f"the signed manifest is invalid: {exc}") from exc
    if bad:
        raise SignatureError(
            "bad-signature",
            f"bad signature from trusted key(s) {', '.join(bad)}: the manifest was altered "
            "or signed with another key",
        )
    if unknown:
        raise SignatureError(
            "unknown-key",
            f"signed only by unknown key(s) {', '.join(unknown)}; "
            f"trusted: {', '.join(keyring.key_ids()) or 'none'}",
        )
    raise SignatureError("unsigned", "the manifest is unsigned: no usable signatures")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def resolve(manifest: ArtifactManifest, version: str, arch: str) -> list[Artifact]:
    """The artifacts for ``version`` (``1.34.2``, or ``1.34`` for the newest patch) and
    ``arch``."""
    version = version.removeprefix("v")
    if _VERSION.match(version):
        chosen = version if version in manifest.versions else None
    elif _MINOR.match(version):
        patches = [v for v in manifest.versions if v.startswith(version + ".")]
        chosen = max(patches, key=_version_key) if patches else None
    else:
        raise ManifestError(f"version {version!r} is neither major.minor nor major.minor.patch")
    if chosen is None:
        known = ", ".join(sorted(manifest.versions, key=_version_key)) or "none"
        raise ManifestError(f"no artifacts for Kubernetes {version} (manifest has: {known})")
    arches = manifest.versions[chosen]
    if arch not in arches:
        raise ManifestError(
            f"no artifacts for Kubernetes {chosen} on {arch} (has: {', '.join(sorted(arches))})"
        )
    return list(arches[arch])


def file_sha256(path: Path) -> str:
    """The hex sha256 of the file at ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise :class:`ChecksumMismatch` unless the file's sha256 is ``expected``."""
    actual = file_sha256(path)
    if actual != expected.lower():
        raise ChecksumMismatch(path, expected, actual)
