"""A real run folder (demo world, trained models, lists, published snapshots) and a real
uvicorn server on 127.0.0.1 serving it, with one token per role."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner

from api import ApiSettings, create_app
from api.service import Service
from fusion.runfolder import RunFolder
from fusion.store import Store
from fusion.tokens import create_token
from labs.cli import app as cli
from matcher.keyring import Keyring

NOW = datetime(2026, 10, 2, 9, tzinfo=UTC)


@dataclass(frozen=True)
class Tokens:
    vendor: str
    other_vendor: str
    analyst: str  # branch B001 only
    head_office: str  # analyst of every branch (--head-office)
    campaign_tool: str
    admin: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`fusion demo` on a 6k world, then `fusion publish`: the folder the service serves."""
    run = tmp_path_factory.mktemp("api") / "run"
    runner = CliRunner()
    result = runner.invoke(cli, ["demo", "--out", str(run), "--customers", "6000", "--seed", "4"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["publish", "--run", str(run)])
    assert result.exit_code == 0, result.output
    return run


def issue_tokens(run: Path) -> Tokens:
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


@dataclass(frozen=True)
class Served:
    url: str
    run: Path
    tokens: Tokens
    settings: ApiSettings
    server: uvicorn.Server

    @property
    def service(self) -> Service:
        """The running service (same process): tests read its store through a cursor."""
        service: Service = self.server.config.app.state.service
        return service


def start_server(settings: ApiSettings) -> tuple[uvicorn.Server, threading.Thread]:
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    return server, thread


@pytest.fixture(scope="session")
def served(demo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The demo run copied (tests may write to it) and served, tokens issued before start."""
    run = tmp_path_factory.mktemp("served") / "run"
    shutil.copytree(demo_run, run, symlinks=True)
    tokens = issue_tokens(run)
    settings = ApiSettings(run=run, port=free_port(), max_upload_bytes=64 << 20)
    server, thread = start_server(settings)
    yield Served(f"http://127.0.0.1:{settings.port}", run, tokens, settings, server)
    server.should_exit = True
    thread.join(timeout=30)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
