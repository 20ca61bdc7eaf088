"""Who did what: the audit log (in the store) and the access log (in the server's log).

Both apps audit with :class:`Audit`, a pure ASGI middleware (no ``BaseHTTPMiddleware``,
so the agent port's heartbeat path pays one function call): every change and every
refusal (status >= 400) is written, a routine success (a read, a heartbeat) is not. A
request that ends in an exception is written as a 500 before the error page goes out.

The actor is the identity the request proved (``token:<name>:<id>``, ``host:<name>``,
``activation:<id>`` once accepted). A refused request is attributed to what it claimed
(the token it sent, the activation it named), but it proved nothing, so its rows go
through :class:`AnonymousLimiter`: per client address, a burst is written one by one and
then one summary row per interval counts the rest (action ``SUPPRESSED``). One client
cannot write the audit log at network speed. Failed TLS handshakes on the agent port are
written the same way (action ``TLS``).

The people's API has its own access log (:class:`AccessLog`, logger ``tether.access``):
uvicorn's writes the query string as it came, and a token sent there would stay in the
log. Ours replaces anything that looks like a token.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.services import audit
from tether.settings import AuditSettings
from tether.store.db import Database

log = logging.getLogger(__name__)

#: ``action`` of a row that counts refusals the rate limit kept from being written one by one.
SUPPRESSED = "SUPPRESSED"
#: ``action`` of a refused TLS handshake; its status is 495 ("certificate error", nginx's).
TLS_ACTION, TLS_STATUS = "TLS", 495


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    suppressed: int = 0


@dataclass
class AnonymousLimiter:
    """A token bucket per client address for refusals of callers who proved nothing."""

    burst: int
    per_second: float
    clock: Callable[[], float] = time.monotonic
    buckets: dict[str, _Bucket] = field(default_factory=dict)

    def allow(self, client: str) -> bool:
        now = self.clock()
        bucket = self.buckets.get(client)
        if bucket is None:
            bucket = self.buckets[client] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.per_second)
        bucket.stamp = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return True
        bucket.suppressed += 1
        return False

    def drain(self) -> dict[str, int]:
        """Counts of refusals not written since the last drain; forgets full buckets."""
        counts = {c: b.suppressed for c, b in self.buckets.items() if b.suppressed}
        now = self.clock()
        for client in list(self.buckets):
            bucket = self.buckets[client]
            bucket.suppressed = 0
            if bucket.tokens + (now - bucket.stamp) * self.per_second >= self.burst:
                del self.buckets[client]
        return counts


class Auditor:
    """Writes audit rows (in a worker thread), rate-limiting those of unproven callers."""

    def __init__(self, db: Database, settings: AuditSettings) -> None:
        self.db = db
        self.limiter = AnonymousLimiter(settings.anonymous_burst, settings.anonymous_per_second)

    async def record(
        self, actor: str, action: str, target: str, status: int, *, proven: bool, client: str
    ) -> None:
        if not proven and not self.limiter.allow(client):
            return
        with suppress(Exception):  # the audit never turns an answer into an error
            await run_in_threadpool(self._write, actor, action, target, status)

    def flush(self) -> None:
        """Write one summary row per client address whose refusals were rate-limited."""
        for client, count in self.limiter.drain().items():
            self._write(
                "anonymous",
                SUPPRESSED,
                f"{count} refusals from {client} (audit rate limit)",
                429,
            )

    def _write(self, actor: str, action: str, target: str, status: int) -> None:
        with self.db.session() as session:
            audit.write(session, actor=actor, action=action, target=target, status_code=status)


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class Audit:
    """ASGI middleware: audit every change and every refusal; ``routine(method, path)``
    names the successful requests that are not changes (reads, heartbeats)."""

    def __init__(self, app: ASGIApp, auditor: Auditor, routine: Callable[[str, str], bool]):
        self.app = app
        self.auditor = auditor
        self.routine = routine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        written = False

        async def record(code: int) -> None:
            nonlocal written
            written = True
            if code < 400 and self.routine(method, path):
                return
            state = scope.get("state") or {}
            principal = state.get("principal")
            actor = principal.name if principal is not None else state.get("claimed")
            await self.auditor.record(
                actor or "anonymous",
                method,
                path,
                code,
                proven=principal is not None,
                client=client_address(scope),
            )

        async def capture(message: Message) -> None:
            # Audit before the response leaves: a client that reads it sees the record.
            if message["type"] == "http.response.start" and not written:
                await record(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            if not written:
                await record(500)


#: Query parameters that carry credentials, and anything shaped like a Tether token.
SECRET_PARAMS = frozenset({"token", "access_token", "api_key", "apikey", "key", "secret"})
TOKEN_SHAPE = re.compile(r"tth_[A-Za-z0-9]+_[A-Za-z0-9_\-]+")


def redact(text: str) -> str:
    """``text`` with every token-shaped string replaced (paths and query strings)."""
    return TOKEN_SHAPE.sub("tth_REDACTED", text)


def _redacted_query(query: str) -> str:
    parts = []
    for part in query.split("&"):
        name, eq, _ = part.partition("=")
        parts.append(f"{name}=REDACTED" if eq and name.lower() in SECRET_PARAMS else part)
    return redact("&".join(parts))


def redact_target(target: str) -> str:
    """A request target (``path?query``) fit for a log: no token, no credential value."""
    path, question, query = target.partition("?")
    return redact(path) + (f"?{_redacted_query(query)}" if question else "")
