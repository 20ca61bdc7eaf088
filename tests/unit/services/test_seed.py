"""The site seed: what ``user-data`` and ``network-config`` tell cloud-init, and bad options."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tether.cli.client import CLIError
from tether.cli.main import app
from tether.services import seed

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
STATIC = seed.StaticAddress("10.20.0.5/24", "10.20.0.1", ("10.20.0.2", "10.20.0.3"))


def _raw(**kwargs: Any) -> dict[str, bytes]:
    return seed.seed_files(
        agent_url="https://plane.example:8444",
        ca_bundle=CA,
        activation_id="act-abcdefghijkl",
        code="SECRET-CODE",
        site="dc1",
        **kwargs,
    )


def _files(**kwargs: Any) -> dict[str, Any]:
    return {name: yaml.safe_load(data) for name, data in _raw(**kwargs).items()}


def test_default_seed_installs_nothing_and_starts_the_agent_the_image_carries() -> None:
    cloud = _files()["user-data"]
    assert "packages" not in cloud
    assert cloud["runcmd"] == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "tether-agent.service"],
    ]
    paths = [f["path"] for f in cloud["write_files"]]
    assert paths == ["/etc/tether/ca.pem", "/etc/tether/activation-code", "/etc/tether/agent.yaml"]


def test_install_command_adds_the_venv_the_command_and_the_unit() -> None:
    cloud = _files(install="/opt/tether/bin/pip install /mnt/tether.whl")["user-data"]
    assert cloud["packages"] == ["python3-venv"]
    assert cloud["runcmd"][:2] == [
        ["python3", "-m", "venv", "/opt/tether"],
        ["sh", "-c", "/opt/tether/bin/pip install /mnt/tether.whl"],
    ]
    unit = {f["path"]: f["content"] for f in cloud["write_files"]}[seed.AGENT_UNIT_PATH]
    assert "ExecStart=/opt/tether/bin/tether agent run" in unit


def test_network_config_is_dhcp_by_default() -> None:
    assert _files()["network-config"] == {
        "version": 2,
        "ethernets": {"eth0": {"dhcp4": True, "dhcp6": False}},
    }
    other = _files(interface="ens3")["network-config"]["ethernets"]
    assert other == {"ens3": {"dhcp4": True, "dhcp6": False}}


def test_network_config_static_address_gateway_and_dns() -> None:
    assert _files(static=STATIC)["network-config"]["ethernets"]["eth0"] == {
        "dhcp4": False,
        "dhcp6": False,
        "addresses": ["10.20.0.5/24"],
        "routes": [{"to": "0.0.0.0/0", "via": "10.20.0.1"}],
        "nameservers": {"addresses": ["10.20.0.2", "10.20.0.3"]},
    }
    v6 = seed.StaticAddress("fd00::5/64", "fd00::1")
    route = _files(static=v6)["network-config"]["ethernets"]["eth0"]["routes"]
    assert route == [{"to": "::/0", "via": "fd00::1"}]


@pytest.mark.parametrize(
    ("static", "expected"),
    [
        (seed.StaticAddress("10.20.0.5"), [("address", "prefix length")]),
        (seed.StaticAddress("10.20.0.300/24"), [("address", "prefix length")]),
        (seed.StaticAddress("10.20.0.5/24", "10.30.0.1"), [("gateway", "inside 10.20.0.0/24")]),
        (seed.StaticAddress("10.20.0.5/24", "10.20.0.5"), [("gateway", "another address")]),
        (seed.StaticAddress("10.20.0.5/24", "gw"), [("gateway", "IP address")]),
        (seed.StaticAddress("10.20.0.5/24", None, ("1.1.1.1", "dns")), [("dns", "'dns'")]),
        (STATIC, []),
    ],
)
def test_static_address_problems_name_the_field(
    static: seed.StaticAddress, expected: list[tuple[str, str]]
) -> None:
    problems = seed.static_address_problems(static)
    assert [field for field, _ in problems] == [field for field, _ in expected]
    for (_, rule), (_, part) in zip(problems, expected, strict=True):
        assert part in rule


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--address", "10.20.0.5"], "--address: must be an address with a prefix length"),
        (["--address", "10.20.0.5/24", "--gateway", "10.9.0.1"], "--gateway: must be another"),
        (["--gateway", "10.20.0.1"], "--gateway and --dns need --address"),
        (["--interface", "eth 0"], "--interface: must be 1-15 letters"),
    ],
)
def test_cli_refuses_a_bad_network_before_writing_or_calling_the_plane(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    out = tmp_path / "seed"
    args = ["site", "seed", "--site", "dc1", "--activation", "act-1", "--code", "C"]
    result = CliRunner().invoke(app, [*args, "--out", str(out), *extra])
    assert isinstance(result.exception, CLIError)
    assert result.exception.exit_code == 2
    assert result.exception.message.startswith(message)
    assert not out.exists()


# cloud-init's own validator: Debian's cloud-init unpacked by scripts/install-test-deps.sh
CLOUD_INIT = Path(
    os.environ.get("TETHER_CLOUD_INIT_DIR", Path.home() / ".cache/tether/cloud-init")
) / ("usr/lib/python3/dist-packages")
CHECK = textwrap.dedent(
    """
    import sys, yaml
    from cloudinit.config.schema import get_schema, validate_cloudconfig_schema
    from cloudinit.net import networkd
    from cloudinit.net.network_state import parse_net_config_data
    validate_cloudconfig_schema(yaml.safe_load(open(sys.argv[1])), get_schema(), strict=True)
    state = parse_net_config_data(yaml.safe_load(open(sys.argv[2])))
    for name, text in sorted(networkd.Renderer({})._render_content(state).items()):
        print(text)
    """
)


@pytest.mark.skipif(
    not (CLOUD_INIT / "cloudinit").is_dir() and os.environ.get("CI") != "true",
    reason="Debian's cloud-init is not unpacked (scripts/install-test-deps.sh does it as root)",
)
@pytest.mark.parametrize("static", [None, STATIC], ids=["dhcp", "static"])
def test_cloud_init_accepts_the_seed_and_renders_the_network(
    tmp_path: Path, static: seed.StaticAddress | None
) -> None:
    for name, data in _raw(static=static).items():
        (tmp_path / name).write_bytes(data)
    done = subprocess.run(
        ["/usr/bin/python3", "-c", CHECK, tmp_path / "user-data", tmp_path / "network-config"],
        env={"PYTHONPATH": str(CLOUD_INIT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    networkd = done.stdout
    assert "[Match]\nName=eth0\n" in networkd
    if static is None:
        assert "DHCP=ipv4" in networkd
    else:
        assert "Address=10.20.0.5/24" in networkd
        assert "Gateway=10.20.0.1" in networkd
        assert "DNS=10.20.0.2 10.20.0.3" in networkd
