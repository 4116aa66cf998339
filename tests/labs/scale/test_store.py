"""The scale inputs' store: the extract keyed and the match the matcher's own rules find.

Checked against the matcher (`customer_keys` of the extract joined with the vendor's keys) and
against the product's feature build, not against the generator's bookkeeping.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from fusion.features import build_features
from fusion.registry import Registry
from fusion.scoring import score_rows
from fusion.store import Store
from labs.scale import ScaleConfig, ScaleSummary, write_scale_inputs
from labs.scale.inputs import MODEL
from labs.scale.store import BATCH_ID, SNAPSHOT
from matcher.keyed_hash import SaltEpoch
from matcher.psi import customer_keys

EPOCH = SaltEpoch("e-store", bytes(range(1, 33)))
KEY = base64.b64encode(bytes(range(100, 132))).decode()
# Two chunks; the model trains on one customer bucket of about 500.
CONFIG = ScaleConfig(customers=2_000, seed=6, chunk_rows=1_000, train_rows=500)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ScaleSummary]:
    root = tmp_path_factory.mktemp("scale-store")
    return root, write_scale_inputs(CONFIG, root, epoch=EPOCH, store_key=KEY)


def _read(root: Path, sql: str) -> pl.DataFrame:
    with Store.open(root / "bank" / "fusion.duckdb", key=KEY, read_only=True) as store:
        return store.execute(sql).pl()


def test_the_store_holds_the_extract_keyed_and_the_matchers_matches(
    generated: tuple[Path, ScaleSummary],
):
    root, summary = generated
    bank = pl.read_parquet(root / "bank" / "customers.parquet")
    vendor = pl.read_parquet(root / "vendor" / "keys.parquet")
    reference = customer_keys(bank["customer_id"], bank["phone"], EPOCH)
    keys = reference.keys.select("customer_id", "key", "key_status").sort("customer_id")

    stored = _read(root, "SELECT customer_id, key, key_status FROM customers ORDER BY 1")
    assert_frame_equal(stored, keys)
    features = _read(root, "SELECT * EXCLUDE (snapshot_date) FROM bank_features ORDER BY 1")
    assert_frame_equal(features, bank.drop("phone"))
    expected = (
        keys.filter(pl.col("key_status") == "ok")
        .join(vendor.select("key"), on="key")
        .select("customer_id", "key")
        .sort("customer_id")
    )
    matches = _read(root, "SELECT customer_id, key FROM matches ORDER BY 1")
    assert_frame_equal(matches, expected)
    assert matches.height == summary.expected_matches > 1_000
    run = _read(root, "SELECT customers, keyed, invalid, duplicated, matched FROM match_runs")
    assert run.row(0) == (
        2_000,
        reference.keyed,
        reference.invalid,
        reference.duplicated,
        matches.height,
    )

    apps = _read(root, "SELECT key, app_ids, app_days, app_sessions FROM vendor_apps")
    tags = _read(root, "SELECT key, tag_ids, tag_weights FROM vendor_tags")
    both = vendor.join(apps, on="key", suffix="_store").join(tags, on="key", suffix="_store")
    assert both.height == vendor.height == apps.height == tags.height == summary.vendor_users
    assert (both["app_ids"] == both["app_ids_store"]).all()
    assert (both["tag_ids"] == both["tag_ids_store"]).all()
    assert (both["app_days"].list.len() == both["app_ids"].list.len()).all()
    assert (both["app_sessions"].list.len() == both["app_ids"].list.len()).all()
    assert (both["tag_weights"].list.len() == both["tag_ids"].list.len()).all()
    assert both["app_days"].explode().is_between(1, 30).all()
    assert both["tag_weights"].explode().is_between(0, 1, closed="right").all()


def test_the_feature_build_finds_every_match_and_the_model_reads_it(
    generated: tuple[Path, ScaleSummary],
):
    root, summary = generated
    with Store.open(root / "bank" / "fusion.duckdb", key=KEY, read_only=True) as store:
        built = build_features(store, snapshot_date=SNAPSHOT, salt_epoch=EPOCH.epoch_id)
    assert built.manifest.rows == 2_000
    assert built.manifest.matched == built.manifest.in_matches == summary.expected_matches
    assert built.manifest.batches == {BATCH_ID: summary.expected_matches}
    model = Registry(root / "models").load_score_model(MODEL)
    assert {"age", "ext_n_apps", "ext_tag_weight_sum"} <= set(model.spec.columns)
    scored = score_rows(model, built, np.arange(built.table.height), reason_deciles=0)
    assert scored.height == 2_000 and scored["score"].is_between(0, 1).all()
