"""Console tests share: a marketer token made while the service runs, signed-in HTTP clients,
the whitelist customers of the served world, and a monitoring result of the served run."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from datetime import date

import httpx
import polars as pl
import pytest

from fusion.features import TABLE_FILE
from fusion.monitoring import model_stability, read_profile, scored_population
from fusion.pipeline.feature_tables import read_features
from fusion.pipeline.monitoring import (
    MonitoringReport,
    monitor_snapshot,
    read_monitoring,
    write_monitoring,
)
from fusion.registry import Registry
from fusion.tokens import create_token
from tests.support.polling import eventually
from tests.support.server import NOW, ServedRun, bearer

_NONCE = re.compile(r'name="nonce" value="([^"]+)"')
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="module")
def marketer_token(served: ServedRun) -> str:
    """A marketer token, made while the service runs (the served run's tokens predate it)."""
    issued = create_token(served.service.cursor(), role="marketer", now=NOW, label="console")

    def accepted() -> bool:
        answer = httpx.get(f"{served.url}/v1/campaigns", headers=bearer(issued.secret))
        return answer.status_code == 200

    eventually(accepted, timeout=10, interval=0.1, what="the marketer token picked up")
    return issued.secret


@pytest.fixture(scope="module")
def sign_in(served: ServedRun) -> Iterator[Callable[[str], httpx.Client]]:
    """Return a maker of HTTP clients signed in to the console with a token (closed after)."""
    clients: list[httpx.Client] = []

    def make(token: str) -> httpx.Client:
        client = httpx.Client(base_url=served.url, timeout=120, follow_redirects=False)
        clients.append(client)
        nonce = _NONCE.search(client.get("/console/sign-in").text)
        assert nonce is not None
        answer = client.post("/console/sign-in", data={"nonce": nonce.group(1), "token": token})
        assert answer.status_code == 303 and answer.headers["location"] == "/console", answer.text
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture(scope="module")
def csrf_of() -> Callable[[httpx.Client, str], str]:
    """Return a reader of the CSRF token a console page's forms carry."""

    def read(client: httpx.Client, path: str) -> str:
        found = _CSRF.search(client.get(path).text)
        assert found is not None, path
        return found.group(1)

    return read


@pytest.fixture(scope="module")
def customer_ids(served: ServedRun) -> list[int]:
    """The served world's customer ids, as the feature table lists them."""
    folder = sorted((served.run / "features").iterdir())[-1]
    return pl.read_parquet(folder / TABLE_FILE, columns=["customer_id"])["customer_id"].to_list()


@pytest.fixture(scope="module")
def declare(served: ServedRun, marketer_token: str) -> Callable[[str, list[int]], None]:
    """Return a declarer of a call-centre campaign on the rescue audience (through the API)."""

    def make(name: str, whitelist: list[int]) -> None:
        body = {
            "name": name,
            "priority": 1,
            "objective": {"event": "converted", "value": 120.0, "cost_per_contact": 3.0},
            "audience": {"source": "model", "model": "rescue", "top_share": 0.5},
            "channel": {"kind": "call_centre", "capacity_per_branch_per_day": 60},
            "stages": {
                "whitelist": whitelist,
                "pilot_share": 0.5,
                "ab": {"baseline_rate": 0.01, "minimum_detectable_effect": 0.02},
            },
        }
        answer = httpx.post(
            f"{served.url}/v1/campaigns", json=body, headers=bearer(marketer_token), timeout=60
        )
        assert answer.status_code == 201, answer.text

    return make


DRIFTED = "age"  # the column the monitoring fixture shifts, so its CSI alerts


@pytest.fixture(scope="session")
def monitored(served: ServedRun) -> MonitoringReport:
    """The served run's latest monitoring result, with alerts to show.

    `monitor_snapshot` (what `fusion monitor` runs) checks the served snapshot, which is the
    models' training table: every index is 0. So the acquisition model's checks are made again,
    by the same functions, on that table with every customer 15 years older, and the result
    with them is written by `write_monitoring`, as `fusion monitor` writes it.
    """
    folder = served.folder
    snapshot = date.fromisoformat(sorted(p.name for p in folder.features.iterdir())[-1])
    with served.service.bank() as bank:
        result = monitor_snapshot(bank, snapshot_date=snapshot, now=NOW)
    features = read_features(folder, snapshot)
    older = dataclasses.replace(features, table=features.table.with_columns(pl.col(DRIFTED) + 15))
    registry = Registry(folder.models)
    rows, scores = scored_population(registry, registry.load("acquisition"), older)
    drifted = model_stability(
        read_profile(registry, "acquisition"),
        pl.Series("score", scores),
        older.table[rows],
        codes=older.manifest.codes,
        settings=result.settings,
    )
    others = tuple(s for s in result.stability if s.model != "acquisition")
    write_monitoring(folder, dataclasses.replace(result, stability=(*drifted, *others)))
    report = read_monitoring(folder)
    assert report is not None
    return report
