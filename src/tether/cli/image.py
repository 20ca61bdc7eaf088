"""``tether image build``: an edge OS image from a profile's OS layer (root, debootstrap)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import typer
from pydantic import ValidationError

from tether.cli.client import CLIError
from tether.cli.lazy import help_of
from tether.cli.resources import spec_from

app = typer.Typer(help=help_of("image"), no_args_is_help=True)


@app.command("build")
def build(
    file: Path = typer.Option(..., "-f", "--file", help="A profile version (its layers.os)."),
    out: Path = typer.Option(
        ..., help="Directory for disk.img, vmlinuz, initrd.img, manifest.json (installer.iso)."
    ),
    release: str = typer.Option("bookworm", help="Debian release."),
    mirror: str = typer.Option("http://deb.debian.org/debian", help="Debian mirror."),
    disk_size: str = typer.Option("3G", help="Size of the raw disk image."),
    wheel: Path | None = typer.Option(
        None, help="The tether wheel to install (default: built from this source tree)."
    ),
    artifacts: str | None = typer.Option(
        None,
        "--artifacts",
        help="Pre-seed the node artifacts of the profile's Kubernetes version from this "
        "signed mirror (a directory or https:// URL), for air-gapped sites.",
    ),
    keyring: Path | None = typer.Option(
        None,
        "--keyring",
        help="Trusted artifact-manifest keys: verify --artifacts, and the image keeps them.",
    ),
    iso: bool = typer.Option(
        False,
        "--iso",
        help="Also write installer.iso: boots by BIOS, installs the image onto the first "
        "empty disk (or tether.install=/dev/DISK) and powers off; the disk then boots by "
        "itself (GRUB). Needs grub-mkrescue, xorriso and grub-pc-bin on this host.",
    ),
) -> None:
    """Build a raw disk image with kernel and initrd, and a manifest with its sha256."""
    from tether.domain import imageplan
    from tether.domain.models import OSLayer
    from tether.services import imagebuild

    layers = spec_from(file, []).get("layers")
    try:
        os_layer = OSLayer.model_validate(layers.get("os") if isinstance(layers, dict) else None)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(["layers", "os", *(str(p) for p in first["loc"])])
        raise CLIError(f"{file}: {where}: {first['msg']}", 2) from None
    if wheel is not None and not wheel.name.startswith("tether-"):
        raise CLIError(f"--wheel: {wheel} is not a tether wheel (tether-*.whl)", 2)
    seed: tuple[str, str, Path] | None = None  # Kubernetes version, mirror, keyring
    if artifacts is not None:
        if keyring is None:
            raise CLIError("--keyring: required with --artifacts (it verifies them)", 2)
        seed = (_kubernetes_version(file, layers), artifacts, keyring)
    elif keyring is not None:
        raise CLIError("--keyring: only with --artifacts", 2)
    inputs = imageplan.ImageInputs(
        os=os_layer, release=release, mirror=mirror, disk_size=disk_size, installer=iso
    )
    problems = imageplan.problems(inputs)
    if problems:
        raise CLIError("; ".join(f"--{f}: {rule}" for f, rule in problems), 2)
    missing = imagebuild.missing_iso_tools() if iso else []
    if missing:
        raise CLIError(f"--iso: this host lacks {', '.join(missing)}", 2)
    if os.geteuid() != 0:
        raise CLIError("building an image needs root (debootstrap, chroot)", 2)

    start = time.monotonic()

    def progress(line: str) -> None:
        typer.echo(f"[{time.monotonic() - start:6.1f}s] {line}")

    with tempfile.TemporaryDirectory(prefix="tether-image-") as tmp:
        wheels = Path(tmp) / "wheels"
        staged: Path | None = None
        try:
            preseed = None
            if seed is not None:
                version, source, ring = seed
                staged = Path(tmp) / "artifacts"
                progress(f"artifacts: Kubernetes {version} from {source}")
                preseed = imagebuild.preseed(
                    version,
                    source=source,
                    keyring_file=ring,
                    arch=inputs.arch,
                    into=staged,
                    progress=progress,
                )
            progress("wheels: the agent and its dependencies")
            imagebuild.build_wheels(wheels, release, progress, wheel)
            sums = {w.name: imagebuild.sha256_file(w) for w in sorted(wheels.glob("*.whl"))}
            inputs = imageplan.ImageInputs(
                os=os_layer,
                release=release,
                mirror=mirror,
                disk_size=disk_size,
                wheels=sums,
                preseed=preseed,
                installer=iso,
            )
            doc = imagebuild.build(inputs, out, wheels, progress, staged)
        except imagebuild.BuildError as exc:
            raise CLIError(str(exc), 1) from None
    progress(f"done: {out / 'disk.img'}")
    if iso:
        iso_sha256 = doc["installer"]["sha256"]  # type: ignore[index]
        typer.echo(f"installer: {out / imageplan.ISO_FILE} (sha256 {iso_sha256})")
    typer.echo(f"image: {doc['image']}")
    typer.echo("put it in the profile's OS layer (layers.os.image) to roll it out as a repave.")


def _kubernetes_version(file: Path, layers: object) -> str:
    """The profile's ``layers.kubernetes.version``, whose artifacts ``--artifacts`` seeds."""
    kube = layers.get("kubernetes") if isinstance(layers, dict) else None
    version = kube.get("version") if isinstance(kube, dict) else None
    if not isinstance(version, str) or not version:
        raise CLIError(
            f"--artifacts: {file} names no Kubernetes version (layers.kubernetes.version)", 2
        )
    return version
