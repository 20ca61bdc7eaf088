"""Seed images per site: a cloud-init NoCloud seed that installs and enrols the agent.

:func:`seed_files` renders ``user-data`` (``#cloud-config``: the CA bundle, the agent
config with the plane's URL and the activation, a systemd unit, and commands that
install the agent) and ``meta-data``; :func:`iso_image` packs them into an ISO 9660
image labelled ``cidata`` (with Joliet and Rock Ridge names, which cloud-init's NoCloud
reader needs for ``user-data``/``meta-data``) built with pycdlib.

The activation code is a secret: ``user-data`` and the ISO are written 0600 and the
code is never logged. It is one-use-per-host and expires, but treat the image like a
password until the activation is used up or revoked.
"""

from __future__ import annotations

import io
from pathlib import Path

import pycdlib
import yaml

from tether import __version__
from tether.files import write_atomic

AGENT_CONFIG = "/etc/tether/agent.yaml"
CA_FILE = "/etc/tether/ca.pem"
CODE_FILE = "/etc/tether/activation-code"
STATE_DIR = "/var/lib/tether-agent"
UNIT = """[Unit]
Description=Tether edge agent
Wants=network-online.target
After=network-online.target

[Service]
ExecStart=/opt/tether/bin/tether agent run --config /etc/tether/agent.yaml
Restart=always
RestartSec=5
# The agent makes outbound connections only.
NoNewPrivileges=yes
ProtectSystem=full
ReadWritePaths=/var/lib/tether-agent

[Install]
WantedBy=multi-user.target
"""


class _Literal(str):
    pass


def _literal(dumper: yaml.SafeDumper, data: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")


yaml.SafeDumper.add_representer(_Literal, _literal)


def seed_files(
    *,
    agent_url: str,
    ca_bundle: str,
    activation_id: str,
    code: str,
    site: str,
    install: str | None = None,
) -> dict[str, bytes]:
    """The NoCloud files (``user-data``, ``meta-data``) for hosts of ``site``."""
    agent_config = {
        "server": agent_url,
        "caFile": CA_FILE,
        "stateDir": STATE_DIR,
        "activation": {"id": activation_id, "codeFile": CODE_FILE},
        "tags": {"static": {"tether.io/site": site}},
    }
    install_cmd = install or f"/opt/tether/bin/pip install --quiet 'tether=={__version__}'"
    cloud_config = {
        "write_files": [
            {"path": CA_FILE, "permissions": "0644", "content": _Literal(ca_bundle)},
            {"path": CODE_FILE, "permissions": "0600", "content": _Literal(code + "\n")},
            {
                "path": AGENT_CONFIG,
                "permissions": "0600",
                "content": _Literal(yaml.safe_dump(agent_config, sort_keys=False)),
            },
            {
                "path": "/etc/systemd/system/tether-agent.service",
                "permissions": "0644",
                "content": _Literal(UNIT),
            },
        ],
        "packages": ["python3-venv"],
        "runcmd": [
            ["python3", "-m", "venv", "/opt/tether"],
            ["sh", "-c", install_cmd],
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "tether-agent.service"],
        ],
    }
    user_data = "#cloud-config\n" + yaml.safe_dump(cloud_config, sort_keys=False, width=1000)
    meta_data = f"instance-id: tether-{site}-{activation_id}\n"
    return {"user-data": user_data.encode(), "meta-data": meta_data.encode()}


def iso_image(files: dict[str, bytes]) -> bytes:
    """An ISO 9660 image labelled ``cidata`` holding ``files`` (Joliet + Rock Ridge names)."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for name, data in sorted(files.items()):
        short = name.replace("-", "").upper()[:8]
        iso.add_fp(
            io.BytesIO(data),
            len(data),
            f"/{short}.;1",
            rr_name=name,
            joliet_path=f"/{name}",
        )
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()


def read_iso(data: bytes) -> tuple[str, dict[str, bytes]]:
    """The volume label and the files (by Rock Ridge name) of a seed image."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        files: dict[str, bytes] = {}
        for child in iso.list_children(rr_path="/"):
            if child is None or child.is_dir():
                continue
            name = iso.full_path_from_dirrecord(child, rockridge=True).lstrip("/")
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path=f"/{name}")
            files[name] = buf.getvalue()
    finally:
        iso.close()
    return label, files


def write_seed(out: Path, files: dict[str, bytes]) -> list[Path]:
    """Write the files and ``seed.iso`` to ``out``; anything holding the code is 0600."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in [*files.items(), ("seed.iso", iso_image(files))]:
        path = out / name
        write_atomic(path, data, 0o644 if name == "meta-data" else 0o600, dir_mode=None)
        written.append(path)
    return written
