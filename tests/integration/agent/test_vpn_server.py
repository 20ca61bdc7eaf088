"""Site VPN servers run by the agent, on the netns testbed.

The first test: the agent's code (``Agent.apply`` and its heartbeat, talking to the
in-memory ``FakePlane`` of the agent unit tests) configures charon and BIRD in each VPN
server namespace, reports tunnels and BGP, and applies a pod CIDR change that re-creates
the pod children only. The second: real agents enrolled over mTLS, with a real plane.

Real: the plane (SQLite and PostgreSQL), agent processes enrolled with activations and
talking mutual TLS, namespaces, strongSwan (kernel-libipsec) and BIRD 2. Each agent runs
on this host and reaches into its site's VPN server namespace through its ``vpnServer``
commands (``ip netns exec``); charon and BIRD there start with no tunnel and no session:
everything they run comes from the document the plane hands the agent (through the
people's desired-state API, with the content ``vpn_server_document`` renders from the plan;
NOT here: a plane controller that computes and pushes it by itself).
"""

from __future__ import annotations

import copy
import json
import re
import stat
import subprocess
import time
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

import pytest
import yaml

from tether.agent.runner import Agent
from tether.domain import resources as r
from tether.netplan import HybridNetwork, plan
from tether.netplan.vpnserver import vpn_server_document
from tether.nettest import Testbed, missing_requirements, random_psks
from tether.nettest.topology import SiteSpot
from tether.processes import stop_process
from tether.services import resources as svc

from ...conftest import wait_until
from ...unit.agent.test_agent_unit import FakePlane, VirtualClock, make_agent
from .conftest import Plane, host_events, ready, unique

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "hybrid-network.yaml"


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


def settled_children(bed: Testbed, site: SiteSpot) -> dict[str, tuple[str, str]]:
    """The site's child SAs once they hold still: every child installed once, and two reads a
    second apart the same. Right after the tunnels come up, both ends may have negotiated a
    child at once; strongSwan deletes one of the pair moments later, which is not a restart."""
    seen: list[dict[str, tuple[str, str]]] = []

    def still() -> bool:
        sas = bed.list_sas(site)
        names = [m[1] for m in _CHILD.finditer(sas)]
        now = children(sas) if len(names) == len(set(names)) else {}
        settled = bool(now) and bool(seen) and seen[-1] == now
        seen.append(now)
        return settled

    wait_until(still, 30, f"{site.pool.name}'s child SAs to hold still", interval=1)
    return seen[-1]


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
        agents: dict[str, tuple[Agent, FakePlane]] = {}
        for site in bed.topology.sites:
            plane = FakePlane(clock, lifetime=86400)
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
            expected_checks = 2 if site.pool.routing == "bgp" else 1

            # A child SA that both ends negotiated at once is replaced moments after the
            # testbed saw all four up: a beat may catch that; the next ones do not.
            def healthy_beat(agent: Agent = agent, plane: FakePlane = plane) -> bool:
                agent.step()
                return "f" not in json.loads(plane.beats[-1][1])

            wait_until(healthy_beat, 30, "a heartbeat with every check passing", interval=1)
            beat = json.loads(plane.beats[-1][1])
            assert beat["n"] == expected_checks, beat
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
        before = settled_children(bed, store7)
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
        after = settled_children(bed, store7)
        for name in ("store7-t1-node", "store7-t2-node"):
            assert after[name] == before[name]  # not restarted: same SA, same SPI
        for name in ("store7-t1-pod", "store7-t2-pod"):
            assert after[name] != before[name]
        probes = bed.probe()
        pods = [p for p in probes if p.pool == "store7" and p.kind == "pod"]
        assert pods and all(p.address in IPv4Network("10.85.80.0/20") for p in pods)
        assert all(p.ok for p in probes), [p.as_dict() for p in probes]

        # store7's VPN server reboots: charon comes back with nothing loaded, and the plane
        # is out of reach. The agent applies its stored document at start.
        forget_everything(bed, store7)
        assert children(bed.list_sas(store7)) == {}
        agent, plane = agents["store7"]
        plane.down = True
        again = make_agent(
            tmp_path / "store7", plane, clock, agent.config.model_dump(by_alias=True)
        )
        again.start()
        bed.wait_up()
        assert again.vpn_restore is None  # applied at start, not waiting for a retry
        assert set(children(bed.list_sas(store7))) == set(after)
        assert all(p.ok for p in bed.probe()), "tunnels back without the plane"


def forget_everything(bed: Testbed, site: SiteSpot) -> None:
    """Leave the site's charon as a reboot would: no connection, no SA."""
    config = bed.vpn_server_config(site)
    empty = Path(str(config["dir"])) / "empty.conf"
    empty.write_text("")
    swanctl: list[str] = config["swanctl"]  # type: ignore[assignment]
    uri = ["--uri", str(config["vici"])]
    subprocess.run([*swanctl, "--load-all", "--file", str(empty), *uri], check=True, timeout=30)
    for tunnel in (1, 2):
        ike = ["--ike", f"{site.pool.name}-t{tunnel}", "--force"]
        subprocess.run([*swanctl, "--terminate", *ike, *uri], check=False, timeout=30)


def site_view(plane: Plane, site: str) -> dict[str, Any]:
    response = plane.api.get(f"/api/v1/sites/{site}")
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


def test_enrolled_agents_run_the_site_vpn_servers_and_the_plane_shows_their_health(
    plane: Plane,
) -> None:
    with plane.db.session() as s:
        svc.create_site(s, r.SiteCreate(name="store7"))
    doc = HybridNetwork.model_validate(yaml.safe_load(EXAMPLE.read_text()))
    psks = random_psks(doc)
    network = plan(doc, psks)
    with Testbed(network, agent_sites=True, timeout=90) as bed:
        hosts: dict[str, str] = {}
        for site in bed.topology.sites:
            name = unique("vpn")
            config = plane.agent_config(
                name,
                plane.activation(site=site.pool.site),
                vpnServer=bed.vpn_server_config(site),
                checks=[],
            )
            plane.start_agent(config)
            ready(plane, name)
            document = vpn_server_document(network, site.pool.name)
            response = plane.api.put(f"/api/v1/hosts/{name}/desired", json={"document": document})
            assert response.status_code == 200, response.text
            hosts[site.pool.name] = name

        def applied(name: str) -> bool:
            status = plane.api.get(f"/api/v1/hosts/{name}/desired").json()
            return bool(status["inSync"] and status["appliedResult"]["ok"])

        for name in hosts.values():
            plane.wait_for(lambda name=name: applied(name), 60, f"{name} applied")
        bed.wait_up()
        probes = bed.probe()
        assert probes and all(p.ok for p in probes), [p.as_dict() for p in probes]

        def health(site: str, kind: str) -> str | None:
            status = site_view(plane, site)["status"]
            return status[kind]["status"] if status.get(kind) else None

        for site in bed.topology.sites:
            plane.wait_for(
                lambda s=site.pool.site: health(s, "tunnel") == "NoFailuresReported",
                30,
                f"site {site.pool.site} tunnels healthy",
            )
        # BGP sessions come up after the tunnels they run over, and an agent's events
        # arrive apart from its heartbeats: each is waited for, not assumed at once.
        plane.wait_for(lambda: health("dc1", "bgp") == "NoFailuresReported", 30, "BGP healthy")
        for name in hosts.values():
            plane.wait_for(
                lambda name=name: "TunnelsUp" in [e["reason"] for e in host_events(plane, name)],
                30,
                f"{name} reported its tunnels up",
            )

        # The keys went to the agents only: not in the plane's answers or its events.
        shown = [plane.api.get(f"/api/v1/hosts/{n}/desired").text for n in hosts.values()]
        shown += [plane.api.get(f"/api/v1/events?kind=Host&name={n}").text for n in hosts.values()]
        shown += [plane.api.get(f"/api/v1/hosts/{n}").text for n in hosts.values()]
        assert not [k for k in psks.values() if any(k in text for text in shown)]

        # A node's BGP speaker stops: the site's BGP health names the VPN server.
        dc1 = next(s for s in bed.topology.sites if s.pool.name == "dc1")
        label = f"bird-{dc1.nodes[0].ns}"
        stop_process(next(p for lbl, p in bed.processes if lbl == label), 5)
        bed.processes = [(lbl, p) for lbl, p in bed.processes if lbl != label]
        plane.wait_for(lambda: health("dc1", "bgp") == "Failing", 60, "dc1 BGP failing")
        failing = site_view(plane, "dc1")["status"]["bgp"]["hosts"]
        assert list(failing) == [hosts["dc1"]]
        assert "1/2 BGP sessions established" in failing[hosts["dc1"]]
        assert health("store7", "tunnel") == "NoFailuresReported"
        plane.wait_for(
            lambda: "BGPDown" in [e["reason"] for e in host_events(plane, hosts["dc1"])],
            10,
            "BGPDown event",
        )
