"""Target lists per branch, from the current models: what a campaign tool or a branch receives.

Three lists, each ranked by its own score, one CSV and one Parquet per branch, each list's
branch files swapped in as one set (`write_branch_lists`):

    mobile-banking   customers not yet on mobile banking in the fused acquisition model's top
                     `top_deciles` deciles, with score, decile and three reason codes
    rescue           customers the in-bank model rejects (below its cut-off) in the rescue
                     model's top decile of that pool: the list a bank's own model would miss.
                     The gate is the in-bank version the rescue model was trained behind.
    food-coupon      the customers with the highest predicted uplift of the campaign offer
                     (`uplift_share` of the population), persuadables rather than sure things;
                     when the uplift model's training found targeting by uplift not supported
                     by the data (its metadata's `targeting_by` is "response"), the customers
                     the campaign-response model scores highest instead (`uplift_targeting`)

A list row holds the bank's internal customer_id, never a phone or ID number, and names the
model and version that ranked it.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from contracts.errors import ConfigError, ModelError
from fusion.features import FeatureSet
from fusion.models.acquisition import population
from fusion.models.classifier import ScoreModel
from fusion.models.design import design_matrix
from fusion.progress import Progress
from fusion.registry import Registry, UpliftArtifact
from fusion.scoring import ScoringResult, score_base, score_rows
from matcher.atomic import atomic_path, fsync_dir

__all__ = [
    "LISTS",
    "RESPONSE_MODEL",
    "AcquisitionScorer",
    "ListConfig",
    "TargetLists",
    "Targeting",
    "build_target_lists",
    "uplift_targeting",
    "write_branch_lists",
]

# (model, features, rows to score, Parquet file to write, reason deciles) -> what was written:
# `score_base` in this process; the CLI passes one that runs `fusion.jobs.score_features`.
AcquisitionScorer = Callable[[ScoreModel, FeatureSet, np.ndarray, Path, int], ScoringResult]
LISTS = ("mobile-banking", "rescue", "food-coupon")
RESPONSE_MODEL = "campaign-response"  # what ranks the food-coupon list when uplift cannot
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
class Targeting:
    """What ranked the food-coupon list: the uplift model, or the response model in its place."""

    by: str  # "uplift" or "response"
    model: str  # registry name of the model that ranked the list
    version: str
    reason: str = ""  # why the response model ranks it ("" when by uplift)

    def describe(self) -> str:
        """Return the targeting in words, as the CLI prints it."""
        if self.by == "uplift":
            return f"targeting by uplift: {self.model} {self.version}"
        return f"targeting by the response model ({self.model} {self.version}): {self.reason}"


@dataclass(frozen=True)
class TargetLists:
    """The base's scores and the lists written from them."""

    scores: ScoringResult  # the whole population scored by the acquisition model
    lists: dict[str, pl.DataFrame]  # list name -> ranked rows (all branches)
    files: dict[str, dict[str, dict[str, Path]]]  # list -> branch -> {"csv", "parquet"}
    seconds: float
    targeting: Targeting | None = None  # what ranked the food-coupon list


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

    rescue = registry.load_score_model("rescue")
    in_bank = _rescue_gate(registry, rescue)
    everyone = np.flatnonzero(rows)
    gate = in_bank.predict(design_matrix(features, in_bank.spec, everyone))
    pool = everyone[gate < float(rescue.metadata["in_bank_cutoff"])]
    rescued = score_rows(rescue, features, pool, reason_deciles=config.rescue_deciles)
    # The whole pool and the whole uplift ranking are kept beside the acquisition scores: a
    # campaign's audience may take another share of them than the lists do.
    with atomic_path(Path(scores_dir) / "rescue.parquet") as tmp:
        rescued.write_parquet(tmp)
    lists["rescue"] = rescued.filter(pl.col("decile") <= config.rescue_deciles).sort(
        "score", descending=True, maintain_order=True
    )

    targeting, ranked = _uplift_ranking(registry, features, everyone)
    with atomic_path(Path(scores_dir) / "uplift.parquet") as tmp:
        ranked.write_parquet(tmp)
    lists["food-coupon"] = ranked.head(max(1, round(config.uplift_share * len(everyone)))).drop(
        "decile"
    )
    files = {
        name: write_branch_lists(frame, Path(lists_dir) / name) for name, frame in lists.items()
    }
    return TargetLists(scored, lists, files, time.perf_counter() - start, targeting)


def uplift_targeting(registry: Registry, uplift: UpliftArtifact | None = None) -> Targeting:
    """Return what ranks the food-coupon list: the CURRENT uplift model (or `uplift`, loaded
    already), or - when its training found targeting by uplift not supported by the data
    (metadata `targeting_by` "response") - the CURRENT campaign-response model. A model
    registered before `targeting_by` existed targets by uplift."""
    uplift = uplift or _uplift_model(registry)
    if str(uplift.metadata.get("targeting_by", "uplift")) != "response":
        return Targeting("uplift", uplift.name, str(uplift.metadata.get("version", "")))
    version = registry.current(RESPONSE_MODEL)
    if version is None:
        raise ModelError(
            f"uplift model {uplift.metadata.get('version')} says targeting by uplift is not "
            "supported by the data and to target by the response model, but the registry has no "
            f"{RESPONSE_MODEL} model; retrain (`fusion train`)",
            model=RESPONSE_MODEL,
        )
    return Targeting("response", RESPONSE_MODEL, version, "uplift not supported by the data")


def _uplift_model(registry: Registry) -> UpliftArtifact:
    uplift = registry.load("uplift")
    if not isinstance(uplift, UpliftArtifact):
        raise ConfigError(
            "the registry's 'uplift' model is not an uplift model; retrain (`fusion train`)",
            setting="uplift",
        )
    return uplift


def _uplift_ranking(
    registry: Registry, features: FeatureSet, everyone: np.ndarray[Any, Any]
) -> tuple[Targeting, pl.DataFrame]:
    """Return what ranked the population for the food-coupon list and the ranking, whole.

    Columns: customer_id, branch_id, predicted_uplift (the uplift model's, for the record),
    response_score (the response model's, when it ranks), decile (1 = the top of the ranking),
    targeting_by, model and model_version (the model that ranked), uplift_model (the model
    whose predicted_uplift it is).
    """
    uplift = _uplift_model(registry)
    targeting = uplift_targeting(registry, uplift)
    predicted = uplift.model.predict(design_matrix(features, uplift.spec, everyone))
    columns = [pl.Series("predicted_uplift", predicted, dtype=pl.Float64)]
    ranking_score = predicted
    if targeting.by == "response":
        response = registry.load_score_model(targeting.model, targeting.version)
        ranking_score = response.predict(design_matrix(features, response.spec, everyone))
        columns.append(pl.Series("response_score", ranking_score, dtype=pl.Float64))
    ranking = np.argsort(-ranking_score, kind="stable")
    ranked = (
        features.table[everyone]
        .select("customer_id", "branch_id")
        .with_columns(columns)[ranking]
        .with_columns(
            # Deciles of the ranking, 1 = the top.
            (pl.int_range(pl.len(), dtype=pl.Int64) * 10 // pl.len() + 1)
            .cast(pl.Int8)
            .alias("decile"),
            pl.lit(targeting.by).alias("targeting_by"),
            pl.lit(targeting.model).alias("model"),
            pl.lit(targeting.version).alias("model_version"),
            pl.lit(uplift.name).alias("uplift_model"),
        )
    )
    return targeting, ranked


def _rescue_gate(registry: Registry, rescue: ScoreModel) -> ScoreModel:
    """Return the in-bank model the rescue model was trained behind (its cut-off is that one's).

    Whatever acquisition-in-bank is CURRENT now may be another model, whose scores the stored
    cut-off does not split into the same rejected pool.
    """
    name = str(rescue.metadata.get("in_bank_model", "acquisition-in-bank"))
    version = rescue.metadata.get("in_bank_version")
    rescue_version = rescue.metadata.get("version")
    if not version:
        raise ModelError(
            f"rescue model {rescue_version} does not record which {name} version its cut-off "
            "belongs to (trained before versions were recorded); retrain (`fusion train`)",
            model="rescue",
        )
    try:
        return registry.load_score_model(name, str(version))
    except ModelError as error:
        raise ModelError(
            f"rescue model {rescue_version} gates on {name} {version}, which the registry "
            f"cannot load ({error}); its cut-off means nothing for another in-bank model. "
            "Restore that version or retrain (`fusion train`).",
            model=name,
        ) from error


def write_branch_lists(frame: pl.DataFrame, out_dir: Path) -> dict[str, dict[str, Path]]:
    """Write `frame` split by branch_id as <branch>.csv and <branch>.parquet; return the paths.

    Rows keep their order (the list's ranking) and get a 1-based `rank` within the branch. The
    whole set is written into a fresh folder `.<list>/<generation>/` beside `out_dir`, and
    `out_dir` is a symlink to it, replaced atomically: a reader of `out_dir/<branch>.csv` sees
    the old set or the new one, never a mix, and a branch absent from `frame` has no file any
    more. The previous generation is kept (a reader that resolved it just before the swap can
    finish); older ones are removed. An `out_dir` that is still a plain folder (written before
    generations) is moved aside once, the only moment a reader may find no list.
    """
    out_dir = Path(out_dir)
    ranked = frame.with_columns(
        pl.int_range(1, pl.len() + 1, dtype=pl.Int32).over("branch_id").alias("rank")
    )
    parts = ranked.partition_by("branch_id", as_dict=True, maintain_order=True)
    # Every branch id is checked before anything is written, so a refused run leaves the
    # lists being served as they were.
    for (branch,) in parts:
        if not isinstance(branch, str) or not _BRANCH.fullmatch(branch):
            raise ConfigError(
                f"branch id {branch!r} cannot name a list file; branch ids are letters, digits, "
                "'-' and '_'. Fix the bank extract's branch_id column.",
                setting="branch_id",
            )
    generations = out_dir.with_name(f".{out_dir.name}")
    generation = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
    folder = generations / generation
    written: dict[str, dict[str, Path]] = {}
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for (branch,), part in parts.items():
            part.write_csv(tmp / f"{branch}.csv")
            part.write_parquet(tmp / f"{branch}.parquet")
            written[str(branch)] = {
                "csv": out_dir / f"{branch}.csv",
                "parquet": out_dir / f"{branch}.parquet",
            }
    try:
        previous = _swap_in(out_dir, generations, generation)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    for old in generations.iterdir():
        if old.name not in (generation, previous):
            shutil.rmtree(old, ignore_errors=True)
    return written


def _swap_in(link: Path, generations: Path, generation: str) -> str | None:
    """Point the symlink `link` at `generations/generation` atomically; return the old target."""
    previous = None
    if link.is_symlink():
        previous = Path(os.readlink(link)).name
    elif link.exists():
        previous = f"{time.time_ns():020d}-legacy"
        os.replace(link, generations / previous)
    # The symlink is made beside `link` and renamed over it, so a reader finds the old target
    # or the new one. Relative, so the run folder can be moved or mounted elsewhere.
    # The generation's files were flushed when it was written: flush the new link's entry only.
    with atomic_path(link, durable=False) as tmp:
        os.symlink(Path(generations.name) / generation, tmp, target_is_directory=True)
    fsync_dir(link.parent)
    return previous
