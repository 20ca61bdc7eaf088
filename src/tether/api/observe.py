"""What every request leaves behind: a request id, its latency, and (people's API) a log line.

:class:`Observe` is pure ASGI, not ``BaseHTTPMiddleware``: on the agent server it sees
every heartbeat, and there it costs a header scan, a context variable and one
:meth:`~tether.metrics.RequestLatency.observe` (no lock, no task). The request id is the
caller's ``X-Request-ID`` when it is a short token, else a new one (a per-process
prefix and a counter); it appears in every log line written while the request is
handled, and is sent back in ``X-Request-ID`` (by the agent server only with an error).

Latency is measured to the response's headers, labelled by the route's template
(``/api/v1/pools/{name}``), never the raw path, so the number of series stays bounded.
A stream or a long poll counts until its headers: the time a client waits for an answer.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.api.auditing import client_address, redact_target
from tether.logs import REQUEST_ID
from tether.metrics import REQUESTS

__all__ = ["Observe"]

access = logging.getLogger("tether.access")

_PREFIX = secrets.token_hex(4)
_counter = itertools.count(1)
_VALID_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _VALID_ID.match(value):
            return str(value.decode())
    return f"{_PREFIX}-{next(_counter):x}"


def _target(scope: Scope) -> str:
    query = scope.get("query_string", b"").decode("latin-1")
    return f"{scope['path']}?{query}" if query else str(scope["path"])


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class Observe:
    """ASGI middleware: request id, latency metric, and an access log line if asked."""

    __slots__ = ("access_log", "app", "echo_from", "server")

    def __init__(
        self, app: ASGIApp, server: str, *, access_log: bool = False, echo_from: int = 0
    ) -> None:
        self.app = app
        self.server = server
        self.access_log = access_log
        #: Responses with at least this status carry ``X-Request-ID`` (the agent server
        #: sends it only with errors: a heartbeat's answer stays as small as it was).
        self.echo_from = echo_from

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        token = REQUEST_ID.set(request_id)
        status = 0

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                self._observe(scope, status, started)
                if status >= self.echo_from:
                    message["headers"] = [
                        *message.get("headers", ()),
                        (b"x-request-id", request_id.encode()),
                    ]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            if not status:
                self._observe(scope, 500, started)  # it raised before answering: a 500
            if self.access_log:
                access.info(
                    "%s %s %s %d %.1fms",
                    client_address(scope),
                    scope["method"],
                    redact_target(_target(scope)),
                    status or 500,
                    (time.perf_counter() - started) * 1000,
                )
            REQUEST_ID.reset(token)

    def _observe(self, scope: Scope, status: int, started: float) -> None:
        key = (self.server, _route(scope), scope["method"], _STATUS.get(status) or str(status))
        REQUESTS.observe(key, time.perf_counter() - started)


#: Status codes as label values, made once.
_STATUS = {code: str(code) for code in range(100, 600)}
