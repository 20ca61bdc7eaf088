"""The plan of an edge OS image: what goes in, what the cache key covers, bad inputs."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tether.cli.client import CLIError
from tether.cli.main import app
from tether.domain import imageplan
from tether.domain.models import OSLayer

LAYER = OSLayer.model_validate(
    {
        "image": "debian-12-tether",
        "cloudInit": {
            "timezone": "UTC",
            "packages": ["htop", "cloud-init"],
            "users": [{"name": "ops", "ssh_authorized_keys": ["ssh-ed25519 AAAA ops@dc1"]}],
        },
        "sysctls": {"vm.max_map_count": "262144", "net.ipv4.ip_forward": "1"},
        "kernelModules": ["ip_vs", "br_netfilter"],
        "files": [{"path": "/etc/motd", "content": "edge\n", "mode": 0o600}],
    }
)
INPUTS = imageplan.ImageInputs(os=LAYER, wheels={"tether-0.1.0-py3-none-any.whl": "ab" * 32})


def _by_path() -> dict[str, imageplan.ImageFile]:
    return {f.path: f for f in imageplan.files(INPUTS, build="b1")}


def test_cloud_init_drop_in_probes_no_cloud_and_carries_the_layer_without_packages() -> None:
    text = _by_path()["/etc/cloud/cloud.cfg.d/90-tether.cfg"].content
    assert text.startswith("#cloud-config\n")
    assert yaml.safe_load(text) == {
        "datasource_list": ["NoCloud", "None"],
        "system_info": {"network": {"renderers": ["networkd"]}},
        "timezone": "UTC",
        "users": [{"name": "ops", "ssh_authorized_keys": ["ssh-ed25519 AAAA ops@dc1"]}],
    }


def test_packages_are_the_base_and_the_layer_once_each_sorted() -> None:
    packages = INPUTS.packages
    assert packages == sorted(set(packages))
    assert {"cloud-init", "python3-cffi-backend", "locales", "linux-image-amd64"} <= set(packages)
    assert "htop" in packages
    assert packages.count("cloud-init") == 1


def test_sysctls_modules_and_files_of_the_layer_are_written() -> None:
    files = _by_path()
    sysctl = files["/etc/sysctl.d/90-tether.conf"].content
    assert sysctl == "net.ipv4.ip_forward = 1\nvm.max_map_count = 262144\n"
    assert files["/etc/modules-load.d/tether.conf"].content == "ip_vs\nbr_netfilter\n"
    assert (files["/etc/motd"].content, files["/etc/motd"].mode) == ("edge\n", 0o600)
    assert imageplan.files(INPUTS, build="b1")[-1].path == "/etc/motd"  # the layer's own files win
    unit = files["/etc/systemd/system/tether-agent.service"].content
    assert "ConditionPathExists=/etc/tether/agent.yaml" in unit
    assert files[imageplan.BUILD_FILE].content == "b1\n"  # reported as the inventory's imageBuild


def test_agent_is_installed_from_the_wheels_without_an_index() -> None:
    pip = next(c for c in imageplan.chroot_commands(INPUTS) if c[0].endswith("/pip"))
    assert "--no-index" in pip
    assert pip[-1] == f"{imageplan.WHEELS_IN_ROOT}/tether-0.1.0-py3-none-any.whl"
    enable = imageplan.chroot_commands(INPUTS)[-1]
    assert enable == ["systemctl", "enable", "tether-agent.service", "systemd-networkd.service"]


def test_base_cache_key_follows_what_debootstrap_gets_and_nothing_else() -> None:
    key = imageplan.base_key(INPUTS)
    tweaked = LAYER.model_copy(update={"sysctls": {}, "files": []})
    assert imageplan.base_key(imageplan.ImageInputs(os=tweaked)) == key
    more = LAYER.model_copy(update={"cloud_init": {"packages": ["htop", "jq"]}})
    assert imageplan.base_key(imageplan.ImageInputs(os=more)) != key
    other = imageplan.ImageInputs(os=LAYER, mirror="http://mirror.dc1/debian")
    assert imageplan.base_key(other) != key


def test_manifest_references_the_disk_by_sha256_and_records_the_inputs() -> None:
    doc = imageplan.manifest(
        INPUTS,
        build="b1",
        disk_sha256="cd" * 32,
        kernel="vmlinuz",
        initrd="initrd.img",
        versions={"a": "1"},
    )
    assert doc["image"] == "tether-debian-bookworm@sha256:" + "cd" * 32
    assert doc["build"] == "b1"  # what the image's agent reports as imageBuild
    assert doc["disk"]["sha256"] == "cd" * 32
    assert "net.ifnames=0" in doc["cmdline"]
    assert doc["inputs"]["packages"] == INPUTS.packages
    assert doc["inputs"]["wheels"] == dict(INPUTS.wheels)
    assert doc["inputs"]["os"]["kernelModules"] == ["ip_vs", "br_netfilter"]
    json.dumps(doc)  # the manifest is written as JSON
    assert doc["inputs"]["baseKey"] == imageplan.base_key(INPUTS)


def test_the_agent_unit_leaves_what_node_plans_write_writable() -> None:
    # A node plan installs kubelet into /usr/local/bin and its config under /etc.
    unit = imageplan.AGENT_UNIT
    assert "ProtectSystem" not in unit and "ReadOnlyPaths" not in unit
    assert "ExecStart=/opt/tether/bin/tether agent run" in unit


def test_manifest_records_the_preseeded_artifacts_and_their_keyring() -> None:
    preseed = imageplan.Preseed(
        kubernetes_version="1.34.2",
        arch="amd64",
        source="/srv/mirror",
        files={"manifest.json": "aa" * 32, "kubernetes/v1.34.2/amd64/kubelet": "bb" * 32},
        keyring_sha256="cc" * 32,
    )
    seeded = replace(INPUTS, preseed=preseed)
    doc = imageplan.manifest(
        seeded, build="b1", disk_sha256="cd" * 32, kernel="k", initrd="i", versions={}
    )
    assert doc["inputs"]["artifacts"] == {
        "kubernetesVersion": "1.34.2",
        "arch": "amd64",
        "source": "/srv/mirror",
        "dir": "/var/lib/tether/artifacts",
        "files": {"kubernetes/v1.34.2/amd64/kubelet": "bb" * 32, "manifest.json": "aa" * 32},
        "keyring": {"path": "/etc/tether/artifact-keyring.yaml", "sha256": "cc" * 32},
    }
    plain = imageplan.manifest(
        INPUTS, build="b1", disk_sha256="cd" * 32, kernel="k", initrd="i", versions={}
    )
    assert plain["inputs"]["artifacts"] is None
    # the base does not depend on what is seeded into the copy of it
    assert imageplan.base_key(seeded) == imageplan.base_key(INPUTS)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"release": "buster"}, "release"),
        ({"mirror": "ftp://mirror"}, "mirror"),
        ({"disk_size": "3T"}, "disk-size"),
        ({"os": LAYER.model_copy(update={"cloud_init": {"packages": ["Bad Name"]}})}, "packages"),
    ],
)
def test_problems_name_the_field(change: dict[str, object], field: str) -> None:
    base = {"os": LAYER} | change
    found = imageplan.problems(imageplan.ImageInputs(**base))  # type: ignore[arg-type]
    assert [f.split(".")[-1] for f, _ in found] == [field]
    assert imageplan.problems(INPUTS) == []


@pytest.mark.parametrize(
    ("profile", "extra", "message"),
    [
        ({"layers": {"os": {"sysctls": {}}}}, [], "layers.os.image: Field required"),
        ({"layers": {"os": {"image": "x"}}}, ["--release", "sid"], "--release: must be one of"),
        (
            {"layers": {"os": {"image": "x"}, "kubernetes": {"version": "1.34.2"}}},
            ["--artifacts", "/srv/mirror"],
            "--keyring: required with --artifacts",
        ),
        (
            {"layers": {"os": {"image": "x"}}},
            ["--artifacts", "/srv/mirror", "--keyring", "ring.yaml"],
            "names no Kubernetes version (layers.kubernetes.version)",
        ),
        ({"layers": {"os": {"image": "x"}}}, ["--keyring", "ring.yaml"], "only with --artifacts"),
    ],
)
def test_cli_refuses_bad_input_before_building(
    tmp_path: Path, profile: dict[str, object], extra: list[str], message: str
) -> None:
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    out = tmp_path / "image"
    result = CliRunner().invoke(app, ["image", "build", "-f", str(path), "--out", str(out), *extra])
    assert isinstance(result.exception, CLIError)
    assert result.exception.exit_code == 2
    assert message in result.exception.message
    assert not out.exists()


ISO_INPUTS = replace(INPUTS, installer=True)


def test_an_installer_image_adds_grub_and_its_script_and_names_the_root_by_uuid() -> None:
    plain, iso = imageplan.files(INPUTS, build="b1"), imageplan.files(ISO_INPUTS, build="b1")
    assert {"grub-pc", "fdisk"} <= set(ISO_INPUTS.packages)
    assert "grub-pc" not in INPUTS.packages
    assert imageplan.base_key(ISO_INPUTS) != imageplan.base_key(INPUTS)
    fstab = {f.path: f.content for f in iso}["/etc/fstab"]
    assert fstab.startswith(f"UUID={imageplan.fs_uuid(ISO_INPUTS)} / ext4 ")
    # the direct-kernel-boot image stays as it was
    assert {f.path: f.content for f in plain}["/etc/fstab"].startswith("/dev/vda / ext4 ")
    added = {f.path for f in iso} - {f.path for f in plain}
    assert added == {
        "/etc/default/grub.d/tether.cfg",
        "/etc/initramfs-tools/hooks/tether-install",
        "/etc/initramfs-tools/scripts/init-premount/tether-install",
    }
    modes = {f.path: f.mode for f in iso}
    assert modes["/etc/initramfs-tools/hooks/tether-install"] == 0o755
    assert modes["/etc/initramfs-tools/scripts/init-premount/tether-install"] == 0o755
    # the initrd is made again once the script is in place
    assert imageplan.chroot_commands(ISO_INPUTS)[-1] == ["update-initramfs", "-u", "-k", "all"]
    assert ["update-initramfs", "-u", "-k", "all"] not in imageplan.chroot_commands(INPUTS)


def test_the_installed_disk_boots_with_the_direct_boot_kernel_arguments() -> None:
    assert imageplan.CMDLINE == f"root=/dev/vda rw {imageplan.KERNEL_ARGS}"
    assert f'GRUB_CMDLINE_LINUX="{imageplan.KERNEL_ARGS}"' in imageplan.GRUB_DEFAULTS
    assert "GRUB_DISABLE_OS_PROBER=true" in imageplan.GRUB_DEFAULTS
    assert imageplan.fs_uuid(ISO_INPUTS) == imageplan.fs_uuid(replace(ISO_INPUTS, wheels={}))


def _run_install_script(tmp_path: Path, cmdline: str) -> subprocess.CompletedProcess[str]:
    """The install script with ``cmdline`` for /proc/cmdline and nothing but ``cat`` on
    PATH: any other command it ran would fail."""
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "cat").symlink_to(shutil.which("cat") or "/bin/cat")
    script = tmp_path / "tether-install"
    script.write_text(imageplan.INSTALL_SCRIPT.replace("/proc/cmdline", str(tmp_path / "cmdline")))
    return subprocess.run(
        ["/bin/sh", str(script)],
        env={"PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_install_script_does_nothing_without_tether_install(tmp_path: Path) -> None:
    done = _run_install_script(tmp_path, f"root=UUID=x ro {imageplan.KERNEL_ARGS}")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_the_install_script_is_valid_sh_and_refuses_non_empty_disks_unless_forced() -> None:
    script = imageplan.INSTALL_SCRIPT
    subprocess.run(["/bin/sh", "-n"], input=script, text=True, check=True)
    assert script.index('[ -n "$target" ] || exit 0') < script.index("sfdisk")
    # the emptiness and the medium are checked before anything is written
    checks = ('is_empty "$target"', 'fail "$target holds the installer medium"', "big_enough")
    assert all(script.index(c) < script.index("sfdisk --quiet") for c in checks)
    assert "tether.install.force=1) force=1" in script
    # auto never installs next to an installed Tether system (a blank data disk included)
    assert script.index("LABEL=tether-root") < script.index("for dev in /sys/block/vd*")
    assert "grub-install --target=i386-pc $target" in script
    assert "update-grub" in script and "resize2fs $part" in script
    hook = imageplan.INSTALL_HOOK
    assert all(f"copy_exec /{d}/{t}" in hook for d, t in [("sbin", "sfdisk"), ("bin", "gzip")])
    assert "isofs" in hook and "sr_mod" in hook


def test_the_iso_menu_installs_onto_the_first_empty_disk_with_the_image_kernel() -> None:
    cfg = imageplan.iso_grub_cfg(ISO_INPUTS)
    entries = [line.strip() for line in cfg.splitlines() if line.strip().startswith("linux ")]
    assert entries[0] == (
        f"linux /{imageplan.ISO_KERNEL} tether.install=auto {imageplan.KERNEL_ARGS}"
    )
    assert "tether.install.after=reboot" in entries[1]
    assert f"initrd /{imageplan.ISO_INITRD}" in cfg
    assert "set default=0" in cfg and "serial --unit=0" in cfg


def test_the_iso_info_is_what_the_install_script_reads(tmp_path: Path) -> None:
    files = imageplan.iso_files(ISO_INPUTS, image="tether-debian-bookworm@sha256:ab", image_bytes=3)
    info = {f.path: f.content for f in files}[imageplan.ISO_INFO]
    assert f'. "$MEDIUM/{imageplan.ISO_INFO}"' in imageplan.INSTALL_SCRIPT
    (tmp_path / "info").write_text(info)
    done = subprocess.run(
        ["/bin/sh", "-c", f'. {tmp_path / "info"}; echo "$image $image_bytes"'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == "tether-debian-bookworm@sha256:ab 3\n"
    assert f"$MEDIUM/{imageplan.ISO_DISK}" in imageplan.INSTALL_SCRIPT


def test_grub_mkrescue_makes_a_bios_iso_with_a_label() -> None:
    argv = imageplan.mkrescue_argv("/tmp/iso", "/tmp/out/installer.iso")
    assert argv[0] == "grub-mkrescue"
    assert argv[argv.index("-d") + 1] == "/usr/lib/grub/i386-pc"
    assert argv[argv.index("-o") + 1] == "/tmp/out/installer.iso"
    assert argv[argv.index("--") :] == ["--", "-volid", imageplan.ISO_LABEL]


def test_missing_iso_tools_are_named_with_their_debian_package() -> None:
    assert imageplan.missing_iso_tools(imageplan.ISO_TOOLS) == []
    assert imageplan.missing_iso_tools({"grub-mkrescue"}) == [
        "xorriso (Debian: xorriso)",
        "/usr/lib/grub/i386-pc/cdboot.img (Debian: grub-pc-bin)",
    ]


def test_manifest_records_whether_the_installer_iso_was_built() -> None:
    args = {"build": "b1", "disk_sha256": "cd" * 32, "kernel": "k", "initrd": "i", "versions": {}}
    plain = imageplan.manifest(INPUTS, **args)  # type: ignore[arg-type]
    assert plain["installer"] is None and plain["inputs"]["installer"] is False
    doc = imageplan.manifest(ISO_INPUTS, iso_sha256="ef" * 32, **args)  # type: ignore[arg-type]
    assert doc["inputs"]["installer"] is True
    assert doc["installer"]["file"] == "installer.iso"
    assert doc["installer"]["sha256"] == "ef" * 32
    assert doc["installer"]["boot"] == "bios"
    uuid = imageplan.fs_uuid(ISO_INPUTS)
    assert doc["installer"]["diskCmdline"] == f"root=UUID={uuid} ro {imageplan.KERNEL_ARGS}"
    json.dumps(doc)


def test_cli_iso_names_the_tools_this_host_lacks_before_building(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tether.services import imagebuild

    monkeypatch.setattr(imagebuild, "missing_iso_tools", lambda: ["xorriso (Debian: xorriso)"])
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump({"layers": {"os": {"image": "x"}}}))
    out = tmp_path / "image"
    argv = ["image", "build", "-f", str(path), "--out", str(out), "--iso"]
    result = CliRunner().invoke(app, argv)
    assert isinstance(result.exception, CLIError)
    assert result.exception.exit_code == 2
    assert result.exception.message == "--iso: this host lacks xorriso (Debian: xorriso)"
    assert not out.exists()
