"""Plane logs: JSON lines (text on a terminal) with the request id, and never a secret."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from tether import logs

TOKEN = "tth_0123456789abcdef_s3cr3tS3cr3tS3cr3tS3cr3tS3cr3tS3cr3t1234"
BOOTSTRAP = "abcdef.0123456789abcdef"
KEY = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkey\n-----END EC PRIVATE KEY-----"


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[io.StringIO, logging.Handler]]:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    level = root.level
    handler = logs.configure("json", "info")
    yield stream, handler
    root.removeHandler(handler)
    root.setLevel(level)


def test_json_lines_carry_the_request_id_and_the_exception(
    captured: tuple[io.StringIO, logging.Handler],
) -> None:
    stream, _ = captured
    log = logging.getLogger("tether.test")
    token = logs.REQUEST_ID.set("req-42")
    try:
        log.info("pool %s reconciled", "dc1")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("it failed")
    finally:
        logs.REQUEST_ID.reset(token)
    log.warning("outside a request")
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "pool dc1 reconciled"
    assert (first["level"], first["logger"], first["requestId"]) == (
        "info",
        "tether.test",
        "req-42",
    )
    assert "RuntimeError: boom" in second["exception"] and second["requestId"] == "req-42"
    assert "requestId" not in third


def test_secrets_never_reach_the_log(captured: tuple[io.StringIO, logging.Handler]) -> None:
    stream, _ = captured
    logging.getLogger("tether.test").warning(
        "token %s, bootstrap %s, key %s", TOKEN, BOOTSTRAP, KEY
    )
    text = stream.getvalue()
    assert "s3cr3t" not in text and "0123456789abcdef." not in text and "MHcCAQEEIBkey" not in text
    message = json.loads(text)["message"]
    assert "tth_0123456789abcdef_******" in message  # the id stays: it says which token
    assert "abcdef.******" in message


def test_text_lines_for_a_terminal_name_the_request() -> None:
    record = logging.LogRecord("tether.x", logging.INFO, __file__, 1, "hello %s", (TOKEN,), None)
    token = logs.REQUEST_ID.set("req-7")
    try:
        line = logs.TextFormatter().format(record)
    finally:
        logs.REQUEST_ID.reset(token)
    assert line.endswith("INFO    tether.x: hello tth_0123456789abcdef_****** [request req-7]")


def test_configure_replaces_its_own_handler_and_quiets_chatty_libraries(
    captured: tuple[io.StringIO, logging.Handler],
) -> None:
    _, first = captured
    second = logs.configure("text", "info")
    try:
        root = logging.getLogger()
        assert first not in root.handlers and second in root.handlers
        assert logging.getLogger("httpx2").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("uvicorn.error").propagate
    finally:
        logging.getLogger().removeHandler(second)
