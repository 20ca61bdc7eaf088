"""Serving: the people's API (plain HTTP) and the agent API (mutual TLS) in one process.

The composition root of the plane: it builds both apps, gives the agent app its
background controllers (the heartbeat reconciler), and runs them under uvicorn. It sits
above :mod:`tether.api` and :mod:`tether.controllers`, which never import each other.

uvicorn (0.54) terminates TLS but does not put the client certificate into the ASGI
scope. :class:`PeerCertProtocol` subclasses its h11 protocol: when a connection is made
it reads the peer certificate from the transport's ``ssl_object`` once, and every
request on that connection gets it in ``scope["extensions"]["tls"]`` (the ASGI TLS
extension's ``client_cert_chain``, plus the DER form under
:data:`~tether.api.agent.CLIENT_CERT_DER`).

The TLS layer (``CERT_OPTIONAL``, every CA of the trust anchor loaded) only filters out
certificates no CA of ours signed; it ignores validity dates
(``X509_V_FLAG_NO_CHECK_TIME``) so that an expired certificate reaches the application,
which refuses it with a clear ``pki.cert.expired`` error and an audit record rather than
a bare TLS alert. Registration needs no client certificate, hence ``CERT_OPTIONAL``; the
application requires one everywhere else.

A rotation or import made by another process (``tether pki rotate``) is picked up
within ``TETHER_AGENT_REVOCATION_REFRESH_SECONDS``: new CAs are added to the live TLS
context, and a re-issued server certificate is loaded for new connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from tether import logs
from tether.api.agent import CLIENT_CERT_DER, AgentPlane, create_agent_app
from tether.controllers.heartbeats import HeartbeatReconciler
from tether.controllers.manager import ControllerManager
from tether.services.trust import PlaneTrust, ServerFiles
from tether.settings import Settings
from tether.store.db import Database, migrate

log = logging.getLogger(__name__)

#: OpenSSL's X509_V_FLAG_NO_CHECK_TIME: the application checks validity dates itself.
X509_V_FLAG_NO_CHECK_TIME = 0x200000


class _WithTLS:
    """Adds the connection's TLS details to every request's scope."""

    __slots__ = ("app", "tls")

    def __init__(self, app: ASGIApp, tls: dict[str, Any]) -> None:
        self.app = app
        self.tls = tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extensions = scope.get("extensions")
        if extensions is None:
            scope["extensions"] = {"tls": self.tls}
        else:
            extensions["tls"] = self.tls
        await self.app(scope, receive, send)


class _EndStreamsOnStop:
    """On shutdown, open GET requests (event streams) see their client disconnect.

    uvicorn waits ``SHUTDOWN_GRACE_SECONDS`` for open requests and then cancels them,
    logging each with a traceback; an event stream never ends by itself. Once
    ``stopping`` is set, ``receive`` answers ``http.disconnect``, which the streams
    already handle: they end at once and the server stops cleanly.
    """

    __slots__ = ("app", "stopping")

    def __init__(self, app: ASGIApp, stopping: asyncio.Event) -> None:
        self.app = app
        self.stopping = stopping

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return

        async def receive_or_stop() -> Message:
            if self.stopping.is_set():
                return {"type": "http.disconnect"}
            got = asyncio.ensure_future(receive())
            stop = asyncio.ensure_future(self.stopping.wait())
            try:
                await asyncio.wait({got, stop}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (got, stop):
                    task.cancel()
            if got.done() and not got.cancelled():
                return got.result()
            return {"type": "http.disconnect"}

        await self.app(scope, receive_or_stop, send)


class _Server(uvicorn.Server):
    """uvicorn's server, leaving signals to :func:`run`.

    The plane runs two servers in one loop. Each would install its own SIGINT and SIGTERM
    handlers, the last one winning, and re-raise the signal when it stops, which
    interrupts the other one's shutdown (a ``CancelledError`` traceback on Ctrl-C).
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class PeerCertProtocol(H11Protocol):
    """uvicorn's h11 protocol, exposing the client certificate to the application."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.access_log = self.access_log and bool(self.config.access_log)
        ssl_object = transport.get_extra_info("ssl_object")
        der: bytes | None = None
        tls: dict[str, Any] = {"client_cert_chain": [], CLIENT_CERT_DER: None}
        if ssl_object is not None:
            der = ssl_object.getpeercert(binary_form=True)
            tls["tls_version"] = ssl_object.version()
            tls["cipher_suite"] = (ssl_object.cipher() or ("",))[0]
        if der:
            tls["client_cert_chain"] = [ssl.DER_cert_to_PEM_cert(der)]
            tls[CLIENT_CERT_DER] = der
        self.app = _WithTLS(self.config.loaded_app, tls)


async def heartbeat_reconciler(plane: AgentPlane, stop: asyncio.Event) -> None:
    """Silent hosts become Unreachable; state follows reported health (a background job)."""
    cfg = plane.settings.agent
    reconciler = HeartbeatReconciler(
        plane.db,
        heartbeat_seconds=cfg.heartbeat_seconds,
        missed_heartbeats=cfg.missed_heartbeats,
        table=plane.table,
        clock=plane.clock,
    )
    await reconciler.run(cfg.reconcile_seconds, stop)


def server_ssl_context(trust: PlaneTrust, files: ServerFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(files.cert, files.key)
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.load_verify_locations(cadata=trust.all_ca_pem().decode())
    ctx.verify_flags |= X509_V_FLAG_NO_CHECK_TIME
    return ctx


class TLSRefresher:
    """Keeps a live server TLS context in step with the trust anchor on disk."""

    def __init__(self, trust: PlaneTrust, ctx: ssl.SSLContext, files: ServerFiles) -> None:
        self.trust, self.ctx, self.files = trust, ctx, files
        self._generation = trust.generation
        self._mtime = self._cert_mtime()

    def _cert_mtime(self) -> float:
        try:
            return self.files.cert.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def refresh(self) -> None:
        self.trust.reload_ca_if_changed()
        if self.trust.generation != self._generation:
            self.ctx.load_verify_locations(cadata=self.trust.all_ca_pem().decode())
            self._generation = self.trust.generation
        mtime = self._cert_mtime()
        if mtime != self._mtime:
            self.ctx.load_cert_chain(self.files.cert, self.files.key)
            self._mtime = mtime
            log.info("agent server certificate reloaded")


#: How long a stopping plane waits for open requests: agents' long polls and event
#: streams never end by themselves, and Ctrl-C or SIGTERM must not hang on them.
SHUTDOWN_GRACE_SECONDS = 5


def agent_config(
    app: FastAPI, settings: Settings, ctx: ssl.SSLContext, *, log_level: str = "info"
) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.agent.host,
        port=settings.agent.port,
        http=PeerCertProtocol,
        log_level=log_level,
        log_config=None,  # every logger goes where tether.logs sends it
        access_log=False,  # one line per heartbeat would drown everything else
        server_header=False,
        date_header=False,
        timeout_keep_alive=max(75, int(settings.agent.heartbeat_seconds * 3)),
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        ssl_context_factory=lambda _config, _default: ctx,
        ssl_certfile=None,
        backlog=4096,
    )


async def serve(
    settings: Settings,
    *,
    people: bool = True,
    log_level: str = "info",
    started: Callable[[dict[str, int]], None] | None = None,
    stop: asyncio.Event | None = None,
    sockets: dict[str, socket.socket] | None = None,
    controllers: bool = False,
) -> None:
    """Run the people's API and (if ``TETHER_AGENT_PORT`` is not 0) the agent server.

    ``started`` receives the bound ports once both listen (tests bind port 0). With
    ``controllers``, the controller manager (pools, and each imported cluster's nodes and
    CSRs) runs beside them, told of agents' reports and telling agents of new plans.
    """
    from tether.api.app import create_app

    settings.paths.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database.connect(
        settings.database_url,
        echo=settings.database.echo,
        busy_timeout_ms=settings.database.busy_timeout_ms,
    )
    await asyncio.to_thread(migrate, db.engine)
    servers: dict[str, _Server] = {}
    plane: AgentPlane | None = None
    refresher: TLSRefresher | None = None
    if settings.agent.port or (sockets and "agent" in sockets):
        plane = AgentPlane.build(settings, db)
        files = plane.trust.server_files()
        ctx = server_ssl_context(plane.trust, files)
        refresher = TLSRefresher(plane.trust, ctx, files)
        agent_app = create_agent_app(
            settings, db, plane=plane, run_migrations=False, background=[heartbeat_reconciler]
        )
        servers["agent"] = _Server(agent_config(agent_app, settings, ctx, log_level=log_level))
    manager: ControllerManager | None = None
    if controllers:
        manager = ControllerManager(
            db,
            settings.paths.data_dir,
            rescan_seconds=settings.controllers.rescan_seconds,
            resync_seconds=settings.controllers.node_resync_seconds,
            pool_resync_seconds=settings.controllers.pool_resync_seconds,
            on_desired=plane.notify_desired if plane is not None else None,
        )
        if plane is not None:
            plane.on_applied = manager.pools.poke_hosts
    stopping = asyncio.Event()
    if people:
        people_app = create_app(settings, db)
        if plane is not None:
            people_app.state.agent_plane = plane
        if manager is not None:
            people_app.state.on_pools_changed = manager.pools.poke
        servers["api"] = _Server(
            uvicorn.Config(
                _EndStreamsOnStop(people_app, stopping),
                host=settings.api.host,
                port=settings.api.port,
                log_level=log_level,
                log_config=None,
                access_log=False,  # the app logs each request, with its request id
                timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
            )
        )
    if manager is not None:
        manager.start()
    socks = sockets or {}
    tasks = {
        name: asyncio.create_task(
            server.serve(sockets=[socks[name]] if name in socks else None), name=name
        )
        for name, server in servers.items()
    }

    async def watch() -> None:
        while not all(s.started for s in servers.values()):
            if any(t.done() for t in tasks.values()):
                return
            await asyncio.sleep(0.05)
        ports = {}
        for name, server in servers.items():
            for srv in server.servers:
                for sock in srv.sockets:
                    ports[name] = sock.getsockname()[1]
        log.info("listening: %s", ports)
        # Long-lived objects (app, caches, connections) need no cyclic GC passes: with
        # thousands of connections a full collection stalls every request for 100s of ms.
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        if started is not None:
            started(ports)
        loop = asyncio.get_running_loop()
        next_refresh = loop.time() + settings.agent.revocation_refresh_seconds
        while not (stop is not None and stop.is_set()):
            if any(t.done() for t in tasks.values()) or any(
                s.should_exit for s in servers.values()
            ):
                break
            if refresher is not None and loop.time() >= next_refresh:
                next_refresh = loop.time() + settings.agent.revocation_refresh_seconds
                try:
                    await asyncio.to_thread(refresher.refresh)
                except Exception:
                    log.exception("refreshing the agent server's TLS context failed")
            await asyncio.sleep(0.2)
        for server in servers.values():
            server.should_exit = True
        # Open event streams and agents' long polls end now, within the grace period.
        stopping.set()
        if plane is not None:
            plane.watcher.close()

    watcher = asyncio.create_task(watch())
    try:
        await asyncio.gather(*tasks.values())
    finally:
        for server in servers.values():
            server.should_exit = True
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        if manager is not None:
            await asyncio.to_thread(manager.stop)
        db.dispose()


def run(settings: Settings, *, controllers: bool = True) -> None:
    """Blocking entry point for ``tether serve``: both servers and the controllers until
    Ctrl-C, logging as ``TETHER_LOG_FORMAT`` and ``TETHER_LOG_LEVEL`` say."""
    logs.configure(settings.log.format, settings.log.level)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def stopping(sig: signal.Signals) -> None:
            log.info("%s: stopping (again to stop at once)", sig.name)
            stop.set()
            loop.remove_signal_handler(signal.SIGINT)  # a second Ctrl-C interrupts

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping, sig)
        await serve(settings, log_level=settings.log.level, controllers=controllers, stop=stop)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


class ServerThread:
    """Both servers in a background thread (tests, the demo, the benchmark)."""

    def __init__(
        self, settings: Settings, *, log_level: str = "warning", controllers: bool = False
    ) -> None:
        self.settings = settings
        self.log_level = log_level
        self.controllers = controllers
        self.ports: dict[str, int] = {}
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True, name="tether-server")

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def started(ports: dict[str, int]) -> None:
                self.ports = ports
                self._ready.set()

            await serve(
                self.settings,
                log_level=self.log_level,
                started=started,
                stop=self._stop,
                controllers=self.controllers,
            )

        try:
            asyncio.run(main())
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def start(self, timeout: float = 60) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None or not self.ports:
            raise RuntimeError(f"the plane did not start: {self._error!r}")
        return self

    def stop(self, timeout: float = 30) -> None:
        """Stop both servers and wait for them (a second call does nothing)."""
        if self._thread.is_alive() and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api.host}:{self.ports['api']}"

    @property
    def agent_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['agent']}"

    @property
    def ca_bundle(self) -> Path:
        return self.settings.pki_dir / "ca" / "active" / "ca.crt"
