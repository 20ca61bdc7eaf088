"""``tether node install`` and ``tether artifacts``: node artifacts from a signed manifest.

``tether artifacts keygen | add | publish`` build a signed mirror from real files,
``tether artifacts sync`` copies one version of another mirror.

Exit codes: 0 ok, 1 the install, sync or publish failed (untrusted manifest, unknown
version, fetch or checksum failure; nothing installed), 2 usage errors (an unreadable or
malformed keyring or key file, an invalid artifact).
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import typer

from tether.cli.lazy import help_of
from tether.cli.nodeopts import (
    EXIT_FAILED,
    EXIT_USAGE,
    CaOpt,
    CertOpt,
    KeyOpt,
    KeyringOpt,
    fail,
    https,
    load_keyring,
)
from tether.cli.output import Format, OutputOption, console, field, progress, render
from tether.errors import HostError
from tether.files import write_atomic
from tether.node.artifacts import ArtifactName, ManifestError, generate_signing_key
from tether.node.install import default_arch, install
from tether.node.mirror import SyncedFile, add, publish_draft, sync

app = typer.Typer(help=help_of("node"), no_args_is_help=True)
artifacts_app = typer.Typer(help=help_of("artifacts"), no_args_is_help=True)

INSTALL_COLUMNS = [
    ("NAME", field("name")),
    ("VERSION", field("version")),
    ("PATH", field("path")),
    ("STATUS", field("status")),
]
SYNC_COLUMNS = INSTALL_COLUMNS


@app.command("install")
def install_command(
    version: str = typer.Argument(..., help="Kubernetes version: 1.34.2, or 1.34 (newest)."),
    root: Path = typer.Option(Path("/"), "--root", help="Install under this root prefix."),
    source: str = typer.Option(..., "--source", help="Mirror directory or https:// base URL."),
    keyring: Path = KeyringOpt,
    arch: str | None = typer.Option(None, "--arch", help="amd64 or arm64 (default: this host)."),
    ca: Path | None = CaOpt,
    cert: Path | None = CertOpt,
    key: Path | None = KeyOpt,
    output: Format = OutputOption,
) -> None:
    """Install the node artifacts of VERSION from a signed manifest; nothing is installed
    unless the manifest is trusted and every checksum matches."""
    ring = load_keyring(keyring)
    client = https(ca, cert, key)
    try:
        with client:
            report = install(
                version, root=root, source=source, keyring=ring, arch=arch, client=client
            )
    except (HostError, OSError) as exc:
        raise fail(f"nothing installed: {exc}", EXIT_FAILED) from exc
    if output.tabular:
        render([i.as_dict() for i in report.items], output, INSTALL_COLUMNS)
        console.print(f"{report.summary()}; tracker {report.tracker}", highlight=False)
    else:
        render(report.as_dict(), output)


@artifacts_app.command("sync")
def sync_command(
    version: str = typer.Option(..., "--version", help="Kubernetes version to mirror."),
    source: str = typer.Option(..., "--from", help="Source directory or https:// base URL."),
    to: Path = typer.Option(..., "--to", help="Mirror directory to fill."),
    keyring: Path = KeyringOpt,
    arch: str | None = typer.Option(None, "--arch", help="amd64 or arm64 (default: this host)."),
    ca: Path | None = CaOpt,
    cert: Path | None = CertOpt,
    key: Path | None = KeyOpt,
    output: Format = OutputOption,
) -> None:
    """Mirror the signed manifest and one version's verified artifacts into a directory
    (usable as --source on air-gapped hosts, or served by the plane from
    TETHER_ARTIFACTS_DIR)."""
    ring = load_keyring(keyring)
    client = https(ca, cert, key)
    try:
        with client, progress(f"mirroring Kubernetes {version}") as bar:

            def done(item: SyncedFile, total: int) -> None:
                bar.update(total=total, advance=1, note=f"{item.name} {item.status}")

            report = sync(
                version,
                source=source,
                to=to,
                keyring=ring,
                arch=arch,
                client=client,
                on_file=done,
            )
    except (HostError, OSError) as exc:
        raise fail(f"sync failed: {exc}", EXIT_FAILED) from exc
    if output.tabular:
        render([f.as_dict() for f in report.files], output, SYNC_COLUMNS)
        fetched = sum(1 for f in report.files if f.status == "fetched")
        console.print(
            f"Kubernetes {report.version} ({report.arch}) mirrored to {report.to}: "
            f"{fetched} fetched, {len(report.files) - fetched} unchanged",
            highlight=False,
        )
    else:
        render(report.as_dict(), output)


@artifacts_app.command("keygen")
def keygen_command(
    out: Path = typer.Option(..., "--out", help="Directory for the key and the keyring."),
    output: Format = OutputOption,
) -> None:
    """Make an ed25519 signing key: OUT/signing-key.pem (0600, keep it off the hosts) and
    OUT/keyring.yaml (the public key, for --keyring on the hosts)."""
    key, ring = out / "signing-key.pem", out / "keyring.yaml"
    if key.exists():
        raise fail(f"{key} exists: refusing to replace a signing key", EXIT_USAGE)
    key_id, private_pem, public_pem = generate_signing_key()
    write_atomic(key, private_pem, 0o600, dir_mode=0o700)
    write_atomic(
        ring, f"{key_id}: |\n  " + public_pem.decode().strip().replace("\n", "\n  ") + "\n", 0o644
    )
    result = {"keyID": key_id, "signingKey": str(key), "keyring": str(ring)}
    if output is Format.TABLE:
        console.print(f"key {key_id}: private key {key}, keyring {ring}", highlight=False)
    else:
        render(result, output)


def _mode(value: str) -> int:
    try:
        return int(value, 8)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an octal mode such as 0755") from None


@artifacts_app.command("add")
def add_command(
    mirror: Path = typer.Option(..., "--mirror", help="The mirror directory."),
    kubernetes: str = typer.Option(..., "--kubernetes", help="Kubernetes version: 1.37.2."),
    name: str = typer.Option(..., "--name", help="Artifact name: kubelet, containerd, ..."),
    version: str = typer.Option(..., "--version", help="The artifact's own version."),
    file: Path = typer.Option(..., "--file", exists=True, dir_okay=False, help="The file."),
    install_path: str = typer.Option(..., "--install-path", help="Where it goes on hosts."),
    mode: str = typer.Option("0755", "--mode", help="Its mode on hosts (octal)."),
    arch: str | None = typer.Option(None, "--arch", help="amd64 or arm64 (default: this host)."),
    output: Format = OutputOption,
) -> None:
    """Copy FILE into the mirror and list it in the unsigned draft for one Kubernetes
    version (replacing what installed to the same path); `publish` signs the draft."""
    try:
        artifact = add(
            mirror,
            kubernetes=kubernetes.removeprefix("v"),
            name=cast(ArtifactName, name),
            version=version,
            file=file,
            install_path=install_path,
            mode=_mode(mode),
            arch=arch or default_arch(),
        )
    except ManifestError as exc:
        raise fail(str(exc), EXIT_USAGE) from exc
    except OSError as exc:
        raise fail(f"cannot add {file}: {exc}", EXIT_FAILED) from exc
    if output is Format.TABLE:
        console.print(
            f"added {artifact.name} {artifact.version} -> {artifact.install_path} "
            f"(sha256 {artifact.sha256[:12]}) for Kubernetes {kubernetes}",
            highlight=False,
        )
    else:
        render(artifact.model_dump(mode="json", by_alias=True), output)


@artifacts_app.command("publish")
def publish_command(
    mirror: Path = typer.Option(..., "--mirror", help="The mirror directory."),
    key: Path = typer.Option(..., "--key", help="The ed25519 signing key (PEM)."),
    output: Format = OutputOption,
) -> None:
    """Sign the mirror's draft and write manifest.json: hosts see the new artifacts from
    now on. Every listed file's sha256 is checked first."""
    try:
        private_pem = key.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read the signing key: {exc}", EXIT_USAGE) from exc
    try:
        key_id, manifest = publish_draft(mirror, private_pem)
    except ManifestError as exc:
        raise fail(f"not published: {exc}", EXIT_FAILED) from exc
    rows = [
        {"kubernetes": version, "arch": arch, "artifacts": len(items)}
        for version, arches in sorted(manifest.versions.items())
        for arch, items in sorted(arches.items())
    ]
    if output is Format.TABLE:
        render(
            rows,
            output,
            [("KUBERNETES", field("kubernetes")), ("ARCH", field("arch")),
             ("ARTIFACTS", field("artifacts"))],
        )  # fmt: skip
        console.print(f"signed with {key_id}: {mirror / 'manifest.json'}", highlight=False)
    else:
        render({"keyID": key_id, "versions": rows}, output)


def register(root: typer.Typer) -> None:
    """Mount ``tether node ...`` and ``tether artifacts ...`` on the root command."""
    root.add_typer(app, name="node")
    root.add_typer(artifacts_app, name="artifacts")
