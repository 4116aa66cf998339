"""A real uvicorn server on 127.0.0.1 for tests, and the bankfusion service of a run folder.

The server binds port 0, so the system picks a free port while the socket is bound, and the
port is read back from the running server: no port is picked, closed and hoped to stay free.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.types import ASGIApp

from api import ApiSettings, create_app
from api.service import Service
from fusion.runfolder import RunFolder
from fusion.store import Store
from fusion.tokens import create_token
from matcher.keyring import Keyring
from tests.support.polling import eventually

__all__ = [
    "NOW",
    "Running",
    "ServedRun",
    "Tokens",
    "bearer",
    "issue_tokens",
    "post_query",
    "serve_copy",
    "serve_run",
    "serving",
    "settings_changed",
    "start_server",
]

NOW = datetime(2026, 10, 2, 9, tzinfo=UTC)  # when tests issue tokens and seal batches


@dataclass(frozen=True)
class Running:
    """A uvicorn server running in a thread of this process."""

    server: uvicorn.Server
    thread: threading.Thread
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def service(self) -> Service:
        """The running bankfusion service (same process): tests read its store and state."""
        service: Service = self.server.config.app.state.service  # type: ignore[union-attr]
        return service

    def stop(self, timeout: float = 120) -> None:
        """Ask the server to exit and wait for it (lifespan shutdown included)."""
        self.server.should_exit = True
        self.thread.join(timeout=timeout)
        assert not self.thread.is_alive(), "uvicorn did not stop"


def start_server(app: ASGIApp, *, timeout: float = 30) -> Running:
    """Return `app` served by uvicorn on 127.0.0.1 and a port the system chose, once started."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    # Also ends when the thread does: a failed start is reported at once, not at the deadline.
    eventually(
        lambda: server.started or not thread.is_alive(), timeout=timeout, what="uvicorn start"
    )
    assert server.started, "uvicorn did not start (its log above says why)"
    port = int(server.servers[0].sockets[0].getsockname()[1])
    return Running(server, thread, port)


@contextmanager
def serving(app: ASGIApp) -> Iterator[Running]:
    """Serve `app` for the duration of the block, then stop it."""
    running = start_server(app)
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def serve_run(settings: ApiSettings) -> Iterator[Running]:
    """Serve the bankfusion app of `settings` (its port is ignored: the system picks one)."""
    with serving(create_app(settings)) as running:
        yield running


@dataclass(frozen=True)
class Tokens:
    """One bearer token per role, issued by `issue_tokens`."""

    vendor: str  # vendor-a
    other_vendor: str  # vendor-b
    analyst: str  # branch B001 only
    head_office: str  # analyst of every branch (--head-office)
    campaign_tool: str
    admin: str


def issue_tokens(run: Path) -> Tokens:
    """Return one token per role, written to the store of run folder `run` (not served now)."""
    folder = RunFolder(run)
    keyring = Keyring.open(folder.bank_keys)
    with Store.open(folder.store, key=keyring.store_key()) as store:

        def make(role: str, **kwargs: object) -> str:
            return create_token(store, role=role, now=NOW, **kwargs).secret  # type: ignore[arg-type]

        return Tokens(
            vendor=make("vendor", vendor_id="vendor-a"),
            other_vendor=make("vendor", vendor_id="vendor-b"),
            analyst=make("analyst", branches=["B001"]),
            head_office=make("analyst", head_office=True),
            campaign_tool=make("campaign_tool"),
            admin=make("admin"),
        )


def bearer(token: str) -> dict[str, str]:
    """Return the Authorization header of `token`."""
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class ServedRun:
    """A served run folder: its settings, its tokens, and the server running its service."""

    run: Path
    tokens: Tokens
    settings: ApiSettings
    running: Running

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def service(self) -> Service:
        """The running service (same process): tests read its store through a cursor."""
        return self.running.service

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.run)


def post_query(served: ServedRun, token: str, sql: str) -> httpx.Response:
    """Return the served app's answer to an analyst query sent with `token`."""
    return httpx.post(
        f"{served.url}/v1/query", json={"sql": sql}, headers=bearer(token), timeout=120
    )


@contextmanager
def serve_copy(
    source: Path,
    root: Path,
    *,
    before_start: Callable[[Path], None] | None = None,
    **settings: Any,
) -> Iterator[ServedRun]:
    """Serve a copy of run folder `source` made under `root`, tokens issued before start.

    `before_start(run)` may leave files in the copy first; `settings` are ApiSettings fields.
    """
    run = root / "run"
    shutil.copytree(source, run, symlinks=True)
    tokens = issue_tokens(run)
    if before_start is not None:
        before_start(run)
    api_settings = ApiSettings(run=run, **settings)
    with serve_run(api_settings) as running:
        yield ServedRun(run, tokens, api_settings, running)


@contextmanager
def settings_changed(served: ServedRun, **changes: Any) -> Iterator[None]:
    """Give the running app of `served` other settings inside the block."""
    app: Any = served.running.server.config.app
    app.state.settings = replace(served.settings, **changes)
    try:
        yield
    finally:
        app.state.settings = served.settings
