"""The ``HybridNetwork`` document: one cluster and its hybrid node pools.

Addresses and networks are kept as the strings the user wrote. The checker
(:mod:`tether.netplan.rules`) parses them and reports every bad one as a finding with
a rule id and a path, instead of letting one parse error hide all the others.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from copy import deepcopy
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from tether.domain.base import Model
from tether.netplan.addresses import collector_paused, is_dns1123_subdomain
from tether.netplan.findings import Finding

API_VERSION = "tether.io/v1alpha1"
KIND = "HybridNetwork"

Routing = Literal["bgp", "static"]


class VpnEndpoint(Model):
    """The cloud side of every site-to-site VPN (the VPC's VPN gateway)."""

    public_ip: str = Field(description="Outside address of tunnel 1 on the cloud side.")
    secondary_public_ip: str | None = Field(
        default=None,
        description="Outside address of tunnel 2 on the cloud side; defaults to publicIP.",
    )


class VpnServer(Model):
    """A site's IPsec VPN server, which terminates the pool's two tunnels."""

    public_ip: str = Field(description="Address the cloud reaches the VPN server on.")
    inside_ip: str = Field(description="The VPN server's address inside the pool's nodeCIDR.")
    is_main_router: bool = Field(
        default=True,
        description="True when the VPN server is the nodes' default gateway.",
    )
    asn: int | None = Field(
        default=None, description="The VPN server's BGP AS number (needed for routing: bgp)."
    )


class Node(Model):
    """One hybrid node of a pool."""

    name: str = Field(description="Kubernetes node name (DNS-1123 subdomain).")
    ip: str = Field(description="The node's address inside the pool's nodeCIDR.")
    pod_cidr: str | None = Field(
        default=None,
        description="Pins the node's pod CIDR block; allocated by the planner when absent.",
    )


class Pool(Model):
    """A hybrid node pool: one site's hosts serving the cluster."""

    name: str = Field(description="Pool name (DNS-1123 label), unique in the document.")
    site: str = Field(description="The site (DNS-1123 label) the pool's hosts are in.")
    node_cidr: str = Field(description="The pool's node network, inside a remote node network.")
    pod_cidr: str = Field(description="The pool's pod network, inside a remote pod network.")
    pod_cidr_mask_per_node: int = Field(
        default=24, description="Prefix length of each node's pod CIDR block."
    )
    routing: Routing = Field(
        default="static",
        description="How the site learns pod routes: bgp (CNI peers) or static routes.",
    )
    node_asn: int = Field(default=64512, description="AS number the nodes' CNI speaks BGP with.")
    main_router_ip: str | None = Field(
        default=None,
        description="The site's main router (nodes' gateway) when the VPN server is not it.",
    )
    vpn_server: VpnServer = Field(description="The site VPN server for this pool.")
    nodes: list[Node] = Field(default_factory=list, description="The pool's nodes.")


class Cluster(Model):
    """The hybrid-enabled cluster whose control plane runs in the cloud."""

    name: str = Field(description="Cluster name (DNS-1123 label).")
    vpc_cidr: str = Field(description="The cloud VPC's network.")
    service_cidr: str = Field(description="The Kubernetes service network.")
    remote_node_networks: list[str] = Field(
        default_factory=list, description="On-prem networks hybrid nodes live in (at most 15)."
    )
    remote_pod_networks: list[str] = Field(
        default_factory=list, description="On-prem networks hybrid pods live in (at most 15)."
    )
    allow_cgnat: bool = Field(
        default=False,
        alias="allowCGNAT",
        description="Also allow remote networks inside 100.64.0.0/10.",
    )
    vpn_endpoint: VpnEndpoint = Field(description="The cloud side of the site VPNs.")


class HybridNetwork(Model):
    """The whole document: ``kind: HybridNetwork``."""

    api_version: str = Field(description="Always tether.io/v1alpha1.")
    kind: str = Field(description="Always HybridNetwork.")
    cluster: Cluster
    pools: list[Pool] = Field(default_factory=list)


def member_keys(names: Sequence[object]) -> list[str]:
    """How finding paths name the members of a list: ``pools[edge1]``, ``nodes[edge1-n0]``.

    A member is named by its ``name`` when that is a DNS-1123 subdomain, not only digits
    (which would read as a position) and unique in its list; otherwise by its position
    counting from 0 (``pools[3]``), so every path stays unambiguous.
    """
    strings = [n for n in names if isinstance(n, str)]
    repeated: set[str] = set()
    if len(set(strings)) != len(strings):  # counted only then: a list is usually unique
        repeated = {n for n, count in Counter(strings).items() if count > 1}
    return [
        n
        if isinstance(n, str) and n not in repeated and not n.isdigit() and is_dns1123_subdomain(n)
        else str(i)
        for i, n in enumerate(names)
    ]


def _names(items: Sequence[Any]) -> list[object]:
    return [item.get("name") if isinstance(item, Mapping) else None for item in items]


def _loc_path(loc: tuple[int | str, ...], data: Any, keys: dict[int, list[str]]) -> str:
    """Render an error location in ``data`` as a wire path: ``pools[edge1].vpnServer.asn``.

    ``keys`` caches each list's :func:`member_keys` by identity, so rendering every error
    of a large document stays linear.
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            if isinstance(data, list) and 0 <= part < len(data):
                if id(data) not in keys:
                    keys[id(data)] = member_keys(_names(data))
                out += f"[{keys[id(data)][part]}]"
                data = data[part]
            else:
                out += f"[{part}]"
                data = None
        else:
            out += f".{part}" if out else part
            data = data.get(part) if isinstance(data, Mapping) else None
    return out or "$"


def _clean(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    return tuple(part for part in loc if not isinstance(part, str) or part)


def _message(item: ErrorDetails) -> str:
    if item["type"] == "extra_forbidden":
        return "unknown field"
    if item["type"] == "missing":
        return "required field is missing"
    return item["msg"]


def schema_findings(error: ValidationError, data: Any = None) -> list[Finding]:
    """Turn a pydantic ``ValidationError`` about ``data`` into ``schema`` findings."""
    keys: dict[int, list[str]] = {}
    findings = []
    for item in error.errors(include_url=False):
        findings.append(
            Finding("schema", _loc_path(_clean(item["loc"]), data, keys), _message(item))
        )
    return findings


def parse_document(data: Any) -> tuple[HybridNetwork | None, list[Finding]]:
    """Validate the shape of ``data``; return the document or ``schema`` findings."""
    if not isinstance(data, Mapping):
        return None, [Finding("schema", "$", "the document must be a mapping")]
    try:
        with collector_paused():
            return HybridNetwork.model_validate(data), []
    except ValidationError as error:
        return None, schema_findings(error, data)


#: At most this many rounds of :func:`stand_in_document`; each round fixes one level of
#: nesting (a missing ``vpnServer``, then its missing fields), and the model is 4 deep.
_REPAIR_ROUNDS = 8
_ABSENT = object()


def stand_in_document(data: Mapping[str, Any]) -> HybridNetwork | None:
    """A well-formed stand-in for a malformed ``data``, so the rules can still run.

    Every field with a schema error is replaced: unknown fields and bad optional ones
    are dropped (their default applies), bad required ones get an empty placeholder
    (``""``, ``{}``, ``[]``) that the rules treat as unparseable. Findings about those
    fields must then be dropped by the caller: they repeat the schema finding.
    ``None`` when no stand-in is found.
    """
    copy: Any = deepcopy(dict(data))
    for _ in range(_REPAIR_ROUNDS):
        try:
            with collector_paused():
                return HybridNetwork.model_validate(copy)
        except ValidationError as error:
            changed = [_stand_in(copy, _clean(item["loc"])) for item in error.errors()]
            if not any(changed):
                return None
    return None


def _stand_in(data: Any, loc: tuple[int | str, ...]) -> bool:
    """Replace or drop the value at ``loc`` in ``data``; whether anything changed (never
    for the document itself: an error with no path, such as an unknown field named ``""``)."""
    if not loc:
        return False
    *outer, last = loc
    parent = data
    for part in outer:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return False
    info, annotation = _field_at(loc)
    if isinstance(parent, dict) and isinstance(last, str):
        if info is None or not info.is_required():
            return parent.pop(last, _ABSENT) is not _ABSENT
        parent[last] = _placeholder(annotation)
        return True
    if isinstance(parent, list) and isinstance(last, int) and 0 <= last < len(parent):
        parent[last] = _placeholder(annotation)
        return True
    return False


def _field_at(loc: tuple[int | str, ...]) -> tuple[FieldInfo | None, Any]:
    """The model field at ``loc`` (``None`` for list items) and the type expected there."""
    annotation: Any = HybridNetwork
    info: FieldInfo | None = None
    for part in loc:
        if isinstance(part, int):
            annotation = (get_args(annotation) or (None,))[0]
            info = None
            continue
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None, None
        by_wire = {f.alias or name: f for name, f in annotation.model_fields.items()}
        info = by_wire.get(part)
        if info is None:
            return None, None
        annotation = info.annotation
    return info, annotation


def _placeholder(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {}
    if get_origin(annotation) is list:
        return []
    return ""
