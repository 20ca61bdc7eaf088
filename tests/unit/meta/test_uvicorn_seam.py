"""What tether.server relies on in uvicorn, which is not all public API.

:class:`tether.server.GuardedProtocol` wraps uvicorn's h11 protocol class and is given to
uvicorn as ``http=``; uvicorn must construct it with keyword arguments the h11 protocol
accepts, and the h11 protocol must live where it is imported from. pyproject.toml pins
uvicorn to the range this passed on: a uvicorn outside it, or one that moved or changed
these, fails here rather than in production.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from importlib import metadata

import httpx
import uvicorn
from packaging.requirements import Requirement
from packaging.version import Version

from tether.server import Guard, server_config


def test_the_installed_uvicorn_is_in_the_declared_range() -> None:
    declared = next(
        Requirement(r) for r in metadata.requires("tether") or [] if r.startswith("uvicorn")
    )
    assert declared.specifier, "uvicorn must be pinned: tether.server uses its internals"
    assert Version(uvicorn.__version__) in declared.specifier
    assert any(spec.operator == "<" for spec in declared.specifier), declared


def test_the_h11_protocol_takes_what_uvicorn_passes_to_its_http_class() -> None:
    from uvicorn.protocols.http.h11_impl import H11Protocol

    params = inspect.signature(H11Protocol.__init__).parameters
    assert {"config", "server_state", "app_state", "_loop"} <= set(params)
    source = inspect.getsource(uvicorn.Server.startup)
    for keyword in ("config=config", "server_state=", "app_state=", "_loop="):
        assert keyword in source, f"uvicorn.Server.startup no longer passes {keyword}"


def test_the_h11_protocol_keeps_the_request_where_the_guard_drops_it() -> None:
    """GuardedProtocol.forget_request clears these once a response is out (issue 17)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

    init = inspect.getsource(H11Protocol.__init__)
    for attribute in ("self.cycle", "self.scope", "self.headers"):
        assert f"{attribute}:" in init, f"H11Protocol no longer has {attribute}"
    assert "self.response_complete" in inspect.getsource(RequestResponseCycle.__init__)


async def _echo_path(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    """An ASGI app that answers each request with its path."""
    if scope["type"] != "http":
        return
    body = scope["path"].encode()
    length = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": length})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": body})  # type: ignore[operator]


async def _serve(guard: Guard) -> tuple[uvicorn.Server, asyncio.Task[None], int]:
    """A real uvicorn server with the guarded protocol on a free port, started."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = server_config(_echo_path, guard, "127.0.0.1", port, 5, "warning")
    config.lifespan = "off"
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    return server, task, port


def test_uvicorn_serves_through_the_guarded_protocol() -> None:
    """A real uvicorn server with the guarded protocol: a request gets through it, and the
    guard sees the connection open and then closed."""
    guard = Guard("api", max_connections=10, header_timeout=5)

    async def main() -> tuple[int, str, int, int]:
        server, task, port = await _serve(guard)
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/ok")
            during = guard.open
        await asyncio.sleep(0.1)
        server.should_exit = True
        await task
        return response.status_code, response.text, during, guard.open

    status, text, during, after = asyncio.run(main())
    assert (status, text) == (200, "/ok")
    assert (during, after) == (1, 0)


def test_pipelined_requests_are_all_answered_and_then_forgotten() -> None:
    """Two requests in one write: uvicorn starts the second from inside the first one's
    last send. The guard must leave the second request's cycle alone while it runs, and
    drop it once it is answered (GuardedProtocol.forget_request)."""
    guard = Guard("api", max_connections=10, header_timeout=5)

    async def main() -> tuple[bytes, list[object]]:
        server, task, port = await _serve(guard)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(f"GET /{p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in "ab"))
        answers = b""
        while not answers.endswith(b"/b"):
            chunk = await asyncio.wait_for(reader.read(4096), timeout=10)
            if not chunk:
                break
            answers += chunk
        cycles = [conn.inner.cycle for conn in guard.by_peer.values()]
        writer.close()
        server.should_exit = True
        await task
        return answers, cycles

    answers, cycles = asyncio.run(main())
    assert answers.count(b"HTTP/1.1 200") == 2 and answers.index(b"/a") < answers.index(b"/b")
    assert cycles == [None]
