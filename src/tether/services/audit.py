"""The audit log: who changed what, when, and how it ended."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tether.domain.resources import AuditRecord
from tether.store.repo import page
from tether.store.schema import AuditRow, utcnow


def write(session: Session, *, actor: str, action: str, target: str, status_code: int) -> None:
    if status_code < 400:
        result = "success"
    elif status_code in (401, 403):
        result = "denied"
    else:
        result = "failure"
    session.add(
        AuditRow(
            time=utcnow(),
            actor=actor[:128],
            action=action[:16],
            target=target[:512],
            status_code=status_code,
            result=result,
        )
    )


def list_records(
    session: Session,
    *,
    actor: str | None,
    limit: int,
    continue_token: str | None,
    newest_first: bool = False,
) -> tuple[list[AuditRecord], str | None]:
    query = select(AuditRow)
    if actor is not None:
        query = query.where(AuditRow.actor == actor)
    rows, token = page(
        session,
        query,
        AuditRow.id,
        limit=limit,
        continue_token=continue_token,
        newest_first=newest_first,
    )
    return [AuditRecord.model_validate(r, from_attributes=True) for r in rows], token
