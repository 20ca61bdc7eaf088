"""The agent's side of the agent API, over mutual TLS (outbound connections only)."""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any, Protocol

import httpx

from tether.errors import Permanent, Temporary


class Unavailable(Temporary):
    """The plane could not be reached or failed (network, 5xx, 429): retry later."""


class Refused(Permanent):
    """The plane refused the request (4xx): retrying the same request will not help."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status = status
        self.code = str(body.get("code", ""))
        self.rule = str(body.get("rule") or "")
        self.message = str(body.get("message") or body)
        super().__init__(f"{status} {self.code} ({self.rule}): {self.message}")


class PlaneAPI(Protocol):
    def register(self, body: dict[str, Any]) -> dict[str, Any]: ...
    def heartbeat(self, name: str, body: bytes) -> None: ...
    def renew(self, name: str, csr: str) -> dict[str, Any]: ...
    def desired(self, name: str, known: str | None, timeout: float) -> dict[str, Any] | None: ...
    def applied(self, name: str, body: dict[str, Any]) -> None: ...
    def event(self, name: str, body: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


def tls_context(ca_file: Path, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None and key is not None:
        ctx.load_cert_chain(cert, key)
    return ctx


class HttpPlaneAPI:
    """httpx over HTTP/1.1 keep-alive, one connection reused for every call."""

    def __init__(
        self,
        server: str,
        ca_file: Path,
        cert: Path | None = None,
        key: Path | None = None,
        *,
        timeout: float = 15.0,
    ) -> None:
        self.timeout = timeout
        self.http = httpx.Client(
            base_url=server,
            verify=tls_context(ca_file, cert, key),
            timeout=timeout,
            headers={"user-agent": "tether-agent"},
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except (httpx.TransportError, ssl.SSLError) as exc:
            raise Unavailable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500 or response.status_code == 429:
            raise Unavailable(f"{method} {path}: HTTP {response.status_code}")
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {"message": response.text[:200]}
            raise Refused(response.status_code, body if isinstance(body, dict) else {})
        return response

    def register(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/agent/v1/register", json=body).json()
        return result

    def heartbeat(self, name: str, body: bytes) -> None:
        self._call(
            "POST",
            f"/agent/v1/hosts/{name}/heartbeat",
            content=body,
            headers={"content-type": "application/json"},
        )

    def renew(self, name: str, csr: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", f"/agent/v1/hosts/{name}/certificate", json={"csr": csr}
        ).json()
        return result

    def desired(self, name: str, known: str | None, timeout: float) -> dict[str, Any] | None:
        params: dict[str, Any] = {"timeout": timeout}
        if known:
            params["hash"] = known
        response = self._call(
            "GET",
            f"/agent/v1/hosts/{name}/desired",
            params=params,
            timeout=timeout + self.timeout,
        )
        if response.status_code == 304:
            return None
        result: dict[str, Any] = response.json()
        return result

    def applied(self, name: str, body: dict[str, Any]) -> None:
        self._call("POST", f"/agent/v1/hosts/{name}/applied", json=body)

    def event(self, name: str, body: dict[str, Any]) -> None:
        self._call("POST", f"/agent/v1/hosts/{name}/events", json=body)

    def bootstrap_token(self, name: str) -> str:
        """A fresh bootstrap token for this host's cluster (never logged)."""
        response = self._call("POST", f"/agent/v1/hosts/{name}/bootstrap-token")
        token: str = response.json()["token"]
        return token

    def close(self) -> None:
        self.http.close()


def compact(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()
