"""The CLI's HTTP client (the standard library's ``http.client``) against real servers on
loopback: kept-alive connections the server dropped, queries, TLS verification, proxies
and error answers.

The plane itself is behind the e2e tests (tests/e2e/test_cli.py); these servers are
``http.server`` ones, so that each test can shape the one thing it checks (an idle
connection closed, a certificate, a proxy's view of the request).
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tether.cli.client import Client, CLIError
from tether.pki.ca import TrustAnchor

Answer = tuple[int, dict[str, object]]


class Server:
    """A loopback HTTP server that records each request line and its headers and answers
    every request with ``answer(handler)`` (a status and a JSON body)."""

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], Answer]) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.connections = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn

            def setup(self) -> None:
                super().setup()
                outer.connections += 1

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._answer()

            def do_POST(self) -> None:
                self._answer()

            def _answer(self) -> None:
                outer.seen.append((self.requestline, dict(self.headers.items())))
                length = int(self.headers.get("Content-Length") or 0)
                self.body = self.rfile.read(length)
                status, body = answer(self)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _items(handler: BaseHTTPRequestHandler) -> Answer:
    return 200, {"items": [{"name": "dc1"}]}


def test_a_kept_alive_connection_the_server_closed_is_opened_again() -> None:
    """Servers close idle kept-alive connections (uvicorn after 5 s); the next request
    goes out on a new connection instead of failing with "cannot reach"."""

    def close_after_answering(handler: BaseHTTPRequestHandler) -> Answer:
        handler.close_connection = True  # no "Connection: close" header: the client cannot know
        return _items(handler)

    with Server(close_after_answering) as server:
        client = Client(f"http://127.0.0.1:{server.port}", "secret")
        assert client.request("GET", "/api/v1/pools") == {"items": [{"name": "dc1"}]}
        assert client.request("GET", "/api/v1/pools") == {"items": [{"name": "dc1"}]}
    assert server.connections == 2
    assert [line for line, _ in server.seen] == ["GET /api/v1/pools HTTP/1.1"] * 2


def test_requests_share_one_connection_and_carry_token_query_and_json() -> None:
    bodies: list[bytes] = []

    def record(handler: BaseHTTPRequestHandler) -> Answer:
        bodies.append(handler.body)  # type: ignore[attr-defined]
        return _items(handler)

    with Server(record) as server:
        client = Client(f"http://127.0.0.1:{server.port}/prefix/", "secret")
        client.request(
            "GET", "/api/v1/events", params={"kind": "Pool", "ok": True, "no": None, "n": [1, 2]}
        )
        client.request("POST", "/api/v1/sites", json={"name": "dc1", "labels": {"a": "ü"}})
    assert server.connections == 1
    (get, get_headers), (post, post_headers) = server.seen
    assert get == "GET /prefix/api/v1/events?kind=Pool&ok=true&no=&n=1&n=2 HTTP/1.1"
    assert get_headers["Authorization"] == "Bearer secret"
    assert post == "POST /prefix/api/v1/sites HTTP/1.1"
    assert post_headers["Content-Type"] == "application/json"
    assert json.loads(bodies[1]) == {"name": "dc1", "labels": {"a": "ü"}}


def test_an_error_answer_is_one_line_with_the_field_and_its_exit_code() -> None:
    def invalid(handler: BaseHTTPRequestHandler) -> Answer:
        body = {
            "code": "invalid",
            "message": "must be a CIDR",
            "field": "spec.vpcCIDR",
            "details": [{"field": "spec.vpcCIDR", "message": "must be a CIDR"}],
        }
        return 422, body

    with Server(invalid) as server:
        client = Client(f"http://127.0.0.1:{server.port}", "secret")
        with pytest.raises(CLIError) as raised:
            client.request("POST", "/api/v1/clusters", json={})
    assert raised.value.message == "422 spec.vpcCIDR: must be a CIDR"
    assert raised.value.exit_code == 7


@pytest.mark.parametrize("server", ["ftp://h:1", "http://", "http://h:port", "h:1"])
def test_a_server_that_is_not_an_http_url_is_a_usage_error(server: str) -> None:
    with pytest.raises(CLIError) as raised:
        Client(server, "t")
    assert raised.value.exit_code == 2 and repr(server) in raised.value.message


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[Server, Path]]:
    """A server with a certificate for 127.0.0.1 from a CA of its own (in the path)."""
    now = datetime.now(UTC)
    anchor = TrustAnchor.create(now)
    cert, key = anchor.issue_server_cert([], ["127.0.0.1"], now=now)
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    ca = tmp_path / "ca.pem"
    ca.write_bytes(anchor.bundle.bundle_pem(now))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    with Server(_items) as server:
        server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
        yield server, ca


def test_https_is_verified_against_ssl_cert_file(
    tls_server: tuple[Server, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server, ca = tls_server
    url = f"https://127.0.0.1:{server.port}"
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "none"))
    assert Client(url, "t").request("GET", "/api/v1/pools") == {"items": [{"name": "dc1"}]}

    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "none.pem"))  # the CA is not trusted
    with pytest.raises(CLIError) as raised:
        Client(url, "t").request("GET", "/api/v1/pools")
    assert raised.value.exit_code == 6
    assert f"cannot reach {url}" in raised.value.message
    assert "CERTIFICATE_VERIFY_FAILED" in raised.value.message


def test_http_proxy_from_the_environment_and_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The proxy gets the whole URL (it forwards it); ``NO_PROXY`` names hosts reached
    directly (here: one that does not resolve, so going direct fails)."""
    with Server(_items) as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        found = Client("http://plane.invalid:8080", "t").request("GET", "/api/v1/pools")
        assert found == {"items": [{"name": "dc1"}]}
        assert proxy.seen[0][0] == "GET http://plane.invalid:8080/api/v1/pools HTTP/1.1"
        assert proxy.seen[0][1]["Host"] == "plane.invalid:8080"

        monkeypatch.setenv("NO_PROXY", "plane.invalid")
        with pytest.raises(CLIError) as raised:
            Client("http://plane.invalid:8080", "t").request("GET", "/api/v1/pools")
        assert raised.value.exit_code == 6
    assert len(proxy.seen) == 1
