"""the site VPN tunnels' pre-shared keys, kept by the plane

Revision ID: vpnkeys
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tether.store.schema

revision = "vpnkeys"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vpn_keys",
        sa.Column("tunnel", sa.String(length=80), nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("created_at", tether.store.schema.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tunnel", name=op.f("pk_vpn_keys")),
    )


def downgrade() -> None:
    op.drop_table("vpn_keys")
