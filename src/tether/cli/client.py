"""A small HTTP client for the CLI that turns API errors into messages and exit codes.

Exit codes (documented in docs/cli.md):
    0 success · 1 unexpected failure · 2 usage error · 3 not found · 4 conflict
    5 not authenticated or not allowed · 6 server unreachable · 7 invalid input
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

# httpx and the CLI config are imported where used: ``tether --help`` needs neither
# (see tether.cli.lazy), and httpx itself through :func:`http`.

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


#: What ``import httpx`` pulls in that the CLI never uses: httpx's own command line
#: (``httpx._main``: Click, Rich's syntax highlighting, Pygments) and HTTP/2 (``h2``,
#: through httpcore). Together they were about a third of ``tether pool list``.
_UNUSED_BY_HTTPX = ("httpx._main", "h2")


@contextmanager
def _without_unused() -> Iterator[None]:
    """Within the block, importing :data:`_UNUSED_BY_HTTPX` fails.

    httpx and httpcore import those inside ``try ... except ImportError`` and fall back
    to stubs (``httpx.main`` and HTTP/2 then say the extra is missing); a ``None`` in
    :data:`sys.modules` makes the import fail. httpx imports httpcore (and httpcore h2)
    only when the first client is made, so that is inside the block too. The ``None``
    entries go again afterwards: the rest of the process imports either module normally.
    The CLI's client never asks for HTTP/2."""
    blocked = [name for name in _UNUSED_BY_HTTPX if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in blocked:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]


def http() -> ModuleType:
    """``httpx``, imported without :data:`_UNUSED_BY_HTTPX`."""
    with _without_unused():
        import httpx
    return httpx


class CLIError(Exception):
    """A failure to report to the user in one line, with an exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def _describe(response: httpx.Response) -> CLIError:
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
        message = response.text or response.reason_phrase
    return CLIError(f"{response.status_code} {message}", EXIT_CODES.get(response.status_code, 1))


class Client:
    def __init__(self, server: str, token: str | None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.server = server.rstrip("/")
        with _without_unused():
            import httpx

            self.http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout)

    @classmethod
    def from_config(cls) -> Client:
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
        return cls(server, token)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        httpx = http()

        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CLIError(f"cannot reach {self.server}: {exc}", 6) from exc
        if response.status_code >= 400:
            error = _describe(response)
            if response.status_code == 404:
                error.message += self._did_you_mean(error.message)
            raise error
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def _did_you_mean(self, message: str) -> str:
        """``; did you mean X?`` for a name that is not found, when a known one is close."""
        match = _NOT_FOUND.search(message)
        if match is None or match["kind"] not in _NAMES:
            return ""
        httpx = http()
        path, name_of = _NAMES[match["kind"]]
        try:
            response = self.http.get(path, params={"limit": 1000})
            names = [name_of(item) for item in response.json()["items"]]
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
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
