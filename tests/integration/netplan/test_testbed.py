"""The real testbed: namespaces, strongSwan (kernel-libipsec) and BIRD 2 run a plan.

Proves, from the VPC namespace, that a ping reaches every node IP and an address in
every node's pod CIDR through the IPsec tunnels, for two sites at once in both routing
modes (and with the VPN server both as and beside the main router); that a refused plan
starts nothing; and that everything is removed again, also when a run fails.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from tether.cli.net import app
from tether.netplan import HybridNetwork, load_document, plan
from tether.nettest import (
    Testbed,
    TestbedError,
    TestbedRefused,
    existing_namespaces,
    missing_requirements,
    open_testbed,
    random_psks,
    run_testbed,
)
from tether.nettest import testbed as testbed_module

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "hybrid-network.yaml"


@pytest.fixture(scope="module", autouse=True)
def _requirements() -> None:
    missing = missing_requirements()
    if not missing:
        return
    reason = "network testbed needs: " + "; ".join(missing)
    if os.environ.get("CI") == "true":
        pytest.fail(
            reason + " (CI=true: install strongswan-swanctl charon-systemd "
            "libcharon-extra-plugins bird2 iproute2 iputils-ping procps and run as root)"
        )
    print(f"SKIP: {reason}")
    pytest.skip(reason)


@pytest.fixture
def example() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return data


def _doc(data: dict[str, Any]) -> HybridNetwork:
    doc, findings = load_document(data)
    assert doc is not None, findings
    return doc


def _prefix() -> str:
    return f"tnt{secrets.token_hex(3)}"


def _assert_everything_reaches(report: Any, data: dict[str, Any]) -> None:
    expected = {
        (p["name"], n["name"], kind)
        for p in data["pools"]
        for n in p["nodes"]
        for kind in ("node", "pod")
    }
    assert {(p.pool, p.node, p.kind) for p in report.probes} == expected
    unreachable = [p.as_dict() for p in report.probes if not p.ok]
    assert unreachable == []
    for pool in data["pools"]:
        assert report.tunnel_packets[pool["name"]] > 0, "pings crossed the IPsec tunnels"


def _assert_gone(prefix: str, bed: Testbed | None = None) -> None:
    assert existing_namespaces(prefix) == []
    assert not any(Path("/etc/netns").glob(f"{prefix}-*"))
    if bed is not None:
        assert bed.processes == []
        assert bed.workdir is None


def test_two_sites_bgp_beside_static_behind_a_main_router(example: dict[str, Any]) -> None:
    """dc1: BGP, VPN server is the main router. store7: static, separate main router."""
    prefix = _prefix()
    report = run_testbed(_doc(example), prefix=prefix, timeout=90)
    print(f"testbed {prefix}: {len(report.probes)} probes ok in {report.seconds:.1f}s")
    _assert_everything_reaches(report, example)
    _assert_gone(prefix)


def test_two_sites_static_beside_bgp_behind_a_main_router(example: dict[str, Any]) -> None:
    """The other way round: dc1 static as main router, store7 BGP beside a main router."""
    data = copy.deepcopy(example)
    dc1, store7 = data["pools"]
    dc1["routing"] = "static"
    store7["routing"] = "bgp"
    store7["vpnServer"]["asn"] = 64514
    store7["nodeASN"] = 64520
    del store7["mainRouterIP"]  # the testbed picks a free address for the router
    prefix = _prefix()
    with open_testbed(_doc(data), prefix=prefix, timeout=90) as bed:
        assert all(proc.poll() is None for _, proc in bed.processes)
        probes = bed.probe()
        report = testbed_module.TestbedReport(prefix, probes, bed.tunnel_packets())
        procs = [proc for _, proc in bed.processes]
        workdir = bed.workdir
    _assert_everything_reaches(report, data)
    assert all(proc.poll() is not None for proc in procs)
    assert workdir is not None and not workdir.exists()
    _assert_gone(prefix, bed)


def test_an_overlapping_plan_is_refused_and_nothing_is_started(
    example: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[Any] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        started.append(args)
        raise AssertionError("nothing may be started for a refused plan")

    monkeypatch.setattr(testbed_module.subprocess, "Popen", spy)
    monkeypatch.setattr(testbed_module.subprocess, "run", spy)
    example["pools"][1]["podCIDR"] = "10.85.32.0/20"  # inside dc1's 10.85.0.0/18
    example["pools"][1]["nodes"][1].pop("podCIDR")
    prefix = _prefix()
    with pytest.raises(TestbedRefused) as refused:
        run_testbed(_doc(example), prefix=prefix)
    assert "pool.overlap" in {f.rule for f in refused.value.findings}
    assert started == []
    monkeypatch.undo()
    _assert_gone(prefix)


def test_a_failing_run_is_torn_down(example: dict[str, Any]) -> None:
    """Keys that do not match: the tunnels never come up; nothing is left behind."""
    doc = _doc(example)
    network_plan = plan(doc, random_psks(doc))
    prefix = _prefix()
    bed = Testbed(network_plan, prefix=prefix, timeout=4)
    wrong = plan(doc, random_psks(doc)).files()["cloud/swanctl/secrets.conf"]
    bed._files["cloud/swanctl/secrets.conf"] = wrong  # the cloud side gets other keys
    with pytest.raises(TestbedError, match="timed out waiting for both tunnels"), bed:
        pass
    _assert_gone(prefix, bed)


def test_an_error_inside_the_with_block_still_tears_down(example: dict[str, Any]) -> None:
    prefix = _prefix()
    seen: list[str] = []

    def use_and_fail() -> None:
        with open_testbed(_doc(example), prefix=prefix):
            seen.extend(existing_namespaces(prefix))
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        use_and_fail()
    assert len(seen) == 9
    _assert_gone(prefix)


def test_the_cli_testbed_command(tmp_path: Path, example: dict[str, Any]) -> None:
    path = tmp_path / "net.yaml"
    path.write_text(yaml.safe_dump(example))
    result = CliRunner().invoke(app, ["testbed", str(path), "-o", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert len(report["probes"]) == 8
    # A progress bar of the pings (each node and pod address), on stderr only.
    assert "pinging from the VPC" in result.stderr and "8/8" in result.stderr
    assert existing_namespaces(report["prefix"]) == []
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert report["prefix"] not in leftover
