"""Errors for everything Tether asks of a Kubernetes API server.

Every failure that leaves :class:`tether.kube.client.KubeClient` is one of these, so
callers never see lightkube's or httpx2's exception types::

    KubeError                       any Kubernetes API failure (also: other 4xx)
    ├── ConfigError                 the kubeconfig is missing, unreadable or malformed
    ├── NotFound                    404: the object (or its namespace) does not exist
    ├── Conflict                    409: AlreadyExists, or a stale resourceVersion
    ├── Gone                        410: a watch's resourceVersion is too old: relist
    ├── Invalid                     422: the object failed validation (see .causes)
    ├── Unauthorized                401: credentials missing, expired or not trusted
    ├── Forbidden                   403: authenticated, but RBAC (or admission) says no
    ├── TooManyRequests             429: throttled, or an eviction a PDB refused (retryable)
    └── Unavailable                 5xx, connection refused/reset, timeouts (retryable)

``retryable`` (in the spirit of kopf's temporary vs permanent errors) answers one
question: may *the same request*, sent again later, succeed? True only for
``TooManyRequests`` and ``Unavailable``; ``retry_after`` carries the server's hint in
seconds when it gave one. Everything else needs a different request (re-read and
re-apply on ``Conflict``, relist on ``Gone``, fix the object on ``Invalid``) or a human.

:func:`from_exception` maps lightkube's ``ApiError`` (status code plus the Kubernetes
``Status`` reason) and httpx2's errors (the HTTP library lightkube uses) onto this tree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import httpx2
from lightkube import ApiError

__all__ = [
    "ConfigError",
    "Conflict",
    "Forbidden",
    "Gone",
    "Invalid",
    "KubeError",
    "NotFound",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "from_exception",
    "from_status",
]


class KubeError(Exception):
    """A Kubernetes API request failed.

    Attributes:
        message: the server's (or transport's) message.
        status_code: HTTP status, or ``None`` when no response arrived.
        reason: the Kubernetes ``Status.reason`` (``"AlreadyExists"``, ``"Conflict"``,
            ``"Expired"``, ...), or ``None``.
        details: the ``Status.details`` mapping (``name``, ``kind``, ``causes``, ...).
        retry_after: seconds the server asked us to wait, if it said.
    """

    _retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        reason: str | None = None,
        details: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.reason = reason
        self.details: Mapping[str, Any] = details or {}
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Whether sending the same request again later may succeed."""
        return self._retryable

    @property
    def causes(self) -> list[dict[str, Any]]:
        """Field-level causes (``{"field": ..., "reason": ..., "message": ...}``)."""
        causes = self.details.get("causes") or []
        return [dict(c) for c in causes if isinstance(c, Mapping)]

    def __str__(self) -> str:
        prefix = f"{self.status_code} " if self.status_code is not None else ""
        reason = f"{self.reason}: " if self.reason else ""
        return f"{prefix}{reason}{self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, status_code={self.status_code!r}, "
            f"reason={self.reason!r})"
        )


class ConfigError(KubeError):
    """The kubeconfig cannot be used (missing, not YAML, no such context, bad fields).

    Permanent: the same kubeconfig fails the same way until someone replaces it."""


class NotFound(KubeError):
    """404: the object, its namespace or the resource type does not exist."""


class Conflict(KubeError):
    """409: the name is taken (``already_exists``) or the resourceVersion is stale."""

    @property
    def already_exists(self) -> bool:
        return self.reason == "AlreadyExists"


class Gone(KubeError):
    """410: the requested resourceVersion was compacted away; list again, then watch."""


class Invalid(KubeError):
    """422: the object failed validation; :attr:`causes` names the fields."""


class Unauthorized(KubeError):
    """401: no valid credentials."""


class Forbidden(KubeError):
    """403: authorization (or an admission plugin) refused the request."""


class TooManyRequests(KubeError):
    """429: throttled by API priority and fairness, or an eviction blocked by a PDB."""

    _retryable = True


class Unavailable(KubeError):
    """The server could not be reached or failed (5xx, connect error, timeout)."""

    _retryable = True


_BY_STATUS: dict[int, type[KubeError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: Gone,
    422: Invalid,
    429: TooManyRequests,
}


def from_status(
    status_code: int | None,
    message: str,
    *,
    reason: str | None = None,
    details: Mapping[str, Any] | None = None,
    retry_after: float | None = None,
) -> KubeError:
    """Build the error for an HTTP status (as in a response or a watch ERROR event)."""
    cls: type[KubeError]
    if status_code is None:
        cls = KubeError
    elif status_code >= 500:
        cls = Unavailable
    else:
        cls = _BY_STATUS.get(status_code, KubeError)
    if retry_after is None and details:
        hint = details.get("retryAfterSeconds")
        if isinstance(hint, int | float) and hint > 0:
            retry_after = float(hint)
    return cls(
        message or f"HTTP {status_code}",
        status_code=status_code,
        reason=reason,
        details=details,
        retry_after=retry_after,
    )


def _retry_after_header(response: httpx2.Response | None) -> float | None:
    if response is None:
        return None
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: Kubernetes never sends one
    return seconds if seconds >= 0 else None


def _status_fields(status: Any) -> tuple[int | None, str, str | None, dict[str, Any]]:
    """(code, message, reason, details) from a lightkube ``meta_v1.Status``."""
    if status is None:
        return None, "", None, {}
    details_obj = getattr(status, "details", None)
    details: dict[str, Any] = details_obj.to_dict() if details_obj is not None else {}
    code = getattr(status, "code", None)
    return (
        code if isinstance(code, int) else None,
        str(getattr(status, "message", None) or ""),
        getattr(status, "reason", None),
        details,
    )


def from_exception(exc: BaseException) -> KubeError | None:
    """Map a lightkube/httpx2 exception onto the tree; ``None`` if it is not one of ours.

    A ``KubeError`` is returned as is.
    """
    if isinstance(exc, KubeError):
        return exc
    if isinstance(exc, ApiError):
        code, message, reason, details = _status_fields(exc.status)
        response: httpx2.Response | None = getattr(exc, "response", None)
        if code is None and response is not None:
            code = response.status_code
        return from_status(
            code,
            message,
            reason=reason,
            details=details,
            retry_after=_retry_after_header(response),
        )
    if isinstance(exc, httpx2.HTTPStatusError):
        # lightkube turns only application/json error bodies into ApiError.
        resp = exc.response
        return from_status(
            resp.status_code,
            resp.reason_phrase or str(exc),
            retry_after=_retry_after_header(resp),
        )
    if isinstance(exc, httpx2.TimeoutException):
        return Unavailable(f"timed out: {exc}" if str(exc) else "timed out")
    if isinstance(exc, httpx2.TransportError):
        # Connect errors, resets, protocol errors: the server is not (properly) there.
        return Unavailable(str(exc) or type(exc).__name__)
    return None
