"""Demo objects: one cluster, two sites with a pool each, hosts, a profile with two versions.

Loading is idempotent: objects that exist are left alone, so a second ``make demo``
reuses the data it made the first time.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.domain import resources as r
from tether.domain.states import HostEvent
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
HOSTS_PER_SITE = 3


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
        for n in range(1, HOSTS_PER_SITE + 1):
            name = f"{site}-host{n}"
            svc.create_host(
                session,
                r.HostCreate.model_validate(
                    {"name": name, "spec": {"site": site, "tags": {"rack": f"r{n}"}}}
                ),
            )
            svc.transition_host(session, name, HostEvent.CHECKS_PASSED)
            if n < HOSTS_PER_SITE:  # one host per site stays Ready, unassigned
                host = svc.get_host(session, name)
                update = {
                    "resourceVersion": host.resource_version,
                    "spec": {"site": site, "pool": pool, "tags": host.spec.tags},
                }
                svc.update_host(session, name, r.HostUpdate.model_validate(update))
    return True
