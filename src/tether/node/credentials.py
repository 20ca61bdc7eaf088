"""Where ``tether node init`` gets its bootstrap token, from the NodeConfig's credentials.

- ``bootstrapToken``: a token the plane minted for this host (``tether host
  bootstrap-token``), read from a file;
- ``x509``: the host's enrolled identity (the agent's certificate and key); the plane's
  agent API mints a token for this host and no other (``POST
  /agent/v1/hosts/<name>/bootstrap-token``, mutual TLS);
- ``activation``: enrol first exactly as the agent does (the identity lands in the
  activation's ``stateDir``, where the agent finds it), then as ``x509``.

The token is returned, never logged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from tether.agent.client import HttpPlaneAPI, Refused, Unavailable
from tether.agent.config import ActivationConfig, AgentConfig, ConfigError
from tether.agent.runner import Agent, RegistrationRefused
from tether.node.nodeconfig import NodeConfig
from tether.node.phases import PhaseError

__all__ = ["ENROL_TIMEOUT", "token_source"]

#: How long enrolment rides out an unreachable plane before init gives up (seconds).
ENROL_TIMEOUT = 120.0


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise PhaseError(f"cannot read the bootstrap token file {path}: {exc.strerror}") from exc


def _mint(endpoint: str, ca: Path, cert: Path, key: Path, name: str) -> str:
    try:
        api = HttpPlaneAPI(endpoint.rstrip("/"), ca, cert, key)
    except (OSError, ValueError) as exc:
        raise PhaseError(f"cannot use the host certificate {cert}: {exc}") from exc
    try:
        return api.bootstrap_token(name)
    except Refused as exc:
        raise PhaseError(
            f"the plane refused a bootstrap token for {name}: {exc.message} [{exc.rule}]"
        ) from exc
    except Unavailable as exc:
        raise PhaseError(f"the plane is unreachable: {exc}") from exc
    finally:
        api.close()


def _enrolled_identity(config: NodeConfig) -> tuple[Path, Path, Path]:
    activation = config.spec.credentials.activation
    assert activation is not None
    give_up = threading.Event()
    timer = threading.Timer(ENROL_TIMEOUT, give_up.set)
    agent = Agent(
        AgentConfig(
            server=activation.plane_endpoint.rstrip("/"),
            ca_file=activation.ca_path,
            state_dir=activation.state_dir,
            name=config.spec.node.name,
            activation=ActivationConfig(id=activation.id, code_file=activation.code_file),
            max_backoff_seconds=30,
        ),
        stop=give_up,
    )
    timer.start()
    try:
        agent.start()
    except (RegistrationRefused, ConfigError) as exc:
        raise PhaseError(str(exc)) from exc
    finally:
        timer.cancel()
        if agent.api is not None:
            agent.api.close()
    if give_up.is_set() and not agent.name:
        raise PhaseError(f"the plane was unreachable for {ENROL_TIMEOUT:g}s while enrolling")
    if agent.name != config.spec.node.name:
        raise PhaseError(
            f"this host is enrolled as {agent.name!r}, not {config.spec.node.name!r}: reset the "
            "agent (tether agent reset) or use the enrolled name"
        )
    identity = agent.identity
    return identity.cert_path, identity.key_path, identity.ca_path


def token_source(config: NodeConfig) -> Callable[[], str]:
    """A function returning a bootstrap token for ``config``'s node (see the module doc)."""
    creds = config.spec.credentials
    name = config.spec.node.name
    if creds.bootstrap_token is not None:
        path = creds.bootstrap_token.token_file
        return lambda: _read(path)
    if creds.x509 is not None:
        x = creds.x509
        return lambda: _mint(
            x.plane_endpoint, x.ca_path, x.certificate_path, x.private_key_path, name
        )
    activation = creds.activation
    assert activation is not None

    def enrol_and_mint() -> str:
        cert, key, ca = _enrolled_identity(config)
        return _mint(activation.plane_endpoint, ca, cert, key, name)

    return enrol_and_mint
