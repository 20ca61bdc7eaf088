"""Logging for the plane's processes: JSON lines for machines, text for a terminal.

:func:`configure` sends every logger (uvicorn's included) to one stderr handler. Its
format is ``TETHER_LOG_FORMAT``: ``json`` (one object per line: ``time``, ``level``,
``logger``, ``message``, ``requestId`` while a request is handled, ``exception``),
``text``, or ``auto`` (text when stderr is a terminal, JSON otherwise, so a service
manager or a log shipper gets JSON and a person at a terminal gets text).

Every line goes through :func:`redact` first: API tokens, bootstrap token secrets and
private keys are replaced by ``******`` whatever logged them. The request id is a
context variable that the servers' middleware sets (:data:`REQUEST_ID`); it follows a
request into the thread pool, because Starlette copies the context there.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Literal

__all__ = ["REQUEST_ID", "LogFormat", "configure", "redact"]

LogFormat = Literal["auto", "json", "text"]

#: The id of the request being handled (``-`` outside requests).
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

_SECRETS = (
    # People's API tokens: tth_<id>_<secret>; the id may stay, it is no secret.
    (re.compile(r"\b(tth_[0-9a-f]+_)[A-Za-z0-9_-]{8,}"), r"\1******"),
    # Kubernetes bootstrap tokens: <6>.<16>; the id part may stay.
    (re.compile(r"\b([a-z0-9]{6})\.[a-z0-9]{16}\b"), r"\1.******"),
    # PEM private keys, whole.
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S),
        "******",
    ),
)


def redact(text: str) -> str:
    """``text`` with every secret Tether knows the shape of replaced by ``******``."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID.get()
        if request_id != "-":
            line["requestId"] = request_id
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(line, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id = REQUEST_ID.get()
        if request_id != "-":
            text = f"{text} [request {request_id}]"
        return redact(text)


#: Libraries that log routine work at INFO.
_CHATTY = ("httpx", "httpx2", "alembic")

#: The handler :func:`configure` installed last (a second call replaces it).
_installed: list[logging.Handler] = []


def configure(fmt: LogFormat = "auto", level: str = "info") -> logging.Handler:
    """Send every logger to stderr in ``fmt``; returns the handler (tests detach it)."""
    chosen = fmt
    if chosen == "auto":
        chosen = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if chosen == "json" else TextFormatter())
    root = logging.getLogger()
    if _installed:
        root.removeHandler(_installed.pop())
    _installed.append(handler)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's loggers propagate to the root instead of printing on their own.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # A line per outgoing HTTP request or migration step drowns what matters.
    for name in _CHATTY:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    return handler
