"""Fetching from https sources through an httpx client: mirror first, https only."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
import pytest

from tether.errors import Permanent
from tether.node.artifacts import Artifact
from tether.node.install import FetchError, fetch_artifact, fetch_envelope, https_client

SOURCE = "https://plane.example/agent/v1/artifacts"
CONTENT = b"cni plugins tarball"
SHA = hashlib.sha256(CONTENT).hexdigest()
UPSTREAM = "https://dl.example/cni.tgz"
ARTIFACT = Artifact.model_validate(
    {
        "name": "cni-plugins",
        "version": "1.5.0",
        "url": UPSTREAM,
        "sha256": SHA,
        "installPath": "/opt/cni/cni.tgz",
        "mode": 0o644,
    }
)


def _client(routes: dict[str, httpx.Response], seen: list[str]) -> httpx.Client:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return routes.get(str(request.url), httpx.Response(404))

    return httpx.Client(transport=httpx.MockTransport(handle))


def test_an_absolute_url_comes_from_the_https_mirror_first(tmp_path: Path) -> None:
    seen: list[str] = []
    mirror = f"{SOURCE}/sha256/{SHA}"
    client = _client({mirror: httpx.Response(200, content=CONTENT)}, seen)
    fetch_artifact(SOURCE, ARTIFACT, tmp_path / "a", client)
    assert (tmp_path / "a").read_bytes() == CONTENT
    assert seen == [mirror]


@pytest.mark.parametrize("mirror_answer", [httpx.Response(404), httpx.Response(200, content=b"x")])
def test_without_a_good_mirror_copy_the_url_is_fetched(
    tmp_path: Path, mirror_answer: httpx.Response
) -> None:
    seen: list[str] = []
    routes = {
        f"{SOURCE}/sha256/{SHA}": mirror_answer,
        UPSTREAM: httpx.Response(200, content=CONTENT),
    }
    fetch_artifact(SOURCE, ARTIFACT, tmp_path / "a", _client(routes, seen))
    assert (tmp_path / "a").read_bytes() == CONTENT
    assert seen == [f"{SOURCE}/sha256/{SHA}", UPSTREAM]


def test_envelope_through_the_client_and_errors(tmp_path: Path) -> None:
    seen: list[str] = []
    envelope = {"manifest": {}, "signatures": []}
    ok = _client({f"{SOURCE}/manifest.json": httpx.Response(200, json=envelope)}, seen)
    assert fetch_envelope(SOURCE, ok) == envelope
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_envelope("https://elsewhere.example", ok)
    redirect = _client(
        {
            f"{SOURCE}/manifest.json": httpx.Response(
                302, headers={"Location": "http://plane.example/manifest.json"}
            ),
            "http://plane.example/manifest.json": httpx.Response(200, content=json.dumps({})),
        },
        seen,
    )
    with pytest.raises(FetchError, match="non-https"):
        fetch_envelope(SOURCE, redirect)


def test_https_client_options(tmp_path: Path) -> None:
    with pytest.raises(Permanent, match="--cert"):  # a usage error: no retry helps
        https_client(key=tmp_path / "k.pem")
    with pytest.raises(OSError):
        https_client(ca=tmp_path / "missing.pem")
    (tmp_path / "bad.pem").write_text("not a certificate")
    with pytest.raises(OSError):
        https_client(cert=tmp_path / "bad.pem")
    with https_client() as client:
        assert client.follow_redirects
