"""A VM booted from a Tether-built image, with a site seed, enrols itself over mTLS.

Root, debootstrap, QEMU and mkfs.ext4 needed: skipped without them, a failure under
``CI=true``. ``tether image build`` (the user's command) builds the image from
``examples/profile.yaml``; its debootstrap base is cached under ~/.cache/tether/images.
The VM runs under TCG (this machine's /dev/kvm cannot run it) in a network namespace of
the site: a tap device on a bridge, and a veth pair to the plane's agent server on the
host side. The seed gives the guest a static address; cloud-init writes the agent's
config and starts the agent the image carries; the host shows up Ready under the name
its DMI UUID (``-uuid``) gives. One VM at a time, about four minutes to boot.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tether.domain import imageplan
from tether.processes import stop_process
from tether.services import desired
from tether.settings import Settings

from .conftest import Plane, host_events, start_vm, vm_seed, wait_vm_ready

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
NETNS = "tether-vm-site"
HOST_IP, GUEST_IP, PREFIX = "10.199.0.1", "10.199.0.10", 24
TOOLS = ("qemu-system-x86_64", "debootstrap", "mkfs.ext4", "chroot")
BOOT_TIMEOUT = 900.0
KUBERNETES = "1.34.2"  # examples/profile.yaml's version, whose artifacts the image carries


def _require_vm() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    why = "needs root" if os.geteuid() != 0 else f"missing {', '.join(missing)}" if missing else ""
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"VM test {why}; under CI=true this is a failure, not a skip")
        pytest.skip(f"VM test {why} (scripts/install-test-deps.sh installs the tools)")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: one VM boot takes minutes on two cores, the store is not under test."""
    return f"sqlite:///{tmp_path / 'tether.db'}"


def _ip(*argv: str, ns: bool = False) -> None:
    prefix = ["ip", "netns", "exec", NETNS] if ns else []
    subprocess.run([*prefix, "ip", *argv], check=True, capture_output=True)


@pytest.fixture
def site_net() -> Iterator[str]:
    """The site's namespace: bridge ``br0`` with ``tap0`` for the VM, veth to the host."""
    _require_vm()
    subprocess.run(["ip", "netns", "del", NETNS], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", "tvm-host"], capture_output=True, check=False)
    _ip("netns", "add", NETNS)
    try:
        _ip("link", "add", "tvm-host", "type", "veth", "peer", "name", "tvm-site", "netns", NETNS)
        _ip("addr", "add", f"{HOST_IP}/{PREFIX}", "dev", "tvm-host")
        _ip("link", "set", "tvm-host", "up")
        _ip("link", "add", "br0", "type", "bridge", ns=True)
        _ip("tuntap", "add", "dev", "tap0", "mode", "tap", ns=True)
        for link in ("tvm-site", "tap0"):
            _ip("link", "set", link, "master", "br0", ns=True)
        for link in ("lo", "br0", "tvm-site", "tap0"):
            _ip("link", "set", link, "up", ns=True)
        yield NETNS
    finally:
        # Deleting the namespace deletes the bridge, the tap and the veth pair with it.
        subprocess.run(["ip", "netns", "del", NETNS], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", "tvm-host"], capture_output=True, check=False)


@pytest.fixture
def tune_plane(site_net: str) -> Callable[[Settings], None]:
    def tune(settings: Settings) -> None:
        settings.agent.host = HOST_IP
        settings.pki.server_names = HOST_IP
        settings.agent.heartbeat_seconds = 2

    return tune


def _build(out: Path, *extra: str) -> dict[str, object]:
    """``tether image build`` of the example profile into ``out``: its manifest."""
    argv = [str(Path(sys.executable).with_name("tether")), "image", "build"]
    argv += ["-f", str(REPO / "examples/profile.yaml"), "--out", str(out), *extra]
    start = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    print(f"tether image build: {time.monotonic() - start:.0f} s")  # timing, never asserted
    doc: dict[str, object] = json.loads((out / "manifest.json").read_text())
    doc["dir"] = str(out)
    return doc


@pytest.fixture(scope="module")
def image(
    tmp_path_factory: pytest.TempPathFactory, signed_sources: Callable[..., object]
) -> dict[str, object]:
    """The image ``tether image build`` makes from the example profile, with the node
    artifacts of its Kubernetes version pre-seeded from a signed mirror."""
    _require_vm()
    out = tmp_path_factory.mktemp("image")
    mirror = tmp_path_factory.mktemp("mirror")
    signed_sources(mirror, (KUBERNETES,))
    keyring = str(mirror / "keyring.yaml")
    return _build(out, "--artifacts", str(mirror / "source"), "--keyring", keyring)


@pytest.fixture(scope="module")
def next_image(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Another build of the profile (another build id and disk digest): what a re-image
    installs."""
    _require_vm()
    return _build(tmp_path_factory.mktemp("next-image"))


def _boot(image: dict[str, object], seed_iso: Path, vm_uuid: str, console: Path) -> list[str]:
    d = Path(str(image["dir"]))
    return [
        "ip", "netns", "exec", NETNS, "qemu-system-x86_64",
        "-accel", "tcg,tb-size=256", "-vga", "none", "-display", "none",
        "-m", "1536", "-smp", "1", "-uuid", vm_uuid,
        "-kernel", str(d / "vmlinuz"), "-initrd", str(d / "initrd.img"),
        "-append", imageplan.CMDLINE,
        # snapshot=on: the guest's writes go to a temporary file, the built disk stays as is
        "-drive", f"file={d / 'disk.img'},format=raw,if=virtio,snapshot=on",
        "-drive", f"file={seed_iso},media=cdrom,readonly=on",
        "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
        "-device", "virtio-net-pci,netdev=n0",
        "-serial", f"file:{console}", "-no-reboot",
    ]  # fmt: skip


@pytest.mark.timeout(3600)  # two builds and two boots: minutes each on two cores
def test_a_vm_from_the_image_enrols_itself_turns_ready_and_is_reimaged(
    plane: Plane, image: dict[str, object], next_image: dict[str, object], tmp_path: Path
) -> None:
    """Boot, enrol, install from the image's artifacts; then a re-image: the plane sends
    the plan, the agent reports it and reboots (QEMU exits: ``-no-reboot``), the plane
    resets the enrolment with that report; the next image boots with the same seed and
    UUID (the test plays the site's installer) and enrols again under the same name."""
    # Two uses: the seed serves the host's re-image too.
    vm = vm_seed(plane, tmp_path / "seed", f"{GUEST_IP}/{PREFIX}", HOST_IP, uses=2)
    name, act = vm.name, vm.activation
    console = tmp_path / "console.log"
    start = time.monotonic()
    qemu = start_vm(_boot(image, vm.iso, vm.vm_uuid, console), tmp_path / "qemu.err")
    vms = [qemu]
    try:
        logs = (console, tmp_path / "qemu.err")
        wait_vm_ready(plane, qemu, name, logs, BOOT_TIMEOUT, build=str(image["build"]))
        print(f"VM boot to Ready: {time.monotonic() - start:.0f} s")  # timing, never asserted
        host = plane.host(name)
        inventory = host.status.inventory
        assert inventory["productUuid"] == vm.vm_uuid.lower()
        assert inventory["os"]["id"] == "debian"
        eth0 = [n["addresses"] for n in inventory["nics"] if n["name"] == "eth0"]
        assert len(eth0) == 1 and GUEST_IP in eth0[0]  # the seed's static address
        assert host.spec.site == "dc1"
        assert act.code not in console.read_text(errors="replace")

        # The image's pre-seeded artifacts install with its own keyring; this plane
        # serves no artifacts, so nothing came from a network.
        assert image["inputs"]["artifacts"]["kubernetesVersion"] == KUBERNETES  # type: ignore[index]
        with plane.db.session() as s:
            digest = desired.set_desired(
                s, name, {"node": {"action": "install", "version": KUBERNETES}}
            ).hash

        def applied() -> bool:
            with plane.db.session() as s:
                return desired.get_status(s, name).applied_hash == digest

        plane.wait_for(applied, 300, f"{name} applied the install plan")
        with plane.db.session() as s:
            result = desired.get_status(s, name).applied_result or {}
        assert result.get("ok") is True, result

        # The re-image.
        start = time.monotonic()
        plan = {"node": {"action": "reimage", "image": next_image["image"]}}
        with plane.db.session() as s:
            desired.set_desired(s, name, plan)
        assert qemu.wait(BOOT_TIMEOUT) == 0  # the guest rebooted: -no-reboot ends QEMU
        assert "EnrolmentReset" in [e["reason"] for e in host_events(plane, name)]
        console = tmp_path / "console-next.log"
        logs = (console, tmp_path / "qemu-next.err")
        vms.append(start_vm(_boot(next_image, vm.iso, vm.vm_uuid, console), logs[1]))
        wait_vm_ready(plane, vms[-1], name, logs, BOOT_TIMEOUT, build=str(next_image["build"]))
        print(f"re-image to Ready: {time.monotonic() - start:.0f} s")  # timing, never asserted
        assert [e["reason"] for e in host_events(plane, name)].count("Enrolled") == 2
        with plane.db.session() as s:  # the new image did not get the re-image plan again
            assert desired.get_document(s, name) is None
    finally:
        for vm_process in vms:
            stop_process(vm_process, 30)
