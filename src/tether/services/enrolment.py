"""Host enrolment: register with an activation and a CSR, renew, reset, revoke.

Each operation runs in the caller's transaction and checks everything before its first
write, so a refused registration changes nothing (the audit log is written apart).
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from tether.domain import resources as r
from tether.domain.agent import Enrolment, RegisterRequest
from tether.domain.models import EventType, HostSpec, ObjectKind
from tether.domain.states import HostEvent
from tether.errors import Conflict, Invalid, NotFound, PlaneError, Unauthenticated
from tether.pki import HostIdentity
from tether.pki.errors import NameInUse, PKIError
from tether.services import activations, desired, events
from tether.services import resources as svc
from tether.services.trust import (
    PlaneTrust,
    pki_error_status,
    record_certificate,
    reopen_enrolment,
    revoke_host_certificates,
)
from tether.store.repo import get_named
from tether.store.schema import HostAgentRow, HostCertRow, HostRow


def plane_error(exc: PKIError, field: str) -> PlaneError:
    """The API form of a trust-anchor refusal, keeping its stable ``rule``."""
    status = pki_error_status(exc)
    cls: type[PlaneError] = {422: Invalid, 409: Conflict}.get(status, Unauthenticated)
    return cls(exc.message, field=field, rule=exc.rule)


def _sign(trust: PlaneTrust, csr: str, name: str) -> tuple[bytes, int, datetime, str]:
    try:
        pem, cert = trust.sign(csr, name)
    except PKIError as exc:
        raise plane_error(exc, "csr") from None
    return pem, cert.serial_number, cert.not_valid_after_utc, trust.anchor.active.fingerprint


def register(
    session: Session,
    trust: PlaneTrust,
    req: RegisterRequest,
    *,
    now: datetime,
    heartbeat_seconds: float,
) -> Enrolment:
    """Enrol a host: check the activation, sign its CSR, create the host, take one use."""
    activation = activations.check(session, req.activation_id, req.code, now)
    rows = session.scalars(
        select(HostRow).where(or_(HostRow.name == req.name, HostRow.host_id == req.host_id))
    ).all()
    again: HostRow | None = None
    for row in rows:
        agent = session.get(HostAgentRow, row.name)
        if row.name == req.name and agent is not None and agent.reenrol_allowed:
            again = row
            continue
        if row.name == req.name and row.host_id != req.host_id:
            raise Conflict(NameInUse(req.name).message, field="name", rule=NameInUse.rule)
        raise Conflict(
            f"host {row.name!r} is already registered; a known host enrols again only after "
            f"an explicit reset (tether host reset-enrolment {row.name})",
            field="name",
            rule="already_registered",
        )
    if again is not None:
        _same_machine(session, again, req)
    if again is not None and again.site != activation.site:
        raise Conflict(
            f"host {again.name!r} belongs to site {again.site!r}, the activation to "
            f"{activation.site!r}",
            field="activationID",
            rule="same_site",
        )
    cert_pem, serial, not_after, issuer = _sign(trust, req.csr, req.name)

    activations.consume(session, activation.activation_id, now)  # first write
    inventory = req.inventory.model_dump(mode="json", by_alias=True)
    if again is None:
        svc.create_host(
            session,
            r.HostCreate(
                name=req.name, id=req.host_id, spec=HostSpec(site=activation.site, tags=req.tags)
            ),
        )
        host = get_named(session, HostRow, "host", req.name)
        host.inventory = inventory
        session.add(
            HostAgentRow(
                host_name=req.name,
                activation_id=activation.activation_id,
                agent_version=req.agent_version,
                failing_checks={},
                cert_serial=format(serial, "x"),
                cert_issuer=issuer,
                cert_not_after=not_after,
                enrolled_at=now,
                reenrol_allowed=False,
            )
        )
    else:
        again.host_id = req.host_id
        again.inventory = inventory
        again.resource_version += 1  # the inventory (a node's IP, say) may have changed
        again.spec = {**again.spec, "tags": req.tags} if req.tags else again.spec
        again.last_heartbeat = None
        again.health = "Unknown"
        agent = session.get(HostAgentRow, again.name)
        assert agent is not None
        agent.activation_id = activation.activation_id
        agent.agent_version = req.agent_version
        agent.failing_checks = {}
        agent.cert_serial = format(serial, "x")
        agent.cert_issuer = issuer
        agent.cert_not_after = not_after
        agent.enrolled_at = now
        agent.reenrol_allowed = False
        desired.drop_reimage(session, req.name)
    record_certificate(session, req.name, x509.load_pem_x509_certificate(cert_pem), issuer, now)
    events.record(
        session,
        ObjectKind.HOST,
        req.name,
        "Enrolled",
        f"enrolled with activation {activation.activation_id} at site {activation.site}; "
        f"certificate {format(serial, 'x')[:16]} valid until {not_after.isoformat()}",
        now=now,
    )
    session.flush()
    return Enrolment(
        name=req.name,
        certificate=cert_pem.decode(),
        ca_bundle=trust.bundle_pem().decode(),
        not_after=not_after,
        heartbeat_seconds=heartbeat_seconds,
    )


def _same_machine(session: Session, host: HostRow, req: RegisterRequest) -> None:
    """During a re-image, only the machine that was re-imaged may enrol under its name:
    its DMI product UUID must be the one it reported before (when it reported one). The
    seed's activation may be shared by the site's other machines."""
    before = (host.inventory or {}).get("productUuid") or ""
    if not before or desired.reimage_plan(session, host.name) is None:
        return
    if req.inventory.product_uuid != before:
        raise Conflict(
            f"host {host.name!r} is being re-imaged: only the same machine (product UUID "
            f"{before}) may enrol under its name",
            field="inventory.productUuid",
            rule="same_machine",
        )


def renew(
    session: Session,
    trust: PlaneTrust,
    name: str,
    csr: str,
    *,
    now: datetime,
    heartbeat_seconds: float,
    presented: str | None = None,
) -> Enrolment:
    """Sign a new certificate for an enrolled host (authenticated by its current one).

    ``presented`` is the serial (hex) of the certificate the request came with. It is
    checked against the store, not only the agent server's revocation cache, which
    another plane process refreshes every few seconds: a certificate revoked a moment ago
    must not buy its holder a fresh one."""
    # Locked: a reset (a re-image's report, say) committing meanwhile must see the new
    # certificate to revoke it, or this renewal must see the reset and refuse.
    agent = session.get(HostAgentRow, name, with_for_update=True)
    if agent is None:
        raise NotFound("host", name)
    if agent.reenrol_allowed:
        raise Unauthenticated(
            f"the enrolment of host {name!r} was reset; enrol the host again",
            field="clientCertificate",
            rule="pki.cert.revoked",
        )
    if presented is not None:
        row = session.scalars(select(HostCertRow).where(HostCertRow.serial == presented)).first()
        if row is not None and row.revoked_at is not None:
            raise Unauthenticated(
                f"certificate {presented} of host {name!r} was revoked; enrol the host again",
                field="clientCertificate",
                rule="pki.cert.revoked",
            )
    cert_pem, serial, not_after, issuer = _sign(trust, csr, name)
    record_certificate(session, name, x509.load_pem_x509_certificate(cert_pem), issuer, now)
    agent.cert_serial = format(serial, "x")
    agent.cert_issuer = issuer
    agent.cert_not_after = not_after
    session.flush()
    return Enrolment(
        name=name,
        certificate=cert_pem.decode(),
        ca_bundle=trust.bundle_pem().decode(),
        not_after=not_after,
        heartbeat_seconds=heartbeat_seconds,
    )


def reset_enrolment(
    session: Session, trust: PlaneTrust | None, name: str, *, now: datetime
) -> r.Host:
    """Let a known host enrol again: reset it, revoke its certificates, allow one re-enrol.

    Refused while the host is in a pool (release it first).
    """
    host = svc.transition_host(session, name, HostEvent.RESET)
    revoked = reopen_enrolment(session, name, "enrolment reset", now=now)
    session.flush()
    if trust is not None:
        for serial, issuer in revoked:
            trust.note_revoked(serial, issuer)
    return host


def unpair_host(
    session: Session,
    trust: PlaneTrust | None,
    name: str,
    resource_version: int | None,
    *,
    now: datetime,
) -> None:
    """Unpair and remove a host (refused while it is in a pool).

    Its certificates are revoked in the same transaction: otherwise a removed host's
    certificate would keep working, and would speak for a new host enrolled later under
    the same name.
    """
    svc.delete_host(session, name, resource_version)
    revoked = revoke_host_certificates(session, name, "cessationOfOperation", now)
    session.flush()
    if trust is not None:
        for serial, issuer in revoked:
            trust.note_revoked(serial, issuer)


def revoke_certificates(
    session: Session, trust: PlaneTrust | None, name: str, *, now: datetime
) -> int:
    """Revoke a host's live certificates (key compromise): it must enrol again."""
    get_named(session, HostRow, "host", name)
    revoked = revoke_host_certificates(session, name, "keyCompromise", now)
    events.record(
        session,
        ObjectKind.HOST,
        name,
        "CertificateRevoked",
        f"{len(revoked)} certificate(s) revoked",
        EventType.WARNING,
        now=now,
    )
    if trust is not None:
        for serial, issuer in revoked:
            trust.note_revoked(serial, issuer)
    return len(revoked)


def check_not_revoked(session: Session, trust: PlaneTrust, identity: HostIdentity) -> None:
    """Refuse a certificate the store lists as revoked (401), and make that known in this
    process at once: a revocation written by another process otherwise takes effect only
    at the agent server's next refresh."""
    revoked = session.scalars(
        select(HostCertRow.revoked_at).where(HostCertRow.serial == identity.serial_hex)
    ).one_or_none()
    if revoked is not None:
        trust.note_revoked(identity.serial, identity.issuer_fingerprint)
        raise Unauthenticated(
            f"certificate serial {identity.serial_hex} was revoked",
            field="clientCertificate",
            rule="pki.cert.revoked",
        )
