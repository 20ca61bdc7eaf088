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
from typing import Any, Final

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
