"""Seed images per site: a cloud-init NoCloud seed that configures and enrols the agent.

:func:`seed_files` renders ``user-data`` (``#cloud-config``: the CA bundle, the agent
config with the plane's URL and the activation, and a command that starts the agent),
``meta-data`` and ``network-config`` (cloud-init's network config version 2: DHCP, or a
static address with gateway and DNS servers); :func:`iso_image` packs them into an ISO
9660 image labelled ``cidata`` (with Joliet and Rock Ridge names, which cloud-init's
NoCloud reader needs) built with pycdlib.

The seed pairs with an image from ``tether image build``, which carries the agent and its
systemd unit, so by default nothing is downloaded at boot. For an OS someone else
installed, ``install`` gives a shell command that installs the agent into
``/opt/tether``; the seed then also writes the unit.

The activation code is a secret: ``user-data`` and the ISO are written 0600 and the
code is never logged. It is one-use-per-host and expires, but treat the image like a
password until the activation is used up or revoked.
"""

from __future__ import annotations

import io
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pycdlib
import yaml

from tether.domain.imageplan import AGENT_UNIT, AGENT_UNIT_PATH
from tether.files import write_atomic

AGENT_CONFIG = "/etc/tether/agent.yaml"
CA_FILE = "/etc/tether/ca.pem"
CODE_FILE = "/etc/tether/activation-code"
STATE_DIR = "/var/lib/tether-agent"


class _Literal(str):
    pass


def _literal(dumper: yaml.SafeDumper, data: _Literal) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")


yaml.SafeDumper.add_representer(_Literal, _literal)


@dataclass(frozen=True)
class StaticAddress:
    """A static IPv4 or IPv6 address of the host's first Ethernet interface."""

    address: str
    gateway: str | None = None
    dns: Sequence[str] = ()


def static_address_problems(static: StaticAddress) -> list[tuple[str, str]]:
    """Each ``(field, rule)`` the static address breaks: the CLI names its options."""
    try:
        if "/" not in static.address:
            raise ValueError("no prefix length")
        iface = ipaddress.ip_interface(static.address)
    except ValueError:
        return [("address", "must be an address with a prefix length, like 10.0.0.5/24")]
    problems = []
    if static.gateway is not None:
        try:
            gateway = ipaddress.ip_address(static.gateway)
        except ValueError:
            problems.append(("gateway", "must be an IP address, like 10.0.0.1"))
        else:
            if gateway not in iface.network or gateway == iface.ip:
                problems.append(("gateway", f"must be another address inside {iface.network}"))
    for server in static.dns:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            problems.append(("dns", f"{server!r} is not an IP address"))
    return problems


INTERFACE = "eth0"
"""The interface a seed configures: images from ``tether image build`` boot with
``net.ifnames=0``, so the first NIC is ``eth0`` on every host."""
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def interface_problems(interface: str) -> list[tuple[str, str]]:
    """Why ``interface`` is no Linux interface name (as ``(field, rule)``)."""
    if _IFNAME.match(interface):
        return []
    return [("interface", "must be 1-15 letters, digits, '_', '.' or '-', like eth0")]


def network_config(static: StaticAddress | None, interface: str = INTERFACE) -> dict[str, object]:
    """cloud-init network config v2 for ``interface``: DHCP, or the ``static`` address.

    The interface is named, not matched by a glob or MAC: cloud-init's own renderers
    (networkd, ENI) ignore ``match: name`` globs and use the key as the interface name. One
    DHCP seed fits every host of a site; a static address belongs to one host.
    """
    eth: dict[str, object]
    if static is None:
        eth = {"dhcp4": True, "dhcp6": False}
    else:
        eth = {"dhcp4": False, "dhcp6": False, "addresses": [static.address]}
        if static.gateway is not None:
            family = ipaddress.ip_address(static.gateway).version
            to = "0.0.0.0/0" if family == 4 else "::/0"
            eth["routes"] = [{"to": to, "via": static.gateway}]
        if static.dns:
            eth["nameservers"] = {"addresses": list(static.dns)}
    return {"version": 2, "ethernets": {interface: eth}}


def seed_files(
    *,
    agent_url: str,
    ca_bundle: str,
    activation_id: str,
    code: str,
    site: str,
    static: StaticAddress | None = None,
    interface: str = INTERFACE,
    install: str | None = None,
) -> dict[str, bytes]:
    """The NoCloud files (``user-data``, ``meta-data``, ``network-config``) for ``site``."""
    agent_config = {
        "server": agent_url,
        "caFile": CA_FILE,
        "stateDir": STATE_DIR,
        "activation": {"id": activation_id, "codeFile": CODE_FILE},
        "tags": {"static": {"tether.io/site": site}},
    }
    write_files: list[dict[str, object]] = [
        {"path": CA_FILE, "permissions": "0644", "content": _Literal(ca_bundle)},
        {"path": CODE_FILE, "permissions": "0600", "content": _Literal(code + "\n")},
        {
            "path": AGENT_CONFIG,
            "permissions": "0600",
            "content": _Literal(yaml.safe_dump(agent_config, sort_keys=False)),
        },
    ]
    cloud_config: dict[str, object] = {"write_files": write_files}
    runcmd: list[list[str]] = []
    if install is not None:
        write_files.append(
            {"path": AGENT_UNIT_PATH, "permissions": "0644", "content": _Literal(AGENT_UNIT)}
        )
        cloud_config["packages"] = ["python3-venv"]
        runcmd += [["python3", "-m", "venv", "/opt/tether"], ["sh", "-c", install]]
    runcmd += [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "tether-agent.service"],
    ]
    cloud_config["runcmd"] = runcmd
    user_data = "#cloud-config\n" + yaml.safe_dump(cloud_config, sort_keys=False, width=1000)
    meta_data = f"instance-id: tether-{site}-{activation_id}\n"
    network = yaml.safe_dump(network_config(static, interface), sort_keys=False)
    return {
        "user-data": user_data.encode(),
        "meta-data": meta_data.encode(),
        "network-config": network.encode(),
    }


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
        public = name in {"meta-data", "network-config"}
        write_atomic(path, data, 0o644 if public else 0o600, dir_mode=None)
        written.append(path)
    return written
