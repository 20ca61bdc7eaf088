"""People's API tokens: ``tth_<id>_<secret>``; only SHA-256 of the secret is stored.

The secret has 256 bits of entropy, so a fast hash is enough (no brute force can walk
that space); the id part lets the server find the row without scanning, and the hash
comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.domain.resources import IssuedToken, Role, Token, TokenCreate
from tether.errors import Conflict, NotFound, Unauthenticated
from tether.store.schema import TokenRow, utcnow

PREFIX = "tth"


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def to_token(row: TokenRow) -> Token:
    return Token(
        id=row.token_id,
        name=row.name,
        role=Role(row.role),
        created_at=row.created_at,
        expires_at=row.expires_at,
        revoked=row.revoked,
    )


def issue(
    session: Session, body: TokenCreate, *, default_ttl_days: int, now: datetime | None = None
) -> IssuedToken:
    now = now or utcnow()
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    row = TokenRow(
        token_id=token_id,
        name=body.name,
        role=body.role.value,
        secret_hash=_hash(secret),
        created_at=now,
        expires_at=now + timedelta(days=body.ttl_days or default_ttl_days),
        revoked=False,
    )
    session.add(row)
    session.flush()
    return IssuedToken(**to_token(row).model_dump(), token=f"{PREFIX}_{token_id}_{secret}")


def _split(presented: str) -> tuple[str, str] | None:
    """``(id, secret)`` of a token shaped ``tth_<id>_<secret>``."""
    prefix, _, rest = presented.partition("_")
    token_id, _, secret = rest.partition("_")
    if prefix != PREFIX or not token_id or not secret or len(token_id) > 32:
        return None
    return token_id, secret


def claimed(session: Session, presented: str) -> TokenRow | None:
    """The row of the token id a presented token names, whether or not its secret is right
    (to attribute a refusal to the token that was sent)."""
    parts = _split(presented)
    if parts is None:
        return None
    return session.scalars(select(TokenRow).where(TokenRow.token_id == parts[0])).one_or_none()


def authenticate(session: Session, presented: str, *, now: datetime | None = None) -> TokenRow:
    """Return the token's row, or raise Unauthenticated without saying which part was wrong."""
    now = now or utcnow()
    row = claimed(session, presented)
    secret = (_split(presented) or ("", ""))[1]
    valid = (
        row is not None
        and hmac.compare_digest(row.secret_hash, _hash(secret))
        and not row.revoked
        and row.expires_at > now
    )
    if not valid or row is None:
        raise Unauthenticated(
            "the API token is unknown, revoked or expired", field="Authorization", rule="token"
        )
    return row


def list_tokens(session: Session) -> list[Token]:
    return [to_token(r) for r in session.scalars(select(TokenRow).order_by(TokenRow.id))]


def revoke(session: Session, token_id: str) -> Token:
    row = session.scalars(select(TokenRow).where(TokenRow.token_id == token_id)).one_or_none()
    if row is None:
        raise NotFound("token", token_id)
    row.revoked = True
    return to_token(row)


def bootstrap_admin(
    session: Session, *, default_ttl_days: int, force: bool = False, name: str = "bootstrap-admin"
) -> IssuedToken:
    """Create the first admin token. Refused once a live admin token exists, unless forced."""
    now = utcnow()
    live = session.scalars(
        select(TokenRow.token_id).where(
            TokenRow.role == Role.ADMIN.value, ~TokenRow.revoked, TokenRow.expires_at > now
        )
    ).first()
    if live and not force:
        raise Conflict(
            "an admin token already exists; use it to create more (tether token create), "
            "or pass --force to mint another one with direct database access",
            field="role",
            rule="bootstrap_once",
        )
    return issue(
        session, TokenCreate(name=name, role=Role.ADMIN), default_ttl_days=default_ttl_days, now=now
    )


def dead(session: Session, token_ids: Iterable[str], *, now: datetime | None = None) -> set[str]:
    """Which of ``token_ids`` no longer authenticate: revoked, expired or deleted."""
    wanted = set(token_ids)
    if not wanted:
        return set()
    now = now or utcnow()
    live = session.scalars(
        select(TokenRow.token_id).where(
            TokenRow.token_id.in_(wanted), ~TokenRow.revoked, TokenRow.expires_at > now
        )
    )
    return wanted - set(live)
