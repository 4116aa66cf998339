"""Dependencies every route shares: the service, the settings, the caller, role checks.

Routers import settings from `api.settings` and never the app factory, so nothing here
imports `api.app`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.service import Service
from api.settings import ApiSettings
from fusion.tokens import ROLES, Principal

__all__ = ["CurrentPrincipal", "ServiceDep", "SettingsDep", "audit", "require"]

_bearer = HTTPBearer(auto_error=False, description="An API token from `fusion token create`")


async def _service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


async def _settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


ServiceDep = Annotated[Service, Depends(_service)]
SettingsDep = Annotated[ApiSettings, Depends(_settings)]


async def _principal(
    request: Request,
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    # Verified whether or not a header came: no token and a wrong one cost the same. The book
    # in memory answers on the loop; only a reload from the store goes to a thread (a thread
    # hop a request cost POST /v1/scores ~0.1 ms of its ~0.7 ms of server CPU).
    token = credentials.credentials if credentials else None
    known = service.tokens.known(token)
    principal = (
        await run_in_threadpool(service.tokens.authenticate, token) if known is False else known
    )
    if principal is None:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="a valid bearer token is required (fusion token create issues one)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(_principal)]


def require(*roles: str) -> Callable[[Principal], Awaitable[Principal]]:
    """Return a dependency admitting only callers in `roles` (others get 403).

    Raises ValueError at once for a role that `fusion.tokens.ROLES` does not hold, or for no
    role at all: routes call this when their module is imported, so a typo fails at import
    instead of locking the route for everyone.
    """
    if not roles:
        raise ValueError(f"require() needs at least one role of {', '.join(ROLES)}")
    unknown = [role for role in roles if role not in ROLES]
    if unknown:
        raise ValueError(
            f"unknown role {', '.join(map(repr, unknown))} given to require(); roles are "
            f"{', '.join(ROLES)} (fusion.tokens.ROLES)"
        )

    async def check(principal: CurrentPrincipal) -> Principal:
        if principal.role not in roles:
            raise HTTPException(
                status_code=status.HTTP_403_FORBIDDEN,
                detail=f"role {principal.role} may not call this route; it is for "
                f"{', '.join(roles)}",
            )
        return principal

    return check


def audit(request: Request, *, rows: int | None = None, detail: str | None = None) -> None:
    """Attach what the audit log should say about this request (rows returned, an id)."""
    if rows is not None:
        request.state.audit_rows = rows
    if detail is not None:
        request.state.audit_detail = detail
