"""Request bodies at the boundary, before any route sees them: size, time, JSON.

Pure ASGI middleware (no ``BaseHTTPMiddleware``), shared by both apps:

* :class:`DeclaredSize` refuses a body whose ``Content-Length`` is over the route's limit
  with 413 before a byte of it is read. The people's API runs it before authentication.
* :class:`BodyReader` reads the body (after authentication on the people's API): 413 as
  soon as it grows past the limit (chunked bodies), 408 when it has not arrived within
  the body timeout. Both close the connection, so the rest is never read. A JSON body
  (``application/json``, ``+json``, or no content type, as FastAPI reads it) must be
  UTF-8, valid JSON without ``NaN``/``Infinity``, and nested at most
  :data:`MAX_JSON_DEPTH` deep, or it is refused with 422 naming ``body`` (or the
  top-level key the problem is under). Routes then only ever parse bodies that parse:
  no ``400 http_error``, no character offsets as fields, and nothing is stored that
  could not be served back (pydantic stops serialising at about 255 levels).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether.api.errors import send_error
from tether.errors import Invalid, PlaneError, RequestTimeout, TooLarge

#: How deep a JSON body may nest (objects and arrays). Desired-state documents, network
#: documents and apply reports are a handful of levels deep; pydantic's serialiser stops
#: at about 255, so anything deeper could be stored but never served back.
MAX_JSON_DEPTH = 64

#: ``limit_for(method, path)``: the largest body a route takes, in bytes.
LimitFor = Callable[[str, str], int]


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _too_large(limit: int) -> TooLarge:
    return TooLarge(
        f"the request body is larger than this endpoint takes ({limit} bytes)",
        field="body",
        rule="max_bytes",
    )


def _declared(scope: Scope) -> int | None:
    """The Content-Length, or None (absent or unreadable: h11 refuses those already)."""
    value = _header(scope, b"content-length")
    if value is None or not value.isdigit():
        return None
    return int(value)


class DeclaredSize:
    """Refuse a body whose declared length is over its route's limit, unread (413)."""

    def __init__(self, app: ASGIApp, limit_for: LimitFor) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = _declared(scope)
            if declared:
                limit = self.limit_for(scope["method"], scope["path"])
                if declared > limit:
                    await send_error(send, _too_large(limit), close=True)
                    return
        await self.app(scope, receive, send)


class Deadlines:
    """Body reads in flight and when each must end: one sweep a second cancels the late ones.

    Cheaper than a timer per request (``asyncio.timeout`` costs about 10 µs, as much as the
    rest of a heartbeat's middleware): a read registers itself in a dict and leaves it.
    """

    SWEEP_SECONDS = 1.0

    def __init__(self) -> None:
        self.reading: dict[asyncio.Task[Any], float] = {}
        self.late: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def enter(self, timeout: float) -> asyncio.Task[Any]:
        task = asyncio.current_task()
        assert task is not None
        loop = task.get_loop()
        if self._sweeper is None or self._sweeper.done() or self._sweeper.get_loop() is not loop:
            self._sweeper = loop.create_task(self._sweep())
        self.reading[task] = loop.time() + timeout
        return task

    def leave(self, task: asyncio.Task[Any]) -> bool:
        """Whether the read was cancelled for being late (then the task is uncancelled)."""
        self.reading.pop(task, None)
        if task in self.late:
            self.late.discard(task)
            task.uncancel()
            return True
        return False

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.SWEEP_SECONDS)
            now = loop.time()
            for task, deadline in list(self.reading.items()):
                if deadline <= now and task not in self.late:
                    self.late.add(task)
                    task.cancel()


class BodyReader:
    """Read, bound and check a request body, then hand it to the app in one message."""

    def __init__(
        self,
        app: ASGIApp,
        limit_for: LimitFor,
        *,
        timeout: float,
        unchecked: Callable[[str], bool] = lambda _path: False,
    ) -> None:
        self.app = app
        self.limit_for = limit_for
        self.timeout = timeout
        #: Paths whose JSON the route parses itself with a strict model (heartbeats).
        self.unchecked = unchecked
        self.deadlines = Deadlines()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared(scope)
        if declared == 0 or (declared is None and _header(scope, b"transfer-encoding") is None):
            await self.app(scope, receive, send)  # no body: reads, long polls, streams
            return
        limit = self.limit_for(scope["method"], scope["path"])
        try:
            body = await self._read(receive, limit, declared)
            if body and not self.unchecked(scope["path"]) and _is_json(scope):
                check_json(body)
        except PlaneError as exc:
            await send_error(send, exc, close=not isinstance(exc, Invalid))
            return
        whole = {"type": "http.request", "body": body, "more_body": False}
        await self.app(scope, replaying(whole, receive), send)

    async def _read(self, receive: Receive, limit: int, declared: int | None) -> bytes:
        if declared is not None and declared > limit:
            raise _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        task = self.deadlines.enter(self.timeout)
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    raise RequestTimeout(
                        "the client went away before sending the whole body",
                        field="body",
                        rule="incomplete",
                    )
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
        except asyncio.CancelledError:
            if not self.deadlines.leave(task):
                raise
            raise RequestTimeout(
                f"the request body did not arrive within {self.timeout:g} s",
                field="body",
                rule="body_timeout",
            ) from None
        finally:
            self.deadlines.leave(task)


def replaying(message: Message, receive: Receive) -> Receive:
    """``receive`` with ``message``, already received, handed out again first."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return message

    return replay


def _is_json(scope: Scope) -> bool:
    value = _header(scope, b"content-type")
    if value is None:
        return True
    kind = value.split(b";", 1)[0].strip().lower()
    return kind == b"application/json" or (
        kind.startswith(b"application/") and kind.endswith(b"+json")
    )


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def check_json(body: bytes) -> None:
    """Refuse a body that is not UTF-8 JSON within :data:`MAX_JSON_DEPTH` (422)."""
    try:
        document = json.loads(body.decode("utf-8"), parse_constant=_constant)
    except UnicodeDecodeError as exc:
        raise Invalid(
            f"the body is not UTF-8 (byte {exc.start})", field="body", rule="json.utf8"
        ) from None
    except RecursionError:
        raise _too_deep("body") from None
    except ValueError as exc:
        raise Invalid(
            f"the body is not valid JSON: {exc}", field="body", rule="json.syntax"
        ) from None
    where = _deeper_than(document, MAX_JSON_DEPTH)
    if where is not None:
        raise _too_deep(where)


def _too_deep(field: str) -> Invalid:
    return Invalid(
        f"{field}: JSON nested deeper than {MAX_JSON_DEPTH} levels",
        field=field,
        rule="json.depth",
    )


def _deeper_than(document: Any, limit: int) -> str | None:
    """The top-level key (or ``body``) under which ``document`` nests past ``limit``."""
    stack: list[tuple[Any, int, str]] = [(document, 1, "body")]
    while stack:
        value, depth, top = stack.pop()
        if isinstance(value, dict):
            items = [(v, depth + 1, str(k) if depth == 1 else top) for k, v in value.items()]
        elif isinstance(value, list):
            items = [(v, depth + 1, top) for v in value]
        else:
            continue
        if depth > limit:
            return top
        stack.extend(items)
    return None
