"""Request dependencies: the store, the caller's identity and role, paging."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tether.domain.resources import Role
from tether.errors import Forbidden, Invalid, Unauthenticated
from tether.services import tokens
from tether.settings import Settings
from tether.store.db import Database

_bearer = HTTPBearer(auto_error=False, description="A Tether API token: tth_<id>_<secret>")


@dataclass(frozen=True)
class Principal:
    name: str
    role: Role


def get_db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def authenticate(
    request: Request,
    db: Annotated[Database, Depends(get_db)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated(
            "this endpoint needs an API token: send 'Authorization: Bearer <token>'",
            field="Authorization",
            rule="required",
        )
    with db.session() as session:
        row = tokens.authenticate(session, credentials.credentials)
        principal = Principal(name=f"token:{row.name}:{row.token_id}", role=Role(row.role))
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
