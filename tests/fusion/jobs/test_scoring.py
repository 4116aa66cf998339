"""Batch scoring by row chunk: `score_base` of the same table and model, on both engines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

from fusion.jobs.runner import Engine
from fusion.jobs.scoring import score_features
from fusion.scoring import score_base
from tests.support.job_worlds import EngineWorld


def test_scores_equal_score_base_within_1e6(engine: Engine, ew: EngineWorld, tmp_path: Path):
    parts = score_features(
        engine, ew.features, ew.registry, "acquisition", tmp_path / "scores", chunk_rows=900
    )
    assert len(parts.files) == 4 and parts.rows == ew.features.table.height
    scored = parts.read()
    model = ew.registry.load_score_model("acquisition")
    reference = pl.read_parquet(
        score_base(model, ew.features, tmp_path / "reference.parquet", chunk_rows=5_000).path
    )
    assert_frame_equal(scored.drop("score"), reference.drop("score"))
    assert np.abs(scored["score"].to_numpy() - reference["score"].to_numpy()).max() <= 1e-6
    assert scored["reason_1"].null_count() < scored.height
    assert not (tmp_path / "scores" / "_work").exists()
