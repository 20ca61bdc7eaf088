"""The CLI's HTTP client: the standard library's ``http.client``, API errors turned into
messages and exit codes.

Every command that talks to the plane goes through :class:`Client`, so authentication,
TLS, proxies, time-outs and errors behave the same everywhere. It is the standard
library's client, not httpx: ``import httpx`` (with httpcore, h11 and its auth and
model modules) was about 0.12 s of ``tether pool list``, more than a third of it.

Exit codes (documented in docs/cli.md):
    0 success · 1 unexpected failure · 2 usage error · 3 not found · 4 conflict
    5 not authenticated or not allowed · 6 server unreachable · 7 invalid input
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from json import dumps, loads
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlencode, urlsplit

if TYPE_CHECKING:
    from http.client import HTTPConnection, HTTPResponse

# http.client (with ssl and email) and the CLI config are imported where used:
# ``tether --help`` needs neither (see tether.cli.lazy).

#: A request's query parameters.
Query = Mapping[str, Any] | None

EXIT_CODES = {404: 3, 409: 4, 401: 5, 403: 5, 400: 7, 422: 7}

#: The plane's "not found" message (tether.errors.NotFound).
_NOT_FOUND = re.compile(r"(?P<kind>[a-z][a-z ]*) '(?P<name>[^']+)' not found")
#: Where the names of each kind are listed, and how an item is named.
_NAMES: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "cluster": ("/api/v1/clusters", lambda o: str(o["name"])),
    "site": ("/api/v1/sites", lambda o: str(o["name"])),
    "pool": ("/api/v1/pools", lambda o: str(o["name"])),
    "host": ("/api/v1/hosts", lambda o: str(o["name"])),
    "rollout": ("/api/v1/rollouts", lambda o: str(o["name"])),
    "profile version": ("/api/v1/profiles", lambda o: f"{o['name']}@{o['spec']['version']}"),
    "activation": ("/api/v1/activations", lambda o: str(o["id"])),
}


class CLIError(Exception):
    """A failure to report to the user in one line, with an exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class Response:
    """A whole response of the plane."""

    status_code: int
    reason: str
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return loads(self.content)


def _describe(response: Response) -> CLIError:
    try:
        body = response.json()
        message = body.get("message") or response.text
        if body.get("field") and body["field"] not in message:
            message = f"{body['field']}: {message}"
        extra = [
            f"  - {d.get('field') or '(request)'}: {d['message']}"
            for d in body.get("details", [])[1:]
        ]
        if extra:
            message = "\n".join([message, *extra])
    except (ValueError, AttributeError):
        message = response.text or response.reason
    return CLIError(f"{response.status_code} {message}", EXIT_CODES.get(response.status_code, 1))


def _query(params: Query) -> str:
    """``?a=1&b=true`` for ``params`` (booleans as ``true``/``false``, ``None`` as empty,
    a list as the name repeated), or ``""``."""
    if not params:
        return ""

    def text(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    pairs = [
        (name, text(item))
        for name, value in params.items()
        for item in (value if isinstance(value, list | tuple) else [value])
    ]
    return "?" + urlencode(pairs)


def _proxy(url: SplitResult) -> SplitResult | None:
    """The proxy the environment names for ``url`` (``HTTP_PROXY``, ``HTTPS_PROXY``,
    ``NO_PROXY``, as curl and httpx read them), or ``None``."""
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return None  # the usual case: no need to import urllib.request
    from urllib.request import getproxies_environment, proxy_bypass

    proxy = getproxies_environment().get(url.scheme)
    if not proxy or proxy_bypass(url.netloc.rpartition("@")[2]):
        return None
    return urlsplit(proxy if "://" in proxy else f"http://{proxy}")


def _stale(error: Exception) -> bool:
    """A failure of a kept-alive connection that the server closed while it was idle: the
    request never reached it, so it is sent once more on a new connection."""
    from http.client import RemoteDisconnected

    return isinstance(error, RemoteDisconnected | ConnectionResetError | BrokenPipeError)


class Client:
    """The plane's people's API over HTTP/1.1, one kept-alive connection per client (not
    shared between threads).

    ``https://`` servers are verified against the system's CAs, or ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR`` when set; ``HTTP_PROXY``/``HTTPS_PROXY``/``NO_PROXY`` are honoured.
    ``timeout`` bounds connecting and each wait for the server (seconds)."""

    def __init__(self, server: str, token: str | None, timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        self._url = url = urlsplit(self.server)
        try:
            port = url.port  # a bad port fails here, not at the first request
        except ValueError:
            port = -1
        if url.scheme not in ("http", "https") or not url.hostname or port == -1:
            raise CLIError(f"the server {server!r} is not an http:// or https:// URL", 2)
        self.timeout = timeout
        self._via = _proxy(url)
        self._headers = {"Accept": "application/json", "User-Agent": "tether-cli"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._connection: HTTPConnection | None = None
        self._used = False

    @classmethod
    def from_config(cls, timeout: float = 30.0) -> Client:
        """Server and token from ``TETHER_SERVER``/``TETHER_TOKEN`` or the config file."""
        server = os.environ.get("TETHER_SERVER")
        token = os.environ.get("TETHER_TOKEN")
        if not (server and token):  # the file only when the environment does not say it all
            from tether.cli import config

            saved = config.load()
            server = server or (saved.server if saved else None)
            token = token or (saved.token if saved else None)
        if not server:
            raise CLIError("no server configured: run 'tether login --server URL --token TOKEN'", 5)
        return cls(server, token, timeout)

    def _connect(self, timeout: float | None) -> HTTPConnection:
        from http.client import HTTPConnection, HTTPSConnection

        url, via = self._url, self._via
        if url.scheme == "http":
            if via is not None:
                return HTTPConnection(via.hostname or "", via.port, timeout=timeout)
            return HTTPConnection(url.hostname or "", url.port, timeout=timeout)
        import ssl

        context = ssl.create_default_context()
        if via is None:
            return HTTPSConnection(url.hostname or "", url.port, timeout=timeout, context=context)
        connection = HTTPSConnection(via.hostname or "", via.port, timeout=timeout, context=context)
        connection.set_tunnel(url.hostname or "", url.port)
        return connection

    def _target(self, path: str, params: Query) -> str:
        """The request target: the server's path prefix, ``path`` and the query; the whole
        URL when a plain-HTTP proxy forwards it."""
        target = f"{self._url.path}{path}{_query(params)}"
        if self._via is not None and self._url.scheme == "http":
            return f"http://{self._url.netloc}{target}"
        return target

    def _start(
        self,
        connection: HTTPConnection,
        method: str,
        path: str,
        params: Query,
        json: Any,
    ) -> HTTPResponse:
        headers = dict(self._headers)
        body = None
        if json is not None:
            body = dumps(json).encode()
            headers["Content-Type"] = "application/json"
        connection.request(method, self._target(path, params), body=body, headers=headers)
        return connection.getresponse()

    def exchange(self, method: str, path: str, params: Query, json: Any) -> Response:
        """Send one request and read the whole response, whatever its status; a
        :class:`CLIError` (exit 6) when the server cannot be reached. The one place a
        request goes out (the tests of the CLI in one process replace it)."""
        from http.client import HTTPException

        while True:
            if self._connection is None:
                self._connection, self._used = self._connect(self.timeout), False
            connection, retry = self._connection, self._used
            try:
                response = self._start(connection, method, path, params, json)
                content = response.read()
            except (OSError, HTTPException) as error:
                connection.close()
                self._connection = None
                if retry and _stale(error):
                    continue
                raise CLIError(f"cannot reach {self.server}: {error}", 6) from error
            self._used = True
            return Response(response.status, response.reason, content)

    def _check(self, response: Response) -> Response:
        if response.status_code >= 400:
            error = _describe(response)
            if response.status_code == 404:
                error.message += self._did_you_mean(error.message)
            raise error
        return response

    def send(self, method: str, path: str, *, params: Query = None, json: Any = None) -> Response:
        """The response to a request; a :class:`CLIError` for an error status (with a
        hint for a name not found) or a server that cannot be reached."""
        return self._check(self.exchange(method, path, params, json))

    def request(self, method: str, path: str, *, params: Query = None, json: Any = None) -> Any:
        """The JSON the plane answers (``None`` for an empty answer); errors as :meth:`send`."""
        response = self.send(method, path, params=params, json=json)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def stream_lines(self, path: str, params: Query = None) -> Iterator[str]:
        """The lines of a long response (server-sent events) as they come, on a connection
        of its own without a time-out; errors as :meth:`send`."""
        from http.client import HTTPException

        connection = self._connect(None)
        try:
            try:
                response = self._start(connection, "GET", path, params, None)
                if response.status >= 400:
                    self._check(Response(response.status, response.reason, response.read()))
                for line in response:
                    yield line.decode("utf-8", errors="replace").rstrip("\r\n")
            except (OSError, HTTPException) as error:
                raise CLIError(f"cannot reach {self.server}: {error}", 6) from error
        finally:
            connection.close()

    def _did_you_mean(self, message: str) -> str:
        """``; did you mean X?`` for a name that is not found, when a known one is close."""
        match = _NOT_FOUND.search(message)
        if match is None or match["kind"] not in _NAMES:
            return ""
        path, name_of = _NAMES[match["kind"]]
        try:
            names = [
                name_of(item)
                for item in self.exchange("GET", path, {"limit": 1000}, None).json()["items"]
            ]
        except (CLIError, ValueError, KeyError, TypeError):
            return ""  # a hint is not worth a second error
        close = difflib.get_close_matches(match["name"], names, n=3, cutoff=0.6)
        return f"; did you mean {' or '.join(close)}?" if close else ""

    def list_all(self, path: str, params: dict[str, Any], limit: int | None) -> list[Any]:
        """Follow ``continue`` tokens until the list ends or ``limit`` items are in hand."""
        items: list[Any] = []
        query = {k: v for k, v in params.items() if v is not None}
        while True:
            page = self.request("GET", path, params=query)
            items.extend(page["items"])
            if limit is not None and len(items) >= limit:
                return items[:limit]
            if not page.get("continue"):
                return items
            query["continue"] = page["continue"]
