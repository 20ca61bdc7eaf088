"""Pure network planning: CIDR checks, routes, VPN/BGP/CNI configs (no I/O).

The API the CLI and the REST API call::

    doc, findings = load_document(data)      # data: the parsed YAML/JSON mapping
    findings = check(doc)                    # every rule; errors and warnings
    resolved, findings = check_document(doc) # the same, with the parsed view for:
    result = plan_checked(resolved, findings, psks)  # plan without checking again
    findings = check_data(data)              # both at once, as complete as possible
    result = plan(doc, psks)                 # raises PlanError when check() has errors
    result.files()                           # relative path -> content
    result.recipes()                         # the same, each rendered when called
    result.summary()                         # one row per pool

Nothing here reads or writes files, opens sockets or generates secrets: keys come in
through ``psks`` (see :func:`psk_ids`), and the edges write the files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tether.netplan.allocate import Source
from tether.netplan.document import (
    API_VERSION,
    KIND,
    Cluster,
    HybridNetwork,
    Node,
    Pool,
    VpnEndpoint,
    VpnServer,
    member_keys,
    parse_document,
    schema_findings,
    stand_in_document,
)
from tether.netplan.findings import RULE_IDS, RULES, Finding, Rule, Severity, has_errors
from tether.netplan.model import NodePlan, PoolPlan, Route, Tunnel
from tether.netplan.planner import (
    MissingSecretError,
    Plan,
    PlanError,
    PskSource,
    Recipe,
    parse_allocations,
    plan,
    plan_checked,
    psk_ids,
    tunnel_names,
)
from tether.netplan.rules import Resolved, check_document


def load_document(data: Any) -> tuple[HybridNetwork | None, list[Finding]]:
    """Validate the shape of a parsed document; ``(doc, [])`` or ``(None, findings)``."""
    return parse_document(data)


def check(doc: HybridNetwork) -> list[Finding]:
    """Every rule over a well-formed document: errors and warnings, all at once."""
    return check_document(doc)[1]


#: Rules that judge one field against another: when that other one has a schema error,
#: its stand-in would make them fire wrongly, so they are dropped. A path starting with
#: ``.`` is in the same pool as the finding.
_JUDGED_AGAINST = {
    "pool.node-cidr-in-remote": "cluster.remoteNodeNetworks",
    "pool.pod-cidr-in-remote": "cluster.remotePodNetworks",
    "cluster.remote-unused": "pools",
    "pool.main-router-ip": ".vpnServer.isMainRouter",
    "pool.pod-utilisation": ".podCIDRMaskPerNode",
    "node.pod-cidr-mask": ".podCIDRMaskPerNode",
}


def _judged_against(finding: Finding) -> str:
    other = _JUDGED_AGAINST.get(finding.rule, "$")
    if other.startswith("."):
        return finding.path[: finding.path.index("]") + 1] + other
    return other


def _related(path: str, other: str) -> bool:
    """Whether ``path`` is ``other``, inside it, or contains it."""
    inner, outer = (path, other) if len(path) >= len(other) else (other, path)
    return inner == outer or (inner.startswith(outer) and inner[len(outer)] in ".[")


def check_data(data: Any) -> list[Finding]:
    """Check a parsed document that may not even be well-formed.

    Schema findings come first; the rules then still run over a stand-in document
    (:func:`~tether.netplan.document.stand_in_document`) where each bad field is
    replaced, so a missing field or a typo does not hide the other problems. Findings
    about replaced fields are left out: the schema finding already names them.
    """
    doc, findings = parse_document(data)
    if doc is not None:
        return check(doc)
    stand_in = stand_in_document(data) if isinstance(data, Mapping) else None
    if stand_in is None:
        return findings
    reported = [f.path for f in findings]
    return findings + [
        f
        for f in check(stand_in)
        if not any(_related(f.path, r) or _related(_judged_against(f), r) for r in reported)
    ]


__all__ = [
    "API_VERSION",
    "KIND",
    "RULES",
    "RULE_IDS",
    "Cluster",
    "Finding",
    "HybridNetwork",
    "MissingSecretError",
    "Node",
    "NodePlan",
    "Plan",
    "PlanError",
    "Pool",
    "PoolPlan",
    "PskSource",
    "Recipe",
    "Resolved",
    "Route",
    "Rule",
    "Severity",
    "Source",
    "Tunnel",
    "VpnEndpoint",
    "VpnServer",
    "check",
    "check_data",
    "check_document",
    "has_errors",
    "load_document",
    "member_keys",
    "parse_allocations",
    "plan",
    "plan_checked",
    "psk_ids",
    "schema_findings",
    "tunnel_names",
]
