"""Audiences: every source resolves to the snapshot's customers with their decile and uplift."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from contracts.errors import CampaignError
from fusion.campaigns.audience import AudienceInputs, resolve_audience, value_tiers
from fusion.runfolder import RunFolder
from tests.support.campaign_banks import SNAPSHOT, campaign_bank, declaration, open_campaign_bank
from tests.support.stores import T0, key_blob, record_batch


@pytest.fixture
def folder(tmp_path: Path, ext_dir: Path) -> RunFolder:
    return campaign_bank(tmp_path / "run", ext_dir, n=2_000)


def _inputs(bank, folder: RunFolder, query=None) -> AudienceInputs:
    customers = pl.read_parquet(folder.features / SNAPSHOT.isoformat() / "features.parquet")
    return AudienceInputs(customers, folder.scores, bank.store, SNAPSHOT, query)


def test_model_deciles_and_top_shares(folder, ext_dir):
    scores = pl.read_parquet(folder.scores / "acquisition.parquet")
    with open_campaign_bank(folder, ext_dir) as bank:
        inputs = _inputs(bank, folder)
        top = resolve_audience(declaration("aa"), inputs)  # acquisition deciles 1-5
        rescue = resolve_audience(
            declaration("rr", audience={"source": "model", "model": "rescue", "top_share": 0.1}),
            inputs,
        )
    wanted = scores.filter(pl.col("decile") <= 5)
    assert top["customer_id"].to_list() == sorted(wanted["customer_id"].to_list())
    assert top["expected_uplift"].unique().to_list() == [0.01]  # the declared default
    pool = pl.read_parquet(folder.scores / "rescue.parquet")
    assert rescue.height == round(0.1 * pool.height)
    best = pool.sort("score", descending=True).head(rescue.height)["customer_id"].sort()
    assert rescue["customer_id"].to_list() == best.to_list()
    assert set(rescue["decile"].unique().to_list()) <= set(range(1, 11))


def test_uplift_model_gives_the_expected_gain_and_a_wrong_name_is_refused(folder, ext_dir):
    audience = {"source": "model", "model": "uplift", "top_share": 0.5}
    with open_campaign_bank(folder, ext_dir) as bank:
        inputs = _inputs(bank, folder)
        chosen = resolve_audience(
            declaration("uu", audience=audience,
                        objective={"value": 5.0, "uplift_model": "uplift"}),
            inputs,
        )  # fmt: skip
        with pytest.raises(CampaignError, match=r"objective\.uplift_model"):
            resolve_audience(
                declaration("ww", audience=audience,
                            objective={"value": 5.0, "uplift_model": "other"}),
                inputs,
            )  # fmt: skip
    predicted = pl.read_parquet(folder.scores / "uplift.parquet")
    joined = chosen.join(predicted, on="customer_id")
    assert (joined["expected_uplift"] == joined["predicted_uplift"]).all()
    assert chosen["expected_uplift"].min() >= predicted["predicted_uplift"].median()


def test_value_demand_cells(folder, ext_dir):
    with open_campaign_bank(folder, ext_dir) as bank:
        inputs = _inputs(bank, folder)
        cell = resolve_audience(
            declaration("vv", audience={"source": "value_demand", "value_tiers": [1],
                                       "demand_groups": [1]}),
            inputs,
        )  # fmt: skip
    tiers = value_tiers(inputs.customers)
    joined = cell.join(tiers, on="customer_id")
    assert cell.height > 0 and (joined["value_tier"] == 1).all()
    assert cell["decile"].is_in([1, 2]).all()


def test_usage_reads_the_newest_vendor_rows_of_matched_customers(folder, ext_dir):
    with open_campaign_bank(folder, ext_dir) as bank:
        store = bank.store
        record_batch(store, "b1", T0)
        store.execute("INSERT INTO tax_categories VALUES ('t1', 1, 'food', 'Food', NULL)")
        store.execute("INSERT INTO tax_apps VALUES ('t1', 7, 1, 'Eats', 1)")
        for n, customer in enumerate((1_000_010, 1_000_011, 1_000_012)):
            store.execute(
                "INSERT INTO matches (customer_id, key, salt_epoch, batch_id, matched_at, "
                "snapshot_date) VALUES (?, ?, 'e1', 'b1', ?, ?)",
                [customer, key_blob(n), T0, SNAPSHOT],
            )
            store.execute(
                "INSERT INTO vendor_apps VALUES (?, 'e1', 'b1', ?, ?, ?)",
                [key_blob(n), [7] if n < 2 else [8], [3], [5]],
            )
        chosen = resolve_audience(
            declaration("ff", audience={"source": "usage", "categories": ["food"]}),
            _inputs(bank, folder),
        )
    assert chosen["customer_id"].to_list() == [1_000_010, 1_000_011]


def test_a_query_audience_runs_in_the_sandbox_and_needs_a_customer_id(folder, ext_dir):
    sent = []

    def sandbox(sql: str) -> pl.DataFrame:
        sent.append(sql)
        return pl.DataFrame({"customer_id": [1_000_003, 1_000_004, 99]})

    query = {"source": "query", "sql": "SELECT customer_id FROM customers"}
    with open_campaign_bank(folder, ext_dir) as bank:
        chosen = resolve_audience(declaration("qq", audience=query), _inputs(bank, folder, sandbox))
        assert sent == ["SELECT customer_id FROM customers"]
        # 99 is no customer of the snapshot: it never becomes a candidate.
        assert chosen["customer_id"].to_list() == [1_000_003, 1_000_004]
        with pytest.raises(CampaignError, match="column named customer_id"):
            resolve_audience(
                declaration("qq", audience=query),
                _inputs(bank, folder, lambda sql: pl.DataFrame({"id": [1]})),
            )
        with pytest.raises(CampaignError, match="fusion publish"):
            resolve_audience(declaration("qq", audience=query), _inputs(bank, folder))
