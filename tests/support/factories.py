"""Shared test factories: small, valid, deterministic inputs built as production builds them."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from contracts.schemas import VENDOR_BATCH
from contracts.taxonomy import load_taxonomy
from fusion.features import FeatureSet, build_features
from fusion.ingest import Inbox, ingest_file
from fusion.match import load_extract, match
from fusion.store import Store
from labs.world import WorldConfig, WorldFiles, generate_world
from matcher.keyring import init_local_pair
from matcher.pack import pack_users


def _lists(values: np.ndarray, lengths: np.ndarray) -> pl.Series:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pl.from_arrow(pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)))  # type: ignore[return-value]


def vendor_batch(n: int = 200, *, seed: int = 1) -> pl.DataFrame:
    """Return a valid vendor batch of `n` rows (keys are SHA-256 of the row number and seed)."""
    rng = np.random.default_rng(seed)
    taxonomy = load_taxonomy()
    n_apps = rng.integers(1, 12, n)
    n_tags = rng.integers(1, 30, n)
    tag_ids = np.concatenate(
        [rng.choice(taxonomy.n_tags, k, replace=False) + 1 for k in n_tags]
    ).astype(np.int32)
    total_apps = int(n_apps.sum())
    return pl.DataFrame(
        {
            "key": [hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(n)],
            "app_ids": _lists(
                rng.integers(1, taxonomy.n_apps + 1, total_apps).astype(np.int32), n_apps
            ),
            "app_days": _lists(rng.integers(1, 31, total_apps).astype(np.int16), n_apps),
            "app_sessions": _lists(rng.integers(0, 400, total_apps).astype(np.int32), n_apps),
            "tag_ids": _lists(tag_ids, n_tags),
            "tag_weights": _lists(
                rng.uniform(0.01, 1.0, int(n_tags.sum())).astype(np.float32), n_tags
            ),
        },
        schema=VENDOR_BATCH.polars_schema,
    )


def world_features(root: Path, *, customers: int, seed: int) -> tuple[FeatureSet, WorldFiles]:
    """Return features built through the real pipeline from a generated world, and its files.

    World -> vendor pack and seal -> bank ingest -> extract -> match -> features, as `fusion demo`
    runs it, under `root`.
    """
    world = WorldFiles(root / "world")
    config = WorldConfig(customers=customers, seed=seed)
    generate_world(config, world.root)
    bank, vendor = init_local_pair(root / "bank-keys", root / "vendor-keys", vendor_id="vendor-a")
    inbox = Inbox(root / "bank").ensure()
    sealed = inbox.inbox / "b1.sealed"
    snapshot = config.snapshot_date
    pack_users(
        world.vendor_users, sealed, keyring=vendor, now=datetime.combine(snapshot, time(6), UTC)
    )
    epoch = bank.current_salt()
    now = datetime.combine(snapshot + timedelta(days=1), time(9), UTC)
    with Store.open(root / "bank" / "fusion.duckdb", key=bank.store_key()) as store:
        ingest_file(sealed, store=store, keyring=bank, inbox=inbox, now=now)
        load_extract(
            store, pl.read_parquet(world.customers), epoch=epoch, snapshot_date=snapshot, now=now
        )
        match(store, epoch_id=epoch.epoch_id, snapshot_date=snapshot, now=now)
        features = build_features(store, snapshot_date=snapshot, salt_epoch=epoch.epoch_id)
    return features, world
