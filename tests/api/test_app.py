"""The service answers on a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

import api
from api import ApiSettings, create_app
from contracts.errors import ConfigError


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    settings = ApiSettings(run=tmp_path / "run", port=_free_port())
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning"
    )
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not instance.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{settings.port}"
    instance.should_exit = True
    thread.join(timeout=10)


def test_healthz_over_real_http(server: str):
    response = httpx.get(f"{server}/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


def test_non_loopback_host_is_refused_unless_asked():
    with pytest.raises(ConfigError, match="loopback"):
        ApiSettings(run=Path("r"), host="0.0.0.0")


def test_public_surface():
    assert api.__all__ == ["ApiSettings", "create_app", "serve"]
