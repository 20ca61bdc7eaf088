"""agent enrolment: activations, host certificates, agent state, desired-state documents

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import tether.store.schema

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "host_certificates",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("host_name", sa.String(length=64), nullable=False),
        sa.Column("issuer", sa.String(length=64), nullable=False),
        sa.Column("issued_at", tether.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("not_after", tether.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", tether.store.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_host_certificates")),
        sa.UniqueConstraint("serial", name=op.f("uq_host_certificates_serial")),
    )
    with op.batch_alter_table("host_certificates", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_host_certificates_host_name"), ["host_name"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_host_certificates_revoked_at"), ["revoked_at"], unique=False
        )

    op.create_table(
        "activations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("activation_id", sa.String(length=32), nullable=False),
        sa.Column("site", sa.String(length=63), nullable=False),
        sa.Column("code_hash", sa.String(length=160), nullable=False),
        sa.Column("created_at", tether.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", tether.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("max_registrations", sa.Integer(), nullable=False),
        sa.Column("registrations", sa.Integer(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(["site"], ["sites.name"], name=op.f("fk_activations_site_sites")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activations")),
        sa.UniqueConstraint("activation_id", name=op.f("uq_activations_activation_id")),
    )
    with op.batch_alter_table("activations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_activations_site"), ["site"], unique=False)

    op.create_table(
        "desired_states",
        sa.Column("host_name", sa.String(length=253), nullable=False),
        sa.Column(
            "document",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("updated_at", tether.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("applied_hash", sa.String(length=64), nullable=True),
        sa.Column(
            "applied_result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("applied_at", tether.store.schema.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["host_name"],
            ["hosts.name"],
            name=op.f("fk_desired_states_host_name_hosts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("host_name", name=op.f("pk_desired_states")),
    )
    with op.batch_alter_table("desired_states", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_desired_states_updated_at"), ["updated_at"], unique=False
        )

    op.create_table(
        "host_agents",
        sa.Column("host_name", sa.String(length=253), nullable=False),
        sa.Column("activation_id", sa.String(length=32), nullable=True),
        sa.Column("agent_version", sa.String(length=64), nullable=True),
        sa.Column(
            "failing_checks",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("cert_serial", sa.String(length=64), nullable=True),
        sa.Column("cert_issuer", sa.String(length=64), nullable=True),
        sa.Column("cert_not_after", tether.store.schema.UTCDateTime(timezone=True), nullable=True),
        sa.Column("enrolled_at", tether.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reenrol_allowed", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["host_name"],
            ["hosts.name"],
            name=op.f("fk_host_agents_host_name_hosts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("host_name", name=op.f("pk_host_agents")),
    )
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_hosts_last_heartbeat"), ["last_heartbeat"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("hosts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hosts_last_heartbeat"))

    op.drop_table("host_agents")
    with op.batch_alter_table("desired_states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_desired_states_updated_at"))

    op.drop_table("desired_states")
    with op.batch_alter_table("activations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_activations_site"))

    op.drop_table("activations")
    with op.batch_alter_table("host_certificates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_host_certificates_revoked_at"))
        batch_op.drop_index(batch_op.f("ix_host_certificates_host_name"))

    op.drop_table("host_certificates")
