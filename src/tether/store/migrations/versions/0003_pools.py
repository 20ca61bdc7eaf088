"""pools that run themselves: members, rollouts, observed Node status, pool status, event pools

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import tether.store.schema

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TIME = tether.store.schema.UTCDateTime(timezone=True)
#: Variable types renamed in this version (profiles are data: rewrite them).
_RENAMED_TYPES = {"integer": "number", "cidr": "ipv4cidr"}


def upgrade() -> None:
    with op.batch_alter_table("pools", schema=None) as batch_op:
        batch_op.add_column(sa.Column("status", _JSON, nullable=True))
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pool", sa.String(length=63), nullable=True))
        batch_op.create_index(batch_op.f("ix_events_pool_id"), ["pool", "id"], unique=False)

    op.create_table(
        "pool_members",
        sa.Column("host_name", sa.String(length=253), nullable=False),
        sa.Column("pool", sa.String(length=63), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("op", _JSON, nullable=True),
        sa.Column("step", sa.String(length=32), nullable=True),
        sa.Column("spec", _JSON, nullable=True),
        sa.Column("spec_hash", sa.String(length=64), nullable=True),
        sa.Column("version", sa.String(length=64), nullable=True),
        sa.Column("leave_requested", sa.Boolean(), nullable=False),
        sa.Column("surge", sa.Boolean(), nullable=False),
        sa.Column("resource_version", sa.Integer(), nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["host_name"],
            ["hosts.name"],
            name=op.f("fk_pool_members_host_name_hosts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["pool"], ["pools.name"], name=op.f("fk_pool_members_pool_pools")),
        sa.PrimaryKeyConstraint("host_name", name=op.f("pk_pool_members")),
    )
    with op.batch_alter_table("pool_members", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pool_members_pool_step"), ["pool", "step"], unique=False
        )

    op.create_table(
        "rollouts",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=96), nullable=False),
        sa.Column("pool", sa.String(length=63), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("spec", _JSON, nullable=False),
        sa.Column("status", _JSON, nullable=False),
        sa.Column("resource_version", sa.Integer(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(["pool"], ["pools.name"], name=op.f("fk_rollouts_pool_pools")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
        sa.UniqueConstraint("name", name=op.f("uq_rollouts_name")),
    )
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rollouts_pool_id"), ["pool", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_rollouts_state"), ["state"], unique=False)

    op.create_table(
        "node_status",
        sa.Column("host_name", sa.String(length=253), nullable=False),
        sa.Column("cluster", sa.String(length=63), nullable=False),
        sa.Column("ready", sa.Boolean(), nullable=True),
        sa.Column("reason", sa.String(length=128), nullable=False),
        sa.Column("ready_since", _TIME, nullable=True),
        sa.Column("unschedulable", sa.Boolean(), nullable=False),
        sa.Column("kubelet_version", sa.String(length=64), nullable=False),
        sa.Column("observed_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["host_name"],
            ["hosts.name"],
            name=op.f("fk_node_status_host_name_hosts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("host_name", name=op.f("pk_node_status")),
    )
    with op.batch_alter_table("node_status", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_node_status_cluster"), ["cluster"], unique=False)

    _rename_variable_types()


def _rename_variable_types() -> None:
    profiles = sa.table("profiles", sa.column("id", _ID), sa.column("spec", _JSON))
    conn = op.get_bind()
    for row_id, spec in conn.execute(sa.select(profiles.c.id, profiles.c.spec)).all():
        doc = spec if isinstance(spec, dict) else json.loads(spec)
        changed = False
        for variable in doc.get("variables") or []:
            if variable.get("type") in _RENAMED_TYPES:
                variable["type"] = _RENAMED_TYPES[variable["type"]]
                changed = True
        if changed:
            conn.execute(profiles.update().where(profiles.c.id == row_id).values(spec=doc))


def downgrade() -> None:
    op.drop_table("node_status")
    op.drop_table("rollouts")
    op.drop_table("pool_members")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_pool_id"))
        batch_op.drop_column("pool")
    with op.batch_alter_table("pools", schema=None) as batch_op:
        batch_op.drop_column("status")
