"""The service's factory: `create_app(settings)` builds the FastAPI app for one run folder.

Routes arrive with the service issue (batches, scores, lists, query, outcomes, metrics); this
module owns what every route shares: validated settings and the app's health probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from contracts.errors import ConfigError

__all__ = ["ApiSettings", "create_app", "serve"]

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


@dataclass(frozen=True, kw_only=True)
class ApiSettings:
    """Validated service settings; built by `fusion serve` or tests, never read from globals."""

    run: Path
    host: str = "127.0.0.1"
    port: int = 8000
    allow_non_loopback: bool = False

    def __post_init__(self) -> None:
        if self.host not in _LOOPBACK and not self.allow_non_loopback:
            raise ConfigError(
                f"host {self.host!r} is not loopback; put the service behind the bank's "
                "gateway and pass allow_non_loopback=True (--public) deliberately",
                setting="host",
            )
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be 1..65535, got {self.port}", setting="port")


def create_app(settings: ApiSettings) -> FastAPI:
    """Return the FastAPI app serving the run folder in `settings`."""
    app = FastAPI(
        title="bankfusion",
        version="0.1.0",
        summary="Privacy-preserving fusion of vendor app/tag data with a bank's customers",
    )
    app.state.settings = settings

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Report that the service is up and which run folder it serves."""
        return {"status": "ok", "run": settings.run.name}

    return app


def serve(settings: ApiSettings) -> None:
    """Run the app under uvicorn until interrupted (the `fusion serve` command)."""
    import uvicorn

    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
