"""Request dependencies: the store, the caller's identity and role, paging.

The token is checked by :class:`Authenticate`, ASGI middleware in front of every
``/api/v1`` route, before the request body is read: an unauthenticated request is
refused with 401 whatever (and however large or broken) its body, and a token sent in a
query string is refused everywhere (it would end up in logs and browser history). The
route dependencies then only check the role.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from tether.api.auditing import SECRET_PARAMS
from tether.api.errors import send_error
from tether.domain.resources import Role
from tether.errors import Forbidden, Invalid, PlaneError, Unauthenticated
from tether.services import tokens
from tether.settings import Settings
from tether.store.db import Database

#: Documents the OpenAPI security scheme; the check itself is :class:`Authenticate`.
_bearer = HTTPBearer(auto_error=False, description="A Tether API token: tth_<id>_<secret>")

#: Paths under the API prefix anyone may read: the API's own description.
OPEN_PATHS = ("/api/v1/openapi.json", "/api/v1/docs")


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role
    token_id: str
    expires_at: datetime


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _bearer_token(scope: Scope) -> str | None:
    for key, value in scope["headers"]:
        if key == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


def check_token(db: Database, presented: str | None) -> Principal:
    """The principal behind a bearer token, or Unauthenticated."""
    if presented is None:
        raise Unauthenticated(
            "this endpoint needs an API token: send 'Authorization: Bearer <token>'",
            field="Authorization",
            rule="required",
        )
    with db.session() as session:
        row = tokens.authenticate(session, presented)
        return Principal(
            name=f"token:{row.name}:{row.token_id}",
            role=Role(row.role),
            token_id=row.token_id,
            expires_at=row.expires_at,
        )


def _claimed(db: Database, presented: str | None) -> str | None:
    """Who a refused token claimed to be (``token:<name>:<id>``), for the audit."""
    if presented is None:
        return None
    with db.session() as session:
        row = tokens.claimed(session, presented)
        return f"token:{row.name}:{row.token_id}" if row is not None else None


def _token_in_query(scope: Scope) -> PlaneError | None:
    query = scope.get("query_string", b"")
    if not query:
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name.lower() in SECRET_PARAMS or tokens.PREFIX + "_" in value:
            return Invalid(
                f"query parameter {name!r} carries a credential: send API tokens only in the "
                "Authorization header (URLs end up in logs and histories; revoke a token "
                "that was sent this way)",
                field=name,
                rule="token_in_query",
            )
    return None


class Authenticate:
    """ASGI middleware: check the bearer token before the route (and its body parsing)."""

    def __init__(self, app: ASGIApp, db: Database, prefix: str = "/api/v1/") -> None:
        self.app = app
        self.db = db
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            refusal = _token_in_query(scope)
            if refusal is None and path.startswith(self.prefix) and not path.startswith(OPEN_PATHS):
                presented = _bearer_token(scope)
                state = scope.setdefault("state", {})
                try:
                    state["principal"] = await run_in_threadpool(check_token, self.db, presented)
                except Unauthenticated as exc:
                    refusal = exc
                    state["claimed"] = await run_in_threadpool(_claimed, self.db, presented)
            if refusal is not None:
                await send_error(send, refusal)
                return
        await self.app(scope, receive, send)


def authenticate(
    request: Request,
    db: Annotated[Database, Depends(get_db)],
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The caller :class:`Authenticate` let in (routes outside ``/api/v1`` check here)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        principal = check_token(db, _bearer_token(request.scope))
        request.state.principal = principal
    return principal


def require(role: Role) -> Callable[[Principal], Principal]:
    """A dependency that lets through callers whose role is at least ``role``."""

    def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if not principal.role.allows(role):
            raise Forbidden(
                f"role {principal.role.value} cannot do this; it needs {role.value}",
                field="Authorization",
                rule="role",
            )
        return principal

    return check


@dataclass(frozen=True)
class Paging:
    limit: int
    continue_token: str | None


def paging(
    settings: Annotated[Settings, Depends(get_settings)],
    limit: Annotated[int | None, Query(ge=1, description="Page size.")] = None,
    continue_: Annotated[
        str | None,
        Query(alias="continue", max_length=256, description="Token from the previous page."),
    ] = None,
) -> Paging:
    if limit is not None and limit > settings.api.max_page_size:
        raise Invalid(
            f"limit must be at most {settings.api.max_page_size}", field="limit", rule="maximum"
        )
    return Paging(limit or settings.api.page_size, continue_)


Viewer = Annotated[Principal, Depends(require(Role.VIEWER))]
Operator = Annotated[Principal, Depends(require(Role.OPERATOR))]
Admin = Annotated[Principal, Depends(require(Role.ADMIN))]
DB = Annotated[Database, Depends(get_db)]
Config = Annotated[Settings, Depends(get_settings)]
Pages = Annotated[Paging, Depends(paging)]
