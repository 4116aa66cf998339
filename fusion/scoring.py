"""Scoring: the whole base to Parquet in vectorised chunks, or a few customers in-process.

Both paths give the same columns for a customer: score, decile (1 = the best tenth of the
model's reference population, cut points fixed at training), three reason codes in words, and
the model name and version, so a campaign tool can always say which model spoke.

The score is the booster's output in [0, 1]. For a model trained without sample weights on its
own population (acquisition, campaign response) it estimates a probability. The rescue model is
trained with sample weights (the in-bank model's accepted customers at `accepted_weight`, 0.25 by
default, beside the rejected pool), so its score ranks the rejected pool but is not a calibrated
probability of responding in it: read it through its decile and rank, and take response rates
from the rescue test (`RescueResult`), not from the score.
Raw identifiers never appear: rows are keyed by the bank's internal customer_id.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from contracts.errors import ConfigError
from fusion.features import FeatureSet
from fusion.models.classifier import ScoreModel
from fusion.models.design import design_matrix
from fusion.progress import Progress, report_to
from matcher.atomic import atomic_path

__all__ = ["ScoreWriter", "Scorer", "ScoringResult", "score_base", "score_rows"]

REASON_DECILES = 3
SCORE_SCHEMA = {
    "customer_id": pl.Int64,
    "branch_id": pl.String,
    "score": pl.Float64,
    "decile": pl.Int8,
    "reason_1": pl.String,
    "reason_2": pl.String,
    "reason_3": pl.String,
    "model": pl.String,
    "model_version": pl.String,
}


def score_rows(
    model: ScoreModel,
    features: FeatureSet,
    rows: np.ndarray[Any, Any],
    *,
    reason_deciles: int = REASON_DECILES,
) -> pl.DataFrame:
    """Return the score frame of `rows` (feature-table row numbers) of `features`.

    Reason codes are exact SHAP values (`pred_contribs`), the costly part of scoring, so a
    batch computes them for the rows in deciles 1..`reason_deciles` (the ones that go on lists)
    and leaves them null elsewhere; 10 gives every row its reasons, 0 none.
    """
    x = design_matrix(features, model.spec, rows)
    ids = features.table[rows].select("customer_id", "branch_id")
    return _frame(model, ids, x, reason_deciles)


def _frame(
    model: ScoreModel, ids: pl.DataFrame, x: np.ndarray[Any, Any], reason_deciles: int
) -> pl.DataFrame:
    score = model.predict(x)
    decile = model.decile(score)
    explain = np.flatnonzero(decile <= reason_deciles)
    why = {
        f"reason_{i}": pl.Series(f"reason_{i}", [None] * len(score), pl.String) for i in (1, 2, 3)
    }
    if len(explain):
        found = model.reasons(x[explain])
        for column in why:
            why[column] = (
                why[column].scatter(explain, found[column])
                if column in found.columns
                else why[column]
            )
    version = str(model.metadata.get("version", ""))
    return pl.DataFrame(
        [
            ids["customer_id"].cast(pl.Int64),
            ids["branch_id"].cast(pl.String),
            pl.Series("score", score, dtype=pl.Float64),
            pl.Series("decile", decile, dtype=pl.Int8),
            *why.values(),
            pl.repeat(model.name, len(score), dtype=pl.String, eager=True).alias("model"),
            pl.repeat(version, len(score), dtype=pl.String, eager=True).alias("model_version"),
        ]
    )


@dataclass(frozen=True)
class ScoringResult:
    """What a batch scoring run wrote."""

    path: Path
    rows: int
    seconds: float
    model: str
    version: str

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


class ScoreWriter:
    """Appends score frames to one Parquet file; `score_base` gives it a temporary path."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._writer: pq.ParquetWriter | None = None

    def write(self, frame: pl.DataFrame) -> None:
        """Append the rows of `frame`."""
        table = frame.to_arrow()
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        self._writer.write_table(table)

    def close(self) -> None:
        """Write the file's footer; closing twice is harmless."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def score_base(
    model: ScoreModel,
    features: FeatureSet,
    out: Path,
    *,
    rows: np.ndarray[Any, Any] | None = None,
    chunk_rows: int = 100_000,
    reason_deciles: int = REASON_DECILES,
    progress: Progress | None = None,
) -> ScoringResult:
    """Score `rows` (a boolean mask; all rows when None) in chunks into the Parquet file `out`.

    Each chunk is one design matrix, one vectorised predict and one `pred_contribs` call, so
    memory is bounded by the chunk, not the base.
    """
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows}", setting="chunk_rows")
    selected = (
        np.arange(features.table.height)
        if rows is None
        else np.flatnonzero(np.asarray(rows, dtype=bool))
    )
    start = time.perf_counter()
    report = report_to(progress)
    # The file appears whole when every chunk is written, or not at all.
    with atomic_path(out) as tmp:
        writer = ScoreWriter(tmp)
        try:
            for begin in range(0, max(len(selected), 1), chunk_rows):
                chunk = selected[begin : begin + chunk_rows]
                writer.write(score_rows(model, features, chunk, reason_deciles=reason_deciles))
                done = (begin + len(chunk)) / max(len(selected), 1)
                report(f"score {model.name}", min(1.0, done))
        finally:
            writer.close()
    return ScoringResult(
        Path(out),
        len(selected),
        time.perf_counter() - start,
        model.name,
        str(model.metadata.get("version", "")),
    )


class Scorer:
    """In-process scoring of single customers against a feature table (the API's hot path).

    The design matrix of every customer is built once (one float32 row a customer); a request
    is then an index lookup, one predict and one `pred_contribs` on
    the requested rows.
    """

    def __init__(self, model: ScoreModel, features: FeatureSet, *, rows: Any = None) -> None:
        self.model = model
        selected = (
            np.arange(features.table.height)
            if rows is None
            else np.flatnonzero(np.asarray(rows, dtype=bool))
        )
        self._x = design_matrix(features, model.spec, selected)
        ids = features.table["customer_id"].to_numpy()[selected]
        order = np.argsort(ids, kind="stable")
        self._ids = ids[order]
        self._rows = order
        self._id_frame = features.table[selected].select("customer_id", "branch_id")

    def __len__(self) -> int:
        return len(self._ids)

    def positions(self, customer_ids: Iterable[int]) -> tuple[np.ndarray[Any, Any], list[int]]:
        """Return (positions of known customers, the ids that are unknown)."""
        wanted = np.asarray([int(c) for c in customer_ids], dtype=np.int64)
        if len(self._ids) == 0:
            return np.zeros(0, dtype=np.int64), wanted.tolist()
        at = np.clip(np.searchsorted(self._ids, wanted), 0, len(self._ids) - 1)
        known = self._ids[at] == wanted
        return self._rows[at[known]], [int(c) for c in wanted[~known]]

    def score(self, customer_ids: Sequence[int]) -> tuple[pl.DataFrame, list[int]]:
        """Return the score frame of the known customers (request order) and the unknown ids."""
        rows, unknown = self.positions(customer_ids)
        frame = _frame(self.model, self._id_frame[rows], self._x[rows], 10)
        return frame, unknown
