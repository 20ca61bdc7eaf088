"""The plane's objects seen as one ``HybridNetwork`` document, checked by :mod:`tether.netplan`.

Creating or changing a cluster or a pool is refused when it *adds* network errors: the
document is built from the store before and after the change, and only errors the
change introduces count. An object that was already wrong (say, data from before a
rule existed) does not block unrelated changes, but nothing new can make it worse.
"""

from __future__ import annotations

from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, ip_address
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether import netplan
from tether.domain.models import ClusterSpec, PoolSpec
from tether.domain.nodeidentity import host_addresses
from tether.errors import Invalid
from tether.store.schema import ClusterRow, HostRow, PoolRow

#: Stands in for a cluster's cloud VPN endpoint while it has none: only for checking the
#: CIDR rules, and every finding about it is dropped (planning needs the real one).
_NO_ENDPOINT = "192.0.2.1"


def _dump(spec: ClusterSpec | PoolSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def _node_ip(inventory: dict[str, Any], node_cidr: IPv4Network) -> str | None:
    for text in sorted(host_addresses(inventory)):
        address = ip_address(text)
        if isinstance(address, IPv4Address) and address in node_cidr:
            return text
    return None


def _pool_entry(name: str, spec: PoolSpec, hosts: Sequence[HostRow]) -> dict[str, Any]:
    data = _dump(spec)
    nodes = []
    for host in hosts:
        ip = _node_ip(host.inventory or {}, spec.node_cidr)
        if ip is not None:
            nodes.append({"name": host.name, "ip": ip})
    return {
        "name": name,
        "site": spec.site,
        "nodeCIDR": data["nodeCIDR"],
        "podCIDR": data["podCIDR"],
        "podCIDRMaskPerNode": spec.pod_cidr_mask_per_node,
        "routing": spec.routing.value,
        "nodeASN": spec.node_asn,
        **({"mainRouterIP": data["mainRouterIP"]} if spec.main_router_ip else {}),
        "vpnServer": data["vpnServer"],
        "nodes": nodes,
    }


def document(
    session: Session,
    cluster: str,
    *,
    cluster_spec: ClusterSpec | None = None,
    pool: tuple[str, PoolSpec] | None = None,
) -> dict[str, Any]:
    """The cluster's network as a HybridNetwork document, optionally with one change.

    ``cluster_spec`` replaces the stored cluster spec; ``pool=(name, spec)`` replaces one
    pool in place (so before and after name the same paths), or adds it last
    when it is new.
    """
    if cluster_spec is None:
        row = session.scalars(select(ClusterRow).where(ClusterRow.name == cluster)).one()
        cluster_spec = ClusterSpec.model_validate(row.spec)
    data = _dump(cluster_spec)
    pools = session.scalars(
        select(PoolRow).where(PoolRow.cluster == cluster).order_by(PoolRow.id)
    ).all()
    names = [p.name for p in pools]
    hosts = session.scalars(select(HostRow).where(HostRow.pool.in_(names))).all() if names else []
    entries = []
    changed = dict([pool]) if pool is not None else {}
    for pool_row in pools:
        members = [h for h in hosts if h.pool == pool_row.name]
        spec = changed.pop(pool_row.name, None) or PoolSpec.model_validate(pool_row.spec)
        entries.append(_pool_entry(pool_row.name, spec, members))
    for name, spec in changed.items():  # a pool being created
        entries.append(_pool_entry(name, spec, []))
    return {
        "apiVersion": netplan.API_VERSION,
        "kind": netplan.KIND,
        "cluster": {
            "name": cluster,
            "vpcCIDR": data["vpcCIDR"],
            "serviceCIDR": data["serviceCIDR"],
            "remoteNodeNetworks": data["remoteNodeNetworks"],
            "remotePodNetworks": data["remotePodNetworks"],
            "allowCGNAT": cluster_spec.allow_cgnat,
            **({"vpnEndpoint": data["vpnEndpoint"]} if "vpnEndpoint" in data else {}),
        },
        "pools": entries,
    }


def with_endpoint(data: dict[str, Any]) -> dict[str, Any]:
    """The document with a stand-in cloud VPN endpoint when it has none, for what does
    not need the real one (the CIDR rules, the cluster's own resources)."""
    if "vpnEndpoint" in data["cluster"]:
        return data
    return {**data, "cluster": {**data["cluster"], "vpnEndpoint": {"publicIP": _NO_ENDPOINT}}}


def _errors(data: dict[str, Any]) -> set[tuple[str, str, str]]:
    """The document's errors; a missing cloud VPN endpoint is not one (yet)."""
    known = "vpnEndpoint" in data["cluster"]
    data = with_endpoint(data)
    return {
        (f.rule, f.path, f.message)
        for f in netplan.check_data(data)
        if f.is_error and (known or not f.path.startswith("cluster.vpnEndpoint"))
    }


def check_cluster_change(session: Session, name: str, spec: ClusterSpec, *, exists: bool) -> None:
    """Refuse a cluster create/update that breaks a network rule."""
    before = document(session, name) if exists else None
    refuse_new_errors(before, document(session, name, cluster_spec=spec), prefix="cluster")


def check_pool_change(session: Session, name: str, spec: PoolSpec) -> None:
    """Refuse a pool create/update that breaks a network rule of its cluster."""
    before = document(session, spec.cluster)
    after = document(session, spec.cluster, pool=(name, spec))
    names = [p["name"] for p in after["pools"]]
    key = netplan.member_keys(names)[names.index(name)]
    refuse_new_errors(before, after, prefix=f"pools[{key}]")


def refuse_new_errors(before: dict[str, Any] | None, after: dict[str, Any], *, prefix: str) -> None:
    """Raise :class:`Invalid` listing every error ``after`` has that ``before`` had not.

    ``prefix`` is the document path of the object being changed (``cluster`` or
    ``pools[NAME]``); it is shown as ``spec`` so the field matches the request body.
    """
    added = sorted(_errors(after) - (_errors(before) if before else set()), key=lambda f: f[1])
    if not added:
        return

    def field(path: str) -> str:
        return "spec" + path[len(prefix) :] if path.startswith(prefix) else path

    rule, path, message = added[0]
    raise Invalid(
        f"{field(path)}: {message}",
        field=field(path),
        rule=rule,
        details=[{"field": field(p), "rule": r, "message": m} for r, p, m in added],
    )
