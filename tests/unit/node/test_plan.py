"""Node plans in desired-state documents: validation and the agent's identity as the
default credentials (running plans is tested with a real plane in
tests/integration/agent/test_node_plans.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tether.errors import Invalid
from tether.node.host import RecordingHost
from tether.node.phases import PhaseEvent
from tether.node.plan import PlanContext, _node_config, execute, parse_plan


def _ctx(tmp_path: Path, keyring: Any = None) -> PlanContext:
    return PlanContext(
        name="edge-01",
        root=tmp_path / "root",
        host=RecordingHost(),
        server="https://plane.example:8443",
        ca=tmp_path / "ca.pem",
        cert=tmp_path / "cert.pem",
        key=tmp_path / "key.pem",
        source=str(tmp_path / "nowhere"),
        client=httpx.Client(),
        keyring=keyring,
    )


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ({"action": "shutdown"}, "node.action: Input should be"),
        ({"action": "install"}, "action install needs a version"),
        ({"action": "join", "version": "1.34.2"}, "action join needs a nodeConfig"),
        ({"action": "uninstall", "colour": "red"}, "node.colour: Extra inputs"),
        ("install", "node.node:"),
    ],
)
def test_a_bad_plan_is_refused_naming_the_field(plan: Any, message: str) -> None:
    with pytest.raises(Invalid) as info:
        parse_plan(plan)
    assert message in info.value.message


def test_the_agents_identity_is_the_default_credential(
    tmp_path: Path, node_config_doc: Callable[..., dict[str, Any]]
) -> None:
    doc = node_config_doc()
    del doc["spec"]["credentials"]
    plan = parse_plan({"action": "init", "nodeConfig": doc})
    filled = _node_config(plan, _ctx(tmp_path))
    assert filled["spec"]["credentials"] == {
        "x509": {
            "planeEndpoint": "https://plane.example:8443",
            "caPath": str(tmp_path / "ca.pem"),
            "certificatePath": str(tmp_path / "cert.pem"),
            "privateKeyPath": str(tmp_path / "key.pem"),
        }
    }
    assert "credentials" not in doc["spec"]  # the plan itself is not changed


def test_a_plan_for_another_node_fails_without_touching_the_host(
    tmp_path: Path, node_config_doc: Callable[..., dict[str, Any]]
) -> None:
    plan = parse_plan({"action": "init", "nodeConfig": node_config_doc(name="edge-02")})
    events: list[PhaseEvent] = []
    result = execute(plan, _ctx(tmp_path), events.append)
    assert result["ok"] is False
    assert "names node 'edge-02', but this host is 'edge-01'" in result["message"]
    assert [e.reason for e in events] == ["NodeInitPlanFailed"]
    assert not (tmp_path / "root").exists()


def test_install_without_a_keyring_says_how_to_fix_it(tmp_path: Path) -> None:
    plan = parse_plan({"action": "install", "version": "1.34.2"})
    result = execute(plan, _ctx(tmp_path), lambda _: None)
    assert result["ok"] is False and "set node.keyring in its config" in result["message"]


def test_reboot_runs_once_per_request_and_is_done_after_the_boot(tmp_path: Path) -> None:
    """A reboot plan reboots the host once; run again on the new boot it reports done, and
    a second request reboots again."""
    from tether.node.actions import NodeEnv, reboot
    from tether.node.host import RecordingHost

    host = RecordingHost()
    env = NodeEnv(root=tmp_path, host=host, view=None)  # type: ignore[arg-type]
    first = reboot("r1/1/3", env)
    assert first.ok and host.calls.count(("reboot", "")) == 1
    again = reboot("r1/1/3", env)  # the agent runs the plan again after the boot
    assert again.ok and host.calls.count(("reboot", "")) == 1
    reboot("r2/1/3", env)
    assert host.calls.count(("reboot", "")) == 2
