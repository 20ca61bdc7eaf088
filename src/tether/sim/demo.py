"""Demo objects: one cluster, two sites with a pool each, a profile with two versions.

The hosts are real: ``tether demo`` starts agent processes that enrol at each site, and
each pool fills itself: its ``hostSelector`` picks :data:`POOL_SIZE` Ready hosts of its
site (the pool reconciler's work, no demo code). The site keeps one spare host, so the
pools' ``ExpandFirst`` rollouts can bring a new node in before an old one leaves.
Version 1.1.0 of the profile upgrades Kubernetes: roll it out with ``tether pool rollout
dc1-pool --to 1.1.0`` and approve it. Loading is idempotent: objects that exist are left
alone, so a second ``make demo`` reuses the data it made the first time.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.domain import resources as r
from tether.services import resources as svc
from tether.store.schema import ClusterRow

CLUSTER: dict[str, Any] = {
    "kubernetesVersion": "1.37",
    "apiEndpoint": "https://demo.cluster.example:443",
    "vpcCIDR": "10.226.0.0/16",
    "serviceCIDR": "172.20.0.0/16",
    "remoteNodeNetworks": ["10.80.0.0/16"],
    "remotePodNetworks": ["10.85.0.0/16"],
    "hybridEnabled": True,
}

#: Kubernetes of the profile's two versions (the demo's artifact mirror has both).
VERSIONS = {"1.0.0": "1.34.2", "1.1.0": "1.35.1"}


def profile_layers(kubernetes: str) -> dict[str, Any]:
    return {
        "os": {
            "image": "debian-12-tether",
            "cloudInit": {"timezone": "UTC"},
            "sysctls": {"vm.max_map_count": "262144"},
        },
        "kubernetes": {"version": kubernetes, "kubeletConfig": {"maxPods": "{{ max_pods }}"}},
        "network": {"cni": "cilium"},
        "addons": [{"name": "node-exporter", "version": "1.8.2"}],
    }


VARIABLES = [
    {"name": "max_pods", "type": "number", "default": 110, "description": "Pods per node."}
]

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
    for (version, kubernetes), description in zip(
        VERSIONS.items(), ("first release", "Kubernetes 1.35"), strict=True
    ):
        spec = {
            "version": version,
            "description": description,
            "layers": profile_layers(kubernetes),
            "variables": VARIABLES,
        }
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
                        "hostSelector": {"demo": "true"},
                        "size": POOL_SIZE,
                        "nodeLabels": {"topology.kubernetes.io/zone": site},
                        "updateStrategy": {"type": "ExpandFirst", "minReadySeconds": 5},
                    },
                }
            ),
        )
    return True


def node_address(site: str, n: int) -> str:
    """The SIMULATED address of the ``n``-th demo agent of ``site`` (in its node CIDR)."""
    network = ipaddress.IPv4Network(SITES[site]["nodeCIDR"])
    return f"{network.network_address + 10 + n}/{network.prefixlen}"
