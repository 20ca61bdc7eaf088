"""The CLI's own config file: server URL and token, readable by the user only."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from tether.domain.base import Model
from tether.files import write_atomic


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
    write_atomic(path, yaml.safe_dump(config.model_dump()), 0o600)
    return path
