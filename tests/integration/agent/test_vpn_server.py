"""Site VPN servers run by real agents enrolled over mTLS, on the netns testbed.

Real: the plane (SQLite and PostgreSQL), agent processes enrolled with activations and
talking mutual TLS, namespaces, strongSwan (kernel-libipsec) and BIRD 2. Each agent runs
on this host and reaches into its site's VPN server namespace through its ``vpnServer``
commands (``ip netns exec``); charon and BIRD there start with no tunnel and no session:
everything they run comes from the document the plane hands the agent (through the
people's desired-state API, with the content ``vpn_server_document`` renders from the plan;
NOT here: a plane controller that computes and pushes it by itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tether.domain import resources as r
from tether.netplan import HybridNetwork, plan
from tether.netplan.vpnserver import vpn_server_document
from tether.nettest import Testbed, missing_requirements, random_psks
from tether.processes import stop_process
from tether.services import resources as svc

from .conftest import Plane, host_events, ready, unique

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "hybrid-network.yaml"


@pytest.fixture(scope="module", autouse=True)
def _requirements() -> None:
    missing = missing_requirements()
    if missing:
        pytest.skip("network testbed needs: " + "; ".join(missing))


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
        assert health("dc1", "bgp") == "NoFailuresReported"
        for name in hosts.values():
            assert "TunnelsUp" in [e["reason"] for e in host_events(plane, name)]

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
