"""Activations: create (code shown once), list, revoke, and consume one use atomically.

A registration consumes a use with one conditional statement::

    UPDATE activations SET registrations = registrations + 1
     WHERE activation_id = :id AND registrations < max_registrations
       AND NOT revoked AND expires_at > :now

so two hosts racing for the last use cannot both win, whatever the backend: the row
lock (PostgreSQL) or the database write lock (SQLite) serialises them and the loser's
``WHERE`` no longer matches.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tether.domain.agent import (
    Activation,
    ActivationCreate,
    ActivationState,
    IssuedActivation,
    activation_state,
)
from tether.errors import Forbidden, Invalid, NotFound, Unauthenticated
from tether.pki import activation as pki_activation
from tether.pki.errors import (
    ActivationCodeMismatch,
    ActivationExhausted,
    ActivationExpired,
    ActivationSettingInvalid,
)
from tether.store.schema import ActivationRow, SiteRow, utcnow

#: The one message for an unknown id and a wrong code: holding an id reveals nothing.
WRONG_CREDENTIALS = "activation id or code is wrong"


def to_activation(row: ActivationRow, now: datetime) -> Activation:
    state = activation_state(
        revoked=row.revoked,
        expires_at=row.expires_at,
        registrations=row.registrations,
        max_registrations=row.max_registrations,
        now=now,
    )
    remaining = row.max_registrations - row.registrations if state is ActivationState.ACTIVE else 0
    return Activation(
        id=row.activation_id,
        site=row.site,
        created_at=row.created_at,
        expires_at=row.expires_at,
        max_registrations=row.max_registrations,
        registrations=row.registrations,
        remaining=remaining,
        revoked=row.revoked,
        state=state,
        created_by=row.created_by,
    )


def create(
    session: Session, body: ActivationCreate, *, actor: str, now: datetime | None = None
) -> IssuedActivation:
    now = now or utcnow()
    if session.scalars(select(SiteRow.id).where(SiteRow.name == body.site)).first() is None:
        raise Invalid(f"site {body.site!r} does not exist", field="site", rule="exists")
    try:
        new = pki_activation.new_activation(body.site, body.lifetime, body.max_registrations, now)
    except ActivationSettingInvalid as exc:
        raise Invalid(exc.message, field=exc.field, rule=exc.rule) from None
    row = ActivationRow(
        activation_id=new.id,
        site=new.site,
        code_hash=new.code_hash,
        created_at=new.created_at,
        expires_at=new.expires_at,
        max_registrations=new.max_registrations,
        registrations=0,
        revoked=False,
        created_by=actor[:128],
    )
    session.add(row)
    session.flush()
    return IssuedActivation(**to_activation(row, now).model_dump(), code=new.code)


def _row(session: Session, activation_id: str) -> ActivationRow:
    row = session.scalars(
        select(ActivationRow).where(ActivationRow.activation_id == activation_id)
    ).one_or_none()
    if row is None:
        raise NotFound("activation", activation_id)
    return row


def get(session: Session, activation_id: str, now: datetime | None = None) -> Activation:
    return to_activation(_row(session, activation_id), now or utcnow())


def list_activations(
    session: Session, *, site: str | None = None, now: datetime | None = None
) -> list[Activation]:
    now = now or utcnow()
    query = select(ActivationRow).order_by(ActivationRow.id)
    if site is not None:
        query = query.where(ActivationRow.site == site)
    return [to_activation(r, now) for r in session.scalars(query)]


def revoke(session: Session, activation_id: str, now: datetime | None = None) -> Activation:
    """Stop an activation from enrolling more hosts (hosts already enrolled stay)."""
    row = _row(session, activation_id)
    row.revoked = True
    session.flush()
    return to_activation(row, now or utcnow())


def check(session: Session, activation_id: str, code: str, now: datetime) -> ActivationRow:
    """Refuse (with a specific rule) unless ``code`` may enrol one more host now.

    Read-only: :func:`consume` takes the use. The code is checked before anything about
    the activation's state is revealed.
    """
    row = None
    if pki_activation.is_activation_id(activation_id):
        row = session.scalars(
            select(ActivationRow).where(ActivationRow.activation_id == activation_id)
        ).one_or_none()
    if row is None:
        # Spend the same work as a real check so timing does not reveal unknown ids.
        pki_activation.verify_code(code, _DUMMY_HASH)
        raise Unauthenticated(WRONG_CREDENTIALS, field="code", rule=ActivationCodeMismatch.rule)
    try:
        pki_activation.check_activation(
            code,
            code_hash=row.code_hash,
            expires_at=row.expires_at,
            max_registrations=row.max_registrations,
            registrations=row.registrations,
            now=now,
        )
    except ActivationCodeMismatch:
        raise Unauthenticated(
            WRONG_CREDENTIALS, field="code", rule=ActivationCodeMismatch.rule
        ) from None
    except ActivationExpired as exc:
        raise Forbidden(exc.message, field="activationID", rule=exc.rule) from None
    except ActivationExhausted as exc:
        raise Forbidden(exc.message, field="activationID", rule=exc.rule) from None
    if row.revoked:
        raise Forbidden(
            "activation was revoked; ask for a new one",
            field="activationID",
            rule="pki.activation.revoked",
        )
    return row


def consume(session: Session, activation_id: str, now: datetime) -> None:
    """Take one use of the activation, or refuse if none is left (exactly one racer wins)."""
    result = session.execute(
        update(ActivationRow)
        .where(
            ActivationRow.activation_id == activation_id,
            ActivationRow.registrations < ActivationRow.max_registrations,
            ActivationRow.revoked.is_(False),
            ActivationRow.expires_at > now,
        )
        .values(registrations=ActivationRow.registrations + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Forbidden(
            "activation has no registrations left (another host took the last one), expired "
            "or was revoked",
            field="activationID",
            rule=ActivationExhausted.rule,
        )


_DUMMY_HASH = pki_activation.hash_secret("not-a-code")
