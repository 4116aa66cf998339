"""Amount metrics with their pre-period, recorded into a real encrypted store and read back."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import polars as pl
import pytest

from contracts.errors import CampaignError
from fusion.campaigns.metrics import METRIC_SCHEMA, read_metrics, record_metrics
from fusion.store import Store
from tests.support.stores import store_config

NOW = datetime(2026, 12, 1, 9)


@pytest.fixture
def store(tmp_path: Path, ext_dir: Path) -> Iterator[Store]:
    with Store.open(store_config(tmp_path, ext_dir), key=secrets.token_urlsafe(32)) as opened:
        opened.insert_frame(
            "assignments",
            pl.DataFrame(
                {
                    "campaign_id": "c1",
                    "customer_id": [1, 2, 3, 4],
                    "plan_id": "p1",
                    "stage": "ab",
                    "arm": ["treatment", "control", "treatment", "control"],
                    "branch_id": "B001",
                    "stratum": "B001|d1",
                    "window_start": date(2026, 10, 1),
                    "window_end": date(2026, 10, 29),
                    "assigned_at": datetime(2026, 9, 30),
                }
            ),
        )
        yield opened


def rows(values: list[float], *, customers: tuple[int, ...] = (1, 2, 3, 4)) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "campaign_id": "c1",
            "customer_id": list(customers),
            "metric": "aum",
            "value": values,
            "pre_value": [100.0, 200.0, None, 400.0][: len(customers)],
            "measured_at": NOW,
        },
        schema=METRIC_SCHEMA,
    )


def test_metrics_round_trip_and_the_newest_measurement_wins(store: Store):
    assert record_metrics(store, rows([110.0, 190.0, 300.0, 420.0]), now=NOW) == 4
    again = rows([111.0, 191.0, 301.0, 421.0]).with_columns(
        measured_at=pl.lit(datetime(2026, 12, 2))
    )
    assert record_metrics(store, again, now=NOW) == 4
    stored = read_metrics(store, "c1").sort("customer_id")
    assert stored.schema == METRIC_SCHEMA
    assert stored["value"].to_list() == [111.0, 191.0, 301.0, 421.0]
    assert stored["pre_value"].to_list() == [100.0, 200.0, None, 400.0]
    assert read_metrics(store, "c2").is_empty()


def test_bad_metric_rows_are_refused_whole(store: Store):
    with pytest.raises(CampaignError, match="not assigned"):
        record_metrics(store, rows([1.0, 2.0], customers=(1, 9)), now=NOW)
    with pytest.raises(CampaignError, match="finite"):
        record_metrics(store, rows([float("nan"), 2.0, 3.0, 4.0]), now=NOW)
    with pytest.raises(CampaignError, match="lower-case"):
        record_metrics(
            store, rows([1.0, 2.0, 3.0, 4.0]).with_columns(metric=pl.lit("AUM!")), now=NOW
        )
    with pytest.raises(CampaignError, match="lack"):
        record_metrics(store, rows([1.0, 2.0, 3.0, 4.0]).drop("pre_value"), now=NOW)
    assert read_metrics(store, "c1").is_empty()
