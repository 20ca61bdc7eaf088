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

With ``installer`` (``tether image build --iso``) the image also carries GRUB for BIOS
(``grub-pc``, installed to no device at build time), an initramfs script
(:data:`INSTALL_SCRIPT`) that acts only when ``tether.install=`` is on the kernel command
line, and an fstab that names the root by file system UUID; and the build packs a
bootable installer ISO (:func:`iso_files`, :func:`mkrescue_argv`). Booted from the ISO,
the image's own kernel and initrd find the ISO, partition an empty target disk, write the
file system into its first partition, grow it, install GRUB from inside it and power
off: afterwards the machine boots from its own disk with :data:`KERNEL_ARGS`.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from tether.domain.models import OSLayer

__all__ = [
    "AGENT_UNIT",
    "AGENT_UNIT_PATH",
    "BASE_PACKAGES",
    "CMDLINE",
    "INSTALLER_PACKAGES",
    "INSTALL_HOOK",
    "INSTALL_SCRIPT",
    "ISO_FILE",
    "ISO_TOOLS",
    "KERNEL_ARGS",
    "PRESEED_DIR",
    "PRESEED_KEYRING",
    "PYTHON",
    "ImageFile",
    "ImageInputs",
    "Preseed",
    "base_key",
    "chroot_commands",
    "files",
    "fs_uuid",
    "image_ref",
    "iso_files",
    "iso_grub_cfg",
    "manifest",
    "missing_iso_tools",
    "mkrescue_argv",
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

KERNEL_ARGS: Final = "console=ttyS0 net.ifnames=0"
"""The kernel arguments every boot gets: the serial console, the first NIC named ``eth0``."""
CMDLINE: Final = f"root=/dev/vda rw {KERNEL_ARGS}"
"""Boot with the disk as ``/dev/vda`` (virtio) and the first NIC named ``eth0``."""
INSTALLER_PACKAGES: Final = ("grub-pc", "fdisk")
"""What an image with an installer ISO has on top: GRUB for BIOS, ``sfdisk``."""

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


GRUB_DEFAULTS_PATH: Final = "/etc/default/grub.d/tether.cfg"
GRUB_DEFAULTS: Final = f"""# tether image build --iso: the installed disk boots like disk.img.
GRUB_TIMEOUT=1
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="{KERNEL_ARGS}"
GRUB_TERMINAL="console serial"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
"""
"""update-grub's settings in an installer image (the root comes by UUID from update-grub)."""

INSTALL_HOOK_PATH: Final = "/etc/initramfs-tools/hooks/tether-install"
INSTALL_HOOK: Final = """#!/bin/sh
# tether image build --iso: what the install script needs in the initramfs.
case "$1" in prereqs) exit 0 ;; esac
. /usr/share/initramfs-tools/hook-functions
copy_exec /sbin/sfdisk /tether/bin/sfdisk
copy_exec /sbin/blkid /tether/bin/blkid
copy_exec /bin/gzip /tether/bin/gzip
manual_add_modules isofs cdrom sr_mod ata_piix ahci nvme virtio_blk virtio_scsi sd_mod \
  usb_storage uas
"""
"""The initramfs-tools hook: real ``sfdisk``, ``blkid`` and ``gzip``, and the modules that
reach a CD, USB, SATA, NVMe or virtio disk."""

ISO_FILE: Final = "installer.iso"
ISO_LABEL: Final = "TETHER_INSTALL"
ISO_KERNEL: Final = "tether/vmlinuz"
ISO_INITRD: Final = "tether/initrd.img"
ISO_DISK: Final = "tether/disk.img.gz"
ISO_INFO: Final = "tether/install.conf"
"""Shell assignments (``image``, ``image_bytes``) the install script reads from the ISO."""

INSTALL_SCRIPT_PATH: Final = "/etc/initramfs-tools/scripts/init-premount/tether-install"
INSTALL_SCRIPT: Final = f"""#!/bin/sh
# tether image build --iso: installs this image onto a disk when the kernel command line
# has tether.install=auto (the first empty disk) or tether.install=/dev/DISK; without it
# this script does nothing. Also:
#   tether.install.force=1       overwrite DISK even when it is not empty
#   tether.install.after=reboot  reboot when done (default: power off)
# A disk is empty when it has no partitions and blkid finds no signature on it.
case "$1" in prereqs) exit 0 ;; esac

target="" force="" after=poweroff
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	tether.install=*) target="${{arg#tether.install=}}" ;;
	tether.install.force=1) force=1 ;;
	tether.install.after=*) after="${{arg#tether.install.after=}}" ;;
	esac
done
[ -n "$target" ] || exit 0

PATH=/tether/bin:$PATH
MEDIUM=/tether-medium
ROOT=/tether-target
say() {{ echo "tether-install: $*"; }}
fail() {{
	say "FAILED: $*"
	say "stopped; powering off in 30 s"
	sleep 30
	poweroff -f
	sleep 3600
}}
is_empty() {{
	for part in /sys/block/"${{1#/dev/}}"/"${{1#/dev/}}"*; do
		[ -e "$part" ] && return 1
	done
	blkid -p "$1" >/dev/null 2>&1
	[ $? -eq 2 ]
}}
big_enough() {{
	read -r sectors <"/sys/block/${{1#/dev/}}/size" || return 1
	read -r ro <"/sys/block/${{1#/dev/}}/ro" || return 1
	[ "$ro" = 0 ] && [ $((sectors * 512)) -ge $((image_bytes + 1048576)) ]
}}

modprobe -q isofs
modprobe -q sr_mod
udevadm settle --timeout=30
mkdir -p "$MEDIUM" "$ROOT"
medium=""
i=0
while [ -z "$medium" ] && [ $i -lt 30 ]; do
	for dev in /dev/sr* /dev/sd* /dev/vd* /dev/nvme* /dev/xvd* /dev/hd*; do
		[ -b "$dev" ] || continue
		mount -t iso9660 -o ro "$dev" "$MEDIUM" 2>/dev/null || continue
		[ -f "$MEDIUM/{ISO_INFO}" ] && {{ medium=$dev; break; }}
		umount "$MEDIUM"
	done
	[ -n "$medium" ] || {{ sleep 1; i=$((i + 1)); }}
done
[ -n "$medium" ] || fail "no installer medium (an ISO 9660 file system with {ISO_INFO})"
. "$MEDIUM/{ISO_INFO}"
say "installing $image ($image_bytes bytes) from $medium"

if [ "$target" = auto ]; then
	# A machine that runs a Tether system already (an ISO left in its drive) is not
	# installed again by itself, not even onto a blank data disk next to it.
	installed=$(blkid -l -t LABEL=tether-root -o device 2>/dev/null)
	[ -z "$installed" ] || fail "a Tether system is installed on $installed: name the \\
disk with tether.install=/dev/DISK (and tether.install.force=1 to overwrite it)"
	target=""
	for dev in /sys/block/vd* /sys/block/sd* /sys/block/nvme* /sys/block/xvd*; do
		disk=/dev/${{dev##*/}}
		[ -b "$disk" ] && big_enough "$disk" && is_empty "$disk" && {{ target=$disk; break; }}
	done
	[ -n "$target" ] || fail "no empty disk of $image_bytes bytes or more: name one with \\
tether.install=/dev/DISK (and tether.install.force=1 to overwrite what is on it)"
fi
[ -b "$target" ] || fail "$target is not a block device"
case "$medium" in
"$target" | "$target"[0-9]* | "$target"p[0-9]*) fail "$target holds the installer medium" ;;
esac
big_enough "$target" || fail "$target is read-only or smaller than $image_bytes bytes + 1 MiB"
if ! is_empty "$target"; then
	[ -n "$force" ] || fail "$target is not empty: tether.install.force=1 overwrites it"
	say "$target is not empty: overwriting it (tether.install.force=1)"
fi

say "partitioning $target"
printf 'label: dos\\nstart=2048, type=83, bootable\\n' |
	sfdisk --quiet --wipe always --wipe-partitions always "$target" || fail "sfdisk $target"
case "$target" in
*[0-9]) part=${{target}}p1 ;;
*) part=${{target}}1 ;;
esac
udevadm settle --timeout=30
i=0
while [ ! -b "$part" ] && [ $i -lt 30 ]; do sleep 1; i=$((i + 1)); done
[ -b "$part" ] || fail "no $part after partitioning"

say "writing the file system to $part"
gzip -dc "$MEDIUM/{ISO_DISK}" >"$part" || fail "writing $part"
sync
mount -t ext4 "$part" "$ROOT" || fail "mounting $part"
mount -t proc proc "$ROOT/proc" && mount -t sysfs sysfs "$ROOT/sys" &&
	mount -t devtmpfs udev "$ROOT/dev" || fail "mounting /proc, /sys, /dev in $ROOT"
say "growing the file system, installing GRUB on $target"
chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 /bin/sh -ec "
	resize2fs $part
	grub-install --target=i386-pc $target
	echo 'grub-pc grub-pc/install_devices multiselect $target' | debconf-set-selections
	update-grub
" || fail "GRUB on $target"
for mnt in "$ROOT/dev" "$ROOT/sys" "$ROOT/proc" "$ROOT" "$MEDIUM"; do umount "$mnt"; done
sync
say "done: $image is on $target, which boots it now ($after)"
if [ "$after" = reboot ]; then reboot -f; else poweroff -f; fi
sleep 3600
"""
"""The initramfs-tools ``init-premount`` script: installs from the ISO, or does nothing."""


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
    installer: bool = False
    """Also an installer ISO: the image carries :data:`INSTALLER_PACKAGES` and the script."""

    @property
    def packages(self) -> list[str]:
        """The base packages (and :data:`INSTALLER_PACKAGES` with ``installer``) and the OS
        layer's ``cloudInit.packages``, sorted, once each."""
        extra = self.os.cloud_init.get("packages", [])
        names = [p for p in extra if isinstance(p, str)] if isinstance(extra, list) else []
        more = INSTALLER_PACKAGES if self.installer else ()
        return sorted({*BASE_PACKAGES, *more, *names})


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


def fs_uuid(inputs: ImageInputs) -> str:
    """The root file system's UUID: fixed by the base, so a rebuild keeps it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, base_key(inputs)))


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
        ImageFile("/etc/fstab", f"{_root_device(inputs)} / ext4 defaults,errors=remount-ro 0 1\n"),
        ImageFile("/etc/locale.gen", "en_US.UTF-8 UTF-8\nC.UTF-8 UTF-8\n"),
        ImageFile("/etc/default/locale", "LANG=C.UTF-8\n"),
        ImageFile(AGENT_UNIT_PATH, AGENT_UNIT),
        ImageFile(BUILD_FILE, build + "\n"),
    ]
    if inputs.installer:
        out += [
            ImageFile(GRUB_DEFAULTS_PATH, GRUB_DEFAULTS),
            ImageFile(INSTALL_HOOK_PATH, INSTALL_HOOK, 0o755),
            ImageFile(INSTALL_SCRIPT_PATH, INSTALL_SCRIPT, 0o755),
        ]
    if os.sysctls:
        lines = "".join(f"{k} = {v}\n" for k, v in sorted(os.sysctls.items()))
        out.append(ImageFile("/etc/sysctl.d/90-tether.conf", lines))
    if os.kernel_modules:
        modules = "".join(f"{m}\n" for m in os.kernel_modules)
        out.append(ImageFile("/etc/modules-load.d/tether.conf", modules))
    out += [ImageFile(f.path, f.content, f.mode) for f in os.files]
    return out


def _root_device(inputs: ImageInputs) -> str:
    """The root in fstab: ``/dev/vda`` for direct kernel boot only; by UUID when the image
    can also be installed onto a disk (there it is a partition)."""
    return f"UUID={fs_uuid(inputs)}" if inputs.installer else "/dev/vda"


def chroot_commands(inputs: ImageInputs) -> list[Sequence[str]]:
    """Commands run inside the root after :func:`files`: the agent, units, locales (and
    with ``installer`` a new initrd, which then holds the install script)."""
    wheels = sorted(inputs.wheels)
    initrd = [["update-initramfs", "-u", "-k", "all"]] if inputs.installer else []
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
        *initrd,
    ]


def image_ref(release: str, sha256: str) -> str:
    """What a profile's OS layer puts in ``image`` for a built disk."""
    return f"tether-debian-{release}@sha256:{sha256}"


ISO_TOOLS: Final = {
    "grub-mkrescue": "grub-common",
    "xorriso": "xorriso",
    "/usr/lib/grub/i386-pc/cdboot.img": "grub-pc-bin",
}
"""What building the installer ISO needs on the build host: each tool (a command, or a
file by absolute path) and the Debian package that has it."""


def missing_iso_tools(present: Collection[str]) -> list[str]:
    """Each of :data:`ISO_TOOLS` not in ``present``, with its Debian package."""
    return [f"{tool} (Debian: {pkg})" for tool, pkg in ISO_TOOLS.items() if tool not in present]


def iso_grub_cfg(inputs: ImageInputs) -> str:
    """The installer ISO's GRUB menu: install onto the first empty disk, then power off
    (the default, after 5 s) or reboot. ``e`` at the menu edits the kernel command line,
    e.g. ``tether.install=/dev/sdb`` (see :data:`INSTALL_SCRIPT`)."""
    what = f"tether-debian-{inputs.release}"
    entries = [
        ("power off", f"tether.install=auto {KERNEL_ARGS}"),
        ("reboot", f"tether.install=auto tether.install.after=reboot {KERNEL_ARGS}"),
    ]
    menu = "".join(
        f'menuentry "Install {what} onto the first empty disk, then {then}" {{\n'
        f"\tlinux /{ISO_KERNEL} {args}\n"
        f"\tinitrd /{ISO_INITRD}\n"
        "}\n"
        for then, args in entries
    )
    return (
        "# tether image build --iso: the installer's BIOS boot menu\n"
        "serial --unit=0 --speed=115200\n"
        "terminal_input console serial\n"
        "terminal_output console serial\n"
        "set timeout=5\n"
        "set default=0\n" + menu
    )


def iso_files(inputs: ImageInputs, *, image: str, image_bytes: int) -> list[ImageFile]:
    """The installer ISO's text files (paths relative to its root); the build adds the
    kernel, initrd and the gzipped disk at :data:`ISO_KERNEL`, :data:`ISO_INITRD`,
    :data:`ISO_DISK`."""
    return [
        ImageFile("boot/grub/grub.cfg", iso_grub_cfg(inputs)),
        ImageFile(ISO_INFO, f"image={image}\nimage_bytes={image_bytes}\n"),
    ]


def mkrescue_argv(iso_dir: str, out: str) -> list[str]:
    """``grub-mkrescue`` for BIOS only (``-d``: the i386-pc modules, so a host with EFI
    GRUB packages makes the same ISO), labelled :data:`ISO_LABEL` (xorriso's ``-volid``)."""
    return [
        "grub-mkrescue",
        "-d",
        "/usr/lib/grub/i386-pc",
        "-o",
        out,
        iso_dir,
        "--",
        "-volid",
        ISO_LABEL,
    ]


def manifest(
    inputs: ImageInputs,
    *,
    build: str,
    disk_sha256: str,
    kernel: str,
    initrd: str,
    versions: Mapping[str, str],
    iso_sha256: str | None = None,
) -> dict[str, Any]:
    """The manifest JSON: the image reference, its build, the artifacts and every input; with
    ``iso_sha256``, the installer ISO (``installer`` is null when none was built)."""
    installer = None
    if iso_sha256 is not None:
        installer = {
            "file": ISO_FILE,
            "sha256": iso_sha256,
            "boot": "bios",
            "target": "tether.install=auto (the first empty disk) or tether.install=/dev/DISK",
            "diskCmdline": f"root=UUID={fs_uuid(inputs)} ro {KERNEL_ARGS}",
        }
    return {
        "image": image_ref(inputs.release, disk_sha256),
        "build": build,
        "disk": {"file": "disk.img", "sha256": disk_sha256, "format": "raw", "fs": "ext4"},
        "kernel": kernel,
        "initrd": initrd,
        "cmdline": CMDLINE,
        "installer": installer,
        "inputs": {
            "release": inputs.release,
            "mirror": inputs.mirror,
            "arch": inputs.arch,
            "variant": "minbase",
            "diskSize": inputs.disk_size,
            "installer": inputs.installer,
            "packages": inputs.packages,
            "baseKey": base_key(inputs),
            "os": inputs.os.model_dump(mode="json", by_alias=True),
            "wheels": dict(sorted(inputs.wheels.items())),
            "artifacts": inputs.preseed.to_json() if inputs.preseed else None,
            "tools": dict(sorted(versions.items())),
        },
    }
