"""The installer ISO installs the image onto an empty disk; the disk then boots by itself
(GRUB, root by UUID) and the host enrols like one booted from the kernel directly.

Root, QEMU, debootstrap and the ISO tools (grub-mkrescue, xorriso, grub-pc-bin) needed:
skipped without them, a failure under ``CI=true``. ``tether image build --iso`` builds
the image from ``examples/profile.yaml``. Two TCG boots, one after the other: the ISO
with an empty raw disk and no network (the installer powers the VM off, so qemu exits),
then the disk alone, no ``-kernel``, with a site seed, on the site network of
:mod:`test_vm_enrol` (its fixtures and its qemu command line, less the direct kernel
boot). A few minutes each; timings are printed, never asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tether.domain import imageplan
from tether.processes import stop_process
from tether.services import imagebuild

from .conftest import Plane, start_vm, vm_seed, wait_vm_ready
from .test_vm_enrol import (  # noqa: F401 (fixtures: pytest finds them by name)
    BOOT_TIMEOUT,
    GUEST_IP,
    HOST_IP,
    PREFIX,
    REPO,
    _boot,
    _require_vm,
    database_url,
    site_net,
    tune_plane,
)

pytestmark = pytest.mark.integration

INSTALL_TIMEOUT = 1500.0
TARGET_SIZE = 4 << 30  # the image's 3G file system and room to grow it


def _require_iso() -> None:
    _require_vm()
    missing = imagebuild.missing_iso_tools()
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"VM install test: missing {', '.join(missing)}; a failure under CI=true")
    if missing:
        pytest.skip(f"VM install test: missing {', '.join(missing)} (install-test-deps.sh)")


@pytest.fixture(scope="module")
def installer(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """``tether image build --iso`` of the example profile: its manifest, and ``dir``."""
    _require_iso()
    out = tmp_path_factory.mktemp("installer")
    argv = [str(Path(sys.executable).with_name("tether")), "image", "build", "--iso"]
    argv += ["-f", str(REPO / "examples/profile.yaml"), "--out", str(out)]
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    iso = out / imageplan.ISO_FILE
    size = iso.stat().st_size >> 20
    print(f"tether image build --iso: {time.monotonic() - start:.0f} s, ISO {size} MiB")
    doc: dict[str, object] = json.loads((out / "manifest.json").read_text())
    doc["dir"] = str(out)
    return doc


def _install(
    iso: Path, disks: list[Path], console: Path, expect: str = "tether-install: done"
) -> None:
    """Boot ``iso`` with ``disks`` until the installer powers off, having printed
    ``expect``."""
    argv = ["qemu-system-x86_64", "-accel", "tcg,tb-size=256", "-vga", "none"]
    argv += ["-display", "none", "-m", "1536", "-smp", "1", "-nic", "none"]
    for disk in disks:
        argv += ["-drive", f"file={disk},format=raw,if=virtio"]
    argv += ["-cdrom", str(iso), "-boot", "d"]
    argv += ["-serial", f"file:{console}", "-no-reboot"]
    start = time.monotonic()
    qemu = start_vm(argv, console.with_suffix(".err"))
    try:
        code = qemu.wait(INSTALL_TIMEOUT)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        stop_process(qemu, 30)
    log = console.read_text(errors="replace")
    print(f"installer boot until power-off ({expect}): {time.monotonic() - start:.0f} s")
    assert code == 0 and expect in log, log[-6000:]


# A cold build (debootstrap), the install and the disk boot: over the default 600 s.
@pytest.mark.timeout(3600)
def test_the_installer_iso_installs_a_disk_that_boots_and_enrols(
    plane: Plane, installer: dict[str, object], tmp_path: Path
) -> None:
    iso = Path(str(installer["dir"])) / imageplan.ISO_FILE
    assert imagebuild.sha256_file(iso) == installer["installer"]["sha256"]  # type: ignore[index]
    # The disk the ISO installs onto, empty; named disk.img so _boot attaches it.
    disk = tmp_path / "disk" / "disk.img"
    disk.parent.mkdir()
    with disk.open("wb") as f:
        f.truncate(TARGET_SIZE)
    _install(iso, [disk], tmp_path / "install.log")
    with disk.open("rb") as f:
        mbr = f.read(512)
    # GRUB's boot code, and one partition: active, Linux, from sector 2048
    assert mbr[510:] == b"\x55\xaa" and b"GRUB" in mbr[:446]
    assert (mbr[446], mbr[450], int.from_bytes(mbr[454:458], "little")) == (0x80, 0x83, 2048)
    # The ISO booted again (left in the drive) finds the installed system and writes
    # nothing: not on it, and not on a blank data disk next to it.
    installed = imagebuild.sha256_file(disk)
    blank = tmp_path / "data.img"
    with blank.open("wb") as f:
        f.truncate(TARGET_SIZE)
    refused = "tether-install: FAILED: a Tether system is installed on /dev/vda1"
    _install(iso, [disk, blank], tmp_path / "again.log", refused)
    assert imagebuild.sha256_file(disk) == installed
    with blank.open("rb") as f:
        # Its first MiB only: any install writes the partition table into sector 0 first
        # (sfdisk, before the file system at 1 MiB), so an untouched first MiB is no install.
        assert not f.read(1 << 20).strip(b"\0")

    vm = vm_seed(plane, tmp_path / "seed", f"{GUEST_IP}/{PREFIX}", HOST_IP)
    console = tmp_path / "console.log"
    argv = _boot({"dir": str(disk.parent)}, vm.iso, vm.vm_uuid, console)
    for flag in ("-kernel", "-initrd", "-append"):  # the disk boots by itself
        at = argv.index(flag)
        del argv[at : at + 2]
    start = time.monotonic()
    qemu = start_vm(argv, tmp_path / "qemu.err")
    try:
        wait_vm_ready(plane, qemu, vm.name, (console, tmp_path / "qemu.err"), BOOT_TIMEOUT)
        print(f"disk boot to Ready: {time.monotonic() - start:.0f} s")  # never asserted
        log = console.read_text(errors="replace")
        root = str(installer["installer"]["diskCmdline"]).split()[0]  # type: ignore[index]
        assert root.startswith("root=UUID=") and root in log  # GRUB on the disk booted it
        inventory = plane.host(vm.name).status.inventory
        assert inventory["productUuid"] == vm.vm_uuid.lower()
        eth0 = [n["addresses"] for n in inventory["nics"] if n["name"] == "eth0"]
        assert len(eth0) == 1 and GUEST_IP in eth0[0]
        assert vm.activation.code not in log
    finally:
        stop_process(qemu, 30)
