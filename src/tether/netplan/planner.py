"""The planner: from a checked document to allocations, routes, tunnels and files."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any, TypeVar

from tether.netplan.addresses import collector_paused
from tether.netplan.allocate import allocate
from tether.netplan.document import API_VERSION, HybridNetwork
from tether.netplan.findings import Finding, has_errors
from tether.netplan.model import Child, NodePlan, PoolPlan, Route, Tunnel
from tether.netplan.render import cloud, jsontext, kube, site, strongswan
from tether.netplan.rules import Resolved, RPool, check_document

ALLOCATIONS_KIND = "PodCIDRAllocations"
PskSource = Mapping[str, str] | Callable[[str], str]
#: A file of a plan not rendered yet: (relative path, renderer, arguments); see
#: :meth:`Plan.recipes`.
Recipe = tuple[str, Callable[..., str], tuple[Any, ...]]
T = TypeVar("T")


class PlanError(ValueError):
    """The document has errors; ``findings`` lists them all."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = findings
        errors = [f for f in findings if f.is_error]
        super().__init__(f"the document has {len(errors)} error(s); first: {errors[0].text}")


class MissingSecretError(ValueError):
    """A pre-shared key the plan needs was not given."""


def tunnel_names(pool: str) -> tuple[str, str]:
    """The names of a pool's two tunnels, which are also their pre-shared keys' ids."""
    return f"{pool}-t1", f"{pool}-t2"


def psk_ids(doc: HybridNetwork) -> list[str]:
    """The ids of the pre-shared keys a plan of ``doc`` needs: two per pool."""
    return [name for pool in doc.pools for name in tunnel_names(pool.name)]


@dataclass(frozen=True)
class Plan:
    """A complete network plan. Holds the PSKs but never shows them in ``repr``."""

    cluster: str
    vpc_cidr: IPv4Network
    service_cidr: IPv4Network
    endpoint_ips: tuple[IPv4Address, ...]
    pools: tuple[PoolPlan, ...]
    warnings: tuple[Finding, ...] = ()
    psks: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    # Views ----------------------------------------------------------------------------

    def allocations(self) -> dict[str, str]:
        """Node name → pod CIDR block, for every node of every pool."""
        return {n.name: str(n.pod_cidr) for p in self.pools for n in p.nodes}

    def allocations_document(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": ALLOCATIONS_KIND,
            "cluster": self.cluster,
            "nodes": self.allocations(),
        }

    def summary(self) -> list[dict[str, Any]]:
        """One row per pool, for tables and the API (no secrets)."""
        return [
            {
                "pool": p.name,
                "site": p.site,
                "routing": p.routing,
                "nodes": len(p.nodes),
                "nodeCIDR": str(p.node_cidr),
                "podCIDR": str(p.pod_cidr),
                "podBlocks": f"{len(p.nodes)}/{p.pod_blocks} /{p.pod_cidr_mask_per_node}",
                "vpnServer": str(p.vpn_public_ip),
                "tunnels": len(p.tunnels),
                "mainRouter": "vpn-server" if p.is_main_router else "separate",
            }
            for p in self.pools
        ]

    def as_dict(self) -> dict[str, Any]:
        """The whole plan as JSON-ready data, without secrets."""
        return {
            "apiVersion": API_VERSION,
            "kind": "HybridNetworkPlan",
            "cluster": {
                "name": self.cluster,
                "vpcCIDR": str(self.vpc_cidr),
                "serviceCIDR": str(self.service_cidr),
                "vpnEndpointIPs": [str(ip) for ip in self.endpoint_ips],
            },
            "pools": [p.as_dict() for p in self.pools],
            "warnings": [w.as_dict() for w in self.warnings],
        }

    # Files ----------------------------------------------------------------------------

    def secret_files(self) -> frozenset[str]:
        """Paths of :meth:`files` that hold secrets (write them mode 0600)."""
        paths = {"cloud/swanctl/secrets.conf"}
        paths.update(f"pools/{p.name}/vpn-server/swanctl/secrets.conf" for p in self.pools)
        return frozenset(paths)

    def files(self, *, include_secrets: bool = True) -> dict[str, str]:
        """Every generated file: relative path → content.

        With ``include_secrets=False`` the files listed by :meth:`secret_files` are left
        out, so the result can be shown or returned without exposing a key.

        Rendering is a burst of short-lived dicts and strings beside the long-lived
        plan, as checking is: with the cyclic collector paused (which would walk the
        plan again and again, freeing nothing) 10,000 pools render in about 4.1 s
        instead of 5.5 s.
        """
        with collector_paused():
            return {
                path: render(*args)
                for path, render, args in self.recipes(include_secrets=include_secrets)
            }

    def recipes(self, *, include_secrets: bool = True) -> list[Recipe]:
        """How to render each file of :meth:`files`, in its order, without rendering
        it: ``(relative path, renderer, arguments)``, the content being
        ``renderer(*arguments)``. The files of the whole cluster come first, then each
        pool's, all under ``pools/``.

        A writer learns every path at once (for the manifest) and can render the files
        where it writes them: the CLI renders the pools' files in a second process."""
        c = self.cluster
        out: list[Recipe] = [
            ("plan.json", self._plan_json, ()),
            ("allocations.json", self._allocations_json, ()),
            (
                "cloud/vpc-route-table.yaml",
                cloud.vpc_route_table,
                (c, str(self.vpc_cidr), self.pools),
            ),
            ("cloud/vpn-connections.yaml", cloud.vpn_connections, (c, self.pools)),
            ("cloud/swanctl/swanctl.conf", strongswan.cloud_swanctl, (c, self.pools)),
            ("cni/cilium-affinity-patch.yaml", kube.affinity_patch, ("cilium", "kube-system")),
            (
                "cni/calico-node-affinity-patch.yaml",
                kube.affinity_patch,
                ("calico-node", "calico-system"),
            ),
            ("cni/cilium-values.yaml", kube.cilium_values, ()),
            ("cni/calico-cni-ipam.yaml", kube.calico_cni_ipam, ()),
        ]
        add = out.append
        if include_secrets:
            add(("cloud/swanctl/secrets.conf", self._cloud_secrets_conf, ()))
        psks = self.psks
        for p in self.pools:
            base = f"pools/{p.name}"
            add((f"{base}/vpn-server/swanctl/swanctl.conf", strongswan.site_swanctl, (c, p)))
            if include_secrets:
                add(
                    (
                        f"{base}/vpn-server/swanctl/secrets.conf",
                        strongswan.secrets_conf,
                        (p.tunnels, psks),
                    )
                )
            add((f"{base}/vpn-server/routes.sh", site.vpn_server_routes_sh, (c, p)))
            add(
                (
                    f"{base}/vpn-server/{site.routes_unit_name(p, 'vpn-server')}",
                    site.routes_unit,
                    (p, "vpn-server"),
                )
            )
            if p.routing == "bgp":
                add((f"{base}/vpn-server/bird.conf", site.bird_conf, (c, p)))
                if p.nodes:
                    add((f"{base}/cilium-bgp.yaml", kube.cilium_bgp, (c, p)))
                    add((f"{base}/calico-bgp.yaml", kube.calico_bgp, (c, p)))
            if not p.is_main_router:
                add((f"{base}/main-router/routes.sh", site.main_router_routes_sh, (c, p)))
                add(
                    (
                        f"{base}/main-router/{site.routes_unit_name(p, 'main-router')}",
                        site.routes_unit,
                        (p, "main-router"),
                    )
                )
        return out

    def _plan_json(self) -> str:
        return jsontext.dumps_plain(self.as_dict()) + "\n"

    def _allocations_json(self) -> str:
        return jsontext.dumps_plain(self.allocations_document()) + "\n"

    def _cloud_secrets_conf(self) -> str:
        return strongswan.secrets_conf((t for p in self.pools for t in p.tunnels), self.psks)

    def executable_files(self) -> frozenset[str]:
        """Paths of :meth:`files` that are shell scripts (write them mode 0755)."""
        return frozenset(path for path in self.files(include_secrets=False) if path.endswith(".sh"))


def parse_allocations(data: Any) -> dict[str, str]:
    """Read the node → pod CIDR map back from an ``allocations.json`` document.

    Tolerant: anything unusable is ignored (the planner re-validates every entry).
    """
    if not isinstance(data, Mapping):
        return {}
    nodes = data.get("nodes")
    if not isinstance(nodes, Mapping):
        return {}
    return {str(k): str(v) for k, v in nodes.items() if isinstance(v, str)}


def plan(
    doc: HybridNetwork,
    psks: PskSource,
    previous: Mapping[str, str] | None = None,
) -> Plan:
    """Plan ``doc``. Raises :class:`PlanError` when the document has errors.

    ``psks`` maps every id of :func:`psk_ids` to a key (hex keys are written as
    ``0x…``), or is a function returning the key for an id. ``previous`` is the node →
    pod CIDR map of an earlier plan: those blocks are kept where still valid.
    """
    return plan_checked(*check_document(doc), psks, previous)


def plan_checked(
    resolved: Resolved,
    findings: list[Finding],
    psks: PskSource,
    previous: Mapping[str, str] | None = None,
) -> Plan:
    """:func:`plan` of a document :func:`~tether.netplan.rules.check_document` has
    already checked (its parsed view and findings), so a caller that shows the findings
    first does not check a 10,000-pool document twice."""
    if has_errors(findings):
        raise PlanError(findings)
    with collector_paused():
        return build_plan(resolved, findings, _collect_psks(resolved.doc, psks), previous)


def _collect_psks(doc: HybridNetwork, psks: PskSource) -> dict[str, str]:
    keys: dict[str, str] = {}
    for psk_id in psk_ids(doc):
        if callable(psks):
            value = psks(psk_id)
        elif psk_id in psks:
            value = psks[psk_id]
        else:
            raise MissingSecretError(f"no pre-shared key for tunnel {psk_id}")
        if not value:
            raise MissingSecretError(f"empty pre-shared key for tunnel {psk_id}")
        keys[psk_id] = value
    return keys


def build_plan(
    resolved: Resolved,
    findings: list[Finding],
    psks: Mapping[str, str],
    previous: Mapping[str, str] | None = None,
) -> Plan:
    """Build the plan from a document already checked without errors."""
    doc = resolved.doc
    vpc = _known(resolved.vpc_cidr)
    cluster = doc.cluster.name
    endpoints = resolved.endpoint_ips
    pools = tuple(_plan_pool(cluster, vpc, endpoints, rpool, previous) for rpool in resolved.pools)
    return Plan(
        cluster=cluster,
        vpc_cidr=vpc,
        service_cidr=_known(resolved.service_cidr),
        endpoint_ips=tuple(endpoints),
        pools=pools,
        warnings=tuple(findings),
        psks=dict(psks),
    )


def _known(value: T | None) -> T:
    if value is None:  # pragma: no cover - excluded by the checker
        raise ValueError("plan of a document with errors")
    return value


def _plan_pool(
    cluster: str,
    vpc: IPv4Network,
    endpoints: list[IPv4Address],
    rpool: RPool,
    previous: Mapping[str, str] | None,
) -> PoolPlan:
    pool = rpool.pool
    node_cidr = _known(rpool.node_cidr)
    pod_cidr = _known(rpool.pod_cidr)
    inside_ip = _known(rpool.inside_ip)
    public_ip = _known(rpool.public_ip)
    mask = pool.pod_cidr_mask_per_node
    blocks = allocate(pod_cidr, mask, [(n.name, n.pod_cidr) for n in rpool.nodes], previous)
    nodes = tuple(
        NodePlan(n.name, _known(n.ip), blocks[n.name].pod_cidr, blocks[n.name].source)
        for n in rpool.nodes
    )
    attachment = f"vpn-attachment/{pool.name}"
    tunnels = []
    for number, name in enumerate(tunnel_names(pool.name), start=1):
        cloud_ip = endpoints[min(number - 1, len(endpoints) - 1)]
        tunnels.append(
            Tunnel(
                name=name,
                psk_id=name,
                cloud_ip=cloud_ip,
                site_ip=public_ip,
                cloud_id=f"{name}.cloud.{cluster}.tether",
                site_id=f"{name}.site.{cluster}.tether",
                children=(
                    Child(f"{name}-node", node_cidr, vpc),
                    Child(f"{name}-pod", pod_cidr, vpc),
                ),
            )
        )
    vpn_server_routes: tuple[Route, ...] = ()
    if pool.routing == "static":
        vpn_server_routes = tuple(Route(n.pod_cidr, str(n.ip)) for n in nodes)
    main_router_routes: tuple[Route, ...] = ()
    if not pool.vpn_server.is_main_router:
        main_router_routes = (Route(vpc, str(inside_ip)), Route(pod_cidr, str(inside_ip)))
    return PoolPlan(
        name=pool.name,
        site=pool.site,
        routing=pool.routing,
        node_cidr=node_cidr,
        pod_cidr=pod_cidr,
        pod_cidr_mask_per_node=mask,
        node_asn=pool.node_asn,
        vpn_public_ip=public_ip,
        vpn_inside_ip=inside_ip,
        vpn_asn=pool.vpn_server.asn,
        is_main_router=pool.vpn_server.is_main_router,
        main_router_ip=rpool.main_router_ip,
        nodes=nodes,
        vpc_routes=(Route(node_cidr, attachment), Route(pod_cidr, attachment)),
        static_routes=(node_cidr, pod_cidr),
        tunnels=tuple(tunnels),
        vpn_server_routes=vpn_server_routes,
        main_router_routes=main_router_routes,
    )
