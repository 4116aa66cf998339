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

A batch file says in its Parquet footer what wrote it (`ScoreRun`: model, version, the feature
snapshot it read, when it scored, which deciles got reasons), so that the service can tell
whether its rows still hold for a customer (`fusion.served_scores`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from contracts.errors import ConfigError
from fusion.features import FeatureManifest, FeatureSet
from fusion.models.classifier import ScoreModel
from fusion.models.design import design_matrix
from fusion.progress import Progress, report_to
from matcher.atomic import atomic_path

__all__ = [
    "REASON_COLUMNS",
    "ScoreRun",
    "ScoreWriter",
    "Scorer",
    "ScoringResult",
    "features_digest",
    "read_score_run",
    "reason_tuples",
    "score_base",
    "score_rows",
]

REASON_DECILES = 3
REASON_COLUMNS = ("reason_1", "reason_2", "reason_3")  # a score frame's reason codes, best first
SCORE_RUN_KEY = b"bankfusion.score_run"  # the Parquet footer key of a batch file's ScoreRun
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
    x = design_matrix(_narrowed(features, model), model.spec, rows)
    ids = features.table.select("customer_id", "branch_id")[rows]
    return _frame(model, ids, x, reason_deciles)


def _narrowed(features: FeatureSet, model: ScoreModel) -> FeatureSet:
    """Return `features` with only the table columns `model` reads (a column pick, no copy).

    `design_matrix` gathers the rows it is given before it picks columns: on the whole
    ~250-column table that gather costs as much as the prediction itself.
    """
    wanted = [c for c in model.spec.columns if c in features.table.columns]
    return FeatureSet(
        features.table.select(wanted), features.tags, features.tag_ids, features.manifest
    )


def _frame(
    model: ScoreModel, ids: pl.DataFrame, x: np.ndarray[Any, Any], reason_deciles: int
) -> pl.DataFrame:
    score = model.predict(x)
    decile = model.decile(score)
    explain = np.flatnonzero(decile <= reason_deciles)
    why = {
        c: pl.repeat(None, len(score), dtype=pl.String, eager=True).alias(c) for c in REASON_COLUMNS
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


@dataclass(frozen=True)
class ScoreRun:
    """What a batch scoring run says about itself in its file's footer."""

    model: str
    version: str
    snapshot_date: str  # the feature snapshot it read (ISO date)
    scored_at: datetime  # UTC, taken before the first row was scored
    reason_deciles: int  # deciles 1..n got reason codes
    features_digest: str = ""  # `features_digest` of the feature build it read

    def to_json(self) -> bytes:
        document = asdict(self) | {"scored_at": self.scored_at.isoformat()}
        return json.dumps(document, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> ScoreRun:
        document = json.loads(data)
        scored_at = datetime.fromisoformat(document["scored_at"])
        return cls(
            model=str(document["model"]),
            version=str(document["version"]),
            snapshot_date=str(document["snapshot_date"]),
            scored_at=scored_at if scored_at.tzinfo else scored_at.replace(tzinfo=UTC),
            reason_deciles=int(document["reason_deciles"]),
            features_digest=str(document.get("features_digest", "")),
        )


def features_digest(manifest: FeatureManifest) -> str:
    """Return the SHA-256 of a feature build's manifest: its snapshot, inputs and columns.

    Two builds with the same digest read the same snapshot, salt epoch, taxonomy and vendor
    batches into the same columns, so a batch scored from one holds for the other.
    """
    text = json.dumps(manifest.to_dict(), sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_score_run(path: Path) -> ScoreRun | None:
    """Return the ScoreRun in the footer of the score file `path`; None when it has none.

    Files written by other writers than `score_base` (a cluster job's parts gathered with
    polars, a file from before footers) have none; a reader then knows only the file's own time.
    """
    metadata = pq.read_schema(path).metadata or {}
    found = metadata.get(SCORE_RUN_KEY)
    if found is None:
        return None
    try:
        return ScoreRun.from_json(found)
    except (ValueError, KeyError, TypeError):
        return None


class ScoreWriter:
    """Appends score frames to one Parquet file; `score_base` gives it a temporary path.

    `metadata` goes into the file's footer (the Arrow schema's key-value metadata).
    """

    def __init__(self, path: Path, *, metadata: Mapping[bytes, bytes] | None = None) -> None:
        self.path = Path(path)
        self._metadata = dict(metadata or {})
        self._writer: pq.ParquetWriter | None = None

    def write(self, frame: pl.DataFrame) -> None:
        """Append the rows of `frame`."""
        table = frame.to_arrow()
        if self._metadata:
            table = table.replace_schema_metadata(
                {**(table.schema.metadata or {}), **self._metadata}
            )
        if self._writer is None:
            # Dictionaries for the string columns only: ids and scores are nearly all distinct,
            # so a dictionary attempt on them is work thrown away (a third of the write).
            strings = [f.name for f in table.schema if pa.types.is_large_string(f.type)]
            self._writer = pq.ParquetWriter(
                self.path, table.schema, compression="zstd", use_dictionary=strings
            )
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
    now: datetime | None = None,
) -> ScoringResult:
    """Score `rows` (a boolean mask; all rows when None) in chunks into the Parquet file `out`.

    Each chunk is one design matrix, one vectorised predict and one `pred_contribs` call (on
    the rows of deciles 1..`reason_deciles` only), so memory is bounded by the chunk, not the
    base. The file's footer holds the run's `ScoreRun`, `now` (default: the clock) its time.
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
    run = ScoreRun(
        model=model.name,
        version=str(model.metadata.get("version", "")),
        snapshot_date=features.manifest.snapshot_date.isoformat(),
        scored_at=(now or datetime.now(UTC)).astimezone(UTC),
        reason_deciles=reason_deciles,
        features_digest=features_digest(features.manifest),
    )
    # The file appears whole when every chunk is written, or not at all.
    with atomic_path(out) as tmp:
        writer = ScoreWriter(tmp, metadata={SCORE_RUN_KEY: run.to_json()})
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
    """In-process scoring of single customers against a feature table (the API's live path).

    The design matrix of every customer is built once (one float32 row a customer); a request
    is then an index lookup, one predict and one `pred_contribs` on the requested rows.
    """

    def __init__(self, model: ScoreModel, features: FeatureSet, *, rows: Any = None) -> None:
        self.model = model
        self.snapshot_date = features.manifest.snapshot_date.isoformat()
        self.features_digest = features_digest(features.manifest)
        selected = (
            np.arange(features.table.height)
            if rows is None
            else np.flatnonzero(np.asarray(rows, dtype=bool))
        )
        self._x = design_matrix(_narrowed(features, model), model.spec, selected)
        ids = features.table["customer_id"].to_numpy()[selected]
        order = np.argsort(ids, kind="stable")
        self._ids = ids[order]
        self._rows = order
        self._id_frame = features.table.select("customer_id", "branch_id")[selected]
        names, codes = np.unique(
            self._id_frame["branch_id"].fill_null("").to_numpy(), return_inverse=True
        )
        self._branch_names: list[str] = [str(n) for n in names]
        self._branch_codes = codes.astype(np.int32)

    def __len__(self) -> int:
        return len(self._ids)

    def locate(self, customer_ids: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Return the design row of each of `customer_ids` (int64), -1 for an unknown one."""
        wanted = np.asarray(customer_ids, dtype=np.int64)
        if len(self._ids) == 0:
            return np.full(len(wanted), -1, dtype=np.int64)
        at = np.clip(np.searchsorted(self._ids, wanted), 0, len(self._ids) - 1)
        return np.where(self._ids[at] == wanted, self._rows[at], -1).astype(np.int64)

    def positions(self, customer_ids: Iterable[int]) -> tuple[np.ndarray[Any, Any], list[int]]:
        """Return (positions of known customers, the ids that are unknown)."""
        wanted = np.asarray([int(c) for c in customer_ids], dtype=np.int64)
        rows = self.locate(wanted)
        return rows[rows >= 0], [int(c) for c in wanted[rows < 0]]

    def branches(self, rows: np.ndarray[Any, Any]) -> list[str]:
        """Return the branch of each design row in `rows`."""
        return [self._branch_names[c] for c in self._branch_codes[rows]]

    def predict(
        self, rows: np.ndarray[Any, Any]
    ) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        """Return (score, decile) of the design rows `rows`."""
        score = self.model.predict(self._x[rows])
        return score, self.model.decile(score)

    def explain(self, rows: np.ndarray[Any, Any]) -> list[tuple[str, ...]]:
        """Return the reason codes (exact SHAP, at most 3) of each design row in `rows`."""
        if len(rows) == 0:
            return []
        return reason_tuples(self.model.reasons(self._x[rows]))

    def score(self, customer_ids: Sequence[int]) -> tuple[pl.DataFrame, list[int]]:
        """Return the score frame of the known customers (request order) and the unknown ids."""
        rows, unknown = self.positions(customer_ids)
        frame = _frame(self.model, self._id_frame[rows], self._x[rows], 10)
        return frame, unknown


def reason_tuples(frame: pl.DataFrame) -> list[tuple[str, ...]]:
    """Return each row's reason codes (`reason_1`.. columns of `frame`) without the nulls."""
    columns = [frame[c].to_list() for c in REASON_COLUMNS if c in frame.columns]
    if not columns:
        return [()] * frame.height
    return [tuple(r for r in row if r is not None) for row in zip(*columns, strict=True)]
