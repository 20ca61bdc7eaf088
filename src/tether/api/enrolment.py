"""People's endpoints for host bootstrap: activations, enrolment resets, desired state, PKI.

Activations, resets and desired-state writes need the operator role; reading desired
state, the CA bundle and the CRL needs viewer.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from tether.api.deps import DB, Operator, Viewer
from tether.domain import resources as r
from tether.domain.agent import (
    Activation,
    ActivationCreate,
    DesiredSet,
    DesiredStatus,
    IssuedActivation,
)
from tether.domain.models import Name
from tether.services import activations, desired, enrolment
from tether.services.trust import PlaneTrust
from tether.settings import Settings
from tether.store.schema import utcnow

router = APIRouter(prefix="/api/v1")
ActivationPath = Annotated[str, Path(max_length=32, description="Activation id (act-...).")]
HostPath = Annotated[str, Path(max_length=253, description="Host name.")]


def _trust(request: Request) -> PlaneTrust | None:
    plane = getattr(request.app.state, "agent_plane", None)
    return plane.trust if plane is not None else None


def _trust_or_load(request: Request) -> PlaneTrust:
    trust = _trust(request)
    if trust is None:
        trust = getattr(request.app.state, "plane_trust", None)
        if trust is None:
            settings: Settings = request.app.state.settings
            trust = PlaneTrust(settings)
            request.app.state.plane_trust = trust
    return trust


@router.post("/activations", status_code=status.HTTP_201_CREATED, tags=["activations"])
def create_activation(body: ActivationCreate, db: DB, who: Operator) -> IssuedActivation:
    """Create an activation. The response is the only time its code is shown."""
    with db.session() as s:
        return activations.create(s, body, actor=who.name)


@router.get("/activations", tags=["activations"])
def list_activations(
    db: DB, _: Operator, site: Annotated[Name | None, Query()] = None
) -> dict[str, list[Activation]]:
    with db.session() as s:
        return {"items": activations.list_activations(s, site=site)}


@router.get("/activations/{activation_id}", tags=["activations"])
def get_activation(activation_id: ActivationPath, db: DB, _: Operator) -> Activation:
    with db.session() as s:
        return activations.get(s, activation_id)


@router.delete("/activations/{activation_id}", tags=["activations"])
def revoke_activation(activation_id: ActivationPath, db: DB, _: Operator) -> Activation:
    """Revoke: no further host can enrol with it (enrolled hosts stay)."""
    with db.session() as s:
        return activations.revoke(s, activation_id)


@router.post("/hosts/{name}/reset-enrolment", tags=["hosts"])
def reset_enrolment(name: HostPath, request: Request, db: DB, _: Operator) -> r.Host:
    """Reset a host (not in a pool), revoke its certificates, allow it to enrol again."""
    trust = _trust(request)
    with db.session() as s:
        host = enrolment.reset_enrolment(s, trust, name, now=utcnow())
    plane = getattr(request.app.state, "agent_plane", None)
    if plane is not None:
        plane.table.forget(name)
    return host


@router.post("/hosts/{name}/revoke-certificates", tags=["hosts"])
def revoke_certificates(name: HostPath, request: Request, db: DB, _: Operator) -> dict[str, int]:
    """Revoke the host's certificates at once (its key may have leaked)."""
    with db.session() as s:
        count = enrolment.revoke_certificates(s, _trust(request), name, now=utcnow())
    return {"revoked": count}


@router.put("/hosts/{name}/desired", tags=["hosts"])
def set_desired(
    name: HostPath, body: DesiredSet, request: Request, db: DB, _: Operator
) -> DesiredStatus:
    """Store the host's desired-state document; its agent picks it up at once."""
    with db.session() as s:
        result = desired.set_desired(s, name, body.document)
    plane = getattr(request.app.state, "agent_plane", None)
    if plane is not None:
        plane.notify_desired({name: result.hash})
    return result


@router.get("/hosts/{name}/desired", tags=["hosts"])
def get_desired(name: HostPath, db: DB, _: Viewer) -> DesiredStatus:
    with db.session() as s:
        return desired.get_status(s, name)


@router.get("/pki/ca", tags=["pki"], response_class=Response)
async def ca_bundle(request: Request, _: Viewer) -> Response:
    """The CAs hosts must trust for the plane (PEM): goes into seed images."""
    trust = await run_in_threadpool(_trust_or_load, request)
    return Response(trust.bundle_pem(), media_type="application/x-pem-file")


@router.get("/pki/crl", tags=["pki"], response_class=Response)
async def crl(request: Request, db: DB, _: Viewer) -> Response:
    """The CRL bundle (PEM): one signed CRL per CA trusted now."""
    trust = await run_in_threadpool(_trust_or_load, request)
    await run_in_threadpool(trust.load_revocations, db)
    return Response(
        await run_in_threadpool(trust.crl_bundle_pem), media_type="application/x-pem-file"
    )


@router.get("/pki/bootstrap", tags=["pki"])
async def bootstrap_info(request: Request, _: Viewer) -> dict[str, str]:
    """What a seed image needs besides the activation: the agent server's URL and CAs."""
    trust = await run_in_threadpool(_trust_or_load, request)
    settings: Settings = request.app.state.settings
    return {"agentURL": settings.agent_url, "caBundle": trust.bundle_pem().decode()}
