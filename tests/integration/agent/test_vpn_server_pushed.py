"""The plane pushes each site's VPN server its configuration, on the netns testbed.

Real: the plane with its controllers (SQLite and PostgreSQL), agent processes enrolled
over mutual TLS, namespaces, strongSwan (kernel-libipsec) and BIRD 2. The plane holds
the example's cluster and pools, with hosts standing for the nodes (their addresses in
their inventory, as agents report them); the test gives a host the ``vpn-server`` role
through the API and from then on only the plane's VPN server pass writes documents.

The cloud end of the tunnels must use the keys the plane made (an operator configures
the cloud VPN with them): the test reads them from the store, which is why the VPN server
agents first enrol, get their role and their document, and are then started again on
the testbed built with those keys. That second start is a reboot: each agent applies the
stored document before the plane answers (``VPNServerRestored``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from tether.domain import resources as r
from tether.domain.states import HostEvent
from tether.netplan import HybridNetwork, Plan, plan
from tether.netplan.vpnserver import vpn_server_document
from tether.nettest import Testbed
from tether.services import network
from tether.services import resources as svc
from tether.store.schema import HostRow, VpnKeyRow

from .conftest import Plane, host_events, ready, stop, unique

# _requirements: the testbed's skip (an autouse fixture) applies here too.
from .test_vpn_server import EXAMPLE, _requirements, children, pod_selectors  # noqa: F401

pytestmark = [pytest.mark.integration, pytest.mark.controllers]


def store_example(plane: Plane) -> None:
    """The example's cluster and pools in the plane, each node a Ready host in its pool."""
    data = yaml.safe_load(EXAMPLE.read_text())
    cluster = {k: v for k, v in data["cluster"].items() if k != "name"}
    with plane.db.session() as s:
        svc.create_site(s, r.SiteCreate(name="store7"))
        svc.create_cluster(
            s,
            r.ClusterCreate.model_validate(
                {"name": "prod", "spec": {"kubernetesVersion": "1.34", **cluster}}
            ),
        )
        for pool in data["pools"]:
            spec = {k: v for k, v in pool.items() if k not in {"name", "nodes"}}
            body = {"name": pool["name"], "spec": {"cluster": "prod", **spec}}
            svc.create_pool(s, r.PoolCreate.model_validate(body))
            for node in pool["nodes"]:
                body = {"name": node["name"], "spec": {"site": pool["site"]}}
                svc.create_host(s, r.HostCreate.model_validate(body))
                svc.transition_host(s, node["name"], HostEvent.CHECKS_PASSED)
                row = s.scalars(select(HostRow).where(HostRow.name == node["name"])).one()
                row.inventory = {"addresses": [node["ip"]]}
                s.flush()
                svc.add_to_pool(s, pool["name"], node["name"])


def store_plan(plane: Plane, **pod_cidrs: str) -> Plan:
    """The plan of the plane's network, with the keys the plane made (and ``pod_cidrs``:
    pool -> a pod CIDR it is about to get)."""
    with plane.db.session() as s:
        data = network.document(s, "prod")
        keys = dict(s.execute(select(VpnKeyRow.tunnel, VpnKeyRow.key)).all())
    for pool in data["pools"]:
        pool["podCIDR"] = pod_cidrs.get(pool["name"], pool["podCIDR"])
    return plan(HybridNetwork.model_validate(data), keys)


def desired(plane: Plane, host: str) -> dict[str, Any] | None:
    response = plane.api.get(f"/api/v1/hosts/{host}/desired")
    return response.json() if response.status_code == 200 else None


def give_role(plane: Plane, host: str) -> None:
    current = plane.api.get(f"/api/v1/hosts/{host}").json()
    body = {
        "resourceVersion": current["resourceVersion"],
        "spec": {**current["spec"], "role": "vpn-server"},
    }
    response = plane.api.put(f"/api/v1/hosts/{host}", json=body)
    assert response.status_code == 200, response.text


def test_the_plane_pushes_each_site_its_vpn_server_and_a_changed_pod_cidr(plane: Plane) -> None:
    store_example(plane)
    agents: dict[str, tuple[str, Path]] = {}  # pool -> (host, first config)
    scratch = plane.tmp / "scratch"
    for pool, site in (("dc1", "dc1"), ("store7", "store7")):
        name = unique("vpn")
        # Not on the testbed yet: nothing it applies can work, so it only stores it.
        config = plane.agent_config(
            name,
            plane.activation(site=site),
            vpnServer={
                "dir": str(scratch / name),
                "birdConfig": str(scratch / name / "bird.conf"),
                **{key: ["false"] for key in ("swanctl", "birdc", "shell")},
            },
            checks=[],
        )
        proc = plane.start_agent(config)
        ready(plane, name)
        give_role(plane, name)
        agents[pool] = (name, config)
        plane.wait_for(lambda n=name: desired(plane, n) is not None, 30, f"{name} document")
        plane.wait_for(
            lambda n=name: (desired(plane, n) or {}).get("appliedHash") is not None,
            30,
            f"{name} tried its document",
        )
        stop(proc)

    for pool, (name, _) in agents.items():
        section = desired(plane, name)["document"]["vpnServer"]  # type: ignore[index]
        assert (section["pool"], section["files"]["swanctl/secrets.conf"]) == (pool, "******")
        found = plane.api.get(f"/api/v1/events?kind=Pool&name={pool}").json()["items"]
        pushed = [e for e in found if e["reason"] == "VPNServerConfigPushed"]
        assert [name in e["message"] for e in pushed] == [True]

    network_plan = store_plan(plane)
    keys = list(network_plan.psks.values())
    assert len(keys) == 4 and len(set(keys)) == 4
    with Testbed(network_plan, agent_sites=True, timeout=90) as bed:
        procs = {}
        for site in bed.topology.sites:
            name, first = agents[site.pool.name]
            cfg = yaml.safe_load(first.read_text())
            cfg.pop("activation")
            cfg["vpnServer"] = bed.vpn_server_config(site)
            again = first.with_name(f"{name}-on-testbed.yaml")
            again.write_text(yaml.safe_dump(cfg))
            procs[site.pool.name] = plane.start_agent(again)
        for name, _ in agents.values():
            plane.wait_for(
                lambda n=name: "VPNServerRestored" in [e["reason"] for e in host_events(plane, n)],
                30,
                f"{name} restored its stored document",
            )
        bed.wait_up()
        probes = bed.probe()
        assert probes and all(p.ok for p in probes), [p.as_dict() for p in probes]

        # store7's pod CIDR changes through the API: the plane pushes a new document; the
        # pod children move, the node children are the same SAs as before. The cloud end
        # moves first (as in test_vpn_server.py), or the site's new children are refused.
        store7 = next(s for s in bed.topology.sites if s.pool.name == "store7")
        name7 = agents["store7"][0]
        before = children(bed.list_sas(store7))
        assert set(before) == {"store7-t1-node", "store7-t1-pod", "store7-t2-node", "store7-t2-pod"}
        moved = store_plan(plane, store7="10.85.80.0/20")
        bed.update(moved)
        old_hash = desired(plane, name7)["hash"]  # type: ignore[index]
        current = plane.api.get("/api/v1/pools/store7").json()
        body = {
            "resourceVersion": current["resourceVersion"],
            "spec": {**current["spec"], "podCIDR": "10.85.80.0/20"},
        }
        response = plane.api.put("/api/v1/pools/store7", json=body)
        assert response.status_code == 200, response.text

        def moved_and_applied() -> bool:
            status = desired(plane, name7) or {}
            return status.get("hash") != old_hash and bool(status.get("inSync"))

        plane.wait_for(moved_and_applied, 30, "store7's new document applied")
        files = desired(plane, name7)["document"]["vpnServer"]["files"]  # type: ignore[index]
        assert "10.85.80.0/20" in files["swanctl/swanctl.conf"]
        assert vpn_server_document(store_plan(plane), "store7") == vpn_server_document(
            moved, "store7"
        )  # what the cloud end was given, with the same keys
        plane.wait_for(
            lambda: pod_selectors(bed.list_sas(store7)) == {"10.85.80.0/20"}, 20, "pod children"
        )
        bed.wait_up()
        after = children(bed.list_sas(store7))
        for child in ("store7-t1-node", "store7-t2-node"):
            assert after[child] == before[child]  # not restarted: same SA, same SPI
        for child in ("store7-t1-pod", "store7-t2-pod"):
            assert after[child] != before[child]
        probes = bed.probe()
        pods = [p for p in probes if p.pool == "store7" and p.kind == "pod"]
        new_cidr = next(p for p in moved.pools if p.name == "store7").pod_cidr
        assert pods and all(p.address in new_cidr for p in pods)
        assert all(p.ok for p in probes), [p.as_dict() for p in probes]

        # The keys went to the agents only: not in the plane's answers, events or logs.
        shown = [plane.api.get(f"/api/v1/hosts/{n}/desired").text for n, _ in agents.values()]
        shown += [plane.api.get("/api/v1/events?limit=1000").text]
        shown += ["\n".join(plane.capture.lines)]  # type: ignore[attr-defined]
        assert not [k for k in keys if any(k in text for text in shown)]
