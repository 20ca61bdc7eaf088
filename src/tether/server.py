"""Serving: the people's API (plain HTTP) and the agent API (mutual TLS) in one process.

The composition root of the plane: it builds both apps, gives the agent app its
background controllers (the heartbeat reconciler), and runs them under uvicorn. It sits
above :mod:`tether.api` and :mod:`tether.controllers`, which never import each other.

uvicorn parses HTTP; every connection on both ports first goes through
:class:`GuardedProtocol`, which

* caps the open connections of each port (``TETHER_API_MAX_CONNECTIONS``,
  ``TETHER_AGENT_MAX_CONNECTIONS``): past the cap the people's port answers 503 and
  closes, the agent port closes before the TLS handshake;
* on the agent port, runs the TLS handshake itself (asyncio's ``start_tls``) with a
  deadline (``TETHER_AGENT_HANDSHAKE_TIMEOUT_SECONDS``; uvicorn leaves asyncio's 60 s)
  and logs and audits every refused handshake (uvicorn's are silent);
* closes a connection whose request head has not arrived within
  ``TETHER_*_HEADER_TIMEOUT_SECONDS`` of the connection opening or of the head's first
  byte. uvicorn's keep-alive timeout only covers idle time between requests: a client
  that sends nothing, or drips a header byte now and then, was held forever.

Body sizes and body timeouts are the apps' own (:mod:`tether.api.limits`).
:class:`ConnectionScope`, the outermost ASGI layer of each app, finds the request's
connection by its peer address and puts its TLS details in the scope (the ASGI TLS
extension's ``client_cert_chain``, plus the DER form under
:data:`~tether.api.agent.CLIENT_CERT_DER`); it also tells the connection when a
response is complete, so that its next byte starts a new head deadline, and once the
request is over makes uvicorn forget it (:meth:`GuardedProtocol.forget_request`).

uvicorn is pinned to a tested range in ``pyproject.toml``: :class:`GuardedProtocol` wraps
uvicorn's h11 protocol (``uvicorn.protocols.http.h11_impl.H11Protocol``, not public
API), constructed with the keyword arguments uvicorn passes to the protocol class given
as ``http=``. ``tests/unit/meta/test_uvicorn_seam.py`` fails when the installed uvicorn lacks
either.

The TLS layer (``CERT_OPTIONAL``, every CA of the trust anchor loaded) only filters out
certificates no CA of ours signed; it ignores validity dates
(``X509_V_FLAG_NO_CHECK_TIME``) so that an expired certificate reaches the application,
which refuses it with a clear ``pki.cert.expired`` error and an audit record rather than
a bare TLS alert. Registration needs no client certificate, hence ``CERT_OPTIONAL``; the
application requires one everywhere else.

A rotation or import made by another process (``tether pki rotate``) is picked up
within ``TETHER_AGENT_REVOCATION_REFRESH_SECONDS``: new CAs are added to the live TLS
context, and a re-issued server certificate is loaded for new connections.

Each agent keeps one TLS connection open, so what a connection costs is multiplied by the
fleet: asyncio's TLS transport zero-fills a 256 KiB read buffer per connection (about
300 KiB resident each, 3 GiB at 10,000 hosts). uvloop would cost about 45 KiB, but it
delivers bytes to a protocol whose reading is paused in ``connection_made``, so the
ClientHello would reach ``data_received`` before ``start_tls`` takes over; the plane keeps
asyncio's loop for the guarded handshake below.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from tether import logs
from tether.api.agent import CLIENT_CERT_DER, AgentPlane, create_agent_app
from tether.api.auditing import (
    TLS_ACTION,
    TLS_STATUS,
    AnonymousLimiter,
    Auditor,
)
from tether.controllers.heartbeats import HeartbeatReconciler
from tether.controllers.manager import ControllerManager
from tether.files import private_dir
from tether.services.trust import PlaneTrust, ServerFiles
from tether.settings import Settings
from tether.store.db import Database, migrate

log = logging.getLogger(__name__)

#: OpenSSL's X509_V_FLAG_NO_CHECK_TIME: the application checks validity dates itself.
X509_V_FLAG_NO_CHECK_TIME = 0x200000

Peer = tuple[str, int]


@dataclass
class Guard:
    """The limits of one port and the connections open on it."""

    name: str
    max_connections: int
    header_timeout: float
    #: The agent port's TLS context and handshake deadline (None: plain HTTP).
    tls: ssl.SSLContext | None = None
    handshake_timeout: float = 10.0
    #: Called with (client address, reason) for each refused TLS handshake.
    on_tls_refusal: Callable[[str, str], None] | None = None
    open: int = 0
    by_peer: dict[Peer, GuardedProtocol] = field(default_factory=dict)
    #: Warnings per kind and client address: a flood does not flood the log.
    _log_limit: AnonymousLimiter = field(default_factory=lambda: AnonymousLimiter(5, 0.2))

    def warn(self, what: str, client: str, message: str, *args: Any) -> None:
        if self._log_limit.allow(f"{what}:{client}"):
            log.warning(message, *args)
        if len(self._log_limit.buckets) > 1024:
            self._log_limit.drain()  # forget addresses that went quiet

    def protocol(self) -> type[GuardedProtocol]:
        """The protocol class to give uvicorn as ``http=`` for this port."""
        return type(f"Guarded{self.name.title()}Protocol", (GuardedProtocol,), {"guard": self})


#: A too-many-connections answer on the people's port, in the API's error shape.
_BUSY = json.dumps(
    {
        "code": "unavailable",
        "message": "the plane has as many connections open as it accepts; retry shortly",
        "field": "connection",
        "rule": "max_connections",
    }
).encode()
BUSY_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"connection: close\r\nretry-after: 1\r\ncontent-length: "
    + str(len(_BUSY)).encode()
    + b"\r\n\r\n"
    + _BUSY
)


class GuardedProtocol(asyncio.Protocol):
    """One connection: connection cap, TLS handshake, head deadline, then uvicorn's h11."""

    guard: ClassVar[Guard]

    def __init__(self, **kwargs: Any) -> None:
        self.inner = H11Protocol(**kwargs)
        self.loop: asyncio.AbstractEventLoop = kwargs.get("_loop") or asyncio.get_event_loop()
        self.transport: asyncio.BaseTransport | None = None
        self.peer: Peer | None = None
        self.client = "unknown"
        self.tls: dict[str, Any] | None = None
        self.counted = False
        self.opened = False
        self.early: list[bytes] = []
        self.awaiting_head = True
        self.tail = b""
        self.timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        guard = self.guard
        self.transport = transport
        peername = transport.get_extra_info("peername")
        if isinstance(peername, tuple) and len(peername) >= 2:
            self.peer = (str(peername[0]), int(peername[1]))
            self.client = self.peer[0]
        if guard.open >= guard.max_connections:
            guard.warn(
                "over_cap", self.client, "%s port at its cap of %d connections: refused %s",
                guard.name, guard.max_connections, self.client,
            )  # fmt: skip
            if guard.tls is None:
                cast(asyncio.WriteTransport, transport).write(BUSY_RESPONSE)
            transport.close()
            return
        guard.open += 1
        self.counted = True
        if guard.tls is None:
            self._open(transport)
            return
        raw = cast(asyncio.Transport, transport)
        raw.pause_reading()  # nothing may reach us before start_tls takes over
        self.handshake = self.loop.create_task(self._start_tls(raw, guard.tls))

    async def _start_tls(self, raw: asyncio.Transport, ctx: ssl.SSLContext) -> None:
        guard = self.guard
        try:
            transport = await self.loop.start_tls(
                raw, self, ctx, server_side=True, ssl_handshake_timeout=guard.handshake_timeout
            )
        except asyncio.CancelledError:  # the plane is stopping
            raw.close()
            self._release()
            raise
        except OSError as exc:  # ssl.SSLError, timeouts and resets are all OSErrors
            raw.close()
            self._release()
            reason = _tls_reason(exc, guard.handshake_timeout)
            guard.warn(
                "tls_refused", self.client, "TLS handshake from %s refused: %s", self.client, reason
            )
            if guard.on_tls_refusal is not None:
                guard.on_tls_refusal(self.client, reason)
            return
        if transport is None or transport.is_closing():
            self._release()
            return
        ssl_object: ssl.SSLObject = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        self.tls = {
            "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
            CLIENT_CERT_DER: der or None,
            "tls_version": ssl_object.version(),
            "cipher_suite": (ssl_object.cipher() or ("",))[0],
        }
        self._open(transport)

    def _open(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.opened = True
        if self.peer is not None:
            self.guard.by_peer[self.peer] = self
        self.inner.connection_made(transport)  # type: ignore[arg-type]
        self._arm()  # a new connection owes its first head
        early, self.early = self.early, []
        for data in early:
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        if not self.opened:
            self.early.append(data)  # TLS records decrypted before start_tls returned
            return
        if self.awaiting_head:
            seen = self.tail + data
            if seen.find(b"\r\n\r\n") >= 0:
                self.awaiting_head = False
                self._disarm()
            else:
                self.tail = seen[-3:]
                if self.timer is None:
                    self._arm()
        self.inner.data_received(data)

    def eof_received(self) -> None:
        if self.opened:
            self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._release()
        if self.opened:
            self.opened = False
            if self.peer is not None and self.guard.by_peer.get(self.peer) is self:
                del self.guard.by_peer[self.peer]
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.opened:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.opened:
            self.inner.resume_writing()

    # Deadlines ----------------------------------------------------------------------------

    def response_done(self) -> None:
        """The response went out: the next byte starts a new head, on a new deadline."""
        self.awaiting_head = True
        self.tail = b""

    def forget_request(self, scope: Scope) -> None:
        """Drop uvicorn's references to a finished request: its cycle, scope and headers.

        uvicorn keeps them on the connection until the next request replaces them, which on
        an agent's keep-alive connection is a heartbeat interval later. Each heartbeat so
        left about 30 objects alive for the cyclic GC, which scanned them again in every
        young collection until they died: at 10,000 agents about 300,000 objects, and
        collections of 30-280 ms on the event loop (issue 17). Once forgotten they die with
        the request, by reference counting, before any collection sees them.
        """
        inner = self.inner
        if inner.scope is scope and inner.cycle is not None and inner.cycle.response_complete:
            inner.cycle = None  # type: ignore[assignment]
            inner.scope = None  # type: ignore[assignment]
            inner.headers = None  # type: ignore[assignment]

    def _arm(self) -> None:
        self._disarm()
        self.timer = self.loop.call_later(self.guard.header_timeout, self._head_overdue)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _head_overdue(self) -> None:
        self.timer = None
        if self.awaiting_head and self.transport is not None and not self.transport.is_closing():
            self.guard.warn(
                "head_timeout", self.client,
                "%s port: no request head from %s within %gs; connection closed",
                self.guard.name, self.client, self.guard.header_timeout,
            )  # fmt: skip
            self.transport.close()

    def _release(self) -> None:
        if self.counted:
            self.counted = False
            self.guard.open -= 1


def _tls_reason(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.__class__.__name__)
    if isinstance(exc, ConnectionAbortedError) and "longer than" in str(exc):
        return f"no handshake within {timeout:g}s"
    return exc.__class__.__name__


class ConnectionScope:
    """ASGI: the request's connection's TLS details into the scope; the connection told
    when its response is complete (the outermost layer of each app)."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client") if scope["type"] == "http" else None
        conn = self.guard.by_peer.get((str(client[0]), int(client[1]))) if client else None
        if conn is None:
            await self.app(scope, receive, send)
            return
        if conn.tls is not None:
            extensions = scope.get("extensions")
            if extensions is None:
                scope["extensions"] = {"tls": conn.tls}
            else:
                extensions["tls"] = conn.tls

        done = False

        async def sent(message: Message) -> None:
            nonlocal done
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                done = True
                conn.response_done()
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            if not done:  # uvicorn answers a failed app itself, with Connection: close
                conn.response_done()
            conn.forget_request(scope)


class _Server(uvicorn.Server):
    """uvicorn's server, leaving signals to :func:`run`.

    The plane runs two servers in one loop. Each would install its own SIGINT and SIGTERM
    handlers, the last one winning, and re-raise the signal when it stops, which
    interrupts the other one's shutdown (a ``CancelledError`` traceback on Ctrl-C).
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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


#: Bytes of TLS records a connection reads at once. asyncio gives every TLS connection a
#: read buffer of ``SSLProtocol.max_size`` (256 KiB), allocated and zero-filled when it
#: opens: at 18,000 agents that was most of the plane's memory, and zero-filling was 14 %
#: of the event loop while a fleet reconnected (issue 17's profile). Agents send small
#: requests; 32 KiB holds two TLS records of the largest size.
TLS_READ_BUFFER_BYTES = 32 * 1024


def small_tls_read_buffers() -> None:
    """Give this process's TLS connections :data:`TLS_READ_BUFFER_BYTES` read buffers.

    ``loop.start_tls`` builds asyncio's ``SSLProtocol`` itself and takes no buffer size,
    so its class attribute is the one seam. In the plane it reaches only the agent
    port's connections: the plane opens no TLS connections through asyncio itself."""
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER_BYTES  # type: ignore[attr-defined]


def server_ssl_context(trust: PlaneTrust, files: ServerFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # No TLS 1.3 session tickets: agents hold one connection open and never resume a
    # session, and with OpenSSL 3.0 each ticket copies the session by encoding and
    # decoding it, client certificate included: two tickets were a third of the CPU of
    # every handshake, which a fleet reconnecting at once pays on the event loop.
    ctx.num_tickets = 0
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


def tune_gc() -> None:
    """The plane's cyclic GC settings, once it has started (benchmarks use them too).

    Long-lived objects (app, caches) need no cyclic GC passes: with thousands of
    connections a full collection stalls every request for 100s of ms. A young collection
    scans every object still alive since the last one and holds the loop meanwhile, so
    its threshold bounds the stall: at 50,000 (as before) each took 120-140 ms at 18,000
    hosts and set the p99; at 2,000, 10-60 ms."""
    gc.freeze()
    gc.set_threshold(2_000, 10, 100)


def server_config(
    app: ASGIApp,
    guard: Guard,
    host: str,
    port: int,
    keep_alive: float,
    log_level: str,
    proxies: list[str] | None = None,
) -> uvicorn.Config:
    """uvicorn's settings for one port; the connection-level limits live in ``guard``.

    Forwarding headers are believed only from ``proxies`` (none by default: uvicorn
    would believe them from 127.0.0.1, and a local client could then name any address)."""
    return uvicorn.Config(
        ConnectionScope(app, guard),
        host=host,
        port=port,
        http=guard.protocol(),
        log_level=log_level,
        log_config=None,  # every logger goes where tether.logs sends it
        access_log=False,  # the people's app logs each request itself, without secrets
        server_header=False,
        date_header=False,
        timeout_keep_alive=max(1, round(keep_alive)),
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        backlog=4096,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or [],
    )


def _tls_auditor(auditor: Auditor) -> Callable[[str, str], None]:
    """``on_tls_refusal`` for the agent port: each refused handshake goes to the audit log
    (rate-limited per address: no identity was proven)."""
    pending: set[asyncio.Task[None]] = set()

    def refused(client: str, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(
            auditor.record(
                "anonymous",
                TLS_ACTION,
                f"handshake: {reason}",
                TLS_STATUS,
                proven=False,
                client=client,
            )
        )
        pending.add(task)
        task.add_done_callback(pending.discard)

    return refused


class ServerStartError(RuntimeError):
    """One of the plane's servers could not start (its port is taken, say)."""


async def _serve_one(
    name: str, server: uvicorn.Server, sockets: list[socket.socket] | None
) -> None:
    try:
        await server.serve(sockets=sockets)
    except SystemExit as exc:
        # uvicorn exits the process when it cannot bind; here that would skip stopping
        # the other server and the controllers' threads, and the process would hang.
        raise ServerStartError(f"the {name} server could not start (see the error above)") from exc


async def serve(
    settings: Settings,
    *,
    people: bool = True,
    log_level: str = "info",
    started: Callable[[dict[str, int], AgentPlane | None], None] | None = None,
    stop: asyncio.Event | None = None,
    sockets: dict[str, socket.socket] | None = None,
    controllers: bool = False,
) -> None:
    """Run the people's API and (if ``TETHER_AGENT_PORT`` is not 0) the agent server.

    ``started`` receives the bound ports once both listen (tests bind port 0), and the
    agent plane (None without an agent server), whose ``lag`` tells how late the loop runs.
    With ``controllers``, the controller manager (pools, and each imported cluster's nodes
    and CSRs) runs beside them, told of agents' reports and telling agents of new plans.
    """
    from tether.api.app import create_app

    private_dir(settings.paths.data_dir)
    db = Database.connect(
        settings.database_url,
        echo=settings.database.echo,
        busy_timeout_ms=settings.database.busy_timeout_ms,
    )
    await asyncio.to_thread(migrate, db.engine)
    servers: dict[str, _Server] = {}
    guards: dict[str, Guard] = {}
    plane: AgentPlane | None = None
    refresher: TLSRefresher | None = None
    if settings.agent.port or (sockets and "agent" in sockets):
        agent = settings.agent
        small_tls_read_buffers()
        plane = AgentPlane.build(settings, db)
        files = plane.trust.server_files()
        ctx = server_ssl_context(plane.trust, files)
        refresher = TLSRefresher(plane.trust, ctx, files)
        agent_app = create_agent_app(
            settings, db, plane=plane, run_migrations=False, background=[heartbeat_reconciler]
        )
        guards["agent"] = Guard(
            "agent",
            agent.max_connections,
            agent.header_timeout_seconds,
            tls=ctx,
            handshake_timeout=agent.handshake_timeout_seconds,
            on_tls_refusal=_tls_auditor(agent_app.state.auditor),
        )
        keep_alive = max(agent.keep_alive_seconds, agent.heartbeat_seconds * 3)
        servers["agent"] = _Server(
            server_config(agent_app, guards["agent"], agent.host, agent.port, keep_alive, log_level)
        )
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
    if people:
        api = settings.api
        people_app = create_app(settings, db)
        if plane is not None:
            people_app.state.agent_plane = plane
        if manager is not None:
            people_app.state.on_pools_changed = manager.pools.poke
        guards["api"] = Guard("api", api.max_connections, api.header_timeout_seconds)
        servers["api"] = _Server(
            server_config(
                people_app,
                guards["api"],
                api.host,
                api.port,
                api.keep_alive_seconds,
                log_level,
                api.proxies(),
            )
        )
    if manager is not None:
        manager.start()
    socks = sockets or {}
    tasks = {
        name: asyncio.create_task(
            _serve_one(name, server, [socks[name]] if name in socks else None), name=name
        )
        for name, server in servers.items()
    }

    async def watch() -> None:
        while not all(s.started for s in servers.values()):
            if any(t.done() for t in tasks.values()):
                # One server could not start (its port is taken, say): stop the other
                # too, so the plane exits with the error instead of running half.
                for server in servers.values():
                    server.should_exit = True
                return
            await asyncio.sleep(0.05)
        ports = {}
        for name, server in servers.items():
            for srv in server.servers:
                for sock in srv.sockets:
                    ports[name] = sock.getsockname()[1]
        log.info("listening: %s", ports)
        tune_gc()
        if started is not None:
            started(ports, plane)
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
        if people:
            people_app.state.event_hub.close()
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

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(main())
    except ServerStartError as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None


class ServerThread:
    """Both servers in a background thread (tests, the demo, the benchmark)."""

    def __init__(
        self, settings: Settings, *, log_level: str = "warning", controllers: bool = False
    ) -> None:
        self.settings = settings
        self.log_level = log_level
        self.controllers = controllers
        self.ports: dict[str, int] = {}
        self.plane: AgentPlane | None = None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True, name="tether-server")

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()

            def started(ports: dict[str, int], plane: AgentPlane | None) -> None:
                self.ports, self.plane = ports, plane
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
