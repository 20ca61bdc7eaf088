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

from collections.abc import Callable
from pathlib import Path

from tether.node.nodeconfig import NodeConfig
from tether.node.phases import PhaseError, PhaseRefused
from tether.planeclient import HttpPlaneAPI, Refused, Unavailable

__all__ = ["Enroller", "token_source"]


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
        raise PhaseRefused(
            f"the plane refused a bootstrap token for {name}: {exc.message} [{exc.rule}]"
        ) from exc
    except Unavailable as exc:
        raise PhaseError(f"the plane is unreachable: {exc}") from exc
    finally:
        api.close()


#: Enrols the host with the NodeConfig's activation; returns (certificate, key, CA) paths.
Enroller = Callable[[NodeConfig], tuple[Path, Path, Path]]


def token_source(config: NodeConfig, enrol: Enroller | None = None) -> Callable[[], str]:
    """A function returning a bootstrap token for ``config``'s node (see the module doc).

    ``enrol`` performs activation enrolment (:func:`tether.agent.runner.enrol_identity`);
    it is passed in because the agent, which runs this module's callers, is what enrols."""
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
        if enrol is None:
            raise PhaseRefused("activation credentials cannot be used here: use x509")
        cert, key, ca = enrol(config)
        return _mint(activation.plane_endpoint, ca, cert, key, name)

    return enrol_and_mint
