"""The service's factory: `create_app(settings)` builds the FastAPI app for one run folder.

Routes (one router per resource under `api/routes/`), who may call them:

    GET  /healthz                    anyone
    GET  /metrics                    admin           Prometheus text
    POST /v1/batches                 vendor          stream a sealed batch to the inbox (202)
    GET  /v1/batches/{batch_id}      vendor (own), admin
    POST /v1/scores                  campaign_tool, admin
    GET  /v1/lists/{campaign}        campaign_tool, admin, analyst (its branches)
    POST /v1/outcomes                campaign_tool, admin
    POST /v1/query                   analyst (its branches), admin (head office)

No token or an unknown one gets 401, a known token outside its role 403. Every request is
audited (who, role, route, rows returned, status, time) by the service's audit thread; no
raw identifier and no key ever reaches a log line or a response. Platform errors become 4xx
with the error's own message (which says what to do), or 503 when a model or snapshot is
missing; a BatchRefused's cause never leaves the bank.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.service import AuditRecord, Service, utc_now
from contracts.errors import ConfigError, FusionError, ModelError, StoreError
from fusion.query import QueryError, QueryLimits, QueryTimeout

__all__ = ["ApiSettings", "create_app", "serve"]

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    """Validated service settings; built by `fusion serve` or tests, never read from globals."""

    run: Path
    host: str = "127.0.0.1"
    port: int = 8000
    allow_non_loopback: bool = False
    max_upload_bytes: int = 4 << 30  # a sealed batch; larger uploads get 413
    max_score_ids: int = 1_000  # customers per POST /v1/scores
    max_outcomes: int = 10_000  # outcome rows per POST /v1/outcomes
    query_limits: QueryLimits = field(default_factory=QueryLimits)

    def __post_init__(self) -> None:
        if self.host not in _LOOPBACK and not self.allow_non_loopback:
            raise ConfigError(
                f"host {self.host!r} is not loopback; put the service behind the bank's "
                "gateway and pass allow_non_loopback=True (--public) deliberately",
                setting="host",
            )
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1..65535, got {self.port}", setting="port")
        for name in ("max_upload_bytes", "max_score_ids", "max_outcomes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1", setting=name)


def create_app(settings: ApiSettings) -> FastAPI:
    """Return the FastAPI app serving the run folder in `settings`."""
    from api.routes import batches, health, lists, outcomes, query, scores

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service.start(settings.run)
        app.state.service = service
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="bankfusion",
        version="0.1.0",
        summary="Privacy-preserving fusion of vendor app/tag data with a bank's customers",
        lifespan=lifespan,
    )
    app.state.settings = settings
    for router in (health, batches, scores, lists, outcomes, query):
        app.include_router(router.router)
    _errors(app)
    app.add_middleware(_AuditMiddleware)
    return app


def _errors(app: FastAPI) -> None:
    """Map the platform's errors to HTTP answers that keep their own advice."""

    def answer(status: int, error: Exception, **extra: object) -> JSONResponse:
        return JSONResponse(status_code=status, content={"detail": str(error), **extra})

    @app.exception_handler(QueryError)
    async def query_error(request: Request, error: QueryError) -> Response:
        status = 408 if isinstance(error, QueryTimeout) else 400
        return answer(status, error, rule=getattr(error, "rule", None))

    @app.exception_handler(ModelError)
    async def model_error(request: Request, error: ModelError) -> Response:
        return answer(503, error)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, error: StoreError) -> Response:
        return answer(503, error)

    @app.exception_handler(ConfigError)
    async def config_error(request: Request, error: ConfigError) -> Response:
        return answer(400, error)

    @app.exception_handler(FusionError)
    async def fusion_error(request: Request, error: FusionError) -> Response:
        return answer(400, error)


class _AuditMiddleware:
    """Audit and count every HTTP request (pure ASGI: streamed bodies pass untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            elapsed = time.perf_counter() - start
            state = scope.get("state", {})
            service: Service | None = getattr(scope["app"].state, "service", None)
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            action = f"{scope['method']} {path}"
            if service is not None:
                principal = state.get("principal")
                service.record(
                    AuditRecord(
                        at=utc_now(),
                        actor=principal.token_id if principal else "anonymous",
                        role=principal.role if principal else None,
                        action=action,
                        detail=state.get("audit_detail"),
                        rows=state.get("audit_rows"),
                        status=str(status["code"]),
                    ),
                    elapsed,
                )


def serve(settings: ApiSettings) -> None:
    """Run the app under uvicorn until interrupted (the `fusion serve` command)."""
    import uvicorn

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
