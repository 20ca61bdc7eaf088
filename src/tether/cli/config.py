"""The CLI's own config file: server URL and token, readable by the user only."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from tether.domain.base import Model


class CLIConfig(Model):
    server: str
    token: str


def config_path() -> Path:
    """``$TETHER_CONFIG``, else ``$XDG_CONFIG_HOME/tether/config.yaml`` (``~/.config``)."""
    if explicit := os.environ.get("TETHER_CONFIG"):
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tether" / "config.yaml"


def load() -> CLIConfig | None:
    path = config_path()
    if not path.exists():
        return None
    data = yaml.safe_load(path.read_text()) or {}
    return CLIConfig.model_validate(data)


def save(config: CLIConfig) -> Path:
    """Write the config with 0600 permissions from the first byte (no window of 0644)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(config.model_dump(), handle)
    os.chmod(tmp, 0o600)
    tmp.replace(path)
    return path
