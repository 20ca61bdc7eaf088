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
import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.domain import resources as r
from tether.domain.models import EventType, ObjectKind
from tether.services import events
from tether.services import resources as svc
from tether.store.db import Database
from tether.store.schema import ClusterRow, EventRow, PoolMemberRow, utcnow

log = logging.getLogger(__name__)

#: An event stamped before a look but committed after it is still found by the next.
LATE_COMMIT = timedelta(seconds=5)

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


#: Warning events the demo announces loudly, and what each means.
ALARMS = {
    "JoinFailed": "JOIN FAILED",
    "DesiredStateFailed": "PLAN FAILED",
    "NodeUpdateFailed": "NODE UPDATE FAILED",
    "LeaveFailed": "LEAVE FAILED",
    "RolloutFailed": "ROLLOUT FAILED",
}


def alarm(event: r.Event, operation: str | None, dashboard: str) -> str:
    """The loud line for a failure event; ``operation`` is what the host's pool was doing
    with it (a failed plan of a joining host is a failed join)."""
    what = ALARMS[event.reason]
    if event.reason == "DesiredStateFailed" and operation == "join":
        what = ALARMS["JoinFailed"]
    pool = f" (pool {event.pool})" if event.pool else ""
    where = f"{dashboard}#pool/{event.pool}" if event.pool else dashboard
    return (
        f"!!! {what}: {event.object_kind.value} {event.object_name}{pool}: {event.message}\n"
        f"    see {where} or: tether event list --name {event.object_name}"
    )


class FailureWatch:
    """Polls the store for failure events (:data:`ALARMS`) and hands each new one, as a
    loud line, to ``say``; runs in a daemon thread until :meth:`stop`."""

    def __init__(
        self, db: Database, say: Callable[[str], None], dashboard: str, poll: float = 1.0
    ) -> None:
        self.db, self.say, self.dashboard, self.poll = db, say, dashboard, poll
        self._since = utcnow()
        self._seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-alarms", daemon=True)

    def start(self) -> FailureWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def check(self) -> list[str]:
        """One look: the lines for failure events not announced yet (each event once)."""
        lines = []
        looked = utcnow()
        with self.db.session() as session:
            rows = session.scalars(
                select(EventRow)
                .where(
                    EventRow.first_time >= self._since - LATE_COMMIT,
                    EventRow.type == EventType.WARNING.value,
                    EventRow.reason.in_(ALARMS),
                )
                .order_by(EventRow.id)
            ).all()
            for row in rows:
                if row.id in self._seen:
                    continue
                self._seen.add(row.id)
                operation = None
                host = session.get(PoolMemberRow, row.object_name)
                if row.object_kind == ObjectKind.HOST.value and host is not None and host.op:
                    operation = host.op.get("kind")
                lines.append(alarm(events.to_event(row), operation, self.dashboard))
        self._since = looked
        return lines

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                for line in self.check():
                    self.say(line)
            except Exception:  # the demo goes on; the next look tries again
                log.exception("watching for failures")
