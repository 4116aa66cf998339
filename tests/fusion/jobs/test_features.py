"""The feature build by customer bucket: the whole build's table, cut, on both engines.

One small world through the real pipeline and one LocalCluster (2 worker processes, TLS) serve
the module. Every bucketed result is checked against the single-process one it replaces:
`build_features` of the whole snapshot, and `score_base` of its table.
"""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
from polars.testing import assert_frame_equal

from contracts.errors import ConfigError, StoreLockedError
from fusion.features import CustomerBucket, build_features, snapshot_manifest
from fusion.jobs.features import FeatureBuckets, build_feature_buckets
from fusion.jobs.runner import ClusterEngine, Engine, InProcessEngine
from fusion.jobs.scoring import score_features
from fusion.scoring import score_base
from fusion.store import Store
from tests.support.cluster import SpecRecorder, recorded_specs
from tests.support.job_worlds import BucketWorld, bucket_world

BUCKETS = 3


@pytest.fixture(scope="module")
def bw(tmp_path_factory: pytest.TempPathFactory) -> BucketWorld:
    """A 1,200-customer world: its store, the store key, the whole build and a model."""
    return bucket_world(tmp_path_factory.mktemp("bucket-world"))


def _build(engine: Engine, bw: BucketWorld, out: Path) -> FeatureBuckets:
    manifest = bw.features.manifest
    return build_feature_buckets(
        engine,
        bw.store,
        bw.key,
        snapshot_date=manifest.snapshot_date,
        salt_epoch=manifest.salt_epoch,
        out=out,
        buckets=BUCKETS,
    )


def test_the_snapshot_manifest_is_the_whole_builds(bw: BucketWorld):
    manifest = bw.features.manifest
    with Store.open(bw.store, key=bw.key, read_only=True) as store:
        decided = snapshot_manifest(
            store, snapshot_date=manifest.snapshot_date, salt_epoch=manifest.salt_epoch
        )
    assert decided == manifest
    assert manifest.codes and manifest.top_apps and manifest.matched > 0


def test_buckets_concatenate_to_the_whole_build(engine: Engine, bw: BucketWorld, tmp_path: Path):
    buckets = _build(engine, bw, tmp_path / "features")
    whole = bw.features
    assert buckets.folders == tuple(
        str(tmp_path / "features" / f"bucket={i:05d}") for i in range(BUCKETS)
    )
    parts = [buckets.read(i) for i in range(BUCKETS)]
    assert all(part.table.height > 0 for part in parts)
    ids = np.concatenate([part.table["customer_id"].to_numpy() for part in parts])
    order = np.argsort(ids, kind="stable")
    # Same columns, dtypes and values; every customer in exactly one bucket.
    assert_frame_equal(pl.concat([part.table for part in parts])[order], whole.table)
    stacked = sp.vstack([part.tags for part in parts], format="csr")[order]
    assert (stacked != whole.tags).nnz == 0 and stacked.nnz == whole.tags.nnz
    assert all(np.array_equal(part.tag_ids, whole.tag_ids) for part in parts)
    # The shared manifest, counts summed over the buckets, is the whole build's.
    assert buckets.manifest == whole.manifest
    assert all(part.manifest.columns == whole.manifest.columns for part in parts)
    assert all(part.manifest.codes == whole.manifest.codes for part in parts)
    assert all(part.manifest.top_apps == whole.manifest.top_apps for part in parts)
    assert (buckets.rows, buckets.matched, buckets.in_matches, buckets.batches) == (
        whole.manifest.rows,
        whole.manifest.matched,
        whole.manifest.in_matches,
        whole.manifest.batches,
    )
    assert [part.manifest.rows for part in parts] == [part.table.height for part in parts]
    # Assembled, the buckets are the whole feature set (what in-process training reads).
    assembled = buckets.assemble()
    assert_frame_equal(assembled.table, whole.table)
    assert (assembled.tags != whole.tags).nnz == 0 and assembled.manifest == whole.manifest


def test_bucket_scores_equal_score_base_within_1e6(engine: Engine, bw: BucketWorld, tmp_path: Path):
    buckets = _build(engine, bw, tmp_path / "features")
    parts = score_features(
        engine, buckets, bw.registry, "acquisition", tmp_path / "scores", chunk_rows=150
    )
    assert len(parts.files) == BUCKETS and parts.rows == bw.features.table.height
    scored = parts.read().sort("customer_id")
    model = bw.registry.load_score_model("acquisition")
    reference = pl.read_parquet(
        score_base(model, bw.features, tmp_path / "reference.parquet", chunk_rows=5_000).path
    ).sort("customer_id")
    whole = score_features(
        engine, bw.features, bw.registry, "acquisition", tmp_path / "whole", chunk_rows=500
    )
    for other in (reference, whole.read().sort("customer_id")):
        assert_frame_equal(scored.drop("score"), other.drop("score"))
        assert np.abs(scored["score"].to_numpy() - other["score"].to_numpy()).max() <= 1e-6
    assert scored["reason_1"].null_count() < scored.height


def test_the_store_key_never_enters_the_task_graph(
    cluster: ClusterEngine, bw: BucketWorld, tmp_path: Path
):
    client = cluster.client
    client.register_plugin(SpecRecorder(), name="spec-recorder")
    try:
        buckets = _build(cluster, bw, tmp_path / "features")
        score_features(cluster, buckets, bw.registry, "acquisition", tmp_path / "scores")
        specs = client.run_on_scheduler(recorded_specs)
    finally:
        client.unregister_scheduler_plugin("spec-recorder")
    for task in (b"_snapshot_manifest", b"_build_bucket"):
        assert any(task in spec and b"bankfusion-secret-" in spec for spec in specs)
    forms = (bw.key.encode(), base64.b64decode(bw.key), base64.b64decode(bw.key).hex().encode())
    assert not [spec for spec in specs for form in forms if form in spec]


def test_a_writer_holding_the_store_stops_the_job(
    cluster: ClusterEngine, bw: BucketWorld, tmp_path: Path
):
    # DuckDB shares a file between read-only processes only while no process writes it.
    with Store.open(bw.store, key=bw.key), pytest.raises(StoreLockedError):
        _build(cluster, bw, tmp_path / "features")


def test_a_bucket_takes_the_snapshots_codes(bw: BucketWorld):
    manifest = bw.features.manifest
    with Store.open(bw.store, key=bw.key, read_only=True) as store:
        with pytest.raises(ConfigError, match="like=snapshot_manifest"):
            build_features(
                store,
                snapshot_date=manifest.snapshot_date,
                salt_epoch=manifest.salt_epoch,
                customers=CustomerBucket(0, 2),
            )
        # A bucket no customer falls in is an empty table with every column, not an error.
        empty = build_features(
            store,
            snapshot_date=manifest.snapshot_date,
            salt_epoch=manifest.salt_epoch,
            like=manifest,
            customers=CustomerBucket(0, 1 << 40),
        )
    assert empty.table.height == 0 and empty.table.schema == bw.features.table.schema
    assert empty.tags.shape == (0, bw.features.tags.shape[1])


@pytest.mark.parametrize(
    ("index", "count"), [(2, 2), (-1, 2), (0, 0), (True, 2), (0, 2.0)], ids=str
)
def test_a_customer_bucket_is_checked(index: object, count: object):
    with pytest.raises(ConfigError, match="customer bucket"):
        CustomerBucket(index, count)  # type: ignore[arg-type]


def test_bucket_count_is_checked(bw: BucketWorld, tmp_path: Path):
    manifest = bw.features.manifest
    with pytest.raises(ConfigError, match="buckets must be"):
        build_feature_buckets(
            InProcessEngine(),
            bw.store,
            bw.key,
            snapshot_date=manifest.snapshot_date,
            salt_epoch=manifest.salt_epoch,
            out=tmp_path,
            buckets=0,
        )
