"""Small worlds the bucketed-job tests share: an extract with its vendor batch, a store, a model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import xgboost as xgb

from fusion.features import FeatureSet
from fusion.jobs import Engine, KeyedCustomers, join_keys, key_customers, partition_by_key
from fusion.models.classifier import ScoreModel, decile_edges
from fusion.models.design import DesignSpec, TagProfile, design_matrix, feature_labels
from fusion.registry import Registry
from labs.world import WorldFiles
from matcher.keyed_hash import SaltEpoch
from matcher.keyring import Keyring
from matcher.pack import build_batch
from matcher.psi import customer_keys
from tests.support.factories import world_features
from tests.support.models import TRAINED_AT

__all__ = [
    "BUCKETS",
    "CHUNK_ROWS",
    "BucketWorld",
    "EngineWorld",
    "bucket_world",
    "by_customer",
    "engine_world",
    "match_on",
    "reference_keys",
    "reference_matches",
    "register_small_model",
]


BUCKETS = 16  # key buckets of the engine world's jobs
CHUNK_ROWS = 700  # 3,000 customers in 5 chunks: shared phones span chunks


def register_small_model(features: FeatureSet, registry: Registry) -> None:
    """Register a small acquisition model that reads table columns and a tag profile."""
    columns = tuple(features.feature_columns()[:25])
    profile = TagProfile.fit(features.tags, features.tag_ids, k=4, seed=1)
    spec = DesignSpec(columns, profile)
    x = design_matrix(features, spec)
    y = features.table["opened_mb"].fill_null(0).to_numpy()
    params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(x, label=y, feature_names=spec.names), 15)
    model = ScoreModel(
        "acquisition", booster, spec, feature_labels(features.manifest, spec), np.zeros(9)
    )
    model.decile_edges = decile_edges(model.predict(x))
    registry.save(model, created_at=TRAINED_AT)


@dataclass(frozen=True)
class EngineWorld:
    features: FeatureSet
    world: WorldFiles
    extract: pl.DataFrame
    epoch: SaltEpoch
    vendor: pl.DataFrame  # the vendor's batch rows: key and lists, plus batch_id
    registry: Registry


def engine_world(root: Path) -> EngineWorld:
    """Return a 3,000-customer world through the real pipeline, its vendor batch and a model."""
    features, world = world_features(root, customers=3_000, seed=5)
    epoch = SaltEpoch.generate("e-engine")
    users = pl.read_parquet(world.vendor_users)
    vendor, _, _ = build_batch(users, epoch)
    registry = Registry(root / "models")
    register_small_model(features, registry)
    return EngineWorld(
        features=features,
        world=world,
        extract=pl.read_parquet(world.customers, columns=["customer_id", "phone"]),
        epoch=epoch,
        vendor=vendor.with_columns(batch_id=pl.lit("b-1")),
        registry=registry,
    )


@dataclass(frozen=True)
class BucketWorld:
    features: FeatureSet  # build_features of the whole snapshot
    store: Path
    key: str
    registry: Registry


def bucket_world(root: Path) -> BucketWorld:
    """Return a 1,200-customer world: its store, the store key, the whole build and a model."""
    features, _ = world_features(root, customers=1_200, seed=11)
    registry = Registry(root / "models")
    register_small_model(features, registry)
    return BucketWorld(
        features=features,
        store=root / "bank" / "fusion.duckdb",
        key=Keyring.open(root / "bank-keys").store_key(),
        registry=registry,
    )


def by_customer(frame: pl.DataFrame) -> pl.DataFrame:
    """Return `frame` sorted by customer_id."""
    return frame.sort("customer_id")


def reference_keys(ew: EngineWorld) -> pl.DataFrame:
    """Return the extract's keys by `matcher.psi.customer_keys` in one process, by customer."""
    return by_customer(customer_keys(ew.extract["customer_id"], ew.extract["phone"], ew.epoch).keys)


def reference_matches(ew: EngineWorld) -> pl.DataFrame:
    """Return customer_id, key, batch_id of the keyed customers the vendor holds, by customer."""
    bank = reference_keys(ew).filter(pl.col("key_status") == "ok").select("customer_id", "key")
    return by_customer(bank.join(ew.vendor.select("key", "batch_id"), on="key"))


def match_on(engine: Engine, ew: EngineWorld, out: Path) -> tuple[KeyedCustomers, pl.DataFrame]:
    """Return the keyed customers and the matches of the salted PSI run as jobs on `engine`."""
    keyed = key_customers(
        engine, ew.extract, ew.epoch, out / "keys", buckets=BUCKETS, chunk_rows=CHUNK_ROWS
    )
    vendor = partition_by_key(
        ew.vendor, out / "vendor", columns=["batch_id"], buckets=BUCKETS, chunk_rows=2_000
    )
    assert vendor.rows == ew.vendor.height and len(vendor.files) == BUCKETS
    matches = join_keys(engine, keyed, vendor, out / "matches", columns=["batch_id"])
    return keyed, matches.read()
