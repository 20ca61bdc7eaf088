"""Tether's error tree: one shape for every refusal, with the HTTP status it means.

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
