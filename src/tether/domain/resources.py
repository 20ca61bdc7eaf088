"""Resources as the API shows them: name, version, timestamps, spec and status."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from tether.domain.base import Model
from tether.domain.models import (
    Change,
    ClusterSpec,
    EventType,
    HostSpec,
    HostStatus,
    Name,
    ObjectKind,
    PoolSpec,
    PoolStatus,
    ProfileSpec,
    SemVer,
    SiteSpec,
    SiteStatus,
)


class Meta(Model):
    name: str
    resource_version: int = Field(description="Send it back on update; a stale one is refused.")
    created_at: datetime
    updated_at: datetime


class Cluster(Meta):
    spec: ClusterSpec


class Site(Meta):
    spec: SiteSpec
    status: SiteStatus = Field(default_factory=SiteStatus)


class Pool(Meta):
    spec: PoolSpec
    status: PoolStatus


class Host(Meta):
    id: str
    spec: HostSpec
    status: HostStatus


class Profile(Meta):
    spec: ProfileSpec


class Event(Model):
    id: int
    object_kind: ObjectKind
    object_name: str
    type: EventType
    reason: str
    message: str
    count: int
    first_time: datetime
    last_time: datetime
    pool: str | None = None


class NamedCreate(Model):
    name: Name


class ClusterCreate(NamedCreate):
    spec: ClusterSpec


class SiteCreate(NamedCreate):
    spec: SiteSpec = Field(default_factory=SiteSpec)


class PoolCreate(NamedCreate):
    spec: PoolSpec


HostId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]


class HostCreate(NamedCreate):
    id: HostId | None = Field(default=None, description="Stable host id; default: the name.")
    spec: HostSpec


class ProfileCreate(NamedCreate):
    spec: ProfileSpec


class Update(Model):
    resource_version: int = Field(ge=1)


class ClusterUpdate(Update):
    spec: ClusterSpec


class SiteUpdate(Update):
    spec: SiteSpec


class PoolUpdate(Update):
    spec: PoolSpec


class HostUpdate(Update):
    spec: HostSpec


class Role(StrEnum):
    VIEWER = "viewer"  # read everything but tokens and audit
    OPERATOR = "operator"  # viewer + change resources
    ADMIN = "admin"  # operator + tokens and the audit log

    def allows(self, needed: Role) -> bool:
        order = [Role.VIEWER, Role.OPERATOR, Role.ADMIN]
        return order.index(self) >= order.index(needed)


class TokenCreate(Model):
    name: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    role: Role = Role.VIEWER
    ttl_days: int | None = Field(default=None, ge=1, le=3650)


class Token(Model):
    id: str
    name: str
    role: Role
    created_at: datetime
    expires_at: datetime
    revoked: bool


class IssuedToken(Token):
    token: str = Field(description="The secret; shown once, stored only as a hash.")


class AuditRecord(Model):
    id: int
    time: datetime
    actor: str
    action: str
    target: str
    status_code: int
    result: str


class Rollout(Model):
    """A rollout of a pool to a profile version (or to its changed spec)."""

    name: str
    pool: str
    state: str
    origin: str
    from_version: str | None = None
    to_version: str | None = None
    action: str
    changes: list[Change] = Field(default_factory=list)
    nodes: dict[str, str] = Field(
        default_factory=dict, description="Each member and the action it needs."
    )
    progress: dict[str, Any] = Field(default_factory=dict)
    failures: dict[str, str] = Field(default_factory=dict)
    message: str = ""
    rollback_of: str | None = None
    created_by: str = ""
    approved_by: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = Field(
        default=None, description="When its state or progress last changed."
    )
    resource_version: int


class RolloutCreate(Model):
    to: SemVer = Field(description="The profile version to roll the pool to.")


class RolloutVerb(StrEnum):
    APPROVE = "approve"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    ROLLBACK = "rollback"


class ProfileDiff(Model):
    name: str
    from_version: str
    to_version: str
    action: str = Field(description="The strongest action: what a rollout would do.")
    changes: list[Change]


class MemberView(Model):
    """A pool member as the pool reconciler sees it."""

    host: str
    phase: str
    version: str | None = None
    operation: dict[str, Any] | None = None
