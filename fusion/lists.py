"""Target lists per branch, from the current models: what a campaign tool or a branch receives.

Three lists, each ranked by its own score, one CSV and one Parquet per branch:

    mobile-banking   customers not yet on mobile banking in the fused acquisition model's top
                     `top_deciles` deciles, with score, decile and three reason codes
    rescue           customers the in-bank model rejects (below its cut-off) in the rescue
                     model's top decile of that pool: the list a bank's own model would miss
    food-coupon      the customers with the highest predicted uplift of the campaign offer
                     (`uplift_share` of the population), persuadables rather than sure things

A list row holds the bank's internal customer_id, never a phone or ID number.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from contracts.errors import ConfigError
from fusion.features import FeatureSet
from fusion.models.acquisition import population
from fusion.models.classifier import ScoreModel
from fusion.models.design import design_matrix
from fusion.registry import Registry, UpliftArtifact
from fusion.scoring import ScoringResult, score_base, score_rows

__all__ = [
    "LISTS",
    "AcquisitionScorer",
    "ListConfig",
    "TargetLists",
    "build_target_lists",
    "write_branch_lists",
]

Progress = Callable[[str, float], None]
# (model, features, rows to score, Parquet file to write, reason deciles) -> what was written:
# `score_base` in this process; the CLI passes one that runs `fusion.engine.score_features`.
AcquisitionScorer = Callable[[ScoreModel, FeatureSet, np.ndarray, Path, int], ScoringResult]
LISTS = ("mobile-banking", "rescue", "food-coupon")
_BRANCH = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True, kw_only=True)
class ListConfig:
    """How long each list is."""

    top_deciles: int = 3  # mobile-banking: deciles 1..top_deciles of the acquisition model
    rescue_deciles: int = 1  # rescue: deciles 1..rescue_deciles of the rejected pool
    uplift_share: float = 0.30  # food-coupon: this share of the population by predicted uplift

    def __post_init__(self) -> None:
        if not (1 <= self.top_deciles <= 10 and 1 <= self.rescue_deciles <= 10):
            raise ConfigError("list deciles must be in 1..10", setting="deciles")
        if not 0 < self.uplift_share <= 1:
            raise ConfigError(
                f"uplift_share must be in (0, 1], got {self.uplift_share}", setting="uplift_share"
            )


@dataclass(frozen=True)
class TargetLists:
    """The base's scores and the lists written from them."""

    scores: ScoringResult  # the whole population scored by the acquisition model
    lists: dict[str, pl.DataFrame]  # list name -> ranked rows (all branches)
    files: dict[str, dict[str, dict[str, Path]]]  # list -> branch -> {"csv", "parquet"}
    seconds: float


def build_target_lists(
    registry: Registry,
    features: FeatureSet,
    *,
    scores_dir: Path,
    lists_dir: Path,
    config: ListConfig | None = None,
    progress: Progress | None = None,
    scorer: AcquisitionScorer | None = None,
) -> TargetLists:
    """Score the population with the current models; write the scores and every list per branch.

    Scores go to `scores_dir/acquisition.parquet`, lists to `lists_dir/<list>/<branch>.csv|parquet`.
    `scorer` scores the population with the acquisition model (default: `score_base` here).
    """
    config = config or ListConfig()
    start = time.perf_counter()
    rows = population(features)
    acquisition = registry.load_score_model("acquisition")
    target = Path(scores_dir) / "acquisition.parquet"
    if scorer is None:
        scored = score_base(
            acquisition, features, target, rows=rows, reason_deciles=config.top_deciles,
            progress=progress,
        )  # fmt: skip
    else:
        scored = scorer(acquisition, features, rows, target, config.top_deciles)
    scores = pl.read_parquet(scored.path)
    lists = {
        "mobile-banking": scores.filter(pl.col("decile") <= config.top_deciles).sort(
            "score", descending=True, maintain_order=True
        )
    }

    in_bank = registry.load_score_model("acquisition-in-bank")
    rescue = registry.load_score_model("rescue")
    everyone = np.flatnonzero(rows)
    gate = in_bank.predict(design_matrix(features, in_bank.spec, everyone))
    pool = everyone[gate < float(rescue.metadata["in_bank_cutoff"])]
    rescued = score_rows(rescue, features, pool, reason_deciles=config.rescue_deciles)
    lists["rescue"] = rescued.filter(pl.col("decile") <= config.rescue_deciles).sort(
        "score", descending=True, maintain_order=True
    )

    uplift = registry.load("uplift")
    if not isinstance(uplift, UpliftArtifact):
        raise ConfigError("the registry's 'uplift' model is not an uplift model", setting="uplift")
    predicted = uplift.model.predict(design_matrix(features, uplift.spec, everyone))
    keep = np.argsort(-predicted, kind="stable")[
        : max(1, round(config.uplift_share * len(everyone)))
    ]
    lists["food-coupon"] = (
        features.table[everyone[keep]]
        .select("customer_id", "branch_id")
        .with_columns(
            pl.Series("predicted_uplift", predicted[keep], dtype=pl.Float64),
            pl.lit(uplift.name).alias("model"),
            pl.lit(str(uplift.metadata.get("version", ""))).alias("model_version"),
        )
    )
    files = {
        name: write_branch_lists(frame, Path(lists_dir) / name) for name, frame in lists.items()
    }
    return TargetLists(scored, lists, files, time.perf_counter() - start)


def write_branch_lists(frame: pl.DataFrame, out_dir: Path) -> dict[str, dict[str, Path]]:
    """Write `frame` split by branch_id as <branch>.csv and <branch>.parquet; return the paths.

    Rows keep their order (the list's ranking) and get a 1-based `rank` within the branch.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, dict[str, Path]] = {}
    ranked = frame.with_columns(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over("branch_id").alias("rank")
    )
    for (branch,), part in ranked.partition_by(
        "branch_id", as_dict=True, maintain_order=True
    ).items():
        if not isinstance(branch, str) or not _BRANCH.fullmatch(branch):
            raise ConfigError(
                f"branch id {branch!r} cannot name a list file; branch ids are letters, digits, "
                "'-' and '_'. Fix the bank extract's branch_id column.",
                setting="branch_id",
            )
        paths = {"csv": out_dir / f"{branch}.csv", "parquet": out_dir / f"{branch}.parquet"}
        _atomic(paths["csv"], part.write_csv)
        _atomic(paths["parquet"], part.write_parquet)
        written[str(branch)] = paths
    return written


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
