"""One error shape for every failure: ``{"code", "message", "field", "rule"}``.

Validation failures also carry ``details``: every problem found, not only the first,
so a client can fix a request in one go.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from tether.domain.base import Model
from tether.errors import PlaneError

log = logging.getLogger(__name__)

#: Where a request value came from; not part of the field path a user sees.
_SOURCES = {"body", "query", "path", "header", "cookie"}


class ErrorDetail(Model):
    field: str | None = None
    rule: str | None = None
    message: str


class ErrorBody(Model):
    code: str
    message: str
    field: str | None = None
    rule: str | None = None
    details: list[ErrorDetail] = []


def _field(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in _SOURCES]
    return ".".join(parts) or None


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    rule: str | None = None,
    details: list[ErrorDetail] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    body = ErrorBody(code=code, message=message, field=field, rule=rule, details=details or [])
    content = body.model_dump(mode="json", exclude_none=True)
    content.update(extra or {})
    return JSONResponse(content, status_code=status)


async def _plane_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PlaneError)
    details = [ErrorDetail.model_validate(d) for d in exc.details]
    return error_response(
        exc.status, exc.code, exc.message, exc.field, exc.rule, details, exc.extra
    )


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        ErrorDetail(field=_field(tuple(e.get("loc", ()))), rule=e.get("type"), message=e["msg"])
        for e in exc.errors()
    ]
    first = details[0] if details else ErrorDetail(message="invalid request")
    message = f"{first.field}: {first.message}" if first.field else first.message
    return error_response(422, "invalid", message, first.field, first.rule, details)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated"}
    response = error_response(
        exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail)
    )
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal", "internal error; the server log has the details")


def install(app: FastAPI) -> None:
    app.add_exception_handler(PlaneError, _plane_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
