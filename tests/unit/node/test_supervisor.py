"""Reading unit files the way the supervisor backend runs them (pure)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tether.node import render
from tether.node.nodeconfig import parse_node_config
from tether.node.unitrun import UnitError, parse_unit


def test_the_units_init_writes_parse_to_what_systemd_would_run(
    node_config_doc: Callable[..., dict[str, Any]],
) -> None:
    profile = render.HostProfile(root="/srv/n", systemd=False)
    config = parse_node_config(node_config_doc())
    kubelet = parse_unit(
        render.kubelet_unit(config, "/srv/n/usr/local/bin/kubelet", profile).content.decode()
    )
    assert kubelet.exec_start[0] == "/srv/n/usr/local/bin/kubelet"
    assert "--config=/srv/n/etc/kubernetes/kubelet/config.yaml" in kubelet.exec_start
    assert "--node-ip=10.80.1.11" in kubelet.exec_start
    assert kubelet.exec_start[-1] == "--v=2"
    assert (kubelet.restart, kubelet.restart_sec, kubelet.notify) == ("always", 5.0, False)
    assert kubelet.kill_mode == "control-group"

    containerd = parse_unit(
        render.containerd_unit("/srv/n/usr/local/bin/containerd", profile).content.decode()
    )
    assert containerd.exec_start == [
        "/srv/n/usr/local/bin/containerd", "--config", "/srv/n/etc/containerd/config.toml",
    ]  # fmt: skip
    assert containerd.exec_start_pre == [(["/sbin/modprobe", "overlay"], True)]
    assert containerd.environment["PATH"].startswith("/srv/n/usr/local/sbin:")
    assert containerd.notify and containerd.kill_mode == "process"


def test_quoting_continuations_and_sections() -> None:
    unit = parse_unit(
        "[Unit]\nExecStart=/not/this\n"
        "[Service]\n# a comment\n"
        "ExecStart=/bin/echo 'two words' \\\n    --flag=\"x y\"\n"
        'Environment="A=1 2" B=3\n'
        "Restart=on-failure\nRestartSec=2s\nTimeoutStopSec=7\n"
    )
    assert unit.exec_start == ["/bin/echo", "two words", "--flag=x y"]
    assert unit.environment == {"A": "1 2", "B": "3"}
    assert (unit.restart, unit.restart_sec, unit.stop_timeout) == ("on-failure", 2.0, 7.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[Service]\nType=simple\n", "no ExecStart"),
        ("[Service]\nExecStart=/bin/true\nRestart=on-abnormal\n", "Restart=on-abnormal"),
        ("[Service]\nExecStart=/bin/true\nRestartSec=1min\n", "plain seconds"),
    ],
)
def test_what_the_supervisor_cannot_run_is_refused(text: str, message: str) -> None:
    with pytest.raises(UnitError, match=message):
        parse_unit(text)
