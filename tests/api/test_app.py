"""The service answers on a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import httpx

from tests.support.server import ServedRun, bearer


def test_healthz_says_only_that_the_service_is_up(served: ServedRun):
    response = httpx.get(f"{served.url}/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}
    # Which run folder is served is for admins, on /metrics.
    metrics = httpx.get(f"{served.url}/metrics", headers=bearer(served.tokens.admin))
    assert 'bankfusion_info{run="run",version="0.1.0"} 1' in metrics.text
