"""The plan of an edge OS image built from a profile's OS layer (``tether image build``).

Pure: no I/O. An image is a Debian root file system made by ``debootstrap
--variant=minbase`` (the *base*, cached by :func:`base_key` because it takes minutes),
then customised by :func:`files` (written into the root) and :func:`chroot_commands` (run
in it), then packed into a raw ext4 disk with its kernel and initrd next to it. The
manifest (:func:`manifest`) records every input, so two builds from the same inputs can
be compared, and the disk's sha256, which the profile's OS layer references as
``image: tether-debian-<release>@sha256:<digest>``.

What the image carries so a host needs nothing from a network but the plane:

- cloud-init with ``datasource_list: [NoCloud, None]`` (no cloud metadata address is
  probed), the networkd renderer, and the OS layer's ``cloudInit`` settings (users and
  SSH keys among them) as a drop-in that cloud-init applies on first boot; the layer's
  ``packages`` are installed at build time instead, and removed from the drop-in;
- the OS layer's files, sysctls and kernel modules;
- the Tether agent, installed into ``/opt/tether`` from wheels built on the build
  machine (``pip install --no-index``), with its systemd unit enabled: it starts once the
  seed (``tether site seed``) has written its config;
- optionally (:class:`Preseed`), for air-gapped sites, the node artifacts of the profile's
  Kubernetes version: a verified mirror at :data:`PRESEED_DIR` and the keyring that
  verified it at :data:`PRESEED_KEYRING`. The agent installs from that mirror first for
  the versions it holds, so a join needs nothing from a network but the plane.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from tether.domain.models import OSLayer

__all__ = [
    "AGENT_UNIT",
    "AGENT_UNIT_PATH",
    "BASE_PACKAGES",
    "CMDLINE",
    "PRESEED_DIR",
    "PRESEED_KEYRING",
    "PYTHON",
    "ImageFile",
    "ImageInputs",
    "Preseed",
    "base_key",
    "chroot_commands",
    "files",
    "image_ref",
    "manifest",
    "problems",
]

BASE_PACKAGES: Final = (
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "iproute2",
    "ca-certificates",
    "cloud-init",
    # cloud-init needs it; minbase does not pull it in through cryptography's Recommends.
    "python3-cffi-backend",
    # without it cloud-init's locale module fails
    "locales",
    "python3-venv",
    "linux-image-amd64",
    "initramfs-tools",
)
"""What every image has: systemd, cloud-init and its needs, Python for the agent, a kernel."""

CMDLINE: Final = "root=/dev/vda rw console=ttyS0 net.ifnames=0"
"""Boot with the disk as ``/dev/vda`` (virtio) and the first NIC named ``eth0``."""

AGENT_VENV: Final = "/opt/tether"
PRESEED_DIR: Final = "/var/lib/tether/artifacts"
"""A pre-seeded image's artifact mirror (a valid ``--source``, see :mod:`tether.node.mirror`)."""
PRESEED_KEYRING: Final = "/etc/tether/artifact-keyring.yaml"
#: Names the build an image came from (the manifest's ``build``): its agent reports it as
#: ``imageBuild`` in the host's inventory, so a re-imaged host shows which image it booted
#: (the image reference, a digest of the disk, cannot be written into that disk).
BUILD_FILE: Final = "/etc/tether/image-build"
"""The keyring that verified the pre-seeded mirror; the agent's default ``node.keyring``."""
AGENT_UNIT_PATH: Final = "/etc/systemd/system/tether-agent.service"
WHEELS_IN_ROOT: Final = "/var/cache/tether-wheels"
PYTHON: Final = {"bookworm": "3.11", "trixie": "3.13"}
"""The Python of each supported release: the agent's wheels are fetched for it."""
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]{0,99}$")
AGENT_UNIT: Final = f"""[Unit]
Description=Tether edge agent
Wants=network-online.target
After=network-online.target
# The seed (tether site seed) writes the config on first boot and then starts the unit
# (so no After=cloud-final.service: that start would wait for itself).
ConditionPathExists=/etc/tether/agent.yaml

[Service]
ExecStart={AGENT_VENV}/bin/tether agent run --config /etc/tether/agent.yaml
Restart=always
RestartSec=5
# The agent makes outbound connections only. It installs the node's artifacts and
# configuration (/usr/local/bin, /etc, /opt/cni), so /usr and /etc stay writable.
NoNewPrivileges=yes
StateDirectory=tether-agent

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class ImageFile:
    """A file the build writes into the root file system."""

    path: str
    content: str
    mode: int = 0o644


@dataclass(frozen=True)
class Preseed:
    """The node artifacts pre-seeded into an image (``tether image build --artifacts``)."""

    kubernetes_version: str
    arch: str
    source: str
    """Where they were mirrored from (a directory or https URL), as given."""
    files: Mapping[str, str]
    """Each file of the mirror (path below :data:`PRESEED_DIR`) with its sha256."""
    keyring_sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "kubernetesVersion": self.kubernetes_version,
            "arch": self.arch,
            "source": self.source,
            "dir": PRESEED_DIR,
            "files": dict(sorted(self.files.items())),
            "keyring": {"path": PRESEED_KEYRING, "sha256": self.keyring_sha256},
        }


@dataclass(frozen=True)
class ImageInputs:
    """Everything an image is built from; the manifest records all of it."""

    os: OSLayer
    release: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    arch: str = "amd64"
    disk_size: str = "3G"
    wheels: Mapping[str, str] = field(default_factory=dict)
    """The agent's wheels by file name, each with its sha256."""
    preseed: Preseed | None = None

    @property
    def packages(self) -> list[str]:
        """The base packages and the OS layer's ``cloudInit.packages``, sorted, once each."""
        extra = self.os.cloud_init.get("packages", [])
        names = [p for p in extra if isinstance(p, str)] if isinstance(extra, list) else []
        return sorted({*BASE_PACKAGES, *names})


def problems(inputs: ImageInputs) -> list[tuple[str, str]]:
    """Each ``(field, rule)`` the inputs break, before anything is downloaded."""
    found = []
    if inputs.release not in PYTHON:
        found.append(("release", f"must be one of {', '.join(sorted(PYTHON))}"))
    if not inputs.mirror.startswith(("http://", "https://", "file:/")):
        found.append(("mirror", "must be an http(s):// or file:/ URL"))
    if not re.fullmatch(r"[1-9][0-9]{0,4}[MG]", inputs.disk_size):
        found.append(("disk-size", "must be a size like 3G or 2048M"))
    extra = inputs.os.cloud_init.get("packages", [])
    if not isinstance(extra, list) or not all(
        isinstance(p, str) and _PACKAGE.match(p) for p in extra
    ):
        found.append(("spec.os.cloudInit.packages", "must be a list of Debian package names"))
    return found


def base_key(inputs: ImageInputs) -> str:
    """The cache key of the debootstrap base: what debootstrap is given, nothing else."""
    doc = {
        "variant": "minbase",
        "release": inputs.release,
        "mirror": inputs.mirror,
        "arch": inputs.arch,
        "packages": inputs.packages,
    }
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    return f"debian-{inputs.release}-{inputs.arch}-{digest[:16]}"


def _cloud_config(os: OSLayer) -> dict[str, Any]:
    settings = {k: v for k, v in os.cloud_init.items() if k != "packages"}
    return {
        "datasource_list": ["NoCloud", "None"],
        "system_info": {"network": {"renderers": ["networkd"]}},
        **settings,
    }


def files(inputs: ImageInputs, *, build: str) -> list[ImageFile]:
    """The files written into the base root, in order (the OS layer's own ones last).
    ``build`` names this build (:data:`BUILD_FILE`)."""
    os = inputs.os
    # JSON is YAML: cloud-init reads it as #cloud-config.
    cloud = "#cloud-config\n" + json.dumps(_cloud_config(os), indent=2) + "\n"
    out = [
        ImageFile("/etc/cloud/cloud.cfg.d/90-tether.cfg", cloud),
        ImageFile("/etc/fstab", "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n"),
        ImageFile("/etc/locale.gen", "en_US.UTF-8 UTF-8\nC.UTF-8 UTF-8\n"),
        ImageFile("/etc/default/locale", "LANG=C.UTF-8\n"),
        ImageFile(AGENT_UNIT_PATH, AGENT_UNIT),
        ImageFile(BUILD_FILE, build + "\n"),
    ]
    if os.sysctls:
        lines = "".join(f"{k} = {v}\n" for k, v in sorted(os.sysctls.items()))
        out.append(ImageFile("/etc/sysctl.d/90-tether.conf", lines))
    if os.kernel_modules:
        modules = "".join(f"{m}\n" for m in os.kernel_modules)
        out.append(ImageFile("/etc/modules-load.d/tether.conf", modules))
    out += [ImageFile(f.path, f.content, f.mode) for f in os.files]
    return out


def chroot_commands(inputs: ImageInputs) -> list[Sequence[str]]:
    """Commands run inside the root after :func:`files`: the agent, units, locales."""
    wheels = sorted(inputs.wheels)
    return [
        ["locale-gen"],
        ["python3", "-m", "venv", AGENT_VENV],
        [
            f"{AGENT_VENV}/bin/pip",
            "install",
            "--no-index",
            "--no-cache-dir",
            "--find-links",
            WHEELS_IN_ROOT,
            *[f"{WHEELS_IN_ROOT}/{w}" for w in wheels if w.startswith("tether-")],
        ],
        ["systemctl", "enable", "tether-agent.service", "systemd-networkd.service"],
    ]


def image_ref(release: str, sha256: str) -> str:
    """What a profile's OS layer puts in ``image`` for a built disk."""
    return f"tether-debian-{release}@sha256:{sha256}"


def manifest(
    inputs: ImageInputs,
    *,
    build: str,
    disk_sha256: str,
    kernel: str,
    initrd: str,
    versions: Mapping[str, str],
) -> dict[str, Any]:
    """The manifest JSON: the image reference, its build, the artifacts and every input."""
    return {
        "image": image_ref(inputs.release, disk_sha256),
        "build": build,
        "disk": {"file": "disk.img", "sha256": disk_sha256, "format": "raw", "fs": "ext4"},
        "kernel": kernel,
        "initrd": initrd,
        "cmdline": CMDLINE,
        "inputs": {
            "release": inputs.release,
            "mirror": inputs.mirror,
            "arch": inputs.arch,
            "variant": "minbase",
            "diskSize": inputs.disk_size,
            "packages": inputs.packages,
            "baseKey": base_key(inputs),
            "os": inputs.os.model_dump(mode="json", by_alias=True),
            "wheels": dict(sorted(inputs.wheels.items())),
            "artifacts": inputs.preseed.to_json() if inputs.preseed else None,
            "tools": dict(sorted(versions.items())),
        },
    }
