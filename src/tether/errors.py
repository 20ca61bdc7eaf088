"""Tether's two error trees: the plane's refusals, and failures on a host.

The plane: one shape for every refusal, with the HTTP status it means::

    PlaneError (code, message, field, rule, status)
    ├── NotFound          404  the named object does not exist
    ├── Conflict          409  already exists, stale resourceVersion, or still in use
    ├── Invalid           422  the request is well-formed but breaks a rule
    ├── Unauthenticated   401  no token, an unknown, revoked or expired token
    ├── Forbidden         403  the token's role does not allow the operation
    ├── RequestTimeout    408  the request did not arrive in time
    ├── TooLarge          413  the request body is over its limit
    └── TooManyRequests   429  a cap on open streams (or the like) is reached

The tree is pure (no I/O) so every layer can raise from it: the domain raises
``Invalid`` and ``IllegalTransition`` (a ``Conflict``), the store raises ``NotFound`` and
``Conflict``, the API renders any of them as ``{"code", "message", "field", "rule"}``.

A host (the node tool, the agent, the agent API's client): one base with two branches,
so that whoever runs a host action (the agent's plan runner, the CLI) asks one
question, :func:`is_permanent`, instead of knowing every class::

    HostError                       any failure of a host action
    ├── Permanent                   the same input fails the same way: a person must change
    │   │                           the plan, the configuration or the host first
    │   ├── ForeignFile             node.managed: a file Tether would write is not Tether's
    │   ├── PhaseRefused            node.phases: a phase refuses (a containerd major jump,
    │   │                           version skew, swap on, an operator's containerd config)
    │   ├── UnknownPhase            node.phases: --skip names no phase of the action
    │   ├── NodeConfigError         node.nodeconfig: the NodeConfig breaks a rule
    │   ├── DropInError             node.render: the containerd drop-in does not suit this
    │   │                           containerd (version 3 names on 1.x)
    │   ├── ImageArchiveError       node.images: not an image archive with a named image
    │   ├── UnitError               node.unitrun: a unit file the supervisor cannot run
    │   ├── NotInitialised          node.actions: no node was set up by tether node init
    │   ├── ManifestError           node.artifacts: unusable manifest or keyring, unknown
    │   │   │                       version or architecture
    │   │   ├── SignatureError      the envelope is not trusted
    │   │   └── ChecksumMismatch    a file's sha256 is not the one the manifest names
    │   ├── Refused                 planeclient: the plane refused the request (4xx)
    │   ├── RegistrationRefused     agent.runner: enrolment refused, or no activation
    │   ├── EnrolmentFailed         agent.runner: enrolment for tether node init failed
    │   ├── ConfigError             agent.config: the agent's configuration is unusable
    │   ├── TagError                agent.tags: a tags file or script gave no usable tags
    │   ├── InvalidVpnDocument      agent.vpnserver: the vpnServer section breaks a rule
    │   └── AlreadyRunning          agent.lock: another agent holds this host's lock
    └── Temporary                   the same input may succeed later: retry with backoff
        ├── PhaseError              node.phases: a phase cannot reach its goal yet (the node
        │                           is not drained, not Ready; a file cannot be read)
        ├── FetchError              node.install: a manifest or artifact cannot be fetched
        ├── NodeViewError           node.kubeview: the API server cannot answer
        ├── HostOpsError            node.host: systemctl, sysctl or modprobe failed
        ├── RouteCommandError       node.routes: ip route failed (the gateway's link may
        │                           not be up yet)
        ├── VpnServerError          agent.vpnserver: swanctl, birdc or routes.sh failed (the
        │                           daemon may not be up yet)
        └── Unavailable             planeclient: the plane is unreachable, failed (5xx) or
                                    throttled (429)

The branch classes may be raised themselves when no narrower class says more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class PlaneError(Exception):
    """A refusal. ``details`` lists every problem found (``field``, ``rule``, ``message``);
    ``extra`` carries operation-specific data for the response (e.g. network findings)."""

    status = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        rule: str | None = None,
        details: Sequence[Mapping[str, str | None]] = (),
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.rule = rule
        self.details = list(details)
        self.extra = dict(extra or {})


class NotFound(PlaneError):
    status = 404
    code = "not_found"

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name!r} not found", field="name", rule="exists")


class Conflict(PlaneError):
    status = 409
    code = "conflict"


class Invalid(PlaneError):
    status = 422
    code = "invalid"


class Unauthenticated(PlaneError):
    status = 401
    code = "unauthenticated"


class Forbidden(PlaneError):
    status = 403
    code = "forbidden"


class RequestTimeout(PlaneError):
    status = 408
    code = "timeout"


class TooLarge(PlaneError):
    status = 413
    code = "too_large"


class TooManyRequests(PlaneError):
    status = 429
    code = "too_many_requests"


class HostError(Exception):
    """A host action failed; see the tree in the module docstring."""


class Permanent(HostError):
    """Retrying the same input cannot help: a person must change something first."""


class Temporary(HostError):
    """The same input may succeed later (an outage, a drain in progress): retry."""


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying what raised ``exc`` with the same input is pointless: the one place
    a host decides it. A :class:`HostError` by its branch; a :class:`PlaneError` (the host
    validates plans with the plane's rules) is permanent; anything else (an ``OSError``, a
    bug) is temporary, so it is retried with backoff rather than dropped."""
    if isinstance(exc, HostError):
        return isinstance(exc, Permanent)
    return isinstance(exc, PlaneError)


def describe(exc: BaseException) -> str:
    """A failure's message for a person: a refusal's own message, else ``str(exc)``."""
    if isinstance(exc, PlaneError):
        return exc.message
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename or ''}: {exc.strerror}".lstrip(": ")
    return str(exc) or type(exc).__name__
