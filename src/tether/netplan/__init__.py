"""Pure network planning: CIDR checks, routes, VPN/BGP/CNI configs (no I/O).

The API the CLI and the REST API call::

    doc, findings = load_document(data)      # data: the parsed YAML/JSON mapping
    findings = check(doc)                    # every rule; errors and warnings
    findings = check_data(data)              # both at once, as complete as possible
    result = plan(doc, psks)                 # raises PlanError when check() has errors
    result.files()                           # relative path -> content
    result.summary()                         # one row per pool

Nothing here reads or writes files, opens sockets or generates secrets: keys come in
through ``psks`` (see :func:`psk_ids`), and the edges write the files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

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
    parse_document,
    schema_findings,
)
from tether.netplan.findings import RULE_IDS, RULES, Finding, Rule, Severity, has_errors
from tether.netplan.model import NodePlan, PoolPlan, Route, Tunnel
from tether.netplan.planner import (
    MissingSecretError,
    Plan,
    PlanError,
    PskSource,
    parse_allocations,
    plan,
    psk_ids,
)
from tether.netplan.rules import check_document


def load_document(data: Any) -> tuple[HybridNetwork | None, list[Finding]]:
    """Validate the shape of a parsed document; ``(doc, [])`` or ``(None, findings)``."""
    return parse_document(data)


def check(doc: HybridNetwork) -> list[Finding]:
    """Every rule over a well-formed document: errors and warnings, all at once."""
    return check_document(doc)[1]


def check_data(data: Any) -> list[Finding]:
    """Check a parsed document that may not even be well-formed.

    Schema findings come first; the rules then still run over the cluster and every
    pool that is well-formed on its own, so one typo does not hide the other problems.
    """
    doc, findings = parse_document(data)
    if doc is not None:
        return check(doc)
    if not isinstance(data, Mapping):
        return findings
    try:
        cluster = Cluster.model_validate(data.get("cluster"))
    except ValidationError:
        return findings
    raw_pools = data.get("pools")
    pools: list[Pool] = []
    indices: list[int] = []
    if isinstance(raw_pools, list):
        for i, raw in enumerate(raw_pools):
            try:
                pools.append(Pool.model_validate(raw))
                indices.append(i)
            except ValidationError:
                continue
    partial = HybridNetwork.model_construct(
        api_version=str(data.get("apiVersion", "")),
        kind=str(data.get("kind", "")),
        cluster=cluster,
        pools=pools,
    )
    rule_findings = check_document(partial, indices)[1]
    # the partial document lacks apiVersion/kind when those were the schema errors
    reported = {f.path for f in findings}
    return findings + [f for f in rule_findings if f.path not in reported]


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
    "Route",
    "Rule",
    "Severity",
    "Source",
    "Tunnel",
    "VpnEndpoint",
    "VpnServer",
    "check",
    "check_data",
    "has_errors",
    "load_document",
    "parse_allocations",
    "plan",
    "psk_ids",
    "schema_findings",
]
