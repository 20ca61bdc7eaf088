"""What needs attention now: candidates read from the store, judged by the pure rules of
:mod:`tether.domain.attention`.

Only candidates are read (hosts Unhealthy or Unreachable, hosts whose last plan failed,
hosts whose Node is not Ready, failed or progressing rollouts), each with one indexed or
small query, so the answer costs the same however many healthy hosts there are.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from tether.domain.attention import Attention, needs_attention
from tether.domain.rollout import RolloutState
from tether.domain.states import HostState
from tether.services.resources import host_views
from tether.services.rollouts import row_view
from tether.store.schema import DesiredStateRow, HostRow, NodeStatusRow, RolloutRow

__all__ = ["attention", "plan_failed"]


def plan_failed() -> ColumnElement[bool]:
    """Desired states whose agent reported the current document as failed (SQL)."""
    return and_(
        DesiredStateRow.applied_hash == DesiredStateRow.hash,
        DesiredStateRow.applied_result["ok"].as_boolean().is_(False),
    )


def attention(session: Session, now: datetime) -> Attention:
    failed = select(DesiredStateRow.host_name).where(plan_failed())
    not_ready = select(NodeStatusRow.host_name).where(NodeStatusRow.ready.is_not(True))
    rows = session.scalars(
        select(HostRow).where(
            or_(
                HostRow.state.in_([HostState.UNHEALTHY.value, HostState.UNREACHABLE.value]),
                HostRow.name.in_(failed),
                HostRow.name.in_(not_ready),
            )
        )
    ).all()
    rollouts = session.scalars(
        select(RolloutRow).where(
            RolloutRow.state.in_([RolloutState.FAILED.value, RolloutState.PROGRESSING.value])
        )
    ).all()
    return needs_attention(host_views(session, rows), [row_view(r) for r in rollouts], now)
