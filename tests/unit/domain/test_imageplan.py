"""The plan of an edge OS image: what goes in, what the cache key covers, bad inputs."""

from __future__ import annotations

import json
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
