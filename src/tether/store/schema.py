"""Tables. Every resource row carries a ``resource_version`` for optimistic concurrency.

Columns a list can filter on (cluster, site, pool, state) are real, indexed columns with
foreign keys where they name another object; the rest of a resource's spec is a JSON
document validated by the domain model on the way in and out.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JSONDoc = JSON().with_variant(JSONB(), "postgresql")
BigId = BigInteger().with_variant(Integer(), "sqlite")  # SQLite autoincrements INTEGER only


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ResourceMixin:
    """Columns every declarative resource has."""

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(253))
    spec: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    resource_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ClusterRow(ResourceMixin, Base):
    __tablename__ = "clusters"
    __table_args__ = (UniqueConstraint("name"),)


class SiteRow(ResourceMixin, Base):
    __tablename__ = "sites"
    __table_args__ = (UniqueConstraint("name"),)


class PoolRow(ResourceMixin, Base):
    __tablename__ = "pools"
    __table_args__ = (UniqueConstraint("name"),)

    cluster: Mapped[str] = mapped_column(String(63), ForeignKey("clusters.name"), index=True)
    site: Mapped[str] = mapped_column(String(63), ForeignKey("sites.name"), index=True)
    state: Mapped[str] = mapped_column(String(32), index=True)
    #: What the pool reconciler observed: conditions and counts. Written by the
    #: reconciler without bumping ``resource_version`` (a person's update never
    #: conflicts with the reconciler's bookkeeping).
    status: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc, nullable=True, default=dict)


class HostRow(ResourceMixin, Base):
    __tablename__ = "hosts"
    __table_args__ = (
        UniqueConstraint("name"),
        UniqueConstraint("host_id"),
        Index(None, "last_heartbeat"),
    )

    host_id: Mapped[str] = mapped_column(String(128))
    site: Mapped[str] = mapped_column(String(63), ForeignKey("sites.name"), index=True)
    pool: Mapped[str | None] = mapped_column(String(63), ForeignKey("pools.name"), index=True)
    state: Mapped[str] = mapped_column(String(32), index=True)
    health: Mapped[str] = mapped_column(String(32), default="Unknown")
    last_heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    inventory: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)


class ProfileRow(ResourceMixin, Base):
    """One published version of a profile; ``name`` + ``version`` is the key."""

    __tablename__ = "profiles"
    __table_args__ = (UniqueConstraint("name", "version"),)

    version: Mapped[str] = mapped_column(String(64))


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (
        Index(None, "object_kind", "object_name"),
        Index(None, "last_time"),
        Index(None, "pool", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    object_kind: Mapped[str] = mapped_column(String(32))
    object_name: Mapped[str] = mapped_column(String(253))
    type: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(128))
    message: Mapped[str] = mapped_column(Text)
    count: Mapped[int] = mapped_column(Integer, default=1)
    first_time: Mapped[datetime] = mapped_column(UTCDateTime)
    last_time: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The pool the object belonged to when it happened (its hosts, Nodes and rollouts
    #: too), so a pool's stream shows everything about it. No foreign key: events outlive
    #: their pool.
    pool: Mapped[str | None] = mapped_column(String(63), nullable=True)


class TokenRow(Base):
    """A person's API token. Only a SHA-256 of the secret part is kept."""

    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("token_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    token_id: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class AuditRow(Base):
    __tablename__ = "audit_records"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(512))
    status_code: Mapped[int] = mapped_column(Integer)
    result: Mapped[str] = mapped_column(String(16))


class ActivationRow(Base):
    """A registration credential for one site: id + hashed code, expiry, usage limit.

    ``registrations`` only ever grows through one conditional ``UPDATE ... WHERE
    registrations < max_registrations``, so two hosts racing for the last use cannot both
    win, on SQLite or PostgreSQL.
    """

    __tablename__ = "activations"
    __table_args__ = (UniqueConstraint("activation_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    activation_id: Mapped[str] = mapped_column(String(32))
    site: Mapped[str] = mapped_column(String(63), ForeignKey("sites.name"), index=True)
    code_hash: Mapped[str] = mapped_column(String(160))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    max_registrations: Mapped[int] = mapped_column(Integer)
    registrations: Mapped[int] = mapped_column(Integer, default=0)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(128))


class HostCertRow(Base):
    """Every certificate the plane issued to a host: serial, issuer, expiry, revocation.

    The agent server's revocation list is the set of rows with ``revoked_at`` set; the CRL
    is built from it.
    """

    __tablename__ = "host_certificates"
    __table_args__ = (UniqueConstraint("serial"), Index(None, "host_name"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    serial: Mapped[str] = mapped_column(String(64))
    host_name: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    not_after: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)


class HostAgentRow(Base):
    """What the agent of one host reported and how it enrolled (one row per host).

    Kept apart from ``hosts`` so agent traffic never bumps a host's ``resourceVersion``.
    """

    __tablename__ = "host_agents"

    host_name: Mapped[str] = mapped_column(
        String(253), ForeignKey("hosts.name", ondelete="CASCADE"), primary_key=True
    )
    activation_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    agent_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    failing_checks: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    cert_serial: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cert_issuer: Mapped[str | None] = mapped_column(String(64), nullable=True)
    cert_not_after: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reenrol_allowed: Mapped[bool] = mapped_column(Boolean, default=False)


class DesiredStateRow(Base):
    """The desired-state document of one host and what its agent last applied."""

    __tablename__ = "desired_states"
    __table_args__ = (Index(None, "updated_at"),)

    host_name: Mapped[str] = mapped_column(
        String(253), ForeignKey("hosts.name", ondelete="CASCADE"), primary_key=True
    )
    document: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    applied_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    applied_result: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc, nullable=True)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class VpnKeyRow(Base):
    """A site VPN tunnel's pre-shared key, made when a VPN server first needs it. Only
    the plane's VPN server pass reads it (into the document of the tunnel's VPN server
    host); no API returns it."""

    __tablename__ = "vpn_keys"

    #: The tunnel's key id (:func:`tether.netplan.psk_ids`: ``<pool>-t1``, ``<pool>-t2``).
    tunnel: Mapped[str] = mapped_column(String(80), primary_key=True)
    key: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PoolMemberRow(Base):
    """A host of a pool and the operation the pool reconciler is running on it.

    ``op`` is the operation as recorded before any of its steps is taken (see
    :mod:`tether.domain.memberops`); ``spec`` is the node target the member last
    completed. Guarded by ``resource_version`` like every resource.
    """

    __tablename__ = "pool_members"
    __table_args__ = (Index(None, "pool", "step"),)

    host_name: Mapped[str] = mapped_column(
        String(253), ForeignKey("hosts.name", ondelete="CASCADE"), primary_key=True
    )
    pool: Mapped[str] = mapped_column(String(63), ForeignKey("pools.name"))
    phase: Mapped[str] = mapped_column(String(16))
    op: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc, nullable=True)
    #: The step the operation stands at (None: no operation, or a failed one), so the
    #: controller finds the members it must act on without reading every operation.
    step: Mapped[str | None] = mapped_column(String(32), nullable=True)
    spec: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc, nullable=True)
    spec_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    leave_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    surge: Mapped[bool] = mapped_column(Boolean, default=False)
    resource_version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RolloutRow(Base):
    """A rollout of a pool (see :mod:`tether.domain.rollout`): ``spec`` holds what it was
    made for, ``status`` its progress."""

    __tablename__ = "rollouts"
    __table_args__ = (UniqueConstraint("name"), Index(None, "pool", "id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(96))
    pool: Mapped[str] = mapped_column(String(63), ForeignKey("pools.name"))
    state: Mapped[str] = mapped_column(String(32), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    status: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    resource_version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class NodeStatusRow(Base):
    """What the nodes controller last saw of a host's Node (one row per host).

    The pool reconciler reads Node readiness from here, so it needs no watch of its
    own and several plane replicas see the same thing."""

    __tablename__ = "node_status"

    host_name: Mapped[str] = mapped_column(
        String(253), ForeignKey("hosts.name", ondelete="CASCADE"), primary_key=True
    )
    cluster: Mapped[str] = mapped_column(String(63), index=True)
    ready: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    reason: Mapped[str] = mapped_column(String(128), default="")
    ready_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    unschedulable: Mapped[bool] = mapped_column(Boolean, default=False)
    kubelet_version: Mapped[str] = mapped_column(String(64), default="")
    observed_at: Mapped[datetime] = mapped_column(UTCDateTime)
