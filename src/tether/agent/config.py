"""The agent's configuration file (``/etc/tether/agent.yaml``), camelCase like the API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import yaml
from pydantic import Field, StringConstraints, ValidationError, field_validator

from tether.domain.base import Model
from tether.domain.imageplan import PRESEED_DIR, PRESEED_KEYRING
from tether.errors import Permanent
from tether.files import parse_yaml_or_json


class ConfigError(Permanent):
    pass


class ActivationConfig(Model):
    id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    code: str | None = Field(default=None, repr=False)
    code_file: Path | None = None

    def read_code(self) -> str:
        if self.code:
            return self.code
        if self.code_file is not None:
            try:
                return self.code_file.read_text().strip()
            except OSError as exc:
                raise ConfigError(f"activation.codeFile {self.code_file}: {exc.strerror}") from exc
        raise ConfigError("activation needs code or codeFile")


class TagsConfig(Model):
    static: dict[str, str] = Field(default_factory=dict)
    file: Path | None = None
    script: list[str] | None = None
    script_timeout: float = Field(default=10.0, gt=0, le=300)


class CheckConfig(Model):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    builtin: str | None = Field(default=None, description="disk: root filesystem < 95% full")
    command: list[str] | None = None
    timeout: float = Field(default=5.0, gt=0, le=120)


class DesiredConfig(Model):
    enabled: bool = True
    command: list[str] | None = Field(
        default=None, description="Run with the document (JSON) on stdin; exit 0 means applied."
    )
    timeout: float = Field(default=300.0, gt=0, le=3600)


class NodeAgentConfig(Model):
    """How the agent runs node plans (``node`` in a desired-state document)."""

    root: Path = Field(default=Path("/"), description="Root prefix node plans act under.")
    keyring: Path | None = Field(
        default=None,
        description="Trusted artifact-manifest keys (YAML/JSON); needed by install and upgrade. "
        f"Default: {PRESEED_KEYRING} when the image carries one (tether image build "
        "--artifacts).",
    )
    source: str | None = Field(
        default=None,
        description="Artifact source; default: the image's pre-seeded mirror (preseeded) for "
        "the versions it holds, the plane's mirror at <server>/agent/v1/artifacts for others.",
    )
    preseeded: Path = Field(
        default=Path(PRESEED_DIR),
        description="The image's pre-seeded artifact mirror (tether image build --artifacts).",
    )
    ready_timeout: float = Field(default=300.0, gt=0, le=3600)
    retry_seconds: float = Field(
        default=60.0, gt=0, le=86400, description="Run a failed plan again after this long."
    )


class VpnServerConfig(Model):
    """How a ``vpn-server`` host applies its site's configuration (docs/network.md)."""

    dir: Path = Field(
        default=Path("/etc/tether/vpn-server"),
        description="Where swanctl/swanctl.conf, swanctl/secrets.conf and routes.sh go.",
    )
    swanctl: list[str] = Field(default_factory=lambda: ["swanctl"], min_length=1)
    vici: str | None = Field(
        default=None, description="charon's vici socket (swanctl --uri), default swanctl's."
    )
    birdc: list[str] = Field(default_factory=lambda: ["birdc"], min_length=1)
    bird_config: Path = Field(default=Path("/etc/bird/bird.conf"))
    shell: list[str] = Field(default_factory=lambda: ["/bin/sh"], min_length=1)
    timeout: float = Field(default=30.0, gt=0, le=600)


class AgentConfig(Model):
    server: Annotated[str, StringConstraints(pattern=r"^https://\S+$")]
    ca_file: Path
    state_dir: Path = Path("/var/lib/tether-agent")
    name: str | None = Field(default=None, description="Node name; default from DMI UUID.")
    activation: ActivationConfig | None = None
    tags: TagsConfig = Field(default_factory=TagsConfig)
    checks: list[CheckConfig] = Field(
        default_factory=lambda: [CheckConfig(name="disk", builtin="disk")]
    )
    desired: DesiredConfig = Field(default_factory=DesiredConfig)
    node: NodeAgentConfig = Field(default_factory=NodeAgentConfig)
    vpn_server: VpnServerConfig = Field(default_factory=VpnServerConfig)
    ip_command: list[str] = Field(
        default_factory=lambda: ["ip"],
        min_length=1,
        description=(
            "How the agent runs iproute2 for the desired state's static routes "
            "(e.g. [ip, -n, NAME] for a network namespace)."
        ),
    )
    heartbeat_seconds: float | None = Field(default=None, gt=0, le=3600)
    lock_file: Path | None = None
    request_timeout: float = Field(default=15.0, gt=0, le=600)
    long_poll_seconds: float = Field(default=30.0, gt=0, le=600)
    max_backoff_seconds: float = Field(default=300.0, gt=0, le=3600)

    @field_validator("server")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def lock_path(self) -> Path:
        return self.lock_file or self.state_dir / "agent.lock"


def load(path: Path) -> AgentConfig:
    try:
        data = parse_yaml_or_json(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {where}: {first['msg']}") from None
