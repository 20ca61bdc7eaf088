"""A site VPN server run by the agent's code: real charon and BIRD in the testbed's VPN
server namespaces, configured only by what the agent applies from its desired state.

Real: namespaces, strongSwan (kernel-libipsec), BIRD 2, the agent (``Agent.apply`` and its
heartbeat) with its commands run in each VPN server namespace. In memory: the plane the
agent talks to (the agent unit tests' ``FakePlane``; ``tests/integration/agent/
test_vpn_server.py`` runs enrolled agent processes against a real plane). Also: a pod CIDR
change applied by the agent re-creates the pod children only.
"""

from __future__ import annotations

import copy
import json
import re
import stat
import time
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest
import yaml

from tether.agent.runner import Agent
from tether.netplan import HybridNetwork, plan
from tether.netplan.vpnserver import vpn_server_document
from tether.nettest import Testbed, missing_requirements, random_psks
from tether.nettest.topology import SiteSpot

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


_CHILD = re.compile(
    r"^\s+(\S+): #(\d+), reqid \d+, INSTALLED.*?\n\s+(?:installed.*\n\s+)?in\s+(\w+),", re.M
)
_TS = re.compile(r"^\s+(\S+-pod): #\d+, .*?local\s+(\S+)", re.M | re.S)


def children(sas: str) -> dict[str, tuple[str, str]]:
    """Installed child SAs of ``swanctl --list-sas``: name -> (unique id, inbound SPI)."""
    return {m[1]: (m[2], m[3]) for m in _CHILD.finditer(sas)}


def pod_selectors(sas: str) -> set[str]:
    """The local traffic selectors of the pod children."""
    return {m[2] for m in _TS.finditer(sas)}


def test_agents_apply_each_site_and_report_tunnels_and_bgp(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    doc = HybridNetwork.model_validate(data)
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

        # store7's pod CIDR changes: the agent applies the new document; the pod children
        # move to the new CIDR, the node children are the same SAs as before.
        store7: SiteSpot = next(s for s in bed.topology.sites if s.pool.name == "store7")
        before = children(bed.list_sas(store7))
        assert set(before) == {"store7-t1-node", "store7-t1-pod", "store7-t2-node", "store7-t2-pod"}
        changed = copy.deepcopy(data)
        pool = next(p for p in changed["pools"] if p["name"] == "store7")
        pool["podCIDR"] = "10.85.80.0/20"
        for node in pool["nodes"]:
            node.pop("podCIDR", None)
        moved = plan(HybridNetwork.model_validate(changed), psks)
        bed.update(moved)
        agent, _ = agents["store7"]
        result = agent.apply(vpn_server_document(moved, "store7"))
        assert result["ok"] is True, result
        bed.wait_up()
        for _ in range(40):
            if pod_selectors(bed.list_sas(store7)) == {"10.85.80.0/20"}:
                break
            time.sleep(0.25)
        sas = bed.list_sas(store7)
        assert pod_selectors(sas) == {"10.85.80.0/20"}, sas
        after = children(sas)
        for name in ("store7-t1-node", "store7-t2-node"):
            assert after[name] == before[name]  # not restarted: same SA, same SPI
        for name in ("store7-t1-pod", "store7-t2-pod"):
            assert after[name] != before[name]
        probes = bed.probe()
        pods = [p for p in probes if p.pool == "store7" and p.kind == "pod"]
        assert pods and all(p.address in IPv4Network("10.85.80.0/20") for p in pods)
        assert all(p.ok for p in probes), [p.as_dict() for p in probes]
