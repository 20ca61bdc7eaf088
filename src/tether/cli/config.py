"""The CLI's own config file: server URL and token, readable by the user only.

Every command that talks to the plane reads it, so it stays cheap: a plain dataclass
(no validation models) and YAML parsed only when the file exists.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from tether.cli.client import CLIError
from tether.files import parse_yaml_or_json, write_atomic


@dataclass(frozen=True)
class CLIConfig:
    server: str
    token: str


def config_path() -> Path:
    """``$TETHER_CONFIG``, else ``$XDG_CONFIG_HOME/tether/config.yaml`` (``~/.config``)."""
    if explicit := os.environ.get("TETHER_CONFIG"):
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tether" / "config.yaml"


def load() -> CLIConfig | None:
    """The saved config, or ``None`` when there is none; a :class:`CLIError` naming the
    file when it is not a mapping of the two strings ``server`` and ``token``."""
    path = config_path()
    if not path.exists():
        return None
    import yaml

    try:
        data = parse_yaml_or_json(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise CLIError(f"{path} is not YAML: {error}") from error
    fields = {"server", "token"}
    if not isinstance(data, dict) or set(data) != fields:
        raise CLIError(f"{path}: the config holds exactly 'server' and 'token'")
    if not all(isinstance(data[name], str) for name in fields):
        raise CLIError(f"{path}: 'server' and 'token' must be strings")
    return CLIConfig(server=data["server"], token=data["token"])


def save(config: CLIConfig) -> Path:
    """Write the config with 0600 permissions from the first byte (no window of 0644)."""
    import yaml

    path = config_path()
    write_atomic(path, yaml.safe_dump(asdict(config)), 0o600)
    return path
