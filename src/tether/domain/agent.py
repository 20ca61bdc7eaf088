"""What agents and the plane say to each other, and the pure rules behind host enrolment.

Wire models for the agent API (``/agent/v1``) and for activations, plus the small rules
the plane applies on every heartbeat: which life-cycle event a reported health means in
a given state, when a host counts as silent, how a desired-state document is hashed.
Everything here is pure: no clock is read, no I/O happens.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field, StringConstraints, field_validator

from tether.domain.base import Model
from tether.domain.models import LabelKey, LabelValue, Name
from tether.domain.states import HostEvent, HostState

#: Longest an activation may stay usable (the trust anchor enforces the same bound).
MAX_ACTIVATION_LIFETIME = timedelta(days=30)
#: Node names: DNS-1123 label, at most 64 characters (the X.509 CN limit).
NodeName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"),
]
HostIdText = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
ActivationId = Annotated[str, StringConstraints(pattern=r"^act-[a-z2-7]{12}$")]
PemText = Annotated[str, StringConstraints(min_length=1, max_length=16384)]
ShortText = Annotated[str, StringConstraints(max_length=256)]
AgentVersion = Annotated[str, StringConstraints(min_length=1, max_length=64)]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str | int | float) -> timedelta:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w`` or a number of seconds, as a timedelta."""
    if isinstance(text, bool):
        raise ValueError("a duration is a number with a unit, like 24h or 30m")
    try:
        if isinstance(text, int | float):
            return timedelta(seconds=float(text))
        match = _DURATION.match(text)
        if not match:
            raise ValueError(f"{text!r} is not a duration: use a number and s, m, h, d or w (24h)")
        return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2) or "s"])
    except OverflowError:
        raise ValueError(f"{text!r} is far too long a duration") from None


def format_duration(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


# Activations ------------------------------------------------------------------------------


class ActivationCreate(Model):
    site: Name
    expires_in: str | int = Field(
        default="24h", description="How long the activation stays usable: 24h, 7d, ... (≤ 30d)."
    )
    max_registrations: int = Field(default=1, ge=1, le=10_000)

    @field_validator("expires_in")
    @classmethod
    def _bounded(cls, value: str | int) -> str | int:
        duration = parse_duration(value)
        if duration <= timedelta(0):
            raise ValueError("must be positive")
        if duration > MAX_ACTIVATION_LIFETIME:
            raise ValueError("must be at most 30 days (30d)")
        return value

    @property
    def lifetime(self) -> timedelta:
        return parse_duration(self.expires_in)


class ActivationState(StrEnum):
    ACTIVE = "Active"
    EXPIRED = "Expired"
    EXHAUSTED = "Exhausted"
    REVOKED = "Revoked"


class Activation(Model):
    id: str
    site: str
    created_at: datetime
    expires_at: datetime
    max_registrations: int
    registrations: int
    remaining: int = Field(description="Registrations left (0 once expired or revoked).")
    revoked: bool
    state: ActivationState
    created_by: str


class IssuedActivation(Activation):
    code: str = Field(description="The secret code; shown once, stored only as a hash.")


def activation_state(
    *,
    revoked: bool,
    expires_at: datetime,
    registrations: int,
    max_registrations: int,
    now: datetime,
) -> ActivationState:
    if revoked:
        return ActivationState.REVOKED
    if now >= expires_at:
        return ActivationState.EXPIRED
    if registrations >= max_registrations:
        return ActivationState.EXHAUSTED
    return ActivationState.ACTIVE


# Inventory --------------------------------------------------------------------------------


class CPUInfo(Model):
    model: ShortText = ""
    count: int = Field(default=0, ge=0, le=100_000)


class OSInfo(Model):
    id: ShortText = ""
    name: ShortText = ""
    version: ShortText = ""
    kernel: ShortText = ""


class NIC(Model):
    name: ShortText
    mac: ShortText = ""
    addresses: list[ShortText] = Field(default_factory=list, max_length=64)


class Disk(Model):
    name: ShortText
    size_bytes: int = Field(default=0, ge=0)
    rotational: bool | None = None
    model: ShortText = ""


class Inventory(Model):
    """What the agent found out about its machine; every field may be empty."""

    cpu: CPUInfo = Field(default_factory=CPUInfo)
    memory_bytes: int = Field(default=0, ge=0)
    arch: ShortText = ""
    os: OSInfo = Field(default_factory=OSInfo)
    nics: list[NIC] = Field(default_factory=list, max_length=256)
    disks: list[Disk] = Field(default_factory=list, max_length=256)
    machine_id: ShortText = ""
    product_uuid: ShortText = ""
    hostname: ShortText = ""
    #: The build of the Tether image the host runs (``/etc/tether/image-build``), if any.
    image_build: ShortText = ""


# Agent API ---------------------------------------------------------------------------------


class RegisterRequest(Model):
    activation_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    code: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    name: NodeName
    host_id: HostIdText
    csr: PemText
    inventory: Inventory = Field(default_factory=Inventory)
    tags: dict[LabelKey, LabelValue] = Field(default_factory=dict, max_length=64)
    agent_version: AgentVersion = "unknown"


class Enrolment(Model):
    """The plane's answer to a registration or a renewal."""

    name: str
    certificate: str = Field(description="The host's certificate (PEM).")
    ca_bundle: str = Field(description="CAs the agent must trust for the plane (PEM).")
    not_after: datetime
    heartbeat_seconds: float


class RenewRequest(Model):
    csr: PemText


class Heartbeat(Model):
    """A heartbeat kept small: version and failing checks only (``{}`` means healthy).

    ``v`` is the agent version, ``f`` maps each failing check to a short message, ``n`` is
    how many checks ran.
    """

    v: AgentVersion | None = None
    f: dict[Annotated[str, StringConstraints(max_length=64)], ShortText] = Field(
        default_factory=dict, max_length=64
    )
    n: int = Field(default=0, ge=0, le=1000)

    @property
    def healthy(self) -> bool:
        return not self.f


class DesiredDocument(Model):
    hash: str
    document: dict[str, Any]


class DesiredSet(Model):
    document: dict[str, Any] = Field(description="Any JSON object; the agent applies it.")


class DesiredStatus(Model):
    host: str
    hash: str
    document: dict[str, Any]
    updated_at: datetime
    applied_hash: str | None = None
    applied_result: dict[str, Any] | None = None
    applied_at: datetime | None = None
    in_sync: bool


class AppliedReport(Model):
    hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    result: dict[str, Any] = Field(default_factory=dict)


class AgentEvent(Model):
    type: Annotated[str, StringConstraints(pattern=r"^(Normal|Warning)$")] = "Normal"
    reason: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Za-z0-9]{0,127}$")]
    message: Annotated[str, StringConstraints(max_length=1024)] = ""


# Rules -------------------------------------------------------------------------------------

_HEALTHY_FROM = {HostState.REGISTERED, HostState.UNHEALTHY, HostState.UNREACHABLE}
_UNHEALTHY_FROM = {HostState.REGISTERED, HostState.READY, HostState.IN_USE, HostState.UNREACHABLE}
#: States in which a host is expected to heartbeat.
LIVE_STATES = frozenset(
    {HostState.REGISTERED, HostState.READY, HostState.IN_USE, HostState.UNHEALTHY}
)


def health_event(state: HostState, healthy: bool) -> HostEvent | None:
    """The life-cycle event a heartbeat with this health means for a host in ``state``.

    ``None`` when nothing changes (a Ready host staying healthy, an Unhealthy host
    still failing, or an unpaired host, whose heartbeats are refused elsewhere).
    """
    if healthy and state in _HEALTHY_FROM:
        return HostEvent.CHECKS_PASSED
    if not healthy and state in _UNHEALTHY_FROM:
        return HostEvent.CHECKS_FAILED
    return None


def silence_cutoff(now: datetime, interval_seconds: float, missed: int) -> datetime:
    """Hosts whose last heartbeat is older than this have missed ``missed`` heartbeats."""
    return now - timedelta(seconds=interval_seconds * missed)


def document_hash(document: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a desired-state document (key order ignored)."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def node_name_from_uuid(product_uuid: str) -> str | None:
    """A stable node name from a DMI product UUID: ``host-`` and its first 12 hex digits."""
    digits = re.sub(r"[^0-9a-f]", "", product_uuid.lower())
    if len(digits) < 12 or set(digits) <= {"0"} or set(digits) <= {"f"}:
        return None  # absent, or a placeholder firmware fills in
    return f"host-{digits[:12]}"
