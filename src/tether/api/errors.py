"""One error shape for every failure: ``{"code", "message", "field", "rule"}``.

Validation failures also carry ``details``: every problem found, not only the first,
so a client can fix a request in one go.

The OpenAPI documents that shape for every refusal an operation can answer, in one
place (:func:`document`, called by :func:`install` for both apps): 400 (a body that is
not JSON, or a request no narrower code fits), 401, 403 and 422 on every operation but
``/healthz``, 404 where the path names an object, 409 where the operation writes.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import Send

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


#: Errors about a request part as a whole: the field is the part (``body``), not a
#: character offset FastAPI puts after it.
_WHOLE = {"json_invalid", "missing", "model_attributes_type", "dict_type"}

#: code and field of the errors FastAPI and Starlette raise themselves.
_HTTP = {
    400: ("bad_request", "body"),
    401: ("unauthenticated", "Authorization"),
    404: ("not_found", "path"),
    405: ("method_not_allowed", "method"),
    413: ("too_large", "body"),
}


def _field(loc: tuple[Any, ...], kind: str | None = None) -> str | None:
    parts = [str(p) for p in loc if p not in _SOURCES]
    if kind == "json_invalid" or (not parts and kind in _WHOLE):
        return str(loc[0]) if loc else "body"
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


def plane_error_response(exc: PlaneError) -> JSONResponse:
    details = [ErrorDetail.model_validate(d) for d in exc.details]
    return error_response(
        exc.status, exc.code, exc.message, exc.field, exc.rule, details, exc.extra
    )


async def send_error(send: Send, exc: PlaneError, *, close: bool = False) -> None:
    """Answer with ``exc`` from ASGI middleware (before any route runs); ``close`` ends
    the connection after it, so a body the app never read is not read either."""
    response = plane_error_response(exc)
    headers = [*response.raw_headers, *([(b"connection", b"close")] if close else [])]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


async def _plane_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PlaneError)
    return plane_error_response(exc)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        ErrorDetail(
            field=_field(tuple(e.get("loc", ())), e.get("type")),
            rule=e.get("type"),
            message=e["msg"],
        )
        for e in exc.errors()
    ]
    first = details[0] if details else ErrorDetail(message="invalid request")
    message = f"{first.field}: {first.message}" if first.field else first.message
    return error_response(422, "invalid", message, first.field, first.rule, details)


def _phrase(status: int) -> str:
    """``too_many_requests`` for 429: a code for a status nobody mapped."""
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    code, field = _HTTP.get(status, (_phrase(status), "request"))
    response = error_response(status, code, str(exc.detail), field, "http")
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, "internal", "internal error; the server log has the details")


#: What each documented refusal means (see the module docstring for where each applies).
REFUSALS: Final = {
    "400": "Bad request: the body is not JSON, or the request is malformed.",
    "401": "Unauthenticated: no credentials, or unknown, revoked or expired ones.",
    "403": "Forbidden: these credentials may not do this.",
    "404": "Not found: the named object does not exist.",
    "409": "Conflict: it exists already, the resourceVersion is stale, or it is in use.",
    "422": "Invalid: a field breaks a rule; details lists every problem found.",
}
_WRITES: Final = frozenset({"post", "put", "patch", "delete"})
_UNAUTHENTICATED: Final = frozenset({"/healthz"})


def _refusals(path: str, method: str) -> list[str]:
    codes = ["400", "422"]
    if path not in _UNAUTHENTICATED:
        codes += ["401", "403"]
    if "{" in path:
        codes.append("404")
    if method in _WRITES:
        codes.append("409")
    return sorted(codes)


def _error_schemas() -> dict[str, Any]:
    body = ErrorBody.model_json_schema(
        by_alias=True, ref_template="#/components/schemas/{model}", mode="serialization"
    )
    schemas: dict[str, Any] = body.pop("$defs", {})
    # Some refusals carry operation-specific data next to the five fields (a network
    # check's findings): documented as allowed, not as forbidden.
    body["additionalProperties"] = True
    schemas["ErrorBody"] = body
    return schemas


def document(app: FastAPI) -> None:
    """Document the refusals of every operation of ``app`` in its OpenAPI, with the
    error shape the handlers below render (FastAPI's own 422 schema is not what this
    API answers, so it is replaced)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = generate()
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas.update(_error_schemas())
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        for path, operations in spec.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                for code in _refusals(path, method):
                    if code == "422" or code not in responses:
                        responses[code] = {"description": REFUSALS[code], "content": content}
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    """The error handlers, and their responses documented in the OpenAPI."""
    app.add_exception_handler(PlaneError, _plane_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    document(app)
