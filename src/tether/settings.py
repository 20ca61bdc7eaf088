"""Tether's settings: typed groups read from ``TETHER_*`` environment variables.

Each group is its own ``BaseSettings`` with its own prefix so the variable names stay
short and obvious (``TETHER_DATABASE_URL``, ``TETHER_API_PORT``). Nothing reads the
environment at import time: :func:`load_settings` does, and the app factory receives
the result, so tests build apps with whatever settings they need.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
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


class AuthSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TETHER_AUTH_", extra="ignore")

    token_ttl_days: int = Field(
        default=90,
        ge=1,
        le=3650,
        description="Lifetime of people's API tokens: 90 days forces rotation without toil.",
    )


class Settings(BaseSettings):
    """All of Tether's settings, grouped."""

    model_config = SettingsConfigDict(env_prefix="TETHER_", extra="ignore")

    paths: PathSettings = Field(default_factory=PathSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)

    @property
    def database_url(self) -> str:
        """The configured database URL, or the embedded SQLite file in the data dir."""
        if self.database.url:
            return self.database.url
        return f"sqlite:///{self.paths.data_dir / 'tether.db'}"


def load_settings() -> Settings:
    """Read settings from the environment (the only place that does)."""
    return Settings()
