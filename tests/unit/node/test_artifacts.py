"""Signed artifact manifests: signing, verification, key rotation, resolving, checksums."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from tether.node.artifacts import (
    ArtifactManifest,
    ChecksumMismatch,
    Keyring,
    ManifestError,
    SignatureError,
    canonical_bytes,
    generate_signing_key,
    resolve,
    sign,
    verify,
    verify_sha256,
)

SHA = "a" * 64


def _artifacts(version: str) -> list[dict[str, Any]]:
    return [
        {
            "name": "kubelet",
            "version": version,
            "url": f"kubernetes/v{version}/amd64/kubelet",
            "sha256": SHA,
            "installPath": "/usr/local/bin/kubelet",
            "mode": 0o755,
        },
        {
            "name": "containerd",
            "version": "2.1.4",
            "url": "https://example.com/containerd-2.1.4.tar.gz",
            "sha256": "b" * 64,
            "installPath": "/usr/local/bin/containerd",
            "mode": 0o755,
        },
    ]


def _manifest() -> ArtifactManifest:
    return ArtifactManifest.model_validate(
        {
            "apiVersion": "tether.io/v1alpha1",
            "kind": "ArtifactManifest",
            "versions": {
                "1.34.2": {"amd64": _artifacts("1.34.2"), "arm64": _artifacts("1.34.2")},
                "1.34.10": {"amd64": _artifacts("1.34.10")},
                "1.34.9": {"amd64": _artifacts("1.34.9")},
                "1.33.5": {"amd64": _artifacts("1.33.5")},
            },
        }
    )


def test_sign_and_verify_round_trip() -> None:
    key_id, private_pem, public_pem = generate_signing_key()
    envelope = sign(_manifest(), private_pem, key_id)
    assert [s["keyID"] for s in envelope["signatures"]] == [key_id]
    manifest = verify(envelope, Keyring.from_pems({key_id: public_pem}))
    assert manifest == _manifest()


def test_canonical_bytes_sorted_without_whitespace() -> None:
    data = canonical_bytes({"b": 1, "a": [1, 2]})
    assert data == b'{"a":[1,2],"b":1}'


def test_tampered_manifest_is_refused() -> None:
    key_id, private_pem, public_pem = generate_signing_key()
    envelope = sign(_manifest(), private_pem, key_id)
    tampered = copy.deepcopy(envelope)
    tampered["manifest"]["versions"]["1.34.2"]["amd64"][0]["url"] = "https://evil.example/k"
    with pytest.raises(SignatureError, match="bad signature") as info:
        verify(tampered, Keyring.from_pems({key_id: public_pem}))
    assert info.value.reason == "bad-signature"


def test_unsigned_is_refused() -> None:
    envelope = {"manifest": _manifest().model_dump(mode="json", by_alias=True), "signatures": []}
    with pytest.raises(SignatureError, match="unsigned") as info:
        verify(envelope, Keyring())
    assert info.value.reason == "unsigned"


def test_unknown_key_is_refused() -> None:
    key_id, private_pem, _ = generate_signing_key()
    other_id, _, other_public = generate_signing_key()
    envelope = sign(_manifest(), private_pem, key_id)
    with pytest.raises(SignatureError, match="unknown key") as info:
        verify(envelope, Keyring.from_pems({other_id: other_public}))
    assert info.value.reason == "unknown-key"
    assert key_id in str(info.value)


def test_signature_by_wrong_key_under_trusted_id_is_bad() -> None:
    key_id, _, public_pem = generate_signing_key()
    _, other_private, _ = generate_signing_key()
    envelope = sign(_manifest(), other_private, key_id)
    with pytest.raises(SignatureError) as info:
        verify(envelope, Keyring.from_pems({key_id: public_pem}))
    assert info.value.reason == "bad-signature"


def test_rotation_old_and_new_signatures_verify_with_either_keyring() -> None:
    old_id, old_private, old_public = generate_signing_key()
    new_id, new_private, new_public = generate_signing_key()
    envelope = sign(sign(_manifest(), old_private, old_id), new_private, new_id)
    assert {s["keyID"] for s in envelope["signatures"]} == {old_id, new_id}
    for ring in (
        Keyring.from_pems({old_id: old_public}),
        Keyring.from_pems({new_id: new_public}),
        Keyring.from_pems({old_id: old_public, new_id: new_public}),
    ):
        assert verify(envelope, ring) == _manifest()
    # After rotation the old key is dropped; a manifest signed only by it is refused.
    ring = Keyring.from_pems({old_id: old_public, new_id: new_public})
    ring.remove(old_id)
    with pytest.raises(SignatureError):
        verify(sign(_manifest(), old_private, old_id), ring)


def test_resolve_minor_picks_newest_patch() -> None:
    manifest = _manifest()
    assert {a.version for a in resolve(manifest, "1.34", "amd64")} >= {"1.34.10"}
    assert resolve(manifest, "1.34.2", "arm64")[0].version == "1.34.2"
    assert resolve(manifest, "v1.33", "amd64")[0].version == "1.33.5"
    with pytest.raises(ManifestError, match=r"no artifacts for Kubernetes 1\.35"):
        resolve(manifest, "1.35", "amd64")
    with pytest.raises(ManifestError, match="arm64"):
        resolve(manifest, "1.34", "arm64")  # 1.34.10 has no arm64
    with pytest.raises(ManifestError):
        resolve(manifest, "latest", "amd64")


def test_manifest_validation() -> None:
    bad = _artifacts("1.34.2")[0]
    for field, value in [
        ("sha256", "xyz"),
        ("url", "http://insecure/kubelet"),
        ("url", "../escape"),
        ("installPath", "usr/local/bin/kubelet"),
        ("installPath", "/usr/../etc/passwd"),
        ("name", "sshd"),
    ]:
        with pytest.raises(ValidationError):
            ArtifactManifest.model_validate(
                {"versions": {"1.34.2": {"amd64": [{**bad, field: value}]}}}
            )


def test_verify_sha256(tmp_path: Path) -> None:
    path = tmp_path / "kubelet"
    path.write_bytes(b"kubelet binary")
    verify_sha256(path, hashlib.sha256(b"kubelet binary").hexdigest())
    with pytest.raises(ChecksumMismatch, match="sha256 mismatch") as info:
        verify_sha256(path, SHA)
    assert info.value.expected == SHA
