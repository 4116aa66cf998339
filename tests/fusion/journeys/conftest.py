"""A small journey store per test: 300 customers and their first 40 days of events."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from fusion.journeys.events import load_events
from fusion.store import Store, StoreConfig
from tests.support.journeys import NOW, journey_events, seed_customers
from tests.support.stores import store_config

CUSTOMERS = 300


@pytest.fixture
def key() -> str:
    return secrets.token_urlsafe(32)


@pytest.fixture
def config(tmp_path: Path, ext_dir: Path) -> StoreConfig:
    return store_config(tmp_path, ext_dir)


@pytest.fixture
def store(config: StoreConfig, key: str) -> Iterator[Store]:
    with Store.open(config, key=key) as opened:
        seed_customers(opened, CUSTOMERS)
        load_events(opened, journey_events(CUSTOMERS, days=40), source="test", now=NOW)
        yield opened
