"""Network documents over HTTP: check and plan the same ``HybridNetwork`` the CLI takes.

Errors come back as a 422 in the usual error shape, with the complete finding list
(``findings``: ``[{"rule", "path", "message", "severity"}]``, exactly what
``tether net check -o json`` prints). Plans are returned without their pre-shared keys:
keys generated here are used for the tunnel configs and thrown away; use
``tether net plan --out DIR`` to get the key files.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import Field

from tether import netplan
from tether.api.deps import DB, Viewer
from tether.domain.base import Model
from tether.errors import Invalid
from tether.services import network, resources

router = APIRouter(prefix="/api/v1", tags=["network"])

Document = Annotated[
    dict[str, Any], Body(description="A HybridNetwork document (see docs/network.md).")
]


def _refuse(findings: list[netplan.Finding]) -> Invalid:
    errors = [f for f in findings if f.is_error]
    first = errors[0]
    return Invalid(
        first.text,
        field=first.path,
        rule=first.rule,
        details=[{"field": f.path, "rule": f.rule, "message": f.message} for f in errors],
        extra={"findings": [f.as_dict() for f in findings]},
    )


@router.post("/network/check")
def check_network(document: Document, _: Viewer) -> dict[str, Any]:
    """Check a document: 200 with warnings when valid, 422 with every finding when not."""
    findings = netplan.check_data(document)
    if netplan.has_errors(findings):
        raise _refuse(findings)
    return {"valid": True, "findings": [f.as_dict() for f in findings]}


class PlanRequest(Model):
    """What to plan; unknown keys are refused like everywhere else."""

    document: dict[str, Any] = Field(description="A HybridNetwork document (see docs/network.md).")
    previous: dict[str, Any] | None = Field(
        default=None,
        description="A previous plan's allocations.json: keeps every node's block.",
    )


@router.post("/network/plan")
def plan_network(body: PlanRequest, _: Viewer) -> dict[str, Any]:
    """Plan a document: routes, VPN, BGP and CNI configs (without secrets)."""
    doc, findings = netplan.load_document(body.document)
    findings = findings if doc is None else netplan.check(doc)
    if doc is None or netplan.has_errors(findings):
        raise _refuse(findings)
    keys = {key: secrets.token_hex(32) for key in netplan.psk_ids(doc)}
    result = netplan.plan(doc, keys, netplan.parse_allocations(body.previous or {}))
    return {
        "summary": result.summary(),
        "allocations": result.allocations_document(),
        "plan": result.as_dict(),
        "files": result.files(include_secrets=False),
        "findings": [f.as_dict() for f in findings],
    }


@router.get("/clusters/{name}/network")
def cluster_network(name: str, db: DB, _: Viewer) -> dict[str, Any]:
    """The cluster and its pools as a HybridNetwork document, with nodes from hosts."""
    with db.session() as session:
        resources.get_cluster(session, name)  # 404 when missing
        return network.document(session, name)
