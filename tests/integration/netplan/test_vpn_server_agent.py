"""A site VPN server run by the agent's code: real charon and BIRD in the testbed's VPN
server namespaces, configured only by what the agent applies from its desired state.

Real: namespaces, strongSwan (kernel-libipsec), BIRD 2, the agent (``Agent.apply`` and its
heartbeat) with its commands run in each VPN server namespace. In memory: the plane the
agent talks to (the agent unit tests' ``FakePlane``). NOT here: a plane pushing the
document to an agent enrolled over mTLS; the document is what the plane would push,
``vpn_server_document`` of the plan.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from tether.agent.runner import Agent
from tether.netplan import HybridNetwork, plan
from tether.netplan.vpnserver import vpn_server_document
from tether.nettest import Testbed, missing_requirements, random_psks

from ...unit.agent.test_agent_unit import FakePlane, VirtualClock, make_agent

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "hybrid-network.yaml"


class RecordingPlane(FakePlane):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(clock, lifetime=86400)
        self.events: list[dict[str, Any]] = []

    def event(self, name: str, body: dict[str, Any]) -> None:
        self.events.append(body)


@pytest.fixture(scope="module", autouse=True)
def _requirements() -> None:
    missing = missing_requirements()
    if missing:
        pytest.skip("network testbed needs: " + "; ".join(missing))


def test_agents_apply_each_site_and_report_tunnels_and_bgp(tmp_path: Path) -> None:
    doc = HybridNetwork.model_validate(yaml.safe_load(EXAMPLE.read_text()))
    psks = random_psks(doc)
    network = plan(doc, psks)
    clock = VirtualClock()
    with Testbed(network, agent_sites=True, timeout=90) as bed:
        agents: dict[str, tuple[Agent, RecordingPlane]] = {}
        for site in bed.topology.sites:
            plane = RecordingPlane(clock)
            home = tmp_path / site.pool.name
            config = {"vpnServer": bed.vpn_server_config(site), "checks": []}
            agent = make_agent(home, plane, clock, config)
            agent.start()
            result = agent.apply(vpn_server_document(network, site.pool.name))
            assert result["ok"] is True, result
            wanted = ["swanctl", "bird", "routes"] if site.pool.routing == "bgp" else [
                "swanctl", "routes"]  # fmt: skip
            assert result["applied"] == wanted
            secrets = Path(bed.vpn_server_config(site)["dir"]) / "swanctl/secrets.conf"  # type: ignore[arg-type]
            assert stat.S_IMODE(secrets.stat().st_mode) == 0o600
            agents[site.pool.name] = (agent, plane)
        bed.wait_up()  # both tunnels, four children, every BGP session, from the agents' configs
        probes = bed.probe()
        assert probes and all(p.ok for p in probes), [p.as_dict() for p in probes]

        for site in bed.topology.sites:
            agent, plane = agents[site.pool.name]
            agent.step()
            beat = json.loads(plane.beats[-1][1])
            expected_checks = 2 if site.pool.routing == "bgp" else 1
            assert beat["n"] == expected_checks and "f" not in beat, beat
            problems, status = agent.vpn.checks()
            assert problems == dict.fromkeys(["tunnel", "bgp"][:expected_checks])
            assert status["tunnels"]["ikeUp"] == 2 and status["tunnels"]["childrenUp"] == 4
            assert status["tunnels"]["bytesIn"] > 0 and status["tunnels"]["bytesOut"] > 0
            if site.pool.routing == "bgp":
                nodes = len(site.nodes)
                assert status["bgp"] == {"established": nodes, "sessions": nodes}
            reasons = [e["reason"] for e in plane.events]
            assert "TunnelsUp" in reasons
            # No key leaves the host: not in results, heartbeats or events.
            sent = json.dumps([[b.decode() for _, b in plane.beats], plane.events, status])
            assert not any(key in sent for key in psks.values())
