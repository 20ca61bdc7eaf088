"""Demo objects: one cluster, two sites with a pool each, a profile with two versions.

The hosts are real: ``tether demo`` starts agent processes that enrol at each site, and
:func:`assign_ready_hosts` puts the first Ready ones into their site's pool. Loading is
idempotent: objects that exist are left alone, so a second ``make demo`` reuses the
data it made the first time.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.domain import resources as r
from tether.domain.states import HostState
from tether.services import resources as svc
from tether.store.schema import ClusterRow

CLUSTER: dict[str, Any] = {
    "kubernetesVersion": "1.34",
    "apiEndpoint": "https://demo.cluster.example:443",
    "vpcCIDR": "10.226.0.0/16",
    "serviceCIDR": "172.20.0.0/16",
    "remoteNodeNetworks": ["10.80.0.0/16"],
    "remotePodNetworks": ["10.85.0.0/16"],
    "hybridEnabled": True,
}

PROFILE_LAYERS: dict[str, Any] = {
    "os": {"image": "ubuntu-24.04-server", "cloudInit": {"timezone": "UTC"}},
    "kubernetes": {"version": "1.34", "kubeletConfig": {"maxPods": 110}},
    "network": {"cni": "cilium"},
    "addons": [{"name": "node-exporter", "version": "1.8.2"}],
}

SITES = {
    "dc1": {
        "nodeCIDR": "10.80.1.0/24",
        "podCIDR": "10.85.0.0/18",
        "vpn": "10.80.1.1",
        "asn": 64513,
    },
    "edge1": {
        "nodeCIDR": "10.80.2.0/24",
        "podCIDR": "10.85.64.0/18",
        "vpn": "10.80.2.1",
        "asn": 64514,
    },
}
#: Real agents the demo starts per site, and how many of them join the site's pool.
AGENTS_PER_SITE = 3
POOL_SIZE = 2


def load(session: Session) -> bool:
    """Create the demo objects unless they exist; return True when it created them."""
    if session.scalars(select(ClusterRow.id).where(ClusterRow.name == "demo")).first():
        return False
    svc.create_cluster(session, r.ClusterCreate.model_validate({"name": "demo", "spec": CLUSTER}))
    for version, description in (("1.0.0", "first release"), ("1.1.0", "kubelet tuning")):
        spec = {"version": version, "description": description, "layers": PROFILE_LAYERS}
        svc.create_profile(
            session, r.ProfileCreate.model_validate({"name": "standard", "spec": spec})
        )
    for index, (site, net) in enumerate(SITES.items()):
        svc.create_site(
            session,
            r.SiteCreate.model_validate(
                {"name": site, "spec": {"description": f"demo site {site}", "location": "demo"}}
            ),
        )
        pool = f"{site}-pool"
        svc.create_pool(
            session,
            r.PoolCreate.model_validate(
                {
                    "name": pool,
                    "spec": {
                        "cluster": "demo",
                        "site": site,
                        "nodeCIDR": net["nodeCIDR"],
                        "podCIDR": net["podCIDR"],
                        "routing": "bgp" if index == 0 else "static",
                        "vpnServer": {
                            "publicIP": f"203.0.113.{5 + index}",
                            "insideIP": net["vpn"],
                            "asn": net["asn"],
                        },
                        "profile": {"name": "standard", "version": "1.0.0"},
                    },
                }
            ),
        )
    return True


def assign_ready_hosts(session: Session) -> bool:
    """Fill each demo pool with Ready hosts of its site, up to :data:`POOL_SIZE`.

    Returns True when every demo pool is full (nothing left to do).
    """
    full = True
    for site in SITES:
        pool = f"{site}-pool"
        members, _ = svc.list_hosts(
            session, site=site, pool=pool, state=None, limit=POOL_SIZE, continue_token=None
        )
        missing = POOL_SIZE - len(members)
        if missing <= 0:
            continue
        ready, _ = svc.list_hosts(
            session, site=site, pool=None, state=HostState.READY, limit=50, continue_token=None
        )
        free = [h for h in ready if h.spec.pool is None][:missing]
        for host in free:
            spec = {**host.spec.model_dump(by_alias=True), "pool": pool}
            update = {"resourceVersion": host.resource_version, "spec": spec}
            svc.update_host(session, host.name, r.HostUpdate.model_validate(update))
        full = full and len(free) == missing
    return full
