"""Options and helpers shared by the ``tether node`` and ``tether artifacts`` commands."""

from __future__ import annotations

from pathlib import Path

import httpx
import typer

from tether.cli.output import errors
from tether.errors import HostError
from tether.node.artifacts import Keyring, ManifestError
from tether.node.install import https_client

EXIT_FAILED = 1
EXIT_USAGE = 2

KeyringOpt = typer.Option(
    ..., "--keyring", help="YAML or JSON mapping of trusted key IDs to public PEM keys."
)
CaOpt = typer.Option(
    None, "--ca", help="PEM CA bundle to trust for https (instead of the system's)."
)
CertOpt = typer.Option(None, "--cert", help="Client certificate (PEM) for https, e.g. the host's.")
KeyOpt = typer.Option(None, "--key", help="Private key (PEM) of --cert.")


def fail(message: str, code: int) -> typer.Exit:
    errors.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code)


def load_keyring(path: Path) -> Keyring:
    """The keyring in ``path`` (``{keyID: public PEM}``); exit 2 if unusable."""
    try:
        return Keyring.from_file(path)
    except ManifestError as exc:
        raise fail(str(exc), EXIT_USAGE) from exc


def https(ca: Path | None, cert: Path | None, key: Path | None) -> httpx.Client:
    """The client for https sources from --ca/--cert/--key; exit 2 if they are unusable."""
    try:
        return https_client(ca=ca, cert=cert, key=key)
    except (HostError, OSError) as exc:
        raise fail(f"cannot use --ca/--cert/--key: {exc}", EXIT_USAGE) from exc
