"""The point-in-time feature build by customer bucket, one task per bucket on any engine.

Each task opens the encrypted store read-only itself and builds only its customers, so a worker
holds one bucket, never the whole table:

    <out>/bucket=00007/                   one bucket's FeatureSet folder
                                          (features.parquet, tags.npz, manifest.json)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from contracts.errors import ConfigError
from fusion.features import (
    CustomerBucket,
    FeatureManifest,
    FeatureSet,
    build_features,
    snapshot_manifest,
)
from fusion.jobs.files import Location, join_path
from fusion.jobs.runner import Engine
from fusion.jobs.worker_secrets import SecretRef
from fusion.store import Store, StoreConfig

__all__ = ["FEATURE_BUCKETS", "FeatureBuckets", "build_feature_buckets"]

# Customer buckets of a feature build. Each task scans the store's vendor tables once, so fewer,
# larger buckets than the key buckets: a task holds its bucket's share of the whole build's
# memory (the README's scale table has the figures).
FEATURE_BUCKETS = 32


@dataclass(frozen=True)
class FeatureBuckets:
    """FeatureSet folders, one per customer bucket, and the manifest of them all.

    `folders[i]` holds bucket i (`FeatureSet.read` opens it): customers with
    hash(customer_id) % len(folders) == i, ordered by customer_id, with the columns and codes of
    `manifest`. `manifest` is the whole build's: rows, matched, in_matches, batches and the tag
    matrix's shape and nnz are summed over the buckets.
    """

    folders: tuple[str, ...]
    manifest: FeatureManifest

    @property
    def rows(self) -> int:
        """Return the customers of all buckets."""
        return self.manifest.rows

    @property
    def matched(self) -> int:
        """Return the customers with vendor data at the snapshot, over all buckets."""
        return self.manifest.matched

    @property
    def in_matches(self) -> int:
        """Return the customers in `matches` for the snapshot and epoch, over all buckets."""
        return self.manifest.in_matches

    @property
    def batches(self) -> dict[str, int]:
        """Return batch_id -> customers whose vendor data came from it, over all buckets."""
        return self.manifest.batches

    def read(self, bucket: int) -> FeatureSet:
        """Return bucket `bucket`'s feature set (one bucket: the whole table is never read)."""
        return FeatureSet.read(Path(self.folders[bucket]))

    def assemble(self) -> FeatureSet:
        """Return the whole feature set, equal to `build_features` on the whole snapshot.

        Reads every bucket into this process (rows ordered by customer_id, as the whole build
        orders them): for what needs every row at once, such as in-process training.
        """
        parts = [self.read(i) for i in range(len(self.folders))]
        table = pl.concat([p.table for p in parts], how="vertical")
        order = np.argsort(table["customer_id"].to_numpy(), kind="stable")
        tags = sp.vstack([p.tags for p in parts], format="csr")[order]
        tags.sort_indices()
        return FeatureSet(table[order], tags, parts[0].tag_ids, self.manifest)


@dataclass(frozen=True, kw_only=True)
class _FeatureTask:
    store: StoreConfig
    key: SecretRef[str]  # the store key stays on the workers
    snapshot_date: date
    salt_epoch: str
    taxonomy_version: str | None
    top_apps: int
    like: FeatureManifest | None  # None: the snapshot's own manifest task
    bucket: CustomerBucket | None
    out: str


def _open_read_only(task: _FeatureTask) -> Store:
    return Store.open(task.store, key=task.key.resolve(), read_only=True)


def _snapshot_manifest(task: _FeatureTask) -> FeatureManifest:
    """Return the snapshot's manifest, computed in the store (aggregates only)."""
    with _open_read_only(task) as store:
        return snapshot_manifest(
            store,
            snapshot_date=task.snapshot_date,
            salt_epoch=task.salt_epoch,
            taxonomy_version=task.taxonomy_version,
            top_apps=task.top_apps,
        )


def _build_bucket(task: _FeatureTask) -> FeatureManifest:
    """Build one customer bucket's feature set, write its folder; return its manifest."""
    with _open_read_only(task) as store:
        features = build_features(
            store,
            snapshot_date=task.snapshot_date,
            salt_epoch=task.salt_epoch,
            taxonomy_version=task.taxonomy_version,
            top_apps=task.top_apps,
            like=task.like,
            customers=task.bucket,
        )
    features.write(Path(task.out))
    return features.manifest


def _combined(manifests: Sequence[FeatureManifest]) -> FeatureManifest:
    """Return the first bucket's manifest with every count summed over `manifests`."""
    batches: dict[str, int] = {}
    for manifest in manifests:
        for batch_id, count in manifest.batches.items():
            batches[batch_id] = batches.get(batch_id, 0) + count
    first = manifests[0]
    rows = sum(m.rows for m in manifests)
    return replace(
        first,
        rows=rows,
        matched=sum(m.matched for m in manifests),
        in_matches=sum(m.in_matches for m in manifests),
        batches=dict(sorted(batches.items())),
        tags={
            **first.tags,
            "shape": [rows, first.tags["shape"][1]],
            "nnz": sum(int(m.tags["nnz"]) for m in manifests),
        },
    )


def build_feature_buckets(
    engine: Engine,
    store_path: Location | StoreConfig,
    store_key: str,
    *,
    snapshot_date: date,
    salt_epoch: str,
    out: Location,
    buckets: int = FEATURE_BUCKETS,
    like: FeatureManifest | None = None,
    taxonomy_version: str | None = None,
    top_apps: int = 64,
) -> FeatureBuckets:
    """Return `build_features` of the snapshot cut into customer buckets, one folder per bucket.

    One "features" task per bucket opens the encrypted store read-only itself and builds only
    its customers (`CustomerBucket`: the hash is computed in DuckDB, so a worker holds one
    bucket, never the whole table). The text codes, top apps and taxonomy version are decided
    for the whole snapshot first, by one "feature-manifest" task of aggregate queries
    (`snapshot_manifest`), or taken from `like`; so the buckets' tables, concatenated and sorted
    by customer_id, are the whole build's table, and their tag rows the whole CSR's rows.

    DuckDB lets several processes open a file read-only at once only while no process holds
    it for writing: run the job when ingest and matching are not writing. If a writer holds
    the file, each task's open fails with StoreLockedError (retried, then raised here). Leave
    StoreConfig.temp_directory unset: each read-only open then spills into a directory of its
    own. The store key travels once per worker through `engine.shared`, never in a task.

    Args:
        engine: where the tasks run.
        store_path: the bank's store, a path the workers can open (a shared mount on a
            cluster), or its StoreConfig (e.g. memory_limit per task).
        store_key: the store's encryption key (Keyring.store_key()).
        snapshot_date: as `build_features`.
        salt_epoch: as `build_features`.
        out: the folder of the bucket folders (`<out>/bucket=00007/`), a path the workers
            can write.
        buckets: how many customer buckets (tasks); any count from 1.
        like: a training manifest whose codes, top apps and taxonomy a scoring table reuses;
            by default the snapshot's own.
        taxonomy_version: as `build_features`.
        top_apps: as `build_features` (unused with `like`).
    """
    if type(buckets) is not int or buckets < 1:
        raise ConfigError(f"buckets must be an int >= 1, got {buckets!r}", setting="buckets")
    config = store_path if isinstance(store_path, StoreConfig) else StoreConfig(Path(store_path))
    with engine.shared(store_key) as key:

        def task(bucket: CustomerBucket | None, decided: FeatureManifest | None) -> _FeatureTask:
            folder = "" if bucket is None else join_path(out, f"bucket={bucket.index:05d}")
            return _FeatureTask(
                store=config,
                key=key,
                snapshot_date=snapshot_date,
                salt_epoch=salt_epoch,
                taxonomy_version=taxonomy_version,
                top_apps=top_apps,
                like=decided,
                bucket=bucket,
                out=folder,
            )

        if like is None:
            (like,) = engine.map_buckets(
                _snapshot_manifest, [task(None, None)], stage="feature-manifest"
            )
        tasks = [task(CustomerBucket(i, buckets), like) for i in range(buckets)]
        manifests = engine.map_buckets(_build_bucket, tasks, stage="features")
    return FeatureBuckets(tuple(t.out for t in tasks), _combined(manifests))
