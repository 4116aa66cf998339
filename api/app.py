"""The service's factory: `create_app(settings)` builds the FastAPI app for one run folder.

Routes (one router per resource under `api/routes/`), who may call them:

    GET    /healthz                  anyone          status only (for a load balancer)
    GET    /metrics                  admin           Prometheus text, run folder, queue depth
    POST   /v1/batches               vendor          stream a sealed batch to the inbox (202)
    GET    /v1/batches/{batch_id}    vendor (own), admin
    POST   /v1/scores                campaign_tool, admin
    GET    /v1/lists/{campaign}      campaign_tool, admin, analyst (its branches)
    POST   /v1/outcomes              campaign_tool, admin
    POST   /v1/query                 analyst (its branches), admin (head office)
    DELETE /v1/tokens/{token_id}     admin           revoke a token at once
    GET /v1/models, POST /v1/models/{name}/promote|rollback
                                     admin           model versions; CURRENT through the gate
    /console...                      signed-in staff the server-rendered pages, each scoped as
                                     its API route (`api.console`, docs/console.md)
    /v1/campaigns...                 marketer, admin; head-office analysts read; campaign_tool
                                     reads deliveries; analysts their branches' readout cells
                                     (`api.routes.campaigns` lists each route's roles)
    /v1/journeys...                  marketer, admin; head-office analysts read (readout and
                                     dry run too); POST /v1/journey-events: campaign_tool,
                                     admin (`api.routes.journeys` lists each route's roles)

No token or an unknown one gets 401, a known token outside its role 403. Every request is
audited (who, role, route, rows returned, status, time) by the service's audit thread; no
raw identifier and no key ever reaches a log line or a response. The audit fails closed: while
it cannot be written (`audit_queue_limit` records waiting, or writes failing for longer than
`audit_outage_seconds`) every request but GET /healthz gets 503, until writes succeed again;
the record of a request so refused says "anonymous" (it never reached the token check).
Platform errors become 4xx with the error's own message (which says what to do), or 503 when a
model or snapshot is missing; an invalid campaign declaration is a 422 naming its `field`, a
refused stage gate a 409 naming its `gate`, any other campaign error a 409; a BatchRefused's
cause never leaves the bank. A body other than a sealed batch past `max_body_bytes` gets 413
before it is parsed; a query past `max_concurrent_queries` 429. A request that fails validation
(a wrong type, an unknown field, NaN or Infinity, a date out of range) gets 422 naming each
field and why, at most `MAX_REPORTED_ERRORS` of them, and never the input back. /docs, /redoc
and /openapi.json are served only when `ApiSettings.serves_docs` says so; the access log of
`serve` keeps paths without their query strings.
"""

from __future__ import annotations

import copy
import gc
import logging
import socket
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import duckdb
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Lifespan, Message, Receive, Scope, Send

from api import console
from api.audit import AuditRecord
from api.routes import (
    batches,
    campaigns,
    health,
    journeys,
    lists,
    models,
    outcomes,
    query,
    scores,
    tokens,
)
from api.service import Service, utc_now
from api.settings import ApiSettings
from contracts.errors import (
    CampaignError,
    ConfigError,
    DeclarationError,
    FusionError,
    GateRefused,
    ModelError,
    QueryError,
    QueryTimeout,
    StoreError,
)
from fusion.runfolder import RunFolder
from matcher.keyring import Keyring

__all__ = ["MAX_REPORTED_ERRORS", "create_app", "serve", "server_stack"]

# A 422 lists this many errors at most: 90,000 unknown keys must not come back as 90,000 errors.
MAX_REPORTED_ERRORS = 10
_MAX_ERROR_TEXT = 200  # characters of one location part or message (a key may be huge)
_MAX_DETAIL_TEXT = 2_000  # characters of a platform error's message in an answer
_CONFLICT_RETRY_SECONDS = 5
log = logging.getLogger("bankfusion.api")

# Metrics and audit key on the method: one a client makes up counts as OTHER, so it cannot
# grow a new series per request.
_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})


def create_app(settings: ApiSettings) -> FastAPI:
    """Return the FastAPI app serving the run folder in `settings`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service.start(
            settings.run,
            audit_queue_limit=settings.audit_queue_limit,
            audit_outage_seconds=settings.audit_outage_seconds,
            quarantine_retention=settings.quarantine_retention,
            archive_retention=settings.archive_retention,
        )
        app.state.service = service
        try:
            yield
        finally:
            service.close()

    docs = settings.serves_docs
    app = FastAPI(
        title="bankfusion",
        version="0.1.0",
        summary="Privacy-preserving fusion of vendor app/tag data with a bank's customers",
        lifespan=lifespan,
        openapi_url="/openapi.json" if docs else None,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    app.state.settings = settings
    routers = (
        health, batches, scores, lists, outcomes, query, tokens, campaigns, journeys, models,
        console,
    )  # fmt: skip
    for router in routers:
        app.include_router(router.router)
    # The routes themselves, to name in the audit a request refused before routing.
    app.state.routes = [route for router in routers for route in router.router.routes]
    _errors(app)
    console.install(app, settings)  # its session book and refusal pages
    app.add_middleware(_BodyCapMiddleware)
    app.add_middleware(_AuditMiddleware)  # outermost: it audits the body cap's 413s too
    return app


def _errors(app: FastAPI) -> None:
    """Map the platform's errors to HTTP answers that keep their own advice."""
    _campaign_errors(app)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        return _invalid(error.errors())

    @app.exception_handler(QueryError)
    async def query_error(request: Request, error: QueryError) -> Response:
        # Not 408: clients and proxies resend a 408 by themselves, and the same query would
        # run out of time again. The message says how to narrow it.
        status = 422 if isinstance(error, QueryTimeout) else 400
        return _answer(status, error, rule=getattr(error, "rule", None))

    @app.exception_handler(ModelError)
    async def model_error(request: Request, error: ModelError) -> Response:
        return _answer(503, error)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, error: StoreError) -> Response:
        return _answer(503, error)

    @app.exception_handler(ConfigError)
    async def config_error(request: Request, error: ConfigError) -> Response:
        return _answer(400, error)

    @app.exception_handler(FusionError)
    async def fusion_error(request: Request, error: FusionError) -> Response:
        return _answer(400, error)


def _answer(status: int, error: Exception, **extra: object) -> JSONResponse:
    """Return the answer of a platform error: its own message, and `extra` fields."""
    return JSONResponse(status_code=status, content={"detail": str(error), **extra})


def _campaign_errors(app: FastAPI) -> None:
    """Map campaign errors (422 naming the field, 409 naming the gate, 409) and write
    conflicts (503, retry)."""

    @app.exception_handler(DeclarationError)
    async def declaration_error(request: Request, error: DeclarationError) -> Response:
        # The field is a dotted path of the body's keys, which a caller may make huge.
        return JSONResponse(
            status_code=422,
            content={"detail": _cut(str(error)), "field": _short(error.field)},
        )

    @app.exception_handler(GateRefused)
    async def gate_refused(request: Request, error: GateRefused) -> Response:
        return _answer(409, error, gate=error.gate, stage=error.stage)

    @app.exception_handler(CampaignError)
    async def campaign_error(request: Request, error: CampaignError) -> Response:
        return _answer(409, error)

    @app.exception_handler(duckdb.TransactionException)
    async def write_conflict(request: Request, error: duckdb.TransactionException) -> Response:
        # DuckDB refuses a commit whose rows another transaction changed since it began, and
        # refuses a second change of one keyed row while any older transaction is open (a
        # long ingest): transient, and the failed commit wrote nothing. Anything else is a bug.
        if "conflict" not in str(error).lower():
            raise error
        log.warning("write conflict on %s; answered 503", request.url.path)
        return JSONResponse(
            status_code=503,
            headers={"Retry-After": str(_CONFLICT_RETRY_SECONDS)},
            content={
                "detail": "another writer changed the same rows while this request ran (an "
                "ingest may be holding the store); nothing was written: send the request "
                f"again in {_CONFLICT_RETRY_SECONDS} seconds"
            },
        )


def _invalid(errors: Sequence[Any]) -> JSONResponse:
    """Return the 422 of a failed validation: where and why, never the input.

    The input is what FastAPI's own answer echoes; it may hold NaN (which JSON cannot carry,
    so the answer itself failed with a 500), megabytes, or a secret. Only the location, the
    message and the error type are kept, each cut short, so this answer cannot fail.
    """
    reported: list[dict[str, object]] = []
    for item in errors[:MAX_REPORTED_ERRORS]:
        try:
            reported.append(
                {
                    "loc": [_short(part) for part in item["loc"]],
                    "msg": _short(item["msg"]),
                    "type": _short(item["type"]),
                }
            )
        except (KeyError, TypeError):
            reported.append({"loc": [], "msg": "invalid request", "type": "invalid"})
    content: dict[str, object] = {"detail": reported}
    if len(errors) > len(reported):
        content["more_errors"] = len(errors) - len(reported)
    return JSONResponse(status_code=422, content=content)


def _short(value: object) -> int | str:
    """Return an error's location part or text as an int or a string cut short."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value)
    return text if len(text) <= _MAX_ERROR_TEXT else text[: _MAX_ERROR_TEXT - 3] + "..."


class _AuditMiddleware:
    """Audit and count every HTTP request (pure ASGI: streamed bodies pass untouched).

    Fails closed: while the service's audit log cannot be written, a request other than
    GET /healthz is answered 503 before anything runs.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}
        service: Service | None = getattr(scope["app"].state, "service", None)
        admitted = (
            service is None
            or (scope["method"], scope["path"]) == ("GET", "/healthz")
            or service.audit.is_open()
        )

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        try:
            if admitted:
                await self.app(scope, receive, capture)
            else:
                await _audit_unavailable()(scope, receive, capture)
        finally:
            if service is not None:
                seconds = time.perf_counter() - start
                service.record(
                    _audit_record(scope, admitted=admitted, status=status["code"]),
                    seconds,
                    admitted=admitted,
                )


def _cut(text: str) -> str:
    """Return a platform error's message, cut short when a caller's input made it long."""
    return text if len(text) <= _MAX_DETAIL_TEXT else text[: _MAX_DETAIL_TEXT - 3] + "..."


def _audit_record(scope: Scope, *, admitted: bool, status: int) -> AuditRecord:
    """Return the audit record of a finished request: who, which route, what came back."""
    state = scope.get("state", {})
    route = scope.get("route") if admitted else _route_of(scope)
    path = getattr(route, "path", None) or "unmatched"
    method = scope["method"] if scope["method"] in _METHODS else "OTHER"
    principal = state.get("principal")
    return AuditRecord(
        at=utc_now(),
        actor=principal.token_id if principal else "anonymous",
        role=principal.role if principal else None,
        action=f"{method} {path}",
        detail=state.get("audit_detail"),
        rows=state.get("audit_rows"),
        status=str(status),
    )


def _route_of(scope: Scope) -> object | None:
    """Return the app's route matching `scope` (for requests the app never saw), or None."""
    for route in scope["app"].state.routes:
        if route.matches(scope)[0] == Match.FULL:
            return route
    return None


def _audit_unavailable() -> JSONResponse:
    return JSONResponse(
        status_code=503,
        headers={"Retry-After": "5"},
        content={
            "detail": "the audit log cannot be written now, and no request is served "
            "unaudited; retry later, and tell the bank's operators if this lasts (the "
            "service log says why the audit writes fail)"
        },
    )


class _BodyCapMiddleware:
    """Answer 413 to a request body past `max_body_bytes`, before anything parses it.

    Sealed batches (POST /v1/batches) pass untouched: that route streams them to disk under its
    own cap. Every other body is read here, at most the cap, and handed on whole; no route of
    this service takes more than a JSON document.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            scope["method"] == "POST" and scope["path"] == "/v1/batches"
        ):
            await self.app(scope, receive, send)
            return
        settings: ApiSettings = scope["app"].state.settings
        limit = settings.max_body_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await _too_large(limit)(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body: no one to answer
            body += message.get("body", b"")
            if len(body) > limit:
                await _too_large(limit)(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: a disconnect, for streaming answers
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)


def _too_large(limit: int) -> JSONResponse:
    return JSONResponse(
        status_code=413,
        content={
            "detail": f"a request body may be at most {limit:,} bytes; send the data in several "
            "smaller requests (sealed batches go to POST /v1/batches, which has its own cap)"
        },
    )


def serve(settings: ApiSettings) -> None:
    """Run the app under uvicorn until interrupted (the `fusion serve` command).

    The run's keyring and the port are checked first, so a mistyped --run or a port in use is
    one error (KeyringError, OSError EADDRINUSE) rather than a failed start in uvicorn's log.
    One worker, on uvloop with the httptools parser where they import (`server_stack`); the
    objects alive once the service has started are frozen out of the cyclic collector.
    """
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    Keyring.open(RunFolder(settings.run).bank_keys)
    if settings.port:
        with socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            probe.bind((settings.host, settings.port))

    log_config = copy.deepcopy(LOGGING_CONFIG)
    log_config.setdefault("filters", {})["no_query"] = {"()": _PathOnlyAccessLog}
    log_config["loggers"]["uvicorn.access"]["filters"] = ["no_query"]
    loop, http = server_stack()
    app = create_app(settings)
    app.router.lifespan_context = _frozen_after_start(app.router.lifespan_context)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        log_config=log_config,
        loop=loop,
        http=http,
    )


def _frozen_after_start(lifespan: Lifespan[Any]) -> Lifespan[Any]:
    """Return `lifespan` with every object alive once the service has started moved out of the
    cyclic collector's generations (`gc.freeze`).

    The imported modules, the app and the service are most of the objects the collector tracks
    and all of them live as long as the process; without this, each full collection walked them
    all again and stalled the event loop for a long pause (the tail of every route's latency,
    /healthz's included; README, "Benchmarks"). Frozen objects are never collected: only those
    alive at the start are frozen, and they stay alive anyway. Only `serve` does this: a test
    serving the app inside the test runner's process must not freeze the runner's objects.
    """

    @asynccontextmanager
    async def frozen(app: Any) -> AsyncIterator[Any]:
        async with lifespan(app) as state:
            gc.collect()
            gc.freeze()
            yield state

    return frozen


def server_stack() -> tuple[str, str]:
    """Return the event loop and HTTP parser `serve` runs uvicorn with.

    libuv's loop (uvloop) and the C parser (httptools) when they import, as the project's
    dependencies install them; else the standard asyncio loop and the pure-Python h11 parser,
    which answer the same requests at a higher cost per request.
    """
    try:
        import uvloop  # noqa: F401 - only whether it imports
    except ImportError:
        loop = "asyncio"
    else:
        loop = "uvloop"
    try:
        import httptools  # noqa: F401 - only whether it imports
    except ImportError:
        http = "h11"
    else:
        http = "httptools"
    return loop, http


class _PathOnlyAccessLog(logging.Filter):
    """Cut the query string off every argument of an access log line.

    A caller may put a token in a URL (`?token=`); the service refuses it, but uvicorn's
    access line would keep it. Every string argument is cut at its first "?" (the client
    address, the method and the HTTP version never hold one), so the filter keeps working
    if uvicorn reorders its arguments.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                arg.split("?", 1)[0] if isinstance(arg, str) else arg for arg in record.args
            )
        return True
