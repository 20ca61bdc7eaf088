"""The plane serves its artifact mirror: a real plane, real mutual TLS, real installs."""

from __future__ import annotations

import hashlib
import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import yaml
from typer.testing import CliRunner

from tether.agent.identity import Identity
from tether.cli import node as node_cli
from tether.domain.resources import Role, TokenCreate
from tether.node.artifacts import Keyring, generate_signing_key
from tether.node.install import FetchError, https_client, install
from tether.node.mirror import sync
from tether.node.tracker import host_path
from tether.services import tokens

from .conftest import Plane

pytestmark = pytest.mark.integration

VERSION = "1.34.2"
SECRET = b"outside the artifact directory: never served"
#: name -> (content, url or None for a relative one, install path, mode)
FILES: dict[str, tuple[bytes, str | None, str, int]] = {
    "kubelet": (b"#!/bin/sh\necho kubelet\n", None, "/usr/local/bin/kubelet", 0o755),
    "kubectl": (b"#!/bin/sh\necho kubectl\n", None, "/usr/local/bin/kubectl", 0o755),
    # An upstream URL nobody can reach: the plane's sha256/<hex> copy must serve it.
    "cni-plugins": (b"cni tarball", "https://127.0.0.1:9/cni.tgz", "/opt/cni/cni.tgz", 0o644),
}
cli = typer.Typer()
node_cli.register(cli)


@dataclass
class Served:
    plane: Plane
    keyring: Keyring
    keyring_file: Path
    outside: Path

    @property
    def source(self) -> str:
        return f"{self.plane.server.agent_url}/agent/v1/artifacts"


def _artifacts() -> dict[str, list[dict[str, Any]]]:
    return {
        VERSION: [
            {"name": name, "content": content, "url": url, "installPath": path, "mode": mode}
            for name, (content, url, path, mode) in FILES.items()
        ]
    }


@pytest.fixture
def served(plane: Plane, tmp_path: Path, write_source: Any) -> Served:
    """The plane's TETHER_ARTIFACTS_DIR filled by `artifacts sync`, plus traps: a secret
    next to it and symlinks inside it that point outside."""
    key_id, private_pem, public_pem = generate_signing_key()
    keyring = Keyring.from_pems({key_id: public_pem})
    write_source(tmp_path / "upstream", _artifacts(), (key_id, private_pem))
    directory = plane.settings.artifacts_dir
    sync(VERSION, source=str(tmp_path / "upstream"), to=directory, keyring=keyring, arch="amd64")
    outside = tmp_path / "secret.txt"
    outside.write_bytes(SECRET)
    (directory / "leak").symlink_to(outside)
    (directory / "escape").symlink_to(tmp_path, target_is_directory=True)
    (directory / "alias.json").symlink_to(directory / "manifest.json")
    ring_file = tmp_path / "keyring.yaml"
    ring_file.write_text(yaml.safe_dump({key_id: public_pem.decode()}))
    return Served(plane, keyring, ring_file, outside)


def enrol_by_hand(plane: Plane, name: str) -> Identity:
    """Register ``name`` with an activation and a CSR, as the agent does; its identity."""
    act = plane.activation()
    ident = Identity(plane.tmp / f"identity-{name}")
    key_pem, csr = ident.new_csr(name)
    body = {"activationID": act.id, "code": act.code, "name": name, "hostID": name}
    with plane.client(None, None) as anonymous:
        response = anonymous.post("/agent/v1/register", json={**body, "csr": csr.decode()})
    assert response.status_code == 201, response.text
    enrolment = response.json()
    ident.save(key_pem, enrolment["certificate"].encode(), enrolment["caBundle"].encode())
    return ident


@pytest.fixture
def host(served: Served) -> Identity:
    return enrol_by_hand(served.plane, "edge-art")


def _assert_installed(root: Path) -> None:
    for content, _, install_path, _ in FILES.values():
        assert host_path(root, install_path).read_bytes() == content


def test_an_enrolled_host_installs_from_the_plane(
    served: Served, host: Identity, tmp_path: Path
) -> None:
    ca = served.plane.server.ca_bundle
    with https_client(ca=ca, cert=host.cert_path, key=host.key_path) as client:
        manifest = client.get(f"{served.source}/manifest.json")
        assert manifest.status_code == 200
        assert manifest.headers["content-type"] == "application/json"
        assert (
            manifest.content == (served.plane.settings.artifacts_dir / "manifest.json").read_bytes()
        )
        kubelet = client.get(f"{served.source}/kubernetes/v{VERSION}/amd64/kubelet")
        assert kubelet.headers["content-type"] == "application/octet-stream"
        assert kubelet.content == FILES["kubelet"][0]
        assert client.get(f"{served.source}/alias.json").content == manifest.content
        report = install(
            VERSION,
            root=tmp_path / "root",
            source=served.source,
            keyring=served.keyring,
            arch="amd64",
            client=client,
        )
    assert sorted(report.installed) == sorted(f[2] for f in FILES.values())
    _assert_installed(tmp_path / "root")

    tls = ["--ca", str(ca), "--cert", str(host.cert_path), "--key", str(host.key_path)]
    common = ["--keyring", str(served.keyring_file), "--arch", "amd64", *tls]
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["node", "install", VERSION, "--root", str(tmp_path / "cli-root"),
         "--source", served.source, *common, "-o", "json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert {i["status"] for i in json.loads(result.stdout)["items"]} == {"installed"}
    _assert_installed(tmp_path / "cli-root")
    result = runner.invoke(
        cli,
        ["artifacts", "sync", "--version", VERSION, "--from", served.source,
         "--to", str(tmp_path / "site-mirror"), *common],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    cni_sha = hashlib.sha256(FILES["cni-plugins"][0]).hexdigest()
    assert (tmp_path / "site-mirror" / "sha256" / cni_sha).read_bytes() == FILES["cni-plugins"][0]


def test_refused_without_an_enrolled_host_certificate(
    served: Served, host: Identity, tmp_path: Path
) -> None:
    plane = served.plane
    ca = plane.server.ca_bundle
    with plane.client(None, None) as anonymous:
        refused = anonymous.get("/agent/v1/artifacts/manifest.json")
        assert refused.status_code == 401
        assert refused.json()["rule"] == "agent.client_cert_required"
        with_token = anonymous.get("/agent/v1/artifacts/manifest.json", headers=plane.admin)
        assert with_token.json()["rule"] == "agent.client_cert_only"
    with plane.client(*plane.sign("never-enrolled")) as stranger:
        refused = stranger.get("/agent/v1/artifacts/manifest.json")
        assert refused.status_code == 401 and refused.json()["rule"] == "agent.not_enrolled"
    with https_client(ca=ca) as client, pytest.raises(FetchError, match="HTTP 401"):
        install(
            VERSION,
            root=tmp_path / "root",
            source=served.source,
            keyring=served.keyring,
            arch="amd64",
            client=client,
        )
    assert not (tmp_path / "root").exists()
    runner = CliRunner()
    ring = str(served.keyring_file)
    args = ["node", "install", VERSION, "--root", str(tmp_path / "root"),
            "--source", served.source, "--keyring", ring, "--arch", "amd64"]  # fmt: skip
    assert runner.invoke(cli, [*args, "--ca", str(ca)]).exit_code == 1
    missing = str(tmp_path / "missing.pem")
    assert runner.invoke(cli, [*args, "--ca", missing]).exit_code == 2
    assert runner.invoke(cli, [*args, "--key", str(host.key_path)]).exit_code == 2
    assert not (tmp_path / "root").exists()


TRAVERSALS = [
    "../secret.txt",
    "%2e%2e/secret.txt",
    "%2E%2E%2Fsecret.txt",
    "..%2f..%2f..%2fetc%2fpasswd",
    "kubernetes/../../secret.txt",
    "kubernetes/%2e%2e/%2e%2e/secret.txt",
    "%2fetc%2fpasswd",
    "/etc/passwd",
    "leak",
    "escape/secret.txt",
    "manifest.json%00",
    "sha256",
    "",
    "no-such-file",
]


@dataclass
class Raw:
    status: int
    content_type: str
    body: bytes


def _get_raw(
    base_url: str, raw_path: str, headers: dict[str, str], ctx: ssl.SSLContext | None
) -> Raw:
    """GET with the path sent exactly as written: http.client does no dot-segment cleanup
    (httpx would turn ``a/../b`` into ``b`` before sending)."""
    url = httpx.URL(base_url)
    assert url.host and url.port
    conn = (
        http.client.HTTPSConnection(url.host, url.port, context=ctx, timeout=30)
        if ctx is not None
        else http.client.HTTPConnection(url.host, url.port, timeout=30)
    )
    try:
        conn.request("GET", raw_path, headers=headers)
        response = conn.getresponse()
        return Raw(response.status, response.getheader("content-type", ""), response.read())
    finally:
        conn.close()


@pytest.mark.parametrize("people", [False, True], ids=["agent-port", "people-api"])
def test_traversal_is_refused_and_leaks_nothing(
    served: Served, host: Identity, people: bool
) -> None:
    plane = served.plane
    ctx: ssl.SSLContext | None = None
    if people:
        with plane.db.session() as s:
            viewer = tokens.issue(s, TokenCreate(name="v", role=Role.VIEWER), default_ttl_days=1)
        base, prefix = plane.server.api_url, "/api/v1/artifacts/"
        headers = {"Authorization": f"Bearer {viewer.token}"}
    else:
        ctx = ssl.create_default_context(cafile=str(plane.server.ca_bundle))
        ctx.load_cert_chain(host.cert_path, host.key_path)
        base, prefix, headers = plane.server.agent_url, "/agent/v1/artifacts/", {}
    ok = _get_raw(base, prefix + "manifest.json", headers, ctx)
    assert ok.status == 200 and ok.content_type == "application/json"
    for path in TRAVERSALS:
        response = _get_raw(base, prefix + path, headers, ctx)
        assert response.status == 404, (path, response.status, response.body)
        assert SECRET not in response.body and b"root:" not in response.body, path
        body = json.loads(response.body)
        assert body["code"] == "not_found" and body["field"] == "path", (path, body)
        assert body["rule"] in ("artifacts.path", "artifacts.not_found"), (path, body)


def test_the_people_api_route_needs_a_token(served: Served) -> None:
    with httpx.Client(base_url=served.plane.server.api_url, timeout=30) as client:
        refused = client.get("/api/v1/artifacts/manifest.json")
        assert refused.status_code == 401 and refused.json()["code"] == "unauthenticated"
        refused = client.get(
            "/api/v1/artifacts/manifest.json", headers={"Authorization": "Bearer tth_x_y"}
        )
        assert refused.status_code == 401
        ok = client.get("/api/v1/artifacts/manifest.json", headers=served.plane.admin)
        assert ok.status_code == 200
        assert ok.content == (served.plane.settings.artifacts_dir / "manifest.json").read_bytes()
