"""`api.serve`: uvicorn on uvloop and httptools where they import, and the objects alive once the
service has started frozen out of the cyclic collector (`fusion serve` itself is run as a process
by test_hardening)."""

from __future__ import annotations

import asyncio
import gc
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from api import ApiSettings, serve
from api.app import server_stack


def test_the_server_runs_on_uvloop_and_httptools_as_installed():
    assert server_stack() == ("uvloop", "httptools")


@pytest.mark.parametrize(
    ("missing", "stack"),
    [("uvloop", ("asyncio", "httptools")), ("httptools", ("uvloop", "h11"))],
)
def test_the_server_falls_back_to_asyncio_and_h11_without_them(
    monkeypatch: pytest.MonkeyPatch, missing: str, stack: tuple[str, str]
):
    monkeypatch.setitem(sys.modules, missing, None)  # its import now raises ImportError
    assert server_stack() == stack


def test_serve_runs_uvicorn_on_them_and_freezes_once_the_service_started(
    demo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    run = tmp_path / "run"
    shutil.copytree(demo_run, run, symlinks=True)
    given: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: given.update(app=app, **options))
    serve(ApiSettings(run=run, port=0))
    assert (given["loop"], given["http"]) == server_stack()

    app = given["app"]
    frozen: list[object] = []
    # Recorded, not done: freezing would keep the test runner's own objects forever.
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(app.state.service))

    async def start_and_stop() -> None:
        async with app.router.lifespan_context(app):
            assert frozen == [app.state.service]  # after the service started, once

    asyncio.run(start_and_stop())
