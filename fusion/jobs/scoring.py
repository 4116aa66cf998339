"""Batch scoring on any engine: a feature table by row chunk, or feature buckets bucket by bucket.

<out>/part-00000.parquet              the score frame of one row chunk
<out>/bucket=00007.parquet            one feature bucket's scores
<out>/_work/                          the table's row chunks, while running
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from contracts.errors import ConfigError
from fusion.features import FeatureManifest, FeatureSet
from fusion.jobs.features import FeatureBuckets
from fusion.jobs.files import Location, join_path, open_fs, read_parquet, remove, write_parquet
from fusion.jobs.partitions import Parts, bucket_file
from fusion.jobs.runner import Engine
from fusion.models.classifier import ScoreModel
from fusion.registry import Registry
from fusion.scoring import REASON_DECILES, SCORE_SCHEMA, score_rows

__all__ = ["SCORE_CHUNK_ROWS", "score_features"]

SCORE_CHUNK_ROWS = 100_000  # rows a scoring task scores (SHAP reason codes dominate a row's cost)

# Models loaded on this worker, by (registry root, name, version): each is read and its digests
# checked once per worker, not once per chunk.
_MODELS: dict[tuple[str, str, str], ScoreModel] = {}


@dataclass(frozen=True)
class _ScoreTask:
    registry: str
    model: str
    version: str
    table: str
    tags: str
    common: str  # folder of tag_ids.npy and manifest.json
    reason_deciles: int
    out: str


def _loaded_model(registry: str, name: str, version: str) -> ScoreModel:
    cached = _MODELS.get((registry, name, version))
    if cached is None:
        cached = Registry(Path(registry)).load_score_model(name, version)
        _MODELS[(registry, name, version)] = cached
    return cached


def _score_chunk(task: _ScoreTask) -> int:
    """Score one row chunk of the feature table; return the rows written."""
    model = _loaded_model(task.registry, task.model, task.version)
    fs, path = open_fs(task.common)
    with fs.open(f"{path}/tag_ids.npy", "rb") as handle:
        tag_ids = np.load(handle, allow_pickle=False)
    with fs.open(f"{path}/manifest.json", "rb") as handle:
        manifest = FeatureManifest.from_dict(json.loads(handle.read().decode("utf-8")))
    tags_fs, tags_path = open_fs(task.tags)
    with tags_fs.open(tags_path, "rb") as handle:
        tags = sp.csr_matrix(sp.load_npz(handle))
    table = read_parquet([task.table])
    chunk = FeatureSet(table, tags, tag_ids, manifest)
    frame = score_rows(model, chunk, np.arange(table.height), reason_deciles=task.reason_deciles)
    write_parquet(frame, task.out)
    return frame.height


@dataclass(frozen=True, kw_only=True)
class _ScoreBucketTask:
    registry: str
    model: str
    version: str
    folder: str  # a FeatureSet folder of build_feature_buckets
    chunk_rows: int
    reason_deciles: int
    out: str


def _score_bucket(task: _ScoreBucketTask) -> int:
    """Score one feature bucket in row chunks into one file; return the rows written."""
    model = _loaded_model(task.registry, task.model, task.version)
    bucket = FeatureSet.read(Path(task.folder))
    rows = np.arange(bucket.table.height)
    frames = [
        score_rows(
            model, bucket, rows[begin : begin + task.chunk_rows], reason_deciles=task.reason_deciles
        )
        for begin in range(0, max(len(rows), 1), task.chunk_rows)
    ]
    frame = pl.concat(frames, how="vertical")
    write_parquet(frame, task.out)
    return frame.height


def score_features(
    engine: Engine,
    features: FeatureSet | FeatureBuckets,
    registry: Registry,
    name: str,
    out: Location,
    *,
    version: str | None = None,
    chunk_rows: int = SCORE_CHUNK_ROWS,
    reason_deciles: int = REASON_DECILES,
) -> Parts:
    """Return the score frames of every row of `features`, one Parquet file per row chunk.

    The rows and columns of `fusion.scoring.score_base` with the same model, in table order. The
    version is fixed before the first task (CURRENT when None), so a promotion during the job
    does not mix models; each worker loads it from the registry once. The registry folder must
    be readable by the workers at the same path (a shared mount on a cluster).

    Feature buckets (`build_feature_buckets`) are scored one task per bucket, each reading only
    its bucket's folder and scoring it `chunk_rows` at a time, into one file per bucket
    (`<out>/bucket=00007.parquet`): rows in bucket order, then customer_id order.

    Args:
        engine: where the tasks run.
        features: the feature table and tag matrix to score, or feature buckets whose folders
            the workers can read.
        registry: the model registry.
        name: the scoring model's name (e.g. "acquisition").
        out: the folder of the score files.
        version: the model version; CURRENT when None.
        chunk_rows: rows a scoring task takes.
        reason_deciles: deciles that get reason codes (as in `score_rows`).
    """
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows}", setting="chunk_rows")
    chosen = str(registry.describe(name, version)["version"])
    registry.load_score_model(name, chosen)  # refuse an uplift model before any task runs
    model = _Chosen(os.fspath(registry.root.resolve()), name, chosen, reason_deciles)
    if isinstance(features, FeatureBuckets):
        return _score_buckets(engine, features, model, os.fspath(out), chunk_rows)
    return _score_table(engine, features, model, os.fspath(out), chunk_rows)


@dataclass(frozen=True)
class _Chosen:
    """The model a job scores with, fixed before its first task, and its reason-code deciles."""

    registry: str
    model: str
    version: str
    reason_deciles: int


def _score_buckets(
    engine: Engine, features: FeatureBuckets, model: _Chosen, out: str, chunk_rows: int
) -> Parts:
    """Score each feature bucket in one task; return the files, one per bucket."""
    tasks = [
        _ScoreBucketTask(
            registry=model.registry,
            model=model.model,
            version=model.version,
            folder=folder,
            chunk_rows=chunk_rows,
            reason_deciles=model.reason_deciles,
            out=bucket_file(out, index),
        )
        for index, folder in enumerate(features.folders)
    ]
    scored = engine.map_buckets(_score_bucket, tasks, stage="score")
    return Parts(tuple(t.out for t in tasks), sum(scored), pl.Schema(SCORE_SCHEMA))


def _score_table(
    engine: Engine, features: FeatureSet, model: _Chosen, out: str, chunk_rows: int
) -> Parts:
    """Score the table in row chunks, one task each; return the files, one per chunk."""
    work = join_path(out, "_work")
    try:
        fs, common = open_fs(join_path(work, "common"))
        fs.makedirs(common, exist_ok=True)
        with fs.open(f"{common}/tag_ids.npy", "wb") as handle:
            np.save(handle, np.asarray(features.tag_ids), allow_pickle=False)
        with fs.open(f"{common}/manifest.json", "wb") as handle:
            handle.write(json.dumps(features.manifest.to_dict()).encode("utf-8"))
        tasks = []
        for index, begin in enumerate(range(0, features.table.height, chunk_rows)):
            end = min(begin + chunk_rows, features.table.height)
            table = join_path(work, "chunks", f"chunk-{index:05d}.parquet")
            tags = join_path(work, "chunks", f"tags-{index:05d}.npz")
            write_parquet(features.table[begin:end], table)
            tags_fs, tags_path = open_fs(tags)
            with tags_fs.open(tags_path, "wb") as handle:
                sp.save_npz(handle, sp.csr_matrix(features.tags[begin:end]))
            tasks.append(
                _ScoreTask(
                    registry=model.registry,
                    model=model.model,
                    version=model.version,
                    table=table,
                    tags=tags,
                    common=join_path(work, "common"),
                    reason_deciles=model.reason_deciles,
                    out=join_path(out, f"part-{index:05d}.parquet"),
                )
            )
        counts = engine.map_buckets(_score_chunk, tasks, stage="score")
    finally:
        remove(work)
    return Parts(tuple(t.out for t in tasks), sum(counts), pl.Schema(SCORE_SCHEMA))
