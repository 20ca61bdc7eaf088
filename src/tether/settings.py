"""Tether's settings: typed groups read from ``TETHER_*`` environment variables.

Each group is its own ``BaseSettings`` with its own prefix so the variable names stay
short and obvious (``TETHER_DATABASE_URL``, ``TETHER_API_PORT``). Nothing reads the
environment at import time: :func:`load_settings` does, and the app factory receives
the result, so tests build apps with whatever settings they need.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "tether"


class PathSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TETHER_", extra="ignore")

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description=(
            "Where the embedded database, the CA and demo state live. Default "
            "~/.local/share/tether: the XDG data location, so a user install needs no root."
        ),
    )
    artifacts_dir: Path | None = Field(
        default=None,
        description=(
            "The mirror of signed node artifacts the plane serves to hosts (laid out as "
            "'tether artifacts sync --to' writes it). Default <data dir>/artifacts: next to "
            "the plane's other state, so a plane needs no extra path to serve artifacts."
        ),
    )


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TETHER_DATABASE_", extra="ignore")

    url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL. Default: SQLite file tether.db in the data directory, because "
            "a first run must need no server. Use postgresql+psycopg://... for production."
        ),
    )
    echo: bool = Field(default=False, description="Log every SQL statement. Off: it is noisy.")
    busy_timeout_ms: int = Field(
        default=10_000,
        ge=0,
        description=(
            "How long SQLite waits for a lock held by another writer. 10 s absorbs bursts "
            "of concurrent writes without surfacing 'database is locked' to users."
        ),
    )


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TETHER_API_", extra="ignore")

    host: str = Field(
        default="127.0.0.1",
        description="Listen address. Loopback by default: exposing the plane is a decision.",
    )
    port: int = Field(default=8443, ge=0, le=65535, description="Listen port.")
    page_size: int = Field(
        default=100, ge=1, le=1000, description="Default list page size: fits a terminal."
    )
    max_page_size: int = Field(
        default=1000,
        ge=1,
        le=10000,
        description="Largest page a client may ask for; bounds memory per request.",
    )
    sse_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description=(
            "How often the event stream looks for new events. Polling the store (not an "
            "in-process bus) lets several plane replicas share one database."
        ),
    )
    max_body_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=1024,
        le=1024 * 1024 * 1024,
        description=(
            "Largest request body on the people's API, refused with 413 before it is read "
            "(Content-Length) or as soon as it grows past this (chunked). 2 MiB holds a "
            "network document with thousands of nodes; an unbounded body let one "
            "unauthenticated request grow the plane by hundreds of MB."
        ),
    )
    max_desired_state_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description=(
            "Largest body of PUT /api/v1/hosts/{name}/desired. 256 KiB is many times a node "
            "plan; every host's document is kept in the store and sent to its agent."
        ),
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description=(
            "A connection must deliver a request's headers within this long of opening, or "
            "of the request's first byte; otherwise it is closed. 10 s is ages for a real "
            "client and stops clients that drip headers or send nothing."
        ),
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description=(
            "A request body must arrive within this long of the request, or the request is "
            "answered 408 and the connection closed. 30 s moves the largest body on a slow "
            "link; a client that dribbles a body does not hold the request forever."
        ),
    )
    keep_alive_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description=(
            "An idle keep-alive connection is closed after this long. 5 s (uvicorn's "
            "default): CLIs and browsers reconnect cheaply."
        ),
    )
    max_connections: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description=(
            "Open connections the people's port accepts at once; beyond it new ones are "
            "answered 503 and closed. People and dashboards need far fewer; it bounds the "
            "memory and file descriptors one client can take."
        ),
    )
    trusted_proxies: str = Field(
        default="",
        description=(
            "Comma-separated addresses or networks of reverse proxies in front of the "
            "people's port, whose X-Forwarded-For and X-Forwarded-Proto headers are "
            "believed. Empty (the default): a client's address is its connection's, so no "
            "client can name another address in the audit log, or leave a per-address "
            "limit with a header (uvicorn itself believes them from 127.0.0.1, or from "
            "FORWARDED_ALLOW_IPS). The agent port never believes them: its mutual TLS ends "
            "in the plane, so no proxy stands in front of it."
        ),
    )
    max_streams: int = Field(
        default=200,
        ge=1,
        le=100_000,
        description=(
            "Event streams open at once on this plane (all tokens); more are refused with "
            "429. All streams share one store poll, so each costs memory, not queries."
        ),
    )
    max_streams_per_token: int = Field(
        default=8,
        ge=1,
        le=10_000,
        description=(
            "Event streams one token may hold open; more are refused with 429. 8 covers a "
            "dashboard in a few tabs and a CLI watch; one token cannot take every stream."
        ),
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        """Each entry an IP address or network (``10.0.0.0/8``), or refused by name."""
        entries = [v.strip() for v in value.split(",") if v.strip()]
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network") from None
        return ",".join(entries)

    def proxies(self) -> list[str]:
        """The trusted proxies as a list (empty: believe no forwarding header)."""
        return self.trusted_proxies.split(",") if self.trusted_proxies else []


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TETHER_AUTH_", extra="ignore")

    token_ttl_days: int = Field(
        default=90,
        ge=1,
        le=3650,
        description="Lifetime of people's API tokens: 90 days forces rotation without toil.",
    )


class AuditSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TETHER_AUDIT_", extra="ignore")

    anonymous_burst: int = Field(
        default=20,
        ge=1,
        le=100_000,
        description=(
            "Refusals of callers who proved no identity (no or a bad token or certificate, "
            "failed TLS handshakes) written one by one per client address before the rate "
            "limit applies. Past it, one summary row counts the rest: a flood from one "
            "address cannot fill the audit log."
        ),
    )
    anonymous_per_second: float = Field(
        default=1.0,
        gt=0,
        le=10_000,
        description=(
            "How fast the allowance of anonymous refusal rows refills, per client address."
        ),
    )


class PKISettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TETHER_PKI_", extra="ignore")

    host_cert_lifetime_seconds: float = Field(
        default=86_400,
        gt=0,
        le=365 * 86_400,
        description=(
            "Lifetime of host certificates. Default 24 h: a stolen certificate stops working "
            "within a day even if nobody revokes it; agents renew at two thirds of it."
        ),
    )
    server_cert_lifetime_days: int = Field(
        default=90,
        ge=1,
        le=397,
        description=(
            "Lifetime of the agent server's TLS certificate. Default 90 days, like public "
            "CAs; it is re-issued automatically when a third of it is left."
        ),
    )
    server_names: str = Field(
        default="localhost,127.0.0.1",
        description=(
            "Comma-separated DNS names and IPs the agent server's certificate carries. "
            "Default loopback only, like the listen address: agents elsewhere need the "
            "plane's real name here."
        ),
    )


class AgentServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TETHER_AGENT_", extra="ignore")

    host: str = Field(
        default="127.0.0.1",
        description="Listen address of the mTLS agent server. Loopback, like the people's API.",
    )
    port: int = Field(
        default=8444,
        ge=0,
        le=65535,
        description=(
            "Port of the mTLS agent server (0 disables it). Separate from the people's "
            "port so client-certificate TLS never meets browsers and tokens."
        ),
    )
    public_url: str | None = Field(
        default=None,
        description=(
            "The URL agents use to reach the agent server (written into seed images). "
            "Default https://<first server name>:<port>."
        ),
    )
    heartbeat_seconds: float = Field(
        default=10.0,
        gt=0,
        le=3600,
        description=(
            "Heartbeat interval the plane asks agents for. 10 s notices a dead host in "
            "about half a minute at a few hundred bytes per host and interval."
        ),
    )
    missed_heartbeats: int = Field(
        default=3,
        ge=1,
        le=1000,
        description=(
            "A host is Unreachable after this many missed heartbeats. 3 rides out one lost "
            "packet or a slow restart without flapping."
        ),
    )
    flush_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description=(
            "Heartbeats are kept in memory and written in one batch this often. 1 s keeps "
            "the store at one write per second however many hosts there are."
        ),
    )
    reconcile_seconds: float = Field(
        default=2.0,
        gt=0,
        le=600,
        description="How often the heartbeat reconciler looks for silent hosts.",
    )
    long_poll_seconds: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description=(
            "Longest wait of a desired-state long poll. 30 s stays under common proxy idle "
            "timeouts (60 s)."
        ),
    )
    revocation_refresh_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description=(
            "How often the agent server re-reads revocations and the CA from the store and "
            "disk, so a revocation made by another process takes effect within seconds."
        ),
    )
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description=(
            "Largest request body on the agent port but registration, refused with 413 "
            "before it is read. Heartbeats, events, renewals and apply reports are a few "
            "KiB at most."
        ),
    )
    max_register_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description=(
            "Largest body of POST /agent/v1/register (no client certificate yet): a CSR, "
            "tags and the inventory fit with room to spare."
        ),
    )
    max_inventory_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description=(
            "Largest inventory a host may register, as compact JSON (refused with 422, "
            "field inventory). 64 KiB lists dozens of NICs and disks; the store keeps one "
            "per host."
        ),
    )
    header_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description=(
            "Like TETHER_API_HEADER_TIMEOUT_SECONDS, on the agent port (after the TLS handshake)."
        ),
    )
    handshake_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        le=600,
        description=(
            "A TLS handshake must finish within this long of the connection opening; "
            "otherwise the connection is closed (and the refusal logged). 10 s is plenty "
            "for an agent over a slow VPN; asyncio's default is 60 s."
        ),
    )
    body_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="Like TETHER_API_BODY_TIMEOUT_SECONDS, on the agent port.",
    )
    keep_alive_seconds: float = Field(
        default=75.0,
        gt=0,
        le=3600,
        description=(
            "An idle agent connection is closed after this long, or three heartbeat "
            "intervals if that is longer: an agent keeps one connection between beats "
            "instead of a TLS handshake per heartbeat."
        ),
    )
    max_connections: int = Field(
        default=25_000,
        ge=1,
        le=1_000_000,
        description=(
            "Open connections the agent port accepts at once (TLS handshakes included); "
            "beyond it new ones are closed at once. An agent holds up to two (heartbeats "
            "beside its desired-state long poll): 25,000 serves 10,000+ agents with room; "
            "raise the plane's open-file limit (ulimit -n) above it."
        ),
    )


class ControllerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TETHER_CONTROLLERS_", extra="ignore")

    rescan_seconds: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description=(
            "How often the controller manager looks for newly imported or deleted clusters. "
            "30 s: an import is rare, and a scan opens no connection when nothing changed."
        ),
    )
    node_resync_seconds: int = Field(
        default=30,
        ge=1,
        le=3600,
        description=(
            "How long a Node watch runs before a full reconcile of a cluster's hosts. 30 s "
            "catches changes made on the plane's side without a watch of its own."
        ),
    )
    pool_resync_seconds: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description=(
            "How often every pool is reconciled even when nothing told the reconciler to: "
            "5 s bounds how long a change made by another plane replica takes to act."
        ),
    )


class LogSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TETHER_LOG_", extra="ignore")

    format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description=(
            "json, text, or auto: text when stderr is a terminal, JSON lines otherwise, so "
            "a person reads text and a log shipper gets one object per line."
        ),
    )
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="The least severe level logged."
    )


class Settings(BaseSettings):
    """All of Tether's settings, grouped."""

    model_config = SettingsConfigDict(env_prefix="TETHER_", extra="ignore")

    paths: PathSettings = Field(default_factory=PathSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    pki: PKISettings = Field(default_factory=PKISettings)
    agent: AgentServerSettings = Field(default_factory=AgentServerSettings)
    controllers: ControllerSettings = Field(default_factory=ControllerSettings)
    log: LogSettings = Field(default_factory=LogSettings)

    @property
    def database_url(self) -> str:
        """The configured database URL, or the embedded SQLite file in the data dir."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{self.paths.data_dir / 'tether.db'}"

    @property
    def pki_dir(self) -> Path:
        """Where the trust anchor and the agent server's certificate live."""
        return self.paths.data_dir / "pki"

    @property
    def artifacts_dir(self) -> Path:
        """The artifact mirror the plane serves: ``TETHER_ARTIFACTS_DIR`` or
        ``<data dir>/artifacts``."""
        return self.paths.artifacts_dir or self.paths.data_dir / "artifacts"

    @property
    def agent_url(self) -> str:
        """The URL agents are told to use."""
        if self.agent.public_url:
            return self.agent.public_url.rstrip("/")
        first = self.pki.server_names.split(",")[0].strip() or self.agent.host
        return f"https://{first}:{self.agent.port}"


def load_settings() -> Settings:
    """Read settings from the environment (the only place that does)."""
    return Settings()
