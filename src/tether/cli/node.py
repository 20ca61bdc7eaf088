"""``tether node install`` and ``tether artifacts sync``: node artifacts from a signed
manifest.

Exit codes: 0 ok, 1 the install or sync failed (untrusted manifest, unknown version,
fetch or checksum failure; nothing installed), 2 usage errors (an unreadable or malformed
keyring file).
"""

from __future__ import annotations

from pathlib import Path

import typer

from tether.cli.nodeopts import (
    EXIT_FAILED,
    CaOpt,
    CertOpt,
    KeyOpt,
    KeyringOpt,
    fail,
    https,
    load_keyring,
)
from tether.cli.output import Format, OutputOption, console, field, progress, render
from tether.node.artifacts import ManifestError
from tether.node.install import install
from tether.node.mirror import SyncedFile, sync

app = typer.Typer(help="Install Kubernetes node components on this host.", no_args_is_help=True)
artifacts_app = typer.Typer(help="Signed node artifacts: mirror them.", no_args_is_help=True)

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
    except (ManifestError, OSError) as exc:
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
    except (ManifestError, OSError) as exc:
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


def register(root: typer.Typer) -> None:
    """Mount ``tether node ...`` and ``tether artifacts ...`` on the root command."""
    root.add_typer(app, name="node")
    root.add_typer(artifacts_app, name="artifacts")
