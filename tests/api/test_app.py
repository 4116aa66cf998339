"""The service answers on a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

import api
from api import ApiSettings
from contracts.errors import ConfigError
from tests.api.conftest import Served


def test_healthz_over_real_http(served: Served):
    response = httpx.get(f"{served.url}/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert response.json()["run"] == "run"


def test_non_loopback_host_is_refused_unless_asked():
    with pytest.raises(ConfigError, match="loopback"):
        ApiSettings(run=Path("r"), host="0.0.0.0")


def test_public_surface():
    assert api.__all__ == ["ApiSettings", "create_app", "serve"]
